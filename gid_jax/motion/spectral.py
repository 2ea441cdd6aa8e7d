"""Spectral volumes: the per-pixel Fourier representation of oscillating motion.

A motion texture ``disp_TxHxWx2`` (pixels, channel 0 = x, 1 = y; ``disp[t, y, x]`` is where pixel (x, y) of
frame 0 is at time t, minus (x, y)) is turned into a spectral volume ``S_KxHxWx4`` holding the first K
temporal Fourier terms, channels (re x, im x, re y, im y).

FFT normalisation (our choice, SPEC.md leaves it open): the *forward-normalised* DFT

    S_k(p) = (1 / T) * sum_{t=0}^{T-1} F_t(p) * exp(-2 pi i k t / T),      k = 0 .. K-1

so S_0 is the mean displacement and a cosine ``A cos(2 pi k t / T + phi)`` has ``|S_k| = A / 2``: the
coefficients are in pixels and do not change with the clip length. Its inverse, for a real signal whose
spectrum is zero outside bins 0..K-1 (and their mirrors T-k), is

    F_t(p) = Re S_0(p) + 2 * sum_{k=1}^{K-1} Re[S_k(p) * exp(2 pi i k t / T)].

Bins must stay strictly below Nyquist (``2 * (K - 1) < T``) so that every kept bin k >= 1 has a distinct
mirror; under that condition ``to_displacements(to_spectral_volume(F), T) == F`` for every band-limited F.
Both directions are a matrix product with a fixed DFT basis (computed in float64, used in float32), which is
exact, jittable, differentiable and maps to the MXU on TPUs better than an FFT of 150 points.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

NUM_FREQS = 16
NUM_FRAMES = 150
FPS = 30.0


def _check(num_freqs: int, num_frames: int) -> None:
  if num_freqs < 1:
    raise ValueError(f'num_freqs must be >= 1, got {num_freqs}')
  if 2 * (num_freqs - 1) >= num_frames:
    raise ValueError(
        f'num_freqs={num_freqs} needs more than {2 * (num_freqs - 1)} frames (bins must stay below '
        f'Nyquist), got num_frames={num_frames}')


@functools.lru_cache(maxsize=32)
def _basis(num_freqs: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """cos/sin DFT basis, each K x T, float64 (phase reduced mod T so large k*t stay exact)."""
  k = np.arange(num_freqs)[:, None]
  t = np.arange(num_frames)[None, :]
  angle = 2.0 * np.pi * ((k * t) % num_frames) / num_frames
  return np.cos(angle), np.sin(angle)


def frequencies(num_freqs: int = NUM_FREQS, num_frames: int = NUM_FRAMES, fps: float = FPS) -> np.ndarray:
  """Frequency of every kept bin in Hz: ``k * fps / T`` (0, 0.2, ..., 3.0 Hz for the paper's values)."""
  _check(num_freqs, num_frames)
  return np.arange(num_freqs, dtype=np.float64) * fps / num_frames


def to_spectral_volume(disp_TxHxWx2: jax.Array, num_freqs: int = NUM_FREQS) -> jax.Array:
  """Displacements (..., T, H, W, 2) -> spectral volume (..., K, H, W, 4), float32, pixel units."""
  disp = jnp.asarray(disp_TxHxWx2, jnp.float32)
  if disp.ndim < 4 or disp.shape[-1] != 2:
    raise ValueError(f'expected displacements of shape (..., T, H, W, 2), got {disp.shape}')
  num_frames = disp.shape[-4]
  _check(num_freqs, num_frames)
  cos, sin = _basis(num_freqs, num_frames)
  cos = jnp.asarray(cos / num_frames, jnp.float32)
  sin = jnp.asarray(sin / num_frames, jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  re = jnp.einsum('kt,...thwc->...khwc', cos, disp, precision=hi)
  im = -jnp.einsum('kt,...thwc->...khwc', sin, disp, precision=hi)
  # (..., K, H, W, 2[x, y]) x {re, im} -> (..., K, H, W, 4) as (re x, im x, re y, im y).
  return jnp.stack([re[..., 0], im[..., 0], re[..., 1], im[..., 1]], axis=-1)


def to_displacements(spec_KxHxWx4: jax.Array, num_frames: int = NUM_FRAMES) -> jax.Array:
  """Spectral volume (..., K, H, W, 4) -> displacements (..., T, H, W, 2), float32, pixel units."""
  return displacements_at(spec_KxHxWx4, np.arange(num_frames), num_frames)


def displacements_at(spec_KxHxWx4, times, num_frames: int = NUM_FRAMES, bins=None) -> jax.Array:
  """The inverse DFT (the project's only one): the band-limited trajectory at real times.

      F(t) = Re S_0 + 2 sum_{k=1}^{K-1} Re[S_k exp(2 pi i b_k t / T)],   b_k = k by default

  Args:
    spec_KxHxWx4: spectral volume (..., K, H, W, 4), pixels, channels (re x, im x, re y, im y).
    times: (N,) real times in frames of the T-frame clip; any value (periodic with period T for b_k = k).
    num_frames: T, the clip length the volume was computed over.
    bins: (K,) the frequency each coefficient plays at, in cycles per T frames (default ``arange(K)``, the
      volume's own bins; ``gid_jax.motion.edit.loop_bins`` gives those of an exact loop).

  Returns:
    Displacements (..., N, H, W, 2) float32. Traceable in ``spec`` (``times`` and ``bins`` are concrete).
  """
  spec = jnp.asarray(spec_KxHxWx4, jnp.float32)
  if spec.ndim < 4 or spec.shape[-1] != 4:
    raise ValueError(f'expected a spectral volume of shape (..., K, H, W, 4), got {spec.shape}')
  k = spec.shape[-4]
  _check(k, num_frames)
  t = np.asarray(times, np.float64).reshape(-1)
  if not np.all(np.isfinite(t)):
    raise ValueError('times must be finite')
  b = np.arange(k, dtype=np.float64) if bins is None else np.asarray(bins, np.float64).reshape(-1)
  if b.shape != (k,) or not np.all(np.isfinite(b)):
    raise ValueError(f'bins must be {k} finite numbers, got {bins!r}')
  # Reduce b t mod T in float64 before the trig functions, so long or large times stay exact.
  angle = 2.0 * np.pi * np.mod(b[:, None] * t[None, :], num_frames) / num_frames  # K x N
  weight = np.where(np.arange(k) == 0, 1.0, 2.0)[:, None]  # bin 0 once, others for themselves + mirror
  cos = jnp.asarray(np.cos(angle) * weight, jnp.float32)
  sin = jnp.asarray(np.sin(angle) * weight, jnp.float32)
  re, im = spec[..., 0::2], spec[..., 1::2]
  hi = jax.lax.Precision.HIGHEST
  # Re[(a + ib)(cos + i sin)] = a cos - b sin
  return (jnp.einsum('kn,...khwc->...nhwc', cos, re, precision=hi)
          - jnp.einsum('kn,...khwc->...nhwc', sin, im, precision=hi))


def band_limit(disp_TxHxWx2: jax.Array, num_freqs: int = NUM_FREQS) -> jax.Array:
  """Project displacements onto the first K bins (what the representation can hold)."""
  num_frames = jnp.shape(disp_TxHxWx2)[-4]
  return to_displacements(to_spectral_volume(disp_TxHxWx2, num_freqs), num_frames)


def amplitude(spec_KxHxWx4: jax.Array) -> jax.Array:
  """Per-bin motion amplitude in pixels, (..., K, H, W): sqrt(|S_x|^2 + |S_y|^2)."""
  return jnp.sqrt(jnp.sum(jnp.square(spec_KxHxWx4), axis=-1))


def motion_rms(spec_KxHxWx4: jax.Array) -> jax.Array:
  """(..., H, W) RMS displacement about the mean position over one period, sqrt(2 sum_{k>=1} |S_k|^2)
  (Parseval; the DC term is a constant offset, not motion). ``gid_jax.eval.motion_metrics.motion_rms`` is its
  float64 NumPy reference."""
  return jnp.sqrt(2.0 * jnp.sum(jnp.square(spec_KxHxWx4[..., 1:, :, :, :]), axis=(-4, -1)))


def power_spectrum(spec_KxHxWx4: jax.Array) -> jax.Array:
  """Mean motion power per frequency, (..., K): mean over pixels of |S_x|^2 + |S_y|^2."""
  return jnp.mean(jnp.sum(jnp.square(spec_KxHxWx4), axis=-1), axis=(-2, -1))
