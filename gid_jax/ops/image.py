"""Image operations below the models: block pooling, exact-size upsampling, push-pull hole filling."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def avg_pool(x_BxHxWxC: jax.Array, factor: int) -> jax.Array:
  """Average over factor x factor blocks (sizes not divisible by the factor are edge-padded)."""
  if factor == 1:
    return x_BxHxWxC
  b, h, w, c = x_BxHxWxC.shape
  ph, pw = -h % factor, -w % factor
  if ph or pw:
    x_BxHxWxC = jnp.pad(x_BxHxWxC, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  h2, w2 = (h + ph) // factor, (w + pw) // factor
  return x_BxHxWxC.reshape(b, h2, factor, w2, factor, c).mean(axis=(2, 4))


def upsample_to(x_BxHxWxC: jax.Array, height: int, width: int) -> jax.Array:
  """Nearest-neighbour upsampling to an exact size."""
  b, _, _, c = x_BxHxWxC.shape
  return jax.image.resize(x_BxHxWxC, (b, height, width, c), method='nearest')


def fill_holes(x_BxHxWxC: jax.Array, mask_BxHxWx1: jax.Array) -> jax.Array:
  """Push-pull hole filling: keep x where mask = 1, interpolate from coarser levels elsewhere."""
  h, w = x_BxHxWxC.shape[1:3]
  if h <= 1 and w <= 1:
    return x_BxHxWxC
  num = avg_pool(x_BxHxWxC * mask_BxHxWx1, 2)
  den = avg_pool(mask_BxHxWx1, 2)
  known = (den > 0).astype(x_BxHxWxC.dtype)
  coarse = fill_holes(num / jnp.maximum(den, 1e-8), known)
  up = upsample_to(coarse, h, w)
  return x_BxHxWxC * mask_BxHxWx1 + up * (1.0 - mask_BxHxWx1)
