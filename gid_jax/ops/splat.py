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
is 0. It is jittable and differentiable (reverse mode) with respect to x, flow and importance on any
backend (the reference is CUDA-only), in one of two implementations of the same arithmetic (``impl``):

* 'xla': a JAX scatter-add (with a hand-written backward: a gather); on CPU the sources are taken in
  cache-sized chunks and the backward's channel sums are written as matrix products. GPUs and TPUs always
  run this one.
* 'native': the C++ kernels of gid_jax.ops.native (XLA FFI custom calls, CPU only, built on first use),
  which also normalise and do the normalisation's backward; the CPU default where they could be built.

benchmarks/splat.py measures both against torch and NumPy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gid_jax.ops import native

MODES = ('sum', 'average', 'linear', 'softmax')
IMPLS = ('auto', 'native', 'xla')
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


def _chunk_rows(n: int, c: int) -> int:
  """Sources per chunk of the CPU splat (c: floats per source).

  An output of up to 2 Mi floats (8 MiB) is done in one piece: scattering into it in several calls cost
  more than it saved (at 1 x 160 x 256 x 16, 5 chunks ran about 2x slower than one). A larger one is done
  in chunks whose 4 x rows x c corner updates take about 256 Ki floats (1 MiB), so that producing,
  scattering and (backward) gathering them stays in the cache (benchmarks/splat.py prints what this buys
  at 1 x 640 x 1024 x 16); at least 2048 rows, each chunk being a loop trip.
  """
  if n * c <= 2**21:
    return n
  return min(n, max(2048, 2**16 // c))


def _corners(gx: jax.Array, gy: jax.Array, base_R: jax.Array, h: int, w: int, n: int):
  """Where sources land: the four bilinear corners of the absolute targets (gx, gy) in images that start
  at flat pixel ``base`` (b * h * w).

  Returns ``index_Rx4`` (flat target pixel of each corner; n for a corner outside the image, a row the
  scatter writes into and throws away), ``weight_Rx4`` (corner order (0,0), (1,0), (0,1), (1,1) as
  (dx, dy)), the fractional parts ``fx_R``, ``fy_R``, and ``live_Rx2``: where the target moves with the flow
  (finite and not clipped), i.e. where d target / d flow is 1 rather than 0. All of length R.
  """
  finite = jnp.isfinite(gx) & jnp.isfinite(gy)
  live = jnp.stack([finite & (gx >= -2.0) & (gx <= w + 1.0), finite & (gy >= -2.0) & (gy <= h + 1.0)], -1)
  # Clipping to one pixel beyond the border changes no kept corner (anything further out has both of its
  # corners outside), keeps the int32 cast defined for huge flows, and sends non-finite targets outside
  # with finite weights, so that no NaN reaches the gradients through 0 * NaN.
  gx = jnp.where(finite, jnp.clip(gx, -2.0, w + 1.0), -2.0)
  gy = jnp.where(finite, jnp.clip(gy, -2.0, h + 1.0), -2.0)
  x0f, y0f = jnp.floor(gx), jnp.floor(gy)
  fx, fy = gx - x0f, gy - y0f
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  index, weight = [], []
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      index.append(jnp.where(inside, base_R + yi * w + xi, n))
      weight.append((fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy))
  return jnp.stack(index, -1), jnp.stack(weight, -1), fx, fy, live


def _over_chunks(n: int, chunk: int, body, init):
  """``body(start, fresh_R, carry)`` over chunks of ``chunk`` sources covering 0..n-1 in order.

  Every chunk has the full length (one compiled body): the last one starts at n - chunk, and ``fresh_R``
  marks its rows that no earlier chunk did (a scatter must not add those twice; a gather may redo them).
  """
  if n == 0:
    return init
  num = -(-n // chunk)

  def step(i, carry):
    start = jnp.minimum(i * chunk, n - chunk)
    return body(start, start + jnp.arange(chunk, dtype=jnp.int32) >= i * chunk, carry)

  return jax.lax.fori_loop(0, num, step, init) if num > 1 else step(0, init)


def _by_platform(fn, chunk: int | None, n: int, c: int, *args):
  """``fn(*args, chunk=...)``: on CPU in chunks of ``_chunk_rows`` sources, elsewhere in one piece (a GPU
  or TPU scatter wants all the work at once). An explicit ``chunk`` is used everywhere."""
  if chunk is not None:
    return fn(*args, chunk=min(chunk, n))
  return jax.lax.platform_dependent(*args, cpu=functools.partial(fn, chunk=_chunk_rows(n, c)),
                                    default=functools.partial(fn, chunk=n))


def _use_native(impl: str, dtype) -> bool:
  """Whether the CPU branch runs the C++ kernels of gid_jax.ops.native (see ``softmax_splat``). 'auto'
  builds them only where JAX's default backend is the CPU: a GPU or TPU job does not need a compiler."""
  if impl == 'xla' or (impl == 'auto' and jax.default_backend() != 'cpu'):
    return False
  ok = jnp.dtype(dtype) in (jnp.float32, jnp.float64) and native.available()
  if impl == 'native' and not ok:
    raise ValueError(f"impl='native' needs the CPU splat kernel for {jnp.dtype(dtype).name}: "
                     f"{'float32/float64 only' if native.available() else 'it could not be built'}")
  return ok


def _sum_channels(a_NxC: jax.Array) -> jax.Array:
  """Sum over the last axis, keeping it (size 1), as a matrix-vector product: the same reductions written
  as sums became YNNPACK fusions on XLA:CPU that took half of the splat's backward."""
  ones = jnp.ones((a_NxC.shape[-1], 1), a_NxC.dtype)
  return jnp.matmul(a_NxC, ones, precision=jax.lax.Precision.HIGHEST)


def _source_width(x_NxC: jax.Array, z_Nx1: jax.Array | None, coverage: bool) -> int:
  """Floats per source in ``_source_values``."""
  return x_NxC.shape[1] + (z_Nx1 is not None) + coverage


def _source_values(x_RxC: jax.Array, z_Rx1: jax.Array | None, coverage: bool) -> jax.Array:
  """What every source splats: [x z, z] with a weight z, else x; then a column of ones for the coverage."""
  cols = [x_RxC] if z_Rx1 is None else [x_RxC * z_Rx1, z_Rx1]
  if coverage:
    cols.append(jnp.ones_like(x_RxC[:, :1]))
  return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bilinear_scatter(x_NxC: jax.Array, z_Nx1: jax.Array | None, flow_BxHxWx2: jax.Array, coverage: bool,
                      chunk: int | None) -> jax.Array:
  """sum over sources p and their corners q of w_q(p) v(p), added at q, with v = _source_values(x, z,
  coverage): (N, C'), N = B * H * W.

  Scatter-adds of the corner updates (each source's four in a row, so one pass over the output), the
  source values made chunk by chunk (never all N at once), and a hand-written VJP: the backward gathers
  the four corners of every source and does elementwise work, where JAX's own transpose of the scatter and
  of the weights built several times more XLA:CPU work (benchmarks/splat.py). Reverse mode only (grad,
  vjp): forward-mode differentiation (jvp) is not supported.
  """
  _, h, w, _ = flow_BxHxWx2.shape
  fn = functools.partial(_scatter_chunks, h=h, w=w, coverage=coverage)
  return _by_platform(fn, chunk, x_NxC.shape[0], _source_width(x_NxC, z_Nx1, coverage), x_NxC, z_Nx1,
                      *_sources(flow_BxHxWx2))


def _sources(flow_BxHxWx2: jax.Array):
  """Per source (flat, N): absolute target x and y, and the flat index of its image's first pixel."""
  b, h, w, _ = flow_BxHxWx2.shape
  gx, gy, _ = _targets(flow_BxHxWx2)
  base = jnp.broadcast_to((jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None], (b, h, w))
  return gx.reshape(-1), gy.reshape(-1), base.reshape(-1)


def _piece(a: jax.Array | None, start, chunk: int):
  return None if a is None else jax.lax.dynamic_slice_in_dim(a, start, chunk)


def _scatter_chunks(x_NxC, z_Nx1, gx_N, gy_N, base_N, *, h, w, coverage, chunk):
  n = x_NxC.shape[0]
  width = _source_width(x_NxC, z_Nx1, coverage)

  def body(start, fresh_R, acc):
    piece = lambda a: _piece(a, start, chunk)
    index_Rx4, weight_Rx4, *_ = _corners(piece(gx_N), piece(gy_N), piece(base_N), h, w, n)
    index_Rx4 = jnp.where(fresh_R[:, None], index_Rx4, n)
    v = _source_values(piece(x_NxC), piece(z_Nx1), coverage)
    updates = (v[:, None, :] * weight_Rx4[..., None]).reshape(4 * chunk, width)
    return acc.at[index_Rx4.reshape(4 * chunk)].add(updates, mode='promise_in_bounds')

  return _over_chunks(n, chunk, body, jnp.zeros((n + 1, width), x_NxC.dtype))[:n]


def _gather_chunks(x_NxC, z_Nx1, g_NxW, gx_N, gy_N, base_N, *, h, w, coverage, chunk):
  n, c = x_NxC.shape
  g_pad = jnp.concatenate([g_NxW, jnp.zeros((1, g_NxW.shape[1]), g_NxW.dtype)])  # row n: dropped corners
  highest = jax.lax.Precision.HIGHEST

  def body(start, fresh_R, carry):
    del fresh_R  # every row's gradient is its own: redoing one writes the same values
    piece = lambda a: _piece(a, start, chunk)
    d_x, d_z, d_flow = carry
    index_Rx4, weight_Rx4, fx, fy, live_Rx2 = _corners(piece(gx_N), piece(gy_N), piece(base_N), h, w, n)
    x, z = piece(x_NxC), piece(z_Nx1)
    g_Rx4xW = g_pad.at[index_Rx4].get(mode='promise_in_bounds')
    d_v = jnp.einsum('nk,nkc->nc', weight_Rx4, g_Rx4xW, precision=highest)  # d loss / d source values
    d_w = jnp.einsum('nkc,nc->nk', g_Rx4xW, _source_values(x, z, coverage), precision=highest)
    # weight = (1 - fx)(1 - fy), fx (1 - fy), (1 - fx) fy, fx fy
    d_fx = (1.0 - fy) * (d_w[:, 1] - d_w[:, 0]) + fy * (d_w[:, 3] - d_w[:, 2])
    d_fy = (1.0 - fx) * (d_w[:, 2] - d_w[:, 0]) + fx * (d_w[:, 3] - d_w[:, 1])
    d_f = jnp.where(live_Rx2, jnp.stack([d_fx, d_fy], -1), 0.0)
    put = lambda whole, part: jax.lax.dynamic_update_slice_in_dim(whole, part.astype(whole.dtype), start, 0)
    if z is None:
      return put(d_x, d_v[:, :c]), None, put(d_flow, d_f)
    # v = [x z, z]: d x = d v[:c] z, d z = <d v[:c], x> + d v[c]
    return (put(d_x, d_v[:, :c] * z), put(d_z, _sum_channels(d_v[:, :c] * x) + d_v[:, c:c + 1]),
            put(d_flow, d_f))

  init = (jnp.zeros_like(x_NxC), None if z_Nx1 is None else jnp.zeros_like(z_Nx1), jnp.zeros((n, 2), gx_N.dtype))
  return _over_chunks(n, chunk, body, init)


def _bilinear_scatter_fwd(x_NxC, z_Nx1, flow_BxHxWx2, coverage, chunk):
  return _bilinear_scatter(x_NxC, z_Nx1, flow_BxHxWx2, coverage, chunk), (x_NxC, z_Nx1, flow_BxHxWx2)


def _bilinear_scatter_bwd(coverage, chunk, res, g_NxW):
  x_NxC, z_Nx1, flow = res
  _, h, w, _ = flow.shape
  fn = functools.partial(_gather_chunks, h=h, w=w, coverage=coverage)
  d_x, d_z, d_flow = _by_platform(fn, chunk, x_NxC.shape[0], g_NxW.shape[1], x_NxC, z_Nx1, g_NxW,
                                  *_sources(flow))
  return d_x, d_z, d_flow.reshape(flow.shape).astype(flow.dtype)


_bilinear_scatter.defvjp(_bilinear_scatter_fwd, _bilinear_scatter_bwd)


@jax.custom_vjp
def _normalize(num_BxHxWxC: jax.Array, den_BxHxWx1: jax.Array) -> jax.Array:
  return num_BxHxWxC / den_BxHxWx1


def _normalize_fwd(num, den):
  out = num / den
  return out, (out, den)


def _normalize_bwd(res, g):
  out, den = res
  d_num = g / den
  return d_num, -_sum_channels(d_num * out)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


def _xla_sums(x_NxC, z_Nx1, flow_BxHxWx2, eps, *, coverage: bool, normalize: bool, chunk: int | None):
  """(out (N, C), extra (N, E)) with JAX's scatter: out = the splatted x z (x without z), divided by the
  splatted z (or, without z, the coverage) + eps when ``normalize``; extra = the splatted [z, 1] (E = has z
  + coverage)."""
  c = x_NxC.shape[1]
  acc = _bilinear_scatter(x_NxC, z_Nx1, flow_BxHxWx2, coverage, chunk)
  num, extra = acc[:, :c], acc[:, c:]
  return (_normalize(num, extra[:, :1] + eps) if normalize else num), extra


def _native_call(kind: str, outs, x_NxC, z_Nx1, flow_BxHxWx2, *args, eps, **attrs):
  """Call the C++ kernel ``kind`` ('scatter' or 'gather') on x, z (an empty (0, 1) when there is none),
  the flow as (N, 2), ``args`` and eps (as a 1-element array)."""
  b, h, w, _ = flow_BxHxWx2.shape
  n = x_NxC.shape[0]
  z = jnp.zeros((0, 1), x_NxC.dtype) if z_Nx1 is None else z_Nx1
  target = native.TARGETS[kind, 'f64' if x_NxC.dtype == jnp.float64 else 'f32']
  call = jax.ffi.ffi_call(target, outs, vmap_method='sequential')
  return call(x_NxC, z, flow_BxHxWx2.reshape(n, 2), *args, jnp.reshape(eps, (1,)).astype(x_NxC.dtype),
              b=b, h=h, w=w, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _native_sums(x_NxC, z_Nx1, flow_BxHxWx2, eps, coverage: bool, normalize: bool):
  """``_xla_sums`` in the C++ kernels of gid_jax.ops.native (CPU only): the splat, the coverage and the
  normalisation in one pass over the sources and one over the output; the VJP is one more kernel (the
  gather of the corners' cotangents, with the normalisation's backward)."""
  n, c = x_NxC.shape
  e = (z_Nx1 is not None) + coverage
  outs = (jax.ShapeDtypeStruct((n, c), x_NxC.dtype), jax.ShapeDtypeStruct((n, e), x_NxC.dtype))
  return _native_call('scatter', outs, x_NxC, z_Nx1, flow_BxHxWx2, eps=eps, coverage=coverage,
                      normalize=normalize)


def _native_sums_fwd(x_NxC, z_Nx1, flow_BxHxWx2, eps, coverage, normalize):
  out, extra = _native_sums(x_NxC, z_Nx1, flow_BxHxWx2, eps, coverage, normalize)
  return (out, extra), (x_NxC, z_Nx1, flow_BxHxWx2, eps, out, extra)


def _native_sums_bwd(coverage, normalize, res, g):
  x_NxC, z_Nx1, flow, eps, out, extra = res
  g_out, g_extra = g
  n, c = x_NxC.shape
  outs = (jax.ShapeDtypeStruct((n, c), x_NxC.dtype),
          jax.ShapeDtypeStruct((0 if z_Nx1 is None else n, 1), x_NxC.dtype),
          jax.ShapeDtypeStruct((n, 2), x_NxC.dtype))
  # The kernel also does the normalisation's backward (that of _normalize), row by row as it reads them.
  d_x, d_z, d_flow = _native_call('gather', outs, x_NxC, z_Nx1, flow, g_out, g_extra, out, extra, eps=eps,
                                  coverage=coverage, normalize=normalize)
  return (d_x, None if z_Nx1 is None else d_z, d_flow.reshape(flow.shape).astype(flow.dtype),
          jnp.zeros_like(eps))


_native_sums.defvjp(_native_sums_fwd, _native_sums_bwd)


def _sums(x_NxC, z_Nx1, flow_BxHxWx2, eps, *, coverage: bool, normalize: bool, chunk: int | None,
          impl: str):
  """``_xla_sums`` on the backend at hand: on CPU the C++ kernels when ``impl`` allows (see
  ``softmax_splat``), else XLA's scatter (whose chunking per backend is ``_by_platform``'s)."""
  xla = functools.partial(_xla_sums, coverage=coverage, normalize=normalize, chunk=chunk)
  if chunk is not None or not _use_native(impl, x_NxC.dtype):
    return xla(x_NxC, z_Nx1, flow_BxHxWx2, eps)
  return jax.lax.platform_dependent(x_NxC, z_Nx1, flow_BxHxWx2, eps, default=xla,
                                    cpu=functools.partial(_native_sums, coverage=coverage, normalize=normalize))


@functools.partial(jax.jit, static_argnames=('mode', 'return_mask', 'chunk', 'impl'))
def softmax_splat(x_BxHxWxC: jax.Array, flow_BxHxWx2: jax.Array, importance_BxHxWx1: jax.Array | None = None,
                  mode: str = 'softmax', clip: float = 20.0, eps: float = 1e-7, return_mask: bool = False,
                  chunk: int | None = None, impl: str = 'auto'):
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
    chunk: sources per scatter (and per gather in the backward). Default: on CPU chunks whose corner
      updates fit the cache, elsewhere all at once. The result does not depend on it beyond float rounding.
      Giving it selects the pure-JAX scatter (impl='xla') on every backend.
    impl: how the scatter runs on CPU: 'native' in the C++ kernels of gid_jax.ops.native (built on
      first use; several times faster than XLA:CPU's scatter), 'xla' as a JAX scatter-add, 'auto' (the
      default) native when it could be built and the CPU is JAX's default backend, else xla. GPUs and
      TPUs always run the JAX scatter. The result does not depend on it beyond float rounding.
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
    raise ValueError(f'chunk must be a positive integer (sources per scatter) or None, got {chunk!r}')
  if impl not in IMPLS:
    raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
  if mode in ('linear', 'softmax') and importance_BxHxWx1 is None:
    raise ValueError(f'mode {mode!r} needs importance_BxHxWx1')
  _check(x_BxHxWxC, flow_BxHxWx2, importance_BxHxWx1 if mode in ('linear', 'softmax') else None)
  dtype = jnp.result_type(x_BxHxWxC.dtype, flow_BxHxWx2.dtype, jnp.float32)
  x = x_BxHxWxC.astype(dtype)
  flow = flow_BxHxWx2.astype(dtype)
  b, h, w, c = x.shape
  z = None
  if mode in ('linear', 'softmax'):
    z = importance_BxHxWx1.astype(dtype)
    if mode == 'softmax':
      z = jnp.exp(jnp.clip(z, -clip, clip))
    z = z.reshape(b * h * w, 1)
  # 'average' normalises by the plain bilinear coverage, which is also the mask's; 'linear' and 'softmax'
  # need it as a column of its own for the mask (their normaliser is Z-weighted).
  with_coverage = return_mask or mode == 'average'
  out, extra = _sums(x.reshape(b * h * w, c), z, flow, jnp.asarray(eps, dtype), coverage=with_coverage,
                     normalize=mode != 'sum', chunk=chunk, impl=impl)
  out = out.reshape(b, h, w, c)
  if not return_mask:
    return out
  coverage = jax.lax.stop_gradient(extra[:, -1:]).reshape(b, h, w, 1)
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
