"""Benchmark: seamless loops (``sample --loop``) against plain sampling, on several photos and seeds.

    python -m benchmarks.loops [--photos FILE_OR_DIR ...] [--num-frames 100 200] [--seeds 0 1 2]
                               [--steps 50] [--guidance-scales 200 ...] [--checkpoint DIR]

For every photo, seed and loop length N (not multiples of the model's T, so a plain volume does not loop),
the same volume is played three ways: **plain** (``--loop`` off), **snap** (the ``--loop`` default: every
frequency bin moved to a whole number of cycles per loop) and, with ``--guidance-scales``, **guidance** (the
paper's motion self-guidance: w = 1.75, 2 recurrences, the given u in the paper's units, SPEC's is 200; its
own sampling run, about 80x the time of a plain one on a CPU). Measured on the trajectories F(n),
n = -1..N+1 (frame N is the one the loop returns to, i.e. frame 0 again):

* closure, position: mean |F(N) - F(0)| (px, Euclidean over x / y, mean over pixels);
* closure, velocity: mean |F'(N) - F'(0)| with central differences F'(n) = (F(n+1) - F(n-1)) / 2 (px / frame;
  the same difference at both ends, so an exactly periodic motion scores 0);
* RMS motion: sqrt(mean |F(n) - F(0)|^2) over the N frames (guidance must not drain the motion);
* seam: the step from the last frame back to the first, mean |F(0) - F(N-1)|, over the median
  frame-to-frame step mean |F(n+1) - F(n)| (1 = the seam is an ordinary frame);
* seconds of sampling (the motion model's DDIM run; trajectories are milliseconds).

Rows are means over photos and seeds; ratios are against plain at the same photo and seed. Photos: the
bundled example by default (model-size motion is in pixels of the model-size image).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gid_jax import animate
from gid_jax.diffusion import motion_sampler

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')


def photo_paths(items) -> list[str]:
  paths = []
  for item in items:
    if os.path.isdir(item):
      paths += sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTS))
    else:
      paths.append(item)
  return paths


def loop_metrics(disp_NxHxWx2: np.ndarray) -> dict:
  """Closure, RMS and seam of trajectories F(-1..N+1) (N + 3 frames; F(N) is where the loop returns)."""
  g = np.asarray(disp_NxHxWx2, np.float64)
  f = g[1:-1]  # F(0..N)
  n = len(f) - 1
  norm = lambda x: np.sqrt(np.sum(x ** 2, axis=-1)).mean()
  steps = [norm(f[i + 1] - f[i]) for i in range(n - 1)]  # the ordinary steps inside the clip
  return {'position': norm(f[n] - f[0]), 'velocity': norm((g[n + 2] - g[n]) / 2 - (g[2] - g[0]) / 2),
          'rms': float(np.sqrt(np.mean(np.sum((f[:n] - f[0]) ** 2, axis=-1)))),
          'seam': norm(f[0] - f[n - 1]) / max(float(np.median(steps)), 1e-12)}


def run(photos=(), num_frames=(100, 200), seeds=(0, 1, 2), steps: int = 50, guidance_scales=(),
        checkpoint: str | None = None, out=print) -> dict:
  sampler = motion_sampler.MotionSampler(checkpoint or animate.DEFAULT_CHECKPOINT)
  paths = photo_paths(photos) or [animate.EXAMPLE_PHOTO]
  guidance = float(sampler.config.sampling.get('guidance', 0.0))
  methods = ['plain', 'snap'] + [f'guidance u={u:g}' for u in guidance_scales]
  warm = set()

  def timed(photo, opts):
    """(spec, seconds): a plain run is timed compiled (it runs once first); a guided one, ~80x longer, is timed
    with its compile (a few seconds, one more run would double the benchmark)."""
    if photo.shape not in warm and not opts.loop:
      animate.sample_motion(sampler, photo, opts)
      warm.add(photo.shape)
    t0 = time.perf_counter()
    spec = animate.sample_motion(sampler, photo, opts)
    return spec, time.perf_counter() - t0

  rows = {(n, m): [] for n in num_frames for m in methods}
  for path in paths:
    photo = animate.load_photo(path)
    for seed in seeds:
      base = dict(steps=steps, seed=seed, guidance=guidance)
      plain_spec, plain_secs = None, None
      for n in num_frames:
        for m in methods:
          guided = m.startswith('guidance')
          opts = animate.Options(num_frames=n, loop=m != 'plain', loop_method='guidance' if guided else 'snap',
                                 loop_scale=float(m.split('=')[1]) if guided else 200.0, **base)
          if guided or plain_spec is None:
            spec, secs = timed(photo, opts)
            if not guided:
              plain_spec, plain_secs = spec, secs
          else:  # plain and snap sample the same volume (snap changes only how it is played)
            spec, secs = plain_spec, plain_secs
          r = loop_metrics(animate.trajectories(spec, sampler.num_frames, opts, np.arange(-1, n + 2)))
          rows[(n, m)].append(dict(r, seconds=secs, photo=os.path.basename(path), seed=seed))
  out(f'\n### Seamless loops: T = {sampler.num_frames}, {steps} DDIM steps (guidance {guidance:g}), '
      f'{len(paths)} photo(s) x seeds {list(seeds)}\n')
  out('| N | method | position px | velocity px/frame | RMS motion px | seam / median step | position x | '
      'velocity x | RMS / plain | seconds | time / plain |')
  out('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  summary = {}
  for n in num_frames:
    plain = rows[(n, 'plain')]
    for m in methods:
      rs = rows[(n, m)]
      mean = {k: float(np.mean([r[k] for r in rs])) for k in ('position', 'velocity', 'rms', 'seam', 'seconds')}
      ratio = lambda k, a, b: float(np.mean([p[k] / max(r[k], 1e-12) for p, r in zip(a, b)]))
      mean['position_x'] = ratio('position', plain, rs)
      mean['velocity_x'] = ratio('velocity', plain, rs)
      mean['rms_ratio'] = ratio('rms', rs, plain)
      mean['time_ratio'] = ratio('seconds', rs, plain)
      summary[(n, m)] = mean
      times = lambda k: 'exact' if mean[k.split('_')[0]] < 1e-6 else f'{mean[k]:.3g}'
      out(f"| {n} | {m} | {mean['position']:.4f} | {mean['velocity']:.5f} | {mean['rms']:.3f} | "
          f"{mean['seam']:.2f} | {times('position_x')} | {times('velocity_x')} | {mean['rms_ratio']:.3f} | "
          f"{mean['seconds']:.1f} | {mean['time_ratio']:.2f} |")
  return summary


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--photos', nargs='*', default=[], help='photos or folders of photos (default: the example)')
  ap.add_argument('--num-frames', type=int, nargs='+', default=[100, 200])
  ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  ap.add_argument('--steps', type=int, default=50)
  ap.add_argument('--guidance-scales', type=float, nargs='*', default=[],
                  help="add the paper's self-guidance with these u (paper units, SPEC: 200; slow)")
  ap.add_argument('--checkpoint', default=None)
  a = ap.parse_args()
  run(a.photos, a.num_frames, a.seeds, a.steps, a.guidance_scales, a.checkpoint)


if __name__ == '__main__':
  main()
