"""Forward warping (softmax splatting) of images and feature maps, and a backward-warp baseline.

Every source pixel p of ``x_BxHxWxC`` is moved to p + flow(p) and added bilinearly to the four integer
pixels around that point (Niklaus & Liu 2020, "Softmax Splatting for Video Frame Interpolation").
``flow_BxHxWx2`` is in pixels, channel 0 = x (right), channel 1 = y (down); ``importance_BxHxWx1`` is the
per-source metric Z that decides who wins where several sources land on the same pixel. The result has the
shape of ``x``; ``mask_BxHxWx1`` marks the pixels that received something (the rest is for the synthesis
network to inpaint).

Modes, as in the reference ``softsplat.py`` (w = bilinear weight of a source at a target pixel):

    sum       out = sum w x
    average   out = sum w x / (sum w + eps)
    linear    out = sum w Z x / (sum w Z + eps)                        (Z >= 0 expected)
    softmax   out = sum w exp(Z) x / (sum w exp(Z) + eps),  Z clipped to [-clip, clip]

Corners outside the image and sources with a non-finite target are dropped; a pixel that receives nothing
is 0. All of it is one scatter-add (with a hand-written backward: one gather), so it is jittable and
differentiable (reverse mode) with respect to x, flow and importance on any backend (the reference is
CUDA-only).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MODES = ('sum', 'average', 'linear', 'softmax')
# Total bilinear weight below which a target pixel counts as a hole: it was only grazed by the far corner
# of some source, and its normalised value is too noisy to keep.
MASK_THRESHOLD = 1e-3


def _check(x_BxHxWxC, flow_BxHxWx2, importance_BxHxWx1=None) -> None:
  if x_BxHxWxC.ndim != 4:
    raise ValueError(f'expected x of shape (B, H, W, C), got {x_BxHxWxC.shape}')
  b, h, w, _ = x_BxHxWxC.shape
  if flow_BxHxWx2.shape != (b, h, w, 2):
    raise ValueError(f'expected flow of shape {(b, h, w, 2)} for x of shape {x_BxHxWxC.shape}, '
                     f'got {flow_BxHxWx2.shape}')
  if importance_BxHxWx1 is not None and importance_BxHxWx1.shape != (b, h, w, 1):
    raise ValueError(f'expected importance of shape {(b, h, w, 1)} for x of shape {x_BxHxWxC.shape}, '
                     f'got {importance_BxHxWx1.shape}')


def _targets(flow_BxHxWx2: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Absolute target coordinates gx, gy (B, H, W) and whether they are finite."""
  _, h, w, _ = flow_BxHxWx2.shape
  gx = jnp.arange(w, dtype=flow_BxHxWx2.dtype)[None, None, :] + flow_BxHxWx2[..., 0]
  gy = jnp.arange(h, dtype=flow_BxHxWx2.dtype)[None, :, None] + flow_BxHxWx2[..., 1]
  return gx, gy, jnp.isfinite(gx) & jnp.isfinite(gy)


def _geometry(flow_BxHxWx2: jax.Array):
  """Where every source pixel lands: its four bilinear corners and what the gradient needs.

  Returns (N = B * H * W) ``index_Nx4`` (flat target pixel of each corner; N for a corner outside the
  image, a row the scatter writes into and throws away), ``weight_Nx4`` (corner order (0,0), (1,0), (0,1),
  (1,1) as (dx, dy)), the fractional parts ``fx_N``, ``fy_N``, and ``live_Nx2``: where the target moves with
  the flow (finite and not clipped), i.e. where d target / d flow is 1 rather than 0.
  """
  b, h, w, _ = flow_BxHxWx2.shape
  n = b * h * w
  gx, gy, finite = _targets(flow_BxHxWx2)
  live = jnp.stack([finite & (gx >= -2.0) & (gx <= w + 1.0), finite & (gy >= -2.0) & (gy <= h + 1.0)], -1)
  # Clipping to one pixel beyond the border changes no kept corner (anything further out has both of its
  # corners outside), keeps the int32 cast defined for huge flows, and sends non-finite targets outside
  # with finite weights, so that no NaN reaches the gradients through 0 * NaN.
  gx = jnp.where(finite, jnp.clip(gx, -2.0, w + 1.0), -2.0)
  gy = jnp.where(finite, jnp.clip(gy, -2.0, h + 1.0), -2.0)
  x0f, y0f = jnp.floor(gx), jnp.floor(gy)
  fx, fy = gx - x0f, gy - y0f
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  base = (jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None]
  index, weight = [], []
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      index.append(jnp.where(inside, base + yi * w + xi, n))
      weight.append((fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy))
  flat = lambda a: a.reshape(n)
  return (jnp.stack([flat(i) for i in index], -1), jnp.stack([flat(v) for v in weight], -1), flat(fx), flat(fy),
          live.reshape(n, 2))


@jax.custom_vjp
def _bilinear_scatter(vals_NxC: jax.Array, flow_BxHxWx2: jax.Array) -> jax.Array:
  """sum over sources p and their corners q of w_q(p) vals(p), added at q: (N, C), N = B * H * W.

  One scatter-add of all 4N corner updates (one pass over the output, not four), and a hand-written VJP:
  the backward is one gather of the four corners of every source plus elementwise work, where JAX's own
  transpose of the scatter and of the weights built several times more XLA:CPU work (benchmarks/splat.py).
  Reverse mode only (grad, vjp): forward-mode differentiation (jvp) of splatting is not supported.
  """
  n, c = vals_NxC.shape
  index_Nx4, weight_Nx4, *_ = _geometry(flow_BxHxWx2)
  updates = (vals_NxC[:, None, :] * weight_Nx4[..., None]).reshape(4 * n, c)
  acc = jnp.zeros((n + 1, c), vals_NxC.dtype).at[index_Nx4.reshape(4 * n)].add(updates, mode='promise_in_bounds')
  return acc[:n]


def _bilinear_scatter_fwd(vals_NxC, flow_BxHxWx2):
  return _bilinear_scatter(vals_NxC, flow_BxHxWx2), (vals_NxC, flow_BxHxWx2)


def _bilinear_scatter_bwd(res, g_NxC):
  vals_NxC, flow = res
  index_Nx4, weight_Nx4, fx, fy, live_Nx2 = _geometry(flow)
  g_pad = jnp.concatenate([g_NxC, jnp.zeros((1, g_NxC.shape[1]), g_NxC.dtype)])  # row N: dropped corners
  g_Nx4xC = g_pad.at[index_Nx4].get(mode='promise_in_bounds')
  d_vals = jnp.einsum('nk,nkc->nc', weight_Nx4, g_Nx4xC)
  d_w = jnp.einsum('nkc,nc->nk', g_Nx4xC, vals_NxC)  # d loss / d weight of each corner
  # weight = (1 - fx)(1 - fy), fx (1 - fy), (1 - fx) fy, fx fy
  d_fx = (1.0 - fy) * (d_w[:, 1] - d_w[:, 0]) + fy * (d_w[:, 3] - d_w[:, 2])
  d_fy = (1.0 - fx) * (d_w[:, 2] - d_w[:, 0]) + fx * (d_w[:, 3] - d_w[:, 1])
  d_flow = jnp.where(live_Nx2, jnp.stack([d_fx, d_fy], -1), 0.0)
  return d_vals, d_flow.reshape(flow.shape).astype(flow.dtype)


_bilinear_scatter.defvjp(_bilinear_scatter_fwd, _bilinear_scatter_bwd)


@functools.partial(jax.jit, static_argnames=('mode', 'return_mask'))
def softmax_splat(x_BxHxWxC: jax.Array, flow_BxHxWx2: jax.Array, importance_BxHxWx1: jax.Array | None = None,
                  mode: str = 'softmax', clip: float = 20.0, eps: float = 1e-7, return_mask: bool = False):
  """Forward-warp x by flow; returns (B, H, W, C) and, with ``return_mask``, also mask_BxHxWx1.

  Args:
    x_BxHxWxC: what to move (an image or a feature map).
    flow_BxHxWx2: where each source pixel goes, in pixels (x right, y down). Non-finite entries drop it.
    importance_BxHxWx1: the metric Z; needed for 'linear' and 'softmax', ignored otherwise.
    mode: 'sum', 'average', 'linear' or 'softmax' (see the module docstring).
    clip: Z is clipped to [-clip, clip] before exp in 'softmax' mode, so exp(Z) stays finite in float32.
    eps: added to the normaliser (as the reference does), so empty pixels give 0 instead of 0 / 0.
    return_mask: also return a float mask, 1 where the pixel received a total bilinear weight above
      MASK_THRESHOLD (whatever Z was), 0 in holes. It carries no gradient.
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if mode in ('linear', 'softmax') and importance_BxHxWx1 is None:
    raise ValueError(f'mode {mode!r} needs importance_BxHxWx1')
  _check(x_BxHxWxC, flow_BxHxWx2, importance_BxHxWx1 if mode in ('linear', 'softmax') else None)
  dtype = jnp.result_type(x_BxHxWxC.dtype, flow_BxHxWx2.dtype, jnp.float32)
  x = x_BxHxWxC.astype(dtype)
  flow = flow_BxHxWx2.astype(dtype)
  b, h, w, c = x.shape
  ones = jnp.ones((b, h, w, 1), dtype)
  if mode in ('linear', 'softmax'):
    z = importance_BxHxWx1.astype(dtype)
    if mode == 'softmax':
      z = jnp.exp(jnp.clip(z, -clip, clip))
    # The mask wants plain bilinear coverage, which the Z-weighted normaliser does not give.
    cols = [x * z, z] + ([ones] if return_mask else [])
  elif mode == 'average':
    cols = [x, ones]
  else:
    cols = [x] + ([ones] if return_mask else [])
  vals = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else x
  acc = _bilinear_scatter(vals.reshape(b * h * w, -1), flow).reshape(b, h, w, -1)
  out = acc[..., :c] if mode == 'sum' else acc[..., :c] / (acc[..., c:c + 1] + eps)
  if not return_mask:
    return out
  coverage = jax.lax.stop_gradient(acc[..., -1:])
  return out, (coverage > MASK_THRESHOLD).astype(dtype)


def splat_weight(disp_TxHxWx2: jax.Array) -> jax.Array:
  """Motion-aware splat importance (..., T, H, W, 2) -> (..., H, W, 1): mean over t of ||F_t(p)||_2.

  Bigger motion means foreground (SPEC.md section 5): in 'softmax' mode a fast-moving branch then wins over
  the static background it passes over.
  """
  disp = jnp.asarray(disp_TxHxWx2)
  disp = disp.astype(jnp.result_type(disp.dtype, jnp.float32))
  if disp.ndim < 4 or disp.shape[-1] != 2:
    raise ValueError(f'expected displacements of shape (..., T, H, W, 2), got {disp.shape}')
  sq = jnp.sum(jnp.square(disp), axis=-1)
  # sqrt has an infinite slope at 0 and static pixels are common: give them a zero gradient, not NaN.
  moving = sq > 0
  norm = jnp.where(moving, jnp.sqrt(jnp.where(moving, sq, 1.0)), 0.0)
  return jnp.mean(norm, axis=-3)[..., None]


@jax.jit
def backward_warp(x_BxHxWxC: jax.Array, flow_BxHxWx2: jax.Array) -> jax.Array:
  """Bilinear sampling of x at p + flow(p), (B, H, W, C); the baseline that splatting is compared with.

  Sample points outside the image take the value at the nearest border (edge clamp, like grid_sample's
  padding_mode='border'); a non-finite flow gives 0.
  """
  _check(x_BxHxWxC, flow_BxHxWx2)
  dtype = jnp.result_type(x_BxHxWxC.dtype, flow_BxHxWx2.dtype, jnp.float32)
  x = x_BxHxWxC.astype(dtype)
  b, h, w, c = x.shape
  gx, gy, finite = _targets(flow_BxHxWx2.astype(dtype))
  gx = jnp.where(finite, jnp.clip(gx, 0.0, w - 1.0), 0.0)
  gy = jnp.where(finite, jnp.clip(gy, 0.0, h - 1.0), 0.0)
  x0f, y0f = jnp.floor(gx), jnp.floor(gy)
  fx, fy = (gx - x0f)[..., None], (gy - y0f)[..., None]
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  base = (jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None]
  flat_NxC = x.reshape(b * h * w, c)

  def at(yi, xi):
    return flat_NxC[base + yi * w + xi]

  top = (1.0 - fx) * at(y0, x0) + fx * at(y0, x1)
  bottom = (1.0 - fx) * at(y1, x0) + fx * at(y1, x1)
  out = (1.0 - fy) * top + fy * bottom
  return jnp.where(finite[..., None], out, 0.0)
