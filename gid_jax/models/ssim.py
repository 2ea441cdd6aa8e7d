"""Differentiable SSIM (Wang et al. 2004) in JAX, the same numbers as scikit-image's ``structural_similarity``
with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (what gid_jax.render.evaluate
reports): an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, local
statistics over the pixels whose window lies inside the image, averaged over pixels and channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA = 1.5
RADIUS = int(3.5 * SIGMA + 0.5)  # scipy.ndimage's truncate=3.5, as scikit-image uses it
K1, K2 = 0.01, 0.03


def _window() -> np.ndarray:
  x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / SIGMA) ** 2)
  return w / w.sum()


def _blur_valid(x_BxHxWxC: jax.Array) -> jax.Array:
  """Separable Gaussian filter, 'valid' positions only: (B, H - 10, W - 10, C)."""
  w = jnp.asarray(_window(), x_BxHxWxC.dtype)
  n = w.shape[0]
  h, wd = x_BxHxWxC.shape[1:3]
  rows = sum(w[i] * x_BxHxWxC[:, i:h - n + 1 + i] for i in range(n))
  return sum(w[i] * rows[:, :, i:wd - n + 1 + i] for i in range(n))


def ssim(a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
  """Mean SSIM per image, (B,), for pixel values in ``value_range`` (gid_jax images: [-1, 1]).

  SSIM is not shift-invariant (its luminance term compares means), so the images are first mapped to
  [0, 1], as scikit-image sees uint8 images scaled by 1/255.
  """
  a = jnp.asarray(a_BxHxWxC)
  b = jnp.asarray(b_BxHxWxC)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f'expected two images of the same shape (B, H, W, C), got {a.shape} and {b.shape}')
  if min(a.shape[1:3]) < 2 * RADIUS + 1:
    raise ValueError(f'SSIM needs images of at least {2 * RADIUS + 1} x {2 * RADIUS + 1} pixels, got {a.shape[1:3]}')
  dtype = jnp.result_type(a.dtype, b.dtype, jnp.float32)
  lo, hi = value_range
  a, b = (a.astype(dtype) - lo) / (hi - lo), (b.astype(dtype) - lo) / (hi - lo)
  c1, c2 = K1 ** 2, K2 ** 2
  mu_a, mu_b = _blur_valid(a), _blur_valid(b)
  var_a = _blur_valid(a * a) - mu_a * mu_a
  var_b = _blur_valid(b * b) - mu_b * mu_b
  cov = _blur_valid(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return jnp.mean(s, axis=(1, 2, 3))
