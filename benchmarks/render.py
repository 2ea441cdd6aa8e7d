"""Benchmark: frames per second of a full render (150 frames at 256 x 160) with every renderer config.

    python -m benchmarks.render [--frames 150] [--width 256 --height 160]

Renders a real photo moved by a spectral volume (16 bins of random smooth motion) with ``render_video``:
the renderer-free fallback (RGB softmax splatting + push-pull hole filling) and the learned renderer at
each config size (random weights: speed does not depend on them). Times exclude the first (compiling) run.
The paper reports 25 fps on a V100 GPU; ratios are against the fallback measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from flax import nnx

from gid_jax.configs import renderer as renderer_config
from gid_jax.data import synthetic, video
from gid_jax.models import renderer as renderer_lib
from gid_jax.render.video import render_video


def run(frames: int = 150, width: int = 256, height: int = 160, sizes=('tiny', 'small', 'paper'),
        out=print) -> list[dict]:
  photo = video.center_crop_resize(synthetic.load_photo('astronaut'), width, height)
  rng = np.random.default_rng(0)
  num_freqs = min(16, (frames - 1) // 2 + 1)  # bins stay below Nyquist for short smoke runs
  spec = np.zeros((num_freqs, height, width, 4), np.float32)
  yy, xx = np.mgrid[0:height, 0:width]
  for k in range(1, num_freqs):  # smooth random fields with power falling with frequency
    spec[k] = np.exp(-k / 3) * np.stack([np.sin(xx / (9 + k) + rng.uniform(0, 6)) *
                                         np.cos(yy / (7 + k) + rng.uniform(0, 6)) for _ in range(4)], -1)
  rows = []
  for name in ('fallback',) + tuple(sizes):
    model = None
    if name != 'fallback':
      model = renderer_lib.from_config(renderer_config.get_config(f'size={name}').model, nnx.Rngs(0))
    render_video(photo, spec, num_frames=frames, renderer=model)  # compile
    t0 = time.perf_counter()
    result = render_video(photo, spec, num_frames=frames, renderer=model)
    dt = time.perf_counter() - t0
    assert result.shape == (frames, height, width, 3)
    rows.append({'renderer': name, 'seconds': dt, 'fps': frames / dt})
  ref = rows[0]['fps']
  out(f'\nFull render: {frames} frames at {width}x{height} (render_video, chunks of 16 frames)')
  out('| renderer | seconds | frames/s | x fallback |')
  out('|---|---|---|---|')
  for r in rows:
    out(f'| {r["renderer"]} | {r["seconds"]:.2f} | {r["fps"]:.1f} | {r["fps"] / ref:.2f} |')
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--frames', type=int, default=150)
  ap.add_argument('--width', type=int, default=256)
  ap.add_argument('--height', type=int, default=160)
  args = ap.parse_args(argv)
  run(args.frames, args.width, args.height)


if __name__ == '__main__':
  main()
