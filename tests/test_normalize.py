import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gid_jax.motion import normalize as nl


def _stats(rng, k=6):
  scales = np.exp(rng.normal(size=k)) * 0.5
  return nl.NormStats(scales=tuple((float(v),) * 4 for v in scales))


def test_inverse_exact_to_float32(rng):
  stats = _stats(rng)
  spec = (rng.standard_cauchy(size=(2, 6, 5, 7, 4)) * 0.3).astype(np.float32)
  for x in (spec, jnp.asarray(spec)):
    back = np.asarray(nl.denormalize(nl.normalize(x, stats), stats))
    np.testing.assert_allclose(back, spec, rtol=4 * np.finfo(np.float32).eps, atol=1e-30)


def test_matches_float64_formula(rng):
  stats = _stats(rng)
  spec = rng.normal(size=(6, 3, 3, 4)).astype(np.float32)
  s = np.asarray(stats.scales, np.float64)[:, None, None, :]
  ref = np.sign(spec) * np.sqrt(np.abs(spec.astype(np.float64) / s))
  np.testing.assert_allclose(np.asarray(nl.normalize(spec, stats)), ref, rtol=1e-6)
  # Gradient of the inverse (used by loop guidance) against float64: d/dx sign(x) x^2 s = 2 |x| s.
  n = rng.normal(size=(6, 3, 3, 4)).astype(np.float32)
  g = jax.grad(lambda v: jnp.sum(nl.denormalize(v, stats)))(jnp.asarray(n))
  np.testing.assert_allclose(np.asarray(g), 2 * np.abs(n.astype(np.float64)) * s, rtol=1e-6)


def test_power_none_is_linear(rng):
  stats = nl.NormStats(scales=((2.0,) * 4,) * 3, power='none')
  spec = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  np.testing.assert_allclose(nl.normalize(spec, stats), spec / 2.0)


def test_histogram_percentile_matches_numpy(rng):
  k = 4
  data = [(rng.lognormal(size=(k, 20, 30, 4)) * np.exp(-np.arange(k))[:, None, None, None]
           * rng.choice([-1, 1], size=(k, 20, 30, 4))) for _ in range(5)]
  data[0][:, :5] = 0.0  # static pixels
  stats = nl.fit_stats(data, percentile=95.0)
  allv = np.abs(np.concatenate([d.reshape(k, -1) for d in data], axis=1))
  exact = np.percentile(allv, 95.0, axis=1)
  got = np.asarray(stats.scales)[:, 0]
  np.testing.assert_allclose(got, exact, rtol=nl.percentile_error_bound())
  assert stats.num_values == allv.shape[1]


def test_image_size_ablation_and_json(tmp_path):
  s = nl.image_size_stats(3, width=256, height=160)
  assert s.mode == 'image_size'
  np.testing.assert_allclose(s.scales_Kx4[0], [256, 256, 160, 160])
  s.save(str(tmp_path / nl.STATS_FILENAME))
  assert nl.NormStats.load(str(tmp_path)) == s


def test_bad_values_are_named():
  with pytest.raises(ValueError, match='mode'):
    nl.NormStats(scales=((1.0,) * 4,), mode='log')
  with pytest.raises(ValueError, match='positive'):
    nl.NormStats(scales=((0.0,) * 4,))
  with pytest.raises(ValueError, match='K=2'):
    nl.normalize(np.zeros((2, 1, 1, 4), np.float32), nl.NormStats(scales=((1.0,) * 4,)))
  with pytest.raises(FileNotFoundError, match='norm_stats'):
    nl.NormStats.load('/nonexistent/norm_stats.json')
  with pytest.raises(ValueError, match='empty'):
    nl.fit_stats([])
