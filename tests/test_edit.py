import numpy as np
import pytest

from gid_jax.motion import edit, spectral


def np_displacements_at(spec, times, t):
  """float64 reference: F(t) = Re S_0 + 2 sum_k Re[S_k exp(2 pi i k t / T)] at real times."""
  spec = np.asarray(spec, np.float64)
  sx = spec[..., 0] + 1j * spec[..., 1]
  sy = spec[..., 2] + 1j * spec[..., 3]
  k = np.arange(spec.shape[-4])
  e = np.exp(2j * np.pi * k[:, None] * np.asarray(times, np.float64)[None] / t)  # K x N
  w = np.where(k == 0, 1.0, 2.0)[:, None] * e  # bin 0: Re S_0 (e = 1 there)
  return np.stack([np.real(np.einsum('kn,...khw->...nhw', w, s)) for s in (sx, sy)], axis=-1)


def np_trig_interp(disp, times):
  """float64 reference: the trigonometric interpolant of one period, per pixel, via the full complex DFT."""
  disp = np.asarray(disp, np.float64)
  t = disp.shape[0]
  x = np.fft.fft(disp, axis=0) / t
  freqs = np.fft.fftfreq(t, 1.0 / t)  # integers, symmetric
  if t % 2 == 0:  # split the Nyquist term evenly between +T/2 and -T/2 (real interpolant)
    x = np.concatenate([x, x[t // 2:t // 2 + 1]], axis=0)
    x[t // 2] *= 0.5
    x[-1] *= 0.5
    freqs = np.concatenate([freqs, [t // 2]])
    freqs[t // 2] = -t // 2
  e = np.exp(2j * np.pi * freqs[None, :] * np.asarray(times)[:, None] / t)  # N x T'
  return np.real(np.einsum('nf,fhwc->nhwc', e, x))


def test_magnify_scales_oscillation_not_offset(rng):
  spec = rng.normal(size=(2, 8, 5, 6, 4)).astype(np.float32)
  got = np.asarray(edit.magnify(spec, 2.5))
  np.testing.assert_array_equal(got[:, 0], spec[:, 0])
  np.testing.assert_allclose(got[:, 1:], spec[:, 1:].astype(np.float64) * 2.5, rtol=1e-6)
  # Trajectories relative to frame 0 (what is rendered) scale exactly.
  d0 = np.asarray(spectral.to_displacements(spec, 30))
  d1 = np.asarray(spectral.to_displacements(got, 30))
  np.testing.assert_allclose(d1 - d1[:, :1], 2.5 * (d0 - d0[:, :1]), atol=1e-4)
  per_bin = rng.uniform(0, 2, size=8)
  got = np.asarray(edit.magnify(spec, per_bin, include_dc=True))
  np.testing.assert_allclose(got, spec * per_bin[:, None, None, None], rtol=1e-6)
  with pytest.raises(ValueError, match=r'shape \(8,\)'):
    edit.magnify(spec, np.ones(3))


def test_displacements_at_integer_times_equal_to_displacements(rng):
  spec = rng.normal(size=(8, 4, 5, 4)).astype(np.float32)
  t = 40
  a = np.asarray(edit.displacements_at(spec, np.arange(t), t))
  b = np.asarray(spectral.to_displacements(spec, t))
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_displacements_at_real_times_match_float64_reference(rng):
  spec = rng.normal(size=(3, 16, 4, 5, 4)).astype(np.float32)
  times = rng.uniform(-200, 400, size=17)
  got = np.asarray(edit.displacements_at(spec, times, 150))
  np.testing.assert_allclose(got, np_displacements_at(spec, times, 150), atol=2e-5)
  # Periodic with the clip length.
  np.testing.assert_allclose(np.asarray(edit.displacements_at(spec, times + 150, 150)), got, atol=2e-5)


def test_slow_down_linear_matches_float64_reference(rng):
  disp = rng.normal(size=(11, 4, 3, 2)).astype(np.float32)
  got = np.asarray(edit.slow_down(disp, 2.5))
  assert got.shape == (26, 4, 3, 2)  # floor(10 * 2.5) + 1
  times = np.arange(26) / 2.5
  ref = np.empty(got.shape)
  for y in range(4):
    for x in range(3):
      for c in range(2):
        ref[:, y, x, c] = np.interp(times, np.arange(11), disp[:, y, x, c].astype(np.float64))
  np.testing.assert_allclose(got, ref, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(edit.slow_down(disp, 1.0)), disp)
  with pytest.raises(ValueError, match='only 11 frames'):
    edit.slow_down(disp, 2.5, num_frames=30)
  with pytest.raises(ValueError, match='positive'):
    edit.slow_down(disp, 0.0)


@pytest.mark.parametrize('t', [16, 17])
def test_slow_down_fourier_matches_float64_reference(rng, t):
  disp = rng.normal(size=(t, 3, 4, 2)).astype(np.float32)
  got = np.asarray(edit.slow_down(disp, 1.7, method='fourier'))
  n = round(t * 1.7)
  assert got.shape == (n, 3, 4, 2)
  np.testing.assert_allclose(got, np_trig_interp(disp, np.arange(n) / 1.7), atol=2e-5)
  np.testing.assert_allclose(np.asarray(edit.slow_down(disp, 1.0, method='fourier')), disp, atol=2e-5)


def test_slow_down_fourier_is_exact_on_spectral_textures(rng):
  spec = rng.normal(size=(8, 4, 5, 4)).astype(np.float32)
  t, factor = 30, 3.0
  disp = spectral.to_displacements(spec, t)
  got = np.asarray(edit.slow_down(disp, factor, method='fourier'))
  want = np.asarray(edit.displacements_at(spec, np.arange(90) / factor, t))
  np.testing.assert_allclose(got, want, atol=5e-5)
  # Every factor-th frame is an original one.
  np.testing.assert_allclose(got[::3], np.asarray(disp), atol=5e-5)


def np_feather(mask, feather):
  """float64 reference: brute-force distance to the nearest outside pixel, smoothstep ramp."""
  inside = mask > 0.5
  out_yx = np.argwhere(~inside)
  w = np.zeros(mask.shape)
  if len(out_yx) == 0:
    return np.ones(mask.shape)
  for y, x in np.argwhere(inside):
    d = np.sqrt(np.min(np.sum((out_yx - (y, x)) ** 2, axis=1)))
    s = min(d / feather, 1.0)
    w[y, x] = s * s * (3 - 2 * s)
  return w


def test_mask_motion_matches_float64_reference(rng):
  spec = rng.normal(size=(6, 14, 17, 4)).astype(np.float32)
  mask = np.zeros((14, 17), bool)
  mask[2:12, 3:15] = rng.random((10, 12)) < 0.9  # a ragged region with holes
  mask[:, 16] = True  # touching the image border (not an edge)
  got = np.asarray(edit.mask_motion(spec, mask, feather_px=3.0))
  ref = spec.astype(np.float64) * np_feather(mask, 3.0)[:, :, None]
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert np.all(got[:, ~mask] == 0)  # nothing outside the region moves, DC included
  # feather 0: the mask is the weight (a soft one used as given); an all-true mask changes nothing.
  soft = rng.random((14, 17))
  np.testing.assert_allclose(np.asarray(edit.mask_motion(spec, soft, 0.0)), spec * soft[:, :, None],
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(edit.mask_motion(spec, np.ones((14, 17)), 5.0)), spec)


def test_mask_shape_mismatch_names_both_shapes(rng):
  spec = rng.normal(size=(6, 14, 17, 4)).astype(np.float32)
  with pytest.raises(ValueError, match=r'mask of shape \(17, 14\).*\(6, 14, 17, 4\).*\(14, 17\)'):
    edit.mask_motion(spec, np.ones((17, 14)), 2.0)
  with pytest.raises(ValueError, match='feather_px'):
    edit.mask_motion(spec, np.ones((14, 17)), -1.0)
