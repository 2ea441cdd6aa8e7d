"""Benchmark: softmax splatting, JAX (jitted) against PyTorch ``index_add_`` and NumPy ``np.add.at``.

    python -m benchmarks.splat [--quick]

For every size (B x H x W x C, float32, flow uniform in [-5, 5] px, importance ~ N(0, 1)) it times the
forward softmax splat and forward + backward (the gradient with respect to x, flow and importance for a
random output cotangent). On CPU "JAX" is ``softmax_splat``'s default there, the C++ kernel of
gid_jax.ops.native, and "JAX XLA" the same splat with ``impl='xla'``: XLA's scatter-add (in chunks for
large inputs), which is what GPUs and TPUs run. NumPy has no autodiff, so it only runs forward; torch is
imported lazily and its rows say so when it is missing. Before timing, the three forward outputs must agree
to 1e-5 (and the JAX and torch gradients closely), so the comparison is between implementations of the same
function.

Each figure is the median over ``repeats`` calls after a warm-up call (which for JAX includes the compile),
timed in three passes of consecutive calls per implementation (see ``_timed_blocks`` for why). The load
average is printed with the table: on a shared 2-core machine other work changes the numbers.

The "floor" column is what memory traffic alone would cost: the bytes the splat must at least move
(forward: x, flow and importance read once, the output and its normaliser written once; forward + backward
adds reading the output cotangent and writing the three gradients), all float32, divided by the copy
bandwidth measured in the same run with ``np.copyto`` on 256 MB.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.ops import native, splat

SIZES = ((1, 160, 256, 16), (1, 640, 1024, 16))
MAX_FLOW = 5.0
CLIP = 20.0
EPS = 1e-7


def numpy_softmax_splat(x_BxHxWxC, flow_BxHxWx2, importance_BxHxWx1, clip=CLIP, eps=EPS):
  """Forward softmax splat with ``np.add.at``, float32, same semantics as ``splat.softmax_splat``."""
  b, h, w, c = x_BxHxWxC.shape
  n = b * h * w
  e = np.exp(np.clip(importance_BxHxWx1, -clip, clip))
  vals_NxC1 = np.concatenate([x_BxHxWxC * e, e], axis=-1).reshape(n, c + 1)
  gx = np.arange(w, dtype=np.float32)[None, None, :] + flow_BxHxWx2[..., 0]
  gy = np.arange(h, dtype=np.float32)[None, :, None] + flow_BxHxWx2[..., 1]
  finite = np.isfinite(gx) & np.isfinite(gy)
  gx = np.where(finite, np.clip(gx, -2, w + 1), -2).astype(np.float32)
  gy = np.where(finite, np.clip(gy, -2, h + 1), -2).astype(np.float32)
  x0f, y0f = np.floor(gx), np.floor(gy)
  fx, fy = gx - x0f, gy - y0f
  x0, y0 = x0f.astype(np.int64), y0f.astype(np.int64)
  base = (np.arange(b) * (h * w))[:, None, None]
  acc_NxC1 = np.zeros((n + 1, c + 1), np.float32)  # row n collects the dropped corners
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      index = np.where(inside, base + yi * w + xi, n).reshape(n)
      weight = ((fx if dx else 1 - fx) * (fy if dy else 1 - fy)).reshape(n, 1)
      np.add.at(acc_NxC1, index, vals_NxC1 * weight)
  acc = acc_NxC1[:n].reshape(b, h, w, c + 1)
  return acc[..., :c] / (acc[..., c:] + eps)


def torch_softmax_splat(x_BxHxWxC, flow_BxHxWx2, importance_BxHxWx1, clip=CLIP, eps=EPS):
  """Forward softmax splat with ``index_add_`` on torch tensors (NHWC, float32); autograd gives backward."""
  import torch
  b, h, w, c = x_BxHxWxC.shape
  n = b * h * w
  e = torch.exp(importance_BxHxWx1.clamp(-clip, clip))
  vals_NxC1 = torch.cat([x_BxHxWxC * e, e], dim=-1).reshape(n, c + 1)
  gx = torch.arange(w, dtype=flow_BxHxWx2.dtype)[None, None, :] + flow_BxHxWx2[..., 0]
  gy = torch.arange(h, dtype=flow_BxHxWx2.dtype)[None, :, None] + flow_BxHxWx2[..., 1]
  finite = torch.isfinite(gx) & torch.isfinite(gy)
  gx = torch.where(finite, gx.clamp(-2, w + 1), torch.full_like(gx, -2.0))
  gy = torch.where(finite, gy.clamp(-2, h + 1), torch.full_like(gy, -2.0))
  x0f, y0f = torch.floor(gx), torch.floor(gy)
  fx, fy = gx - x0f, gy - y0f
  x0, y0 = x0f.long(), y0f.long()
  base = (torch.arange(b) * (h * w))[:, None, None]
  acc_NxC1 = vals_NxC1.new_zeros(n + 1, c + 1)  # row n collects the dropped corners
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      index = torch.where(inside, base + yi * w + xi, torch.full_like(xi, n)).reshape(n)
      weight = ((fx if dx else 1 - fx) * (fy if dy else 1 - fy)).reshape(n, 1)
      acc_NxC1.index_add_(0, index, vals_NxC1 * weight)
  acc = acc_NxC1[:n].reshape(b, h, w, c + 1)
  return acc[..., :c] / (acc[..., c:] + eps)


def _import_torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
  """Copy bandwidth in bytes/s (read + write counted), best of ``repeats`` ``np.copyto`` calls."""
  src = np.ones(megabytes * 2**20 // 4, np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)  # fault the pages in before timing
  best = np.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - t0)
  return 2 * src.nbytes / best


def floor_bytes(size, backward: bool) -> int:
  b, h, w, c = size
  n = b * h * w
  elems = n * (c + 3) + n * (c + 1)  # read x, flow, importance; write output and normaliser
  if backward:
    elems += n * c + n * (c + 3)  # read the output cotangent; write d x, d flow, d importance
  return 4 * elems


def _timed_blocks(fns: dict, repeats: int, passes: int = 3) -> dict:
  """Median seconds per name over ``repeats`` calls, taken as ``passes`` blocks of consecutive calls.

  Consecutive calls, because torch's OpenMP threads and XLA's thread pool keep spinning for a while after
  their work, which slowed whichever library ran next several-fold when calls were interleaved one by one;
  several passes, so that load that comes and goes on a shared machine hits every library alike.
  """
  times = {name: [] for name in fns}
  per_pass = max(1, -(-repeats // passes))
  for _ in range(passes):
    for name, fn in fns.items():
      fn()  # warm-up: compile (JAX) and caches, and lets the other library's threads go idle
      for _ in range(per_pass):
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def run(sizes=SIZES, repeats: int | None = None, out=print, bandwidth_mb: int = 256, seed: int = 0,
        use_torch: bool = True) -> list[dict]:
  """Times every size; ``repeats=None`` picks 30 rounds for small sizes and 5 for large ones."""
  torch = _import_torch() if use_torch else None
  bandwidth = measure_bandwidth(bandwidth_mb)
  rng = np.random.default_rng(seed)
  rows = []
  notes = [f'copy bandwidth (np.copyto, {bandwidth_mb} MB): {bandwidth / 1e9:.1f} GB/s']
  if torch is None:
    notes.append('torch not used: its columns are empty' if not use_torch else
                 'torch is not installed: its columns are empty (pip install torch==2.13.0)')
  else:
    notes.append(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
  notes.append(f'jax {jax.__version__} on {jax.devices()[0].platform}')
  load_before = os.getloadavg()[0]

  def jitted(impl='auto'):
    fwd = jax.jit(functools.partial(splat.softmax_splat, mode='softmax', clip=CLIP, eps=EPS, impl=impl))

    @jax.jit
    def fwd_bwd(x, flow, importance, cotangent):
      out, vjp = jax.vjp(fwd, x, flow, importance)
      return out, vjp(cotangent)

    return fwd, fwd_bwd

  fwd, fwd_bwd = jitted()
  with_kernel = jax.devices()[0].platform == 'cpu' and native.available()
  notes.append('JAX runs the C++ CPU kernel (gid_jax.ops.native); "JAX XLA ms" is the pure-JAX scatter'
               if with_kernel else 'JAX runs its pure-JAX scatter (no CPU kernel here)')
  xla_fwd, xla_fwd_bwd = jitted('xla')

  for size in sizes:
    b, h, w, c = size
    x = rng.normal(size=size).astype(np.float32)
    flow = rng.uniform(-MAX_FLOW, MAX_FLOW, size=(b, h, w, 2)).astype(np.float32)
    importance = rng.normal(size=(b, h, w, 1)).astype(np.float32)
    cotangent = rng.normal(size=size).astype(np.float32)
    jargs = [jnp.asarray(a) for a in (x, flow, importance)]
    jcot = jnp.asarray(cotangent)

    # Agreement before timing: a fast wrong answer is not a result.
    want = np.asarray(fwd(*jargs))
    diffs = {'numpy': _max_diff(numpy_softmax_splat(x, flow, importance), want)}
    if torch is not None:
      targs = [torch.from_numpy(a).requires_grad_() for a in (x, flow, importance)]
      tout = torch_softmax_splat(*targs)
      tgrads = torch.autograd.grad(tout, targs, torch.from_numpy(cotangent))
      diffs['torch'] = _max_diff(tout.detach().numpy(), want)
      _, jgrads = fwd_bwd(*jargs, jcot)
      for name, tg, jg in zip(('x', 'flow', 'importance'), tgrads, jgrads):
        scale = max(1.0, float(np.max(np.abs(np.asarray(jg)))))
        gdiff = _max_diff(tg.numpy(), jg) / scale
        if gdiff > 1e-4:
          raise AssertionError(f'{size}: torch and JAX gradients w.r.t. {name} differ by {gdiff:.2e} (relative)')
    for name, d in diffs.items():
      if d > 1e-5:
        raise AssertionError(f'{size}: {name} and JAX forward outputs differ by {d:.2e} > 1e-5')
    notes.append(f'{"x".join(map(str, size))}: max |forward - JAX|: '
                 + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))

    n_rep = repeats or (30 if h * w * c <= 2**20 else 5)
    fns = {
        'jax': lambda: jax.block_until_ready(fwd(*jargs)),
        'numpy': lambda: numpy_softmax_splat(x, flow, importance),
        'jax_bwd': lambda: jax.block_until_ready(fwd_bwd(*jargs, jcot)),
    }
    if with_kernel:
      # What the kernel buys: the same splat as XLA's scatter-add (chunked on CPU for large inputs).
      fns['jax_xla'] = lambda: jax.block_until_ready(xla_fwd(*jargs))
      fns['jax_xla_bwd'] = lambda: jax.block_until_ready(xla_fwd_bwd(*jargs, jcot))
    if torch is not None:
      tcot = torch.from_numpy(cotangent)

      def torch_fwd():
        with torch.no_grad():
          return torch_softmax_splat(*targs)

      def torch_bwd():
        out = torch_softmax_splat(*targs)
        return torch.autograd.grad(out, targs, tcot)

      fns['torch'] = torch_fwd
      fns['torch_bwd'] = torch_bwd
    med = _timed_blocks(fns, n_rep)

    for backward in (False, True):
      sfx = '_bwd' if backward else ''
      jax_s = med['jax' + sfx]
      torch_s = med.get('torch' + sfx)
      numpy_s = None if backward else med['numpy']
      floor_s = floor_bytes(size, backward) / bandwidth
      rows.append({
          'size': 'x'.join(map(str, size)),
          'pass': 'forward+backward' if backward else 'forward',
          'repeats': n_rep,
          'jax_ms': jax_s * 1e3,
          'jax_xla_ms': med['jax_xla' + sfx] * 1e3 if 'jax_xla' + sfx in med else None,
          'torch_ms': None if torch_s is None else torch_s * 1e3,
          'numpy_ms': None if numpy_s is None else numpy_s * 1e3,
          'torch_over_jax': None if torch_s is None else torch_s / jax_s,
          'numpy_over_jax': None if numpy_s is None else numpy_s / jax_s,
          'floor_ms': floor_s * 1e3,
          'jax_over_floor': jax_s / floor_s,
          'bandwidth_gbs': bandwidth / 1e9,
      })

  notes.append(f'load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} '
               f'on {os.cpu_count()} cores')

  def fmt(v, spec):
    return '-' if v is None else format(v, spec)

  out('| size | pass | JAX ms | JAX XLA ms | torch ms | NumPy ms | torch/JAX | NumPy/JAX | floor ms | '
      'JAX/floor |')
  out('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    out(f'| {r["size"]} | {r["pass"]} | {r["jax_ms"]:.2f} | {fmt(r["jax_xla_ms"], ".2f")} | '
        f'{fmt(r["torch_ms"], ".2f")} | '
        f'{fmt(r["numpy_ms"], ".2f")} | {fmt(r["torch_over_jax"], ".1f")} | {fmt(r["numpy_over_jax"], ".1f")} | '
        f'{r["floor_ms"]:.3f} | {r["jax_over_floor"]:.0f} |')
  out('')
  for note in notes:
    out(f'- {note}')
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='only the small size, few repeats (a smoke test)')
  ap.add_argument('--repeats', type=int, default=None, help='timed rounds per size (default: by size)')
  args = ap.parse_args()
  if args.quick:
    run(sizes=SIZES[:1], repeats=args.repeats or 5)
  else:
    run(repeats=args.repeats)


if __name__ == '__main__':
  main()
