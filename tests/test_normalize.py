import json

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
  # The histogram's percentile lies in the bin of the sample at rank ceil(p n) (numpy's inverted_cdf); a
  # linear interpolation between order statistics can sit further away where the samples are sparse.
  exact = np.percentile(allv, 95.0, axis=1, method='inverted_cdf')
  got = np.asarray(stats.scales)[:, 0]
  np.testing.assert_allclose(got, exact, rtol=nl.percentile_error_bound() + 1e-6)  # + float32 storage
  assert stats.num_values == allv.shape[1]


def test_percentile_over_coefficients_above_a_floor_matches_numpy(rng):
  # Exact synthetic motion: most coefficients exactly zero. Over all of them the percentile measures how much
  # of the world moves; over those of at least min_magnitude it measures how the moving part moves.
  k = 3
  data = [rng.lognormal(-2.0, 1.0, size=(k, 64, 64, 4)) * rng.choice([-1, 1], size=(k, 64, 64, 4))
          for _ in range(4)]
  for d in data:
    d[:, rng.random((64, 64)) < 0.97] = 0.0  # 3% of the pixels move: the plain 95th percentile is 0
  allv = np.abs(np.concatenate([d.reshape(k, -1) for d in data], axis=1)).astype(np.float64)
  assert (nl.fit_stats(data).scales_Kx4[:, 0] == 1e-6).all()  # the floor: what broke a world
  floor = 1e-3
  stats = nl.fit_stats(data, percentile=95.0, min_magnitude=floor)
  # The bin holding the floor counts whole: keep the reference's data away from it.
  assert not ((allv > floor / 1.01) & (allv < floor * 1.01)).any()
  exact = np.array([np.percentile(v[v >= floor], 95.0, method='inverted_cdf') for v in allv])
  np.testing.assert_allclose(stats.scales_Kx4[:, 0], exact, rtol=nl.percentile_error_bound() + 1e-6)
  assert stats.min_magnitude == floor
  assert nl.NormStats.from_json(stats.to_json()) == stats
  with pytest.raises(ValueError, match='min_magnitude'):
    nl.fit_stats(data, min_magnitude=-1.0)
  # A frequency with nothing above the floor gets the floor scale, not an error.
  quiet = [d * 1e-4 for d in data]
  assert (nl.fit_stats(quiet, min_magnitude=floor).scales_Kx4 == 1e-6).all()


def test_stats_without_a_floor_serialise_as_before():
  old = '{"scales": [[0.5, 0.5, 0.5, 0.5]], "mode": "adaptive", "power": "sqrt", "percentile": 95.0, "num_values": 7}'
  s = nl.NormStats.from_json(old)
  assert s.min_magnitude == 0.0
  assert json.loads(s.to_json()) == json.loads(old)  # runs and latents caches compare this text


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
