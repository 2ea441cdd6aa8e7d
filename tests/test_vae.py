import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from gid_jax.models import vae as vae_lib
from gid_jax.models.vae import VAE, gradient_loss, kl_divergence, vae_loss


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.fixture(scope='module')
def small():
  # One small factor-4 model for the shape tests: building a model runs one small XLA program per parameter.
  return VAE(widths=(8, 8, 8), rngs=nnx.Rngs(0))


def test_default_config_shapes_at_paper_size():
  # 160 x 256 (SPEC's 256 x 160) -> a 40 x 64 x 4 latent; shapes only, no compute.
  m = nnx.eval_shape(lambda: VAE(rngs=nnx.Rngs(0)))
  assert m.downsample == 4
  assert sum(p.size for p in _params(m)) == 2_569_964
  recon, mean, logvar = nnx.eval_shape(lambda: VAE(rngs=nnx.Rngs(0))(jnp.zeros((3, 160, 256, 4)),
                                                                     jax.random.key(0)))
  assert recon.shape == (3, 160, 256, 4)
  assert mean.shape == logvar.shape == (3, 40, 64, 4)
  # Factor 8 on 10 x 16: padded to 16 x 16, a 2 x 2 latent.
  mean, _ = nnx.eval_shape(
      lambda: VAE(widths=(8, 8, 8, 8), rngs=nnx.Rngs(0)).encode(jnp.zeros((2, 10, 16, 4))))
  assert mean.shape == (2, 2, 2, 4)


@pytest.mark.parametrize('hw,latent_hw', [((40, 64), (10, 16)), ((80, 128), (20, 32)), ((37, 50), (10, 13))])
def test_encode_decode_shapes_at_factor_4(small, hw, latent_hw):
  graphdef, state = nnx.split(small)

  def run(state, x):  # shapes only: eager ops would build one XLA program per op and size
    m = nnx.merge(graphdef, state)
    mean, logvar = m.encode(x)
    return mean, logvar, m.decode(mean), m.decode(mean, hw), m(x, jax.random.key(1))[0]

  x = jax.ShapeDtypeStruct((2, *hw, 4), jnp.float32)
  mean, logvar, full, cropped, recon = jax.eval_shape(run, state, x)
  assert mean.shape == logvar.shape == (2, *latent_hw, 4)
  assert full.shape == (2, latent_hw[0] * 4, latent_hw[1] * 4, 4)
  assert cropped.shape == recon.shape == (2, *hw, 4)


def test_sizes_not_divisible_by_the_factor_are_edge_padded(small):
  # A 37 x 50 slice: the encoder sees the edge-padded 40 x 52 slice, the decoder's output is cropped.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 37, 50, 4)), jnp.float32)
  assert np.isfinite(np.asarray(small(x, jax.random.key(0))[0])).all()
  mean, logvar = small.encode(x)
  padded = jnp.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)), mode='edge')
  mean_p, logvar_p = small.encode(padded)
  np.testing.assert_allclose(mean, mean_p, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logvar, logvar_p, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(small(x)[0], small.decode(mean_p)[:, :37, :50], rtol=1e-6, atol=1e-6)


def test_bad_inputs_raise(small):
  with pytest.raises(ValueError, match=r'N x H x W x 4 slices, got shape \(2, 16, 16, 3\)'):
    small.encode(jnp.zeros((2, 16, 16, 3)))
  with pytest.raises(ValueError, match='latents'):
    small.decode(jnp.zeros((2, 4, 4, 3)))
  with pytest.raises(ValueError, match=r'out_hw \(20, 16\) does not match a 4 x 4 latent at downsampling 4'):
    small.decode(jnp.zeros((1, 4, 4, 4)), (20, 16))
  with pytest.raises(ValueError, match='unknown norm'):
    VAE(widths=(8,), norm='batch', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='no finite differences'):
    gradient_loss(jnp.zeros((1, 4, 32, 1)), jnp.zeros((1, 4, 32, 1)), num_scales=3)


def test_from_config_and_norm_none():
  cfg = ml_collections.ConfigDict({'widths': (8, 16), 'blocks': 2, 'latent_channels': 3, 'norm': 'group'})
  m = nnx.eval_shape(lambda: vae_lib.from_config(cfg, nnx.Rngs(0)))
  assert m.downsample == 2 and m.latent_channels == 3
  assert len(m.encoder.levels[0]) == 2 and len(m.decoder.levels[0]) == 3  # LDM: blocks + 1 in the decoder
  mean, _ = nnx.eval_shape(lambda: vae_lib.from_config(cfg, nnx.Rngs(0)).encode(jnp.zeros((1, 8, 12, 4))))
  assert mean.shape == (1, 4, 6, 3)
  cfg.norm = 'none'
  m = nnx.eval_shape(lambda: vae_lib.from_config(cfg, nnx.Rngs(0)))
  assert m.encoder.norm_out is None and m.encoder.levels[0][0].norm1 is None
  recon, _, _ = nnx.eval_shape(
      lambda: vae_lib.from_config(cfg, nnx.Rngs(0))(jnp.zeros((1, 8, 12, 4)), jax.random.key(0)))
  assert recon.shape == (1, 8, 12, 4)


def _np_avg_pool(a, f):
  n, h, w, c = a.shape
  a = np.pad(a, ((0, 0), (0, -h % f), (0, -w % f), (0, 0)), mode='edge')
  return a.reshape(n, a.shape[1] // f, f, a.shape[2] // f, f, c).mean(axis=(2, 4))


def _np_gradient_loss(p, t, num_scales):
  total = 0.0
  for s in range(num_scales):
    ps, ts = _np_avg_pool(p, 2 ** s), _np_avg_pool(t, 2 ** s)
    dxp, dxt = ps[:, :, 1:] - ps[:, :, :-1], ts[:, :, 1:] - ts[:, :, :-1]
    dyp, dyt = ps[:, 1:] - ps[:, :-1], ts[:, 1:] - ts[:, :-1]
    total += np.abs(dxp - dxt).mean() + np.abs(dyp - dyt).mean()
  return total / num_scales


@pytest.mark.parametrize('shape,num_scales', [((2, 24, 40, 4), 3), ((3, 21, 30, 2), 3), ((1, 9, 7, 4), 1)])
def test_gradient_loss_matches_float64_numpy(rng, shape, num_scales):
  p, t = rng.normal(size=shape), rng.normal(size=shape)
  got = gradient_loss(jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32), num_scales)
  np.testing.assert_allclose(float(got), _np_gradient_loss(p, t, num_scales), rtol=1e-5)


def test_gradient_loss_ignores_offsets_and_sees_gradients(rng):
  t = jnp.asarray(rng.normal(size=(2, 16, 16, 4)), jnp.float32)
  assert float(gradient_loss(t + 0.7, t)) < 1e-6
  ramp = jnp.arange(16.0)[None, None, :, None] * 0.1
  assert float(gradient_loss(t + ramp, t)) > 0.05


def test_kl_matches_float64_numpy(rng):
  mean, logvar = rng.normal(size=(3, 5, 6, 4)), rng.normal(size=(3, 5, 6, 4))
  want = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3))
  got = kl_divergence(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(jnp.max(jnp.abs(kl_divergence(jnp.zeros((2, 3, 3, 4)), jnp.zeros((2, 3, 3, 4)))))) == 0.0

  x, recon = rng.normal(size=(3, 20, 24, 4)), rng.normal(size=(3, 20, 24, 4))
  loss, metrics = vae_loss(*(jnp.asarray(a, jnp.float32) for a in (x, recon, mean, logvar)),
                           grad_weight=0.2, kl_weight=1e-3)
  np.testing.assert_allclose(metrics['l1'], np.abs(x - recon).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['grad'], _np_gradient_loss(recon, x, 3), rtol=1e-5)
  np.testing.assert_allclose(metrics['kl'], want.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, metrics['l1'] + 0.2 * metrics['grad'] + 1e-3 * metrics['kl'], rtol=1e-6)
  assert metrics['loss'] is loss


def test_vae_loss_gradients_match_finite_differences(rng):
  # Weights of order one so that every term shows; float64 and a tiny step keep the central differences
  # off the kinks of |.|.
  with jax.enable_x64():
    x, recon, mean, logvar = (jnp.asarray(rng.normal(size=s)) for s in
                              ((2, 16, 20, 4), (2, 16, 20, 4), (2, 4, 5, 4), (2, 4, 5, 4)))
    assert x.dtype == jnp.float64

    def f(recon, mean, logvar):
      return vae_loss(x, recon, mean, logvar, grad_weight=0.7, kl_weight=0.05)[0]

    check_grads(f, (recon, mean, logvar), order=1, modes=('rev',), eps=1e-6, atol=1e-6, rtol=1e-6)


def _smooth_fields(rng, n, h=16, w=32, terms=3):
  """n x h x w x 4 sums of plane waves of at most one cycle per image side (std ~0.45)."""
  yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing='ij')
  out = np.zeros((n, h, w, 4))
  for _ in range(terms):
    fy, fx = rng.uniform(0, 1, (2, n, 1, 1, 4))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 4))
    amp = rng.uniform(0.2, 0.5, (n, 1, 1, 4))
    out += amp * np.sin(2 * np.pi * (fy * yy[..., None] + fx * xx[..., None]) + phase)
  return out.astype(np.float32)


def test_tiny_vae_learns_smooth_fields():
  # The real objective (sampled z, L1 + gradient + KL), fixed seeds; held-out fields read through the mean.
  start = time.time()
  steps = 300
  data_rng = np.random.default_rng(0)
  model = VAE(widths=(8, 16), blocks=1, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps, 6e-5))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, x, key):
    def loss_of(params):
      recon, mean, logvar = nnx.merge(graphdef, params, rest)(x, key)
      return vae_loss(x, recon, mean, logvar)[0]
    grads = jax.grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def held_out_l1(params, x):
    return jnp.mean(jnp.abs(nnx.merge(graphdef, params, rest)(x)[0] - x))

  test = _smooth_fields(np.random.default_rng(1), 32)
  before = float(held_out_l1(params, test))
  for i in range(steps):
    params, opt_state = train_step(params, opt_state, _smooth_fields(data_rng, 8), jax.random.key(i))
  after = float(held_out_l1(params, test))
  std = float(test.std())
  print(f'held-out L1 {before:.3f} -> {after:.3f} (data std {std:.3f}) in {time.time() - start:.1f} s')
  # Seen on 2 shared CPU cores: 0.533 -> 0.136 with std 0.445.
  assert after < before / 3
  assert after < 0.4 * std


def test_same_rngs_same_model_and_outputs():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 12, 4)), jnp.float32)
  a, b = VAE(widths=(8, 16), rngs=nnx.Rngs(3)), VAE(widths=(8, 16), rngs=nnx.Rngs(3))
  for pa, pb in zip(_params(a), _params(b), strict=True):
    np.testing.assert_array_equal(pa, pb)
  for oa, ob in zip(a(x, jax.random.key(5)), b(x, jax.random.key(5)), strict=True):
    np.testing.assert_array_equal(oa, ob)
  c = VAE(widths=(8, 16), rngs=nnx.Rngs(4))
  assert any(not np.array_equal(pa, pc) for pa, pc in zip(_params(a), _params(c)))
  assert not np.array_equal(a(x, jax.random.key(5))[0], a(x, jax.random.key(6))[0])
  np.testing.assert_array_equal(a(x)[0], a.decode(a.encode(x)[0], (8, 12)))
