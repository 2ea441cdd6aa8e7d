"""Tests of the motion U-Net: shapes, frequency embedding and frequency attention, gradients.

Everything runs through a few shared jitted functions (one compile per model structure) to keep the file
fast on a small CPU machine; pure shape checks only trace (``jax.eval_shape``).
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from gid_jax.models import unet

B, K = 2, 4
TINY = dict(widths=(16, 32), blocks=1, attention=(False, True), heads=2, num_freqs=K)
FREQ_ATTN = nnx.PathContains('freq_attn')


@pytest.fixture(scope='module', autouse=True)
def _cheap_prng():
  # Initialisers compile once per parameter shape on CPU; RBG keys compile in half the time of threefry.
  with jax.default_prng_impl('unsafe_rbg'):
    yield


# XLA's default CPU optimisation level, not the suite's faster-compiling level 1 (conftest.py): the identity and
# independence checks below compare two programs at atol 1e-6, a bound that level 1's fusions can exceed.
@functools.partial(jax.jit, static_argnums=0, compiler_options={'xla_backend_optimization_level': 3})
def _forward_split(graphdef, state, z, t, cond, freq):
  return nnx.merge(graphdef, state)(z, t, cond, freq)


def _forward(model, z, t, cond, freq):
  return _forward_split(*nnx.split(model), z, t, cond, freq)


def _inputs(h=5, w=8, seed=0, channels=4):
  kz, kc = jax.random.split(jax.random.key(seed))
  z = jax.random.normal(kz, (B * K, h, w, channels))
  cond = jax.random.uniform(kc, (B * K, h, w, 3), minval=-1, maxval=1)
  t = jnp.full((B * K,), 500, jnp.int32)
  freq = jnp.tile(jnp.arange(K, dtype=jnp.int32), B)  # b-major: n = b * K + k
  return z, t, cond, freq


def _perturb_zero_kernels(model, seed=0, only=None):
  """Gives the zero-initialised kernels (res conv2, attention/freq-attention proj, conv_out) random values."""
  gen = np.random.default_rng(seed)  # NumPy: eager jax.random would compile once per kernel shape
  for path, node in nnx.iter_graph(model):
    if (isinstance(node, nnx.Param) and path[-1] == 'kernel' and not np.any(np.asarray(node[...]))
        and (only is None or only in path)):
      node[...] = jnp.asarray(0.2 * gen.normal(size=node.shape), jnp.float32)
  return model


def _shapes(model, filt=nnx.Param):
  return {path: v.shape for path, v in nnx.to_flat_state(nnx.state(model, filt))}


@pytest.fixture(scope='module')
def stage1():
  return _perturb_zero_kernels(unet.UNet(**TINY, rngs=nnx.Rngs(0)))


@pytest.fixture(scope='module')
def stage2():
  return unet.UNet(**TINY, freq_attention=True, rngs=nnx.Rngs(1))


@pytest.mark.parametrize('h,w', [(10, 16), (5, 8)])
@pytest.mark.parametrize('freq_attention', [False, True])
def test_output_shapes(h, w, freq_attention):
  model = unet.UNet(**TINY, freq_attention=freq_attention, rngs=nnx.Rngs(0))
  out = jax.eval_shape(lambda *a: model(*a), *_inputs(h, w))
  assert out.shape == (B * K, h, w, 4) and out.dtype == jnp.float32


def test_volume_prediction_config():
  # The ablation: all 4K channels of one image at once, no frequency embedding, no K axis.
  model = unet.UNet(**{**TINY, 'num_freqs': 0}, in_channels=4 * K, out_channels=4 * K, freq_embedding=False,
                    rngs=nnx.Rngs(0))
  z = jnp.zeros((B, 10, 16, 4 * K))
  out = jax.eval_shape(lambda z: model(z, jnp.zeros((B,)), jnp.zeros((B, 10, 16, 3))), z)
  assert out.shape == (B, 10, 16, 4 * K)
  assert not nnx.state(model, FREQ_ATTN)


def test_from_config_and_bad_inputs():
  cfg = ml_collections.ConfigDict(dict(TINY, freq_embedding=True, freq_attention=True, dropout=0.1,
                                       in_channels=4, out_channels=4, cond_channels=3, mask_head=''))
  model = unet.from_config(cfg, nnx.Rngs(0))
  assert model.freq_attn is not None and model.num_freqs == K
  z, t, cond, freq = _inputs()
  # Dropout in training mode takes its key at call time.
  out = jax.eval_shape(lambda *a: model(*a, deterministic=False, rngs=nnx.Rngs(dropout=0)), z, t, cond, freq)
  assert out.shape == z.shape
  with pytest.raises(ValueError, match='freq_N'):
    jax.eval_shape(lambda *a: model(*a), z, t, cond)
  with pytest.raises(ValueError, match='multiple of K'):
    jax.eval_shape(lambda *a: model(*a), z[:7], t[:7], cond[:7], freq[:7])
  with pytest.raises(ValueError, match='num_freqs > 0'):
    unet.UNet(**{**TINY, 'num_freqs': 0}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('kind,channels', [('out', 16), ('middle', 32)])
def test_auxiliary_mask_head(kind, channels):
  # The optional moving-mask head (training/ldm.py's aux_mask_weight): one 1x1 conv on the features conv_out
  # reads or on the bottleneck, added last so the other parameters draw the same numbers; the denoising
  # output is unchanged.
  plain = unet.UNet(**TINY, rngs=nnx.Rngs(5))
  headed = unet.UNet(**TINY, mask_head=kind, rngs=nnx.Rngs(5))
  extra = set(_shapes(headed)) - set(_shapes(plain))
  assert {p[0] for p in extra} == {'mask_out'} and _shapes(headed)[('mask_out', 'kernel')] == (1, 1, channels, 1)
  for x, y in zip(jax.tree.leaves(nnx.state(plain, nnx.Param)),
                  jax.tree.leaves(nnx.state(headed, nnx.All(nnx.Param, nnx.Not(nnx.PathContains('mask_out'))))),
                  strict=True):
    np.testing.assert_array_equal(x, y)
  _perturb_zero_kernels(plain, seed=2)
  nnx.update(headed, nnx.state(plain, nnx.Param))
  inputs = _inputs()
  out, logits = nnx.jit(lambda m, *a: m(*a, with_mask=True))(headed, *inputs)
  assert logits.shape == (B * K, 5, 8) and np.all(np.isfinite(logits)) and np.std(logits) > 0
  if kind == 'middle':  # the 3 x 4 bottleneck, nearest-upsampled to 5 x 8: rows 0 0 1 1 2, columns in pairs
    np.testing.assert_array_equal(logits[:, 0], logits[:, 1])
    np.testing.assert_array_equal(logits[:, 2], logits[:, 3])
    np.testing.assert_array_equal(logits[:, :, ::2], logits[:, :, 1::2])
    assert not np.array_equal(logits[:, 1], logits[:, 2])
  np.testing.assert_allclose(out, _forward(plain, *inputs), atol=1e-5)
  with pytest.raises(ValueError, match="mask_head='out' or 'middle'"):
    jax.eval_shape(lambda *a: plain(*a, with_mask=True), *inputs)
  with pytest.raises(ValueError, match='mask_head must be one of'):
    unet.UNet(**TINY, mask_head='first', rngs=nnx.Rngs(5))


def test_stage2_tree_is_stage1_tree_plus_freq_attn(stage1, stage2):
  s1, s2 = _shapes(stage1), _shapes(stage2)
  freq = _shapes(stage2, nnx.All(nnx.Param, FREQ_ATTN))
  rest = _shapes(stage2, nnx.All(nnx.Param, nnx.Not(FREQ_ATTN)))
  assert rest == s1
  assert freq and all(path[0] == 'freq_attn' for path in freq)
  assert set(s2) == set(s1) | set(freq) and not set(s1) & set(freq)
  # One FreqAttention after each spatial block: 3 in the encoder (res; res + attn), 3 in the middle,
  # 6 in the decoder (2 res + 2 attn; 2 res) for the tiny config.
  assert len(stage2.freq_attn) == 12
  # The whole freq_attn state is parameters (nothing else to freeze or checkpoint apart).
  assert _shapes(stage2, FREQ_ATTN) == freq


def test_same_seed_same_stage1_params_with_or_without_freq_attention():
  a = unet.UNet(**TINY, rngs=nnx.Rngs(3))
  b = unet.UNet(**TINY, freq_attention=True, rngs=nnx.Rngs(3))
  c = unet.UNet(**TINY, rngs=nnx.Rngs(4))
  la = jax.tree.leaves(nnx.state(a, nnx.Param))
  lb = jax.tree.leaves(nnx.state(b, nnx.All(nnx.Param, nnx.Not(FREQ_ATTN))))
  lc = jax.tree.leaves(nnx.state(c, nnx.Param))
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(la, lc))


def test_frequency_attention_starts_as_the_identity(stage1, stage2):
  model = nnx.clone(stage2)
  nnx.update(model, nnx.state(stage1, nnx.Param))  # load the stage-1 checkpoint into the non-freq part
  args = _inputs(seed=1)
  ref = np.asarray(_forward(stage1, *args))
  assert np.abs(ref).mean() > 1e-3  # the perturbed stage-1 model computes something non-trivial
  np.testing.assert_allclose(np.asarray(_forward(model, *args)), ref, atol=1e-6, rtol=0)


def test_frequency_attention_mixes_frequencies_of_one_image_only(stage1, stage2):
  model = _perturb_zero_kernels(nnx.clone(stage2), seed=2)
  z, t, cond, freq = _inputs(seed=2)
  z2 = z.at[0].add(1.0)  # slice (b=0, k=0)
  base, moved = np.asarray(_forward(model, z, t, cond, freq)), np.asarray(_forward(model, z2, t, cond, freq))
  assert np.abs(moved[1:K] - base[1:K]).max() > 1e-3  # other frequencies of image 0 respond
  np.testing.assert_allclose(moved[K:], base[K:], atol=1e-6, rtol=0)  # image 1 does not

  base, moved = np.asarray(_forward(stage1, z, t, cond, freq)), np.asarray(_forward(stage1, z2, t, cond, freq))
  assert np.abs(moved[0] - base[0]).max() > 1e-3
  np.testing.assert_allclose(moved[1:], base[1:], atol=1e-6, rtol=0)  # stage 1: independent slices


def test_timestep_and_frequency_embeddings_change_the_output(stage1):
  z, t, cond, freq = _inputs(seed=3)
  base = np.asarray(_forward(stage1, z, t, cond, freq))
  other_t = np.asarray(_forward(stage1, z, t + 100, cond, freq))
  other_f = np.asarray(_forward(stage1, z, t, cond, (freq + 1) % K))
  # Every slice responds (max over its pixels), not just some.
  assert np.abs(other_t - base).max(axis=(1, 2, 3)).min() > 1e-4
  assert np.abs(other_f - base).max(axis=(1, 2, 3)).min() > 1e-4


def test_gradients_reach_every_parameter(stage2):
  model = _perturb_zero_kernels(nnx.clone(stage2), seed=4)
  z, t, cond, freq = _inputs(seed=4)
  target = jax.random.normal(jax.random.key(5), z.shape)

  @nnx.jit
  def grads(model):
    return nnx.grad(lambda m: jnp.mean((m(z, t, cond, freq) - target) ** 2))(model)

  flat = nnx.to_flat_state(grads(model))
  assert len(flat) == len(_shapes(model))
  dead = [path for path, g in flat if not np.any(np.asarray(g[...]))]
  assert not dead, dead
  assert all(np.isfinite(np.asarray(g[...])).all() for _, g in flat)


def _freq_attention_reference(x_NxHxWxC, p, k, heads, eps=1e-6):
  """float64 NumPy: GroupNorm over (K, h, w, group) per image, + pos, attention over K, proj, residual."""
  x = x_NxHxWxC.astype(np.float64)
  n, h, w, c = x.shape
  b, groups = n // k, np.gcd(32, c)
  xb = x.reshape(b, k, h, w, groups, c // groups)
  mean = xb.mean(axis=(1, 2, 3, 5), keepdims=True)
  var = xb.var(axis=(1, 2, 3, 5), keepdims=True)
  y = ((xb - mean) / np.sqrt(var + eps)).reshape(b, k, h, w, c) * p['norm_scale'] + p['norm_bias']
  y = y + p['pos_emb'][:k][None, :, None, None, :]
  qkv = y @ p['qkv_kernel'] + p['qkv_bias']
  d = c // heads
  q, kk, v = (qkv[..., s * c:(s + 1) * c].reshape(b, k, h, w, heads, d) for s in range(3))
  logits = np.einsum('bqxyhd,bkxyhd->bxyhqk', q, kk) / np.sqrt(d)
  attn = np.exp(logits - logits.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)
  out = np.einsum('bxyhqk,bkxyhd->bqxyhd', attn, v).reshape(b, k, h, w, c)
  out = out @ p['proj_kernel'] + p['proj_bias']
  return (x.reshape(b, k, h, w, c) + out).reshape(n, h, w, c)


@pytest.mark.parametrize('k', [5, 3])  # the layer's own K, and fewer frequencies than it was built for
def test_freq_attention_matches_numpy_reference(rng, k):
  c, heads, b = 8, 2, 2
  layer = unet.FreqAttention(c, heads, 5, rngs=nnx.Rngs(0))
  p = {
      'norm_scale': rng.normal(1.0, 0.2, c), 'norm_bias': rng.normal(0.0, 0.2, c),
      'pos_emb': rng.normal(0.0, 1.0, (5, c)),
      'qkv_kernel': rng.normal(0.0, 0.5, (c, 3 * c)), 'qkv_bias': rng.normal(0.0, 0.2, 3 * c),
      'proj_kernel': rng.normal(0.0, 0.5, (c, c)), 'proj_bias': rng.normal(0.0, 0.2, c),
  }
  for var, name in [(layer.norm.scale, 'norm_scale'), (layer.norm.bias, 'norm_bias'), (layer.pos_emb, 'pos_emb'),
                    (layer.qkv.kernel, 'qkv_kernel'), (layer.qkv.bias, 'qkv_bias'),
                    (layer.proj.kernel, 'proj_kernel'), (layer.proj.bias, 'proj_bias')]:
    var[...] = jnp.asarray(p[name], jnp.float32)
  x = (rng.normal(size=(b * k, 3, 4, c)) * 2.0 + 0.5).astype(np.float32)
  got = nnx.jit(lambda layer, x: layer(x, k))(layer, x)
  want = _freq_attention_reference(x, p, k, heads)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  # The same slices in the order (group, k, example in group) of models.ldm: the same outputs, reordered.
  g, m = 1, b
  order = lambda a: a.reshape(g, m, k, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
  got = nnx.jit(lambda layer, x: layer(x, k, inner=m))(layer, order(x))
  np.testing.assert_allclose(np.asarray(got), order(want), rtol=1e-4, atol=1e-4)


def test_freq_sharding_hook_survives_split_merge_and_applies():
  model = unet.UNet(**TINY, freq_attention=True, rngs=nnx.Rngs(0))
  assert model.freq_sharding is None  # default: no constraint
  mesh = jax.make_mesh((1,), ('freq',), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, 'freq'))
  model.freq_sharding = sharding
  graphdef, state = nnx.split(model)
  assert not any('freq_sharding' in path for path, _ in nnx.to_flat_state(state))  # static, not state
  merged = nnx.merge(graphdef, state)
  assert merged.freq_sharding == sharding
  out = jax.eval_shape(lambda *a: merged(*a), *_inputs())
  assert out.shape == (B * K, 5, 8, 4)
