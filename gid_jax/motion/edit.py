"""Motion editing on spectral volumes and motion textures: magnify / calm, slow down, animate a region only.

Shapes: spectral volumes ``spec_KxHxWx4`` (pixels, channels (re x, im x, re y, im y), forward-normalised DFT
over a clip of T frames, see :mod:`gid_jax.motion.spectral`); motion textures ``disp_TxHxWx2`` (pixels).
All functions accept leading batch axes where it is natural and return float32 jax arrays.

Time is measured in frames of the source clip throughout: the spectral representation is one period of T
frames, so its trajectory at a real time t is

    F(t) = Re S_0 + 2 sum_{k=1}^{K-1} Re[S_k exp(2 pi i k t / T)],

which :func:`displacements_at` evaluates exactly (band-limited, periodic interpolation). Slow motion by a
factor s is then ``F(n / s)`` for output frames n: the same motion, s times slower, without blending frames.
"""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.motion import spectral

_HI = jax.lax.Precision.HIGHEST


def _check_spec(spec_KxHxWx4) -> jax.Array:
  spec = jnp.asarray(spec_KxHxWx4, jnp.float32)
  if spec.ndim < 4 or spec.shape[-1] != 4:
    raise ValueError(f'expected a spectral volume of shape (..., K, H, W, 4), got {spec.shape}')
  return spec


def _check_disp(disp_TxHxWx2) -> jax.Array:
  disp = jnp.asarray(disp_TxHxWx2, jnp.float32)
  if disp.ndim < 4 or disp.shape[-1] != 2:
    raise ValueError(f'expected displacements of shape (..., T, H, W, 2), got {disp.shape}')
  return disp


def magnify(spec_KxHxWx4, scale, include_dc: bool = False) -> jax.Array:
  """Motion magnification (scale > 1) or calming (0 <= scale < 1) by scaling the oscillating bins.

  Args:
    spec_KxHxWx4: spectral volume (..., K, H, W, 4), pixels.
    scale: a number, or per-bin factors of shape (K,) (e.g. to magnify one frequency band only).
    include_dc: also scale bin 0. Off by default: bin 0 is each pixel's mean position over the clip, a static
      offset, not motion; scaling it would shift the still picture instead of changing how much it moves.
      (:func:`gid_jax.render.video.render_video` measures motion from frame 0, where the offset cancels
      anyway.)

  Returns:
    The edited volume, same shape, float32.
  """
  spec = _check_spec(spec_KxHxWx4)
  k = spec.shape[-4]
  if np.shape(scale) not in ((), (k,)):
    raise ValueError(f'scale must be a number or have shape ({k},) (one factor per bin), got shape '
                     f'{np.shape(scale)}')
  factors = np.array(np.broadcast_to(np.asarray(scale, np.float64), (k,)))
  if not np.all(np.isfinite(factors)):
    raise ValueError(f'scale must be finite, got {scale}')
  if not include_dc:
    factors[0] = 1.0
  return spec * jnp.asarray(factors, jnp.float32)[:, None, None, None]


# The trajectory at real times (the one inverse DFT, which checks its input), here beside the other edits.
displacements_at = spectral.displacements_at


def loop_bins(num_freqs: int, num_frames: int, loop_frames: int, slowdown: float = 1.0) -> np.ndarray:
  """Frequencies (cycles per T frames, for :func:`displacements_at`) that make an exact loop of N frames.

  Output frame n shows time n / slowdown, so bin k makes k N / (T slowdown) cycles in N output frames; a
  trajectory repeats after N frames exactly when every bin makes a whole number of cycles. Each bin k >= 1
  is moved to the nearest whole number of cycles, at least one (a bin never stops moving; very short loops
  speed their slowest bins up instead), bin 0 (the mean position) stays. Position, velocity and every
  higher derivative then close exactly at frame N, and each bin keeps its amplitude and phase: the motion
  keeps its strength; its frequencies move by at most half a cycle per loop (0.15 Hz for N = 100 at 30 fps;
  none at all when N is a multiple of T * slowdown).
  """
  if loop_frames < 1:
    raise ValueError(f'loop_frames must be >= 1, got {loop_frames}')
  if not slowdown > 0:
    raise ValueError(f'slowdown must be > 0, got {slowdown}')
  spectral.frequencies(num_freqs, num_frames)
  period = num_frames * slowdown  # output frames per T-frame period
  cycles = np.round(np.arange(num_freqs) * loop_frames / period)
  cycles[1:] = np.maximum(cycles[1:], 1.0)
  return cycles * period / loop_frames


def slow_down(disp_TxHxWx2, factor: float, method: str = 'linear', num_frames: int | None = None
              ) -> jax.Array:
  """Slow motion: output frame n shows the motion texture at time n / factor (factor < 1 speeds up).

  Args:
    disp_TxHxWx2: motion texture (..., T, H, W, 2), pixels.
    factor: slow-down factor, > 0.
    method: ``'linear'`` interpolates linearly between neighbouring frames (any texture; default length
      ``floor((T - 1) * factor) + 1`` frames, the same span of time); ``'fourier'`` treats the texture as one
      period of a periodic signal and evaluates its full trigonometric interpolant (exact for band-limited
      periodic textures such as ``to_displacements`` output; default length ``round(T * factor)``, one slowed
      period, so it still loops). For a spectral volume use ``displacements_at(spec, arange(n) / factor, T)``
      directly: it needs no texture at all.
    num_frames: output length (default above). With ``'linear'``, times past the last frame are refused.

  Returns:
    (..., N, H, W, 2) float32.
  """
  disp = _check_disp(disp_TxHxWx2)
  t_in = disp.shape[-4]
  if not (np.isfinite(factor) and factor > 0):
    raise ValueError(f'factor must be a positive number, got {factor}')
  if method == 'linear':
    n = int(np.floor((t_in - 1) * factor + 1e-9)) + 1 if num_frames is None else int(num_frames)
  elif method == 'fourier':
    n = max(1, int(round(t_in * factor))) if num_frames is None else int(num_frames)
  else:
    raise ValueError(f"method must be 'linear' or 'fourier', got {method!r}")
  if n < 1:
    raise ValueError(f'num_frames must be >= 1, got {n}')
  times = np.arange(n, dtype=np.float64) / factor
  if method == 'linear':
    if times[-1] > t_in - 1 + 1e-9:
      raise ValueError(f'{n} frames slowed by {factor} need the texture up to frame {times[-1]:.3f}, but it '
                       f'has only {t_in} frames (0 .. {t_in - 1}); use fewer frames or method=\'fourier\'')
    times = np.minimum(times, t_in - 1)
    i0 = np.minimum(np.floor(times).astype(np.int64), max(t_in - 2, 0))
    i1 = np.minimum(i0 + 1, t_in - 1)
    w = jnp.asarray(times - i0, jnp.float32)[:, None, None, None]
    return jnp.take(disp, i0, axis=-4) * (1.0 - w) + jnp.take(disp, i1, axis=-4) * w
  # Fourier: all rFFT bins; for even T the Nyquist bin is evaluated as a cosine (its only real interpolant).
  k = t_in // 2 + 1
  angle = 2.0 * np.pi * np.mod(np.arange(k)[:, None] * times[None, :], t_in) / t_in  # K x N
  weight = np.full((k, 1), 2.0)
  weight[0] = 1.0
  if t_in % 2 == 0:
    weight[-1] = 1.0
  cos = jnp.asarray(np.cos(angle) * weight / t_in, jnp.float32)
  sin = jnp.asarray(np.sin(angle) * weight / t_in, jnp.float32)
  if t_in % 2 == 0:
    sin = sin.at[-1].set(0.0)  # the Nyquist bin's sine part is zero at every integer time: drop it
  x = jnp.fft.rfft(disp, axis=-4)
  return (jnp.einsum('kn,...khwc->...nhwc', cos, x.real, precision=_HI)
          - jnp.einsum('kn,...khwc->...nhwc', sin, x.imag, precision=_HI))


def feather_mask(mask_HxW, feather_px: float) -> np.ndarray:
  """Soft weight (H, W) float32 in [0, 1]: 1 deep inside the region, easing to 0 at its edge.

  The region is ``mask > 0.5``. The weight is ``smoothstep(clip(d / feather_px, 0, 1))`` with d the Euclidean
  distance (pixel centres) from a pixel to the nearest pixel outside the region; the image border is not an
  edge. The feather lies *inside* the region, so nothing outside it moves (a blur would leak motion out).
  ``feather_px = 0`` returns the mask itself (clipped to [0, 1]: an already soft mask is used as given).
  """
  mask = np.asarray(mask_HxW)
  if mask.dtype == bool:
    mask = mask.astype(np.float32)
  if not np.issubdtype(mask.dtype, np.number) or np.iscomplexobj(mask):
    raise ValueError(f'mask must be real numbers or bools, got dtype {mask.dtype}')
  mask = mask.astype(np.float32)
  if not np.all(np.isfinite(mask)):
    raise ValueError('mask contains non-finite values')
  if not (np.isfinite(feather_px) and feather_px >= 0):
    raise ValueError(f'feather_px must be >= 0, got {feather_px}')
  if feather_px == 0:
    return np.clip(mask, 0.0, 1.0)
  inside = (mask > 0.5).astype(np.uint8)
  if inside.all():
    return np.ones(mask.shape, np.float32)
  dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
  x = np.clip(dist / feather_px, 0.0, 1.0)
  return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def mask_motion(spec_KxHxWx4, mask_HxW, feather_px: float = 4.0) -> jax.Array:
  """Animate only a region: every bin, DC included, times :func:`feather_mask` (so outside stays at rest).

  Args:
    spec_KxHxWx4: spectral volume (..., K, H, W, 4), pixels.
    mask_HxW: the region, bool or float (> 0.5 = inside), shape (H, W) of the volume.
    feather_px: width of the soft edge inside the region, pixels (0 = use the mask as a hard/soft weight).

  Returns:
    The masked volume, same shape, float32.
  """
  spec = _check_spec(spec_KxHxWx4)
  hw = tuple(spec.shape[-3:-1])
  if np.ndim(mask_HxW) != 2 or tuple(np.shape(mask_HxW)) != hw:
    raise ValueError(f'mask of shape {tuple(np.shape(mask_HxW))} does not match the spectral volume of shape '
                     f'{tuple(spec.shape)}: expected a mask of shape {hw}')
  weight = jnp.asarray(feather_mask(mask_HxW, feather_px))
  return spec * weight[:, :, None]
