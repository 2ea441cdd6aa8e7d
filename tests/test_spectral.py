import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gid_jax.motion import spectral


def np_spectral(disp, k):
  """float64 reference: forward-normalised rFFT over time, first k bins."""
  f = np.fft.rfft(np.asarray(disp, np.float64), axis=-4)[..., :k, :, :, :] / disp.shape[-4]
  return np.stack([f[..., 0].real, f[..., 0].imag, f[..., 1].real, f[..., 1].imag], axis=-1)


def np_displacements(spec, t):
  spec = np.asarray(spec, np.float64)
  k = spec.shape[-4]
  full = np.zeros(spec.shape[:-4] + (t // 2 + 1,) + spec.shape[-3:-1] + (2,), np.complex128)
  full[..., :k, :, :, 0] = spec[..., 0] + 1j * spec[..., 1]
  full[..., :k, :, :, 1] = spec[..., 2] + 1j * spec[..., 3]
  return np.fft.irfft(full * t, n=t, axis=-4)


def test_frequencies_match_paper():
  f = spectral.frequencies(16, 150, 30.0)
  np.testing.assert_allclose(f, np.arange(16) * 0.2)
  assert f[-1] == pytest.approx(3.0)


@pytest.mark.parametrize('shape', [(150, 5, 7, 2), (2, 3, 40, 4, 6, 2)])
def test_forward_matches_float64_reference(rng, shape):
  disp = rng.normal(size=shape).astype(np.float32) * 3
  k = 16 if shape[-4] == 150 else 8
  got = np.asarray(spectral.to_spectral_volume(disp, k))
  np.testing.assert_allclose(got, np_spectral(disp, k), atol=2e-6, rtol=1e-5)


def test_inverse_matches_float64_reference(rng):
  spec = rng.normal(size=(3, 16, 6, 5, 4)).astype(np.float32)
  got = np.asarray(spectral.to_displacements(spec, 150))
  np.testing.assert_allclose(got, np_displacements(spec, 150), atol=5e-6, rtol=1e-5)


def test_exact_round_trip_on_band_limited_input(rng):
  t, k = 150, 16
  spec = rng.normal(size=(2, k, 8, 9, 4))
  spec[..., 0, :, :, 1] = 0  # a real signal has a real DC term
  spec[..., 0, :, :, 3] = 0
  disp = np_displacements(spec, t)  # float64 band-limited trajectories
  back = np.asarray(spectral.to_spectral_volume(disp.astype(np.float32), k))
  # float32 DFT over 150 samples: a few ulps of the largest value (about 4)
  np.testing.assert_allclose(back, spec, atol=5e-6, rtol=1e-5)
  again = np.asarray(spectral.to_displacements(back, t))
  np.testing.assert_allclose(again, disp, atol=2e-5)
  # ... and the band-limit projection leaves band-limited input unchanged.
  np.testing.assert_allclose(np.asarray(spectral.band_limit(disp.astype(np.float32), k)), disp, atol=2e-5)


def test_cosine_has_half_amplitude_in_its_bin():
  t = np.arange(150)
  x = 2.0 * np.cos(2 * np.pi * 3 * t / 150 + 0.7)  # 0.6 Hz at 30 fps
  disp = np.zeros((150, 1, 1, 2), np.float32)
  disp[:, 0, 0, 0] = x
  s = np.asarray(spectral.to_spectral_volume(disp))
  amp = np.asarray(spectral.amplitude(s))[:, 0, 0]
  assert np.argmax(amp) == 3
  assert amp[3] == pytest.approx(1.0, abs=1e-5)
  assert np.angle(s[3, 0, 0, 0] + 1j * s[3, 0, 0, 1]) == pytest.approx(0.7, abs=1e-5)


def test_jit_and_gradients_against_float64(rng):
  disp = rng.normal(size=(30, 3, 4, 2)).astype(np.float32)
  w = rng.normal(size=(8, 3, 4, 4))
  fwd = jax.jit(lambda d: jnp.sum(spectral.to_spectral_volume(d, 8) * w))
  g = np.asarray(jax.grad(fwd)(disp))
  # The map is linear: its gradient is the adjoint applied to w, computed in float64.
  eps = 1e-3
  ref = np.zeros_like(disp, np.float64)
  base = np.sum(np_spectral(disp, 8) * w)
  for idx in [(0, 0, 0, 0), (7, 1, 2, 1), (29, 2, 3, 0), (13, 0, 3, 1)]:
    d2 = disp.astype(np.float64).copy()
    d2[idx] += eps
    ref[idx] = (np.sum(np_spectral(d2, 8) * w) - base) / eps
    assert g[idx] == pytest.approx(ref[idx], rel=1e-4, abs=1e-5)
  spec = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
  check_grads(lambda s: spectral.to_displacements(s, 30), (spec,), order=1, modes=('rev',),
              atol=1e-2, rtol=1e-2)


def test_rejects_bins_at_or_above_nyquist():
  with pytest.raises(ValueError, match='Nyquist'):
    spectral.to_spectral_volume(np.zeros((30, 2, 2, 2), np.float32), 16)
  with pytest.raises(ValueError, match=r'\(\.\.\., T, H, W, 2\)'):
    spectral.to_spectral_volume(np.zeros((30, 2, 2, 3), np.float32), 4)
