"""Benchmark: loop closure of seamless loops (motion self-guidance) against unguided sampling.

    python -m benchmarks.loops [--checkpoint DIR] [--num-frames 100] [--steps 20]

The bundled model and example photo by default; a loop of ``num_frames`` frames (not a multiple of the
model's T, so guidance is needed). Closure error: mean |F(N) - F(0)| (position, px) and mean
|(F(N) - F(N-1)) - (F(1) - F(0))| (velocity, px / frame) of the sampled trajectories, plus the RMS motion
(guidance should close the loop without killing the motion). Rows: unguided, the --loop defaults, and a
sweep of the guidance scale u (w = 0; u = 20 and 200 with one recurrence).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gid_jax import animate
from gid_jax.diffusion import motion
from gid_jax.motion import edit

SETTINGS = (  # (name, Options overrides)
    ('unguided', {'loop': False}),
    ('--loop defaults (w = 1.75, u = 0.2, 2 recurrences)', {'loop': True}),
    ('u = 0.02 (w = 0)', {'loop': True, 'loop_scale': 0.02, 'loop_weight': 0.0}),
    ('u = 0.2 (w = 0)', {'loop': True, 'loop_scale': 0.2, 'loop_weight': 0.0}),
    ('u = 2 (w = 0)', {'loop': True, 'loop_scale': 2.0, 'loop_weight': 0.0}),
    ('u = 20 (w = 0, 1 recurrence)', {'loop': True, 'loop_scale': 20.0, 'loop_weight': 0.0, 'loop_recurrence': 1}),
    ('u = 200 (w = 0, 1 recurrence)', {'loop': True, 'loop_scale': 200.0, 'loop_weight': 0.0,
                                       'loop_recurrence': 1}),
)


def run(checkpoint: str | None = None, num_frames: int = 100, steps: int = 20, seed: int = 0, out=print):
  sampler = motion.MotionSampler(checkpoint or animate.DEFAULT_CHECKPOINT)
  photo = animate.load_photo(animate.EXAMPLE_PHOTO)
  rows = []
  for name, kw in SETTINGS:
    opts = animate.Options(num_frames=num_frames, steps=steps, seed=seed, **kw)
    t0 = time.perf_counter()
    spec = animate.sample_motion(sampler, photo, opts)
    secs = time.perf_counter() - t0
    f = np.asarray(edit.displacements_at(spec, np.arange(num_frames + 1), sampler.num_frames))
    rows.append({'sampling': name, 'position': float(np.abs(f[-1] - f[0]).mean()),
                 'velocity': float(np.abs((f[-1] - f[-2]) - (f[1] - f[0])).mean()),
                 'rms': float(np.sqrt((f ** 2).mean())), 'seconds': secs})
  out(f'\n### Loop closure, {num_frames}-frame loop, T = {sampler.num_frames}, {steps} DDIM steps, seed {seed}\n')
  out('| sampling | position px | velocity px/frame | RMS motion px | x unguided (position) | seconds |')
  out('|---|---:|---:|---:|---:|---:|')
  for r in rows:
    out(f"| {r['sampling']} | {r['position']:.3f} | {r['velocity']:.4f} | {r['rms']:.3f} | "
        f"{rows[0]['position'] / r['position']:.1f} | {r['seconds']:.0f} |")
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', default=None)
  ap.add_argument('--num-frames', type=int, default=100)
  ap.add_argument('--steps', type=int, default=20)
  a = ap.parse_args()
  run(a.checkpoint, a.num_frames, a.steps)


if __name__ == '__main__':
  main()
