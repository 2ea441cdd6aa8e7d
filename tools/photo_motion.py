"""How much a motion model moves real photos: plants vs rigid scenes, people and objects.

    python tools/photo_motion.py --checkpoint RUN --photos DIR --plants A,B,... [--seeds 3] [--steps 50]

For every photo in ``DIR`` (never seen in training) and every seed, sample a spectral volume at the model's
input size through the same path as ``gid-sample`` (``animate.sample_motion``), and report the mean per-pixel
RMS displacement over one period (``eval.motion_metrics.motion_rms``) as a fraction of the model-input width. Photos
named in ``--plants`` form the vegetation group, the rest the rigid group; the last lines give the group
means and their ratio (the believable-motion acceptance: vegetation >= 3x rigid, rigid < 0.1% of the width,
vegetation >= 0.15%). The last column is the same measure for the plants world's own exact motion of the
photo at the model's input size (``synthetic.make_scene(world='plants')``, one scene per seed, still scenes
included): what the model would predict had it learned the world's rule exactly.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gid_jax import animate  # pylint: disable=g-import-not-at-top,wrong-import-position
from gid_jax.diffusion import motion_sampler  # pylint: disable=g-import-not-at-top,wrong-import-position
from gid_jax.data import synthetic  # pylint: disable=g-import-not-at-top,wrong-import-position
from gid_jax.eval import motion_metrics as metrics  # pylint: disable=g-import-not-at-top,wrong-import-position
from gid_jax.motion import spectral  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', default=animate.DEFAULT_CHECKPOINT, help='motion LDM run or export')
  ap.add_argument('--photos', required=True, help='folder of held-out photos')
  ap.add_argument('--plants', required=True, help='comma-separated file stems of the vegetation photos')
  ap.add_argument('--seeds', type=int, default=3, help='samples per photo')
  ap.add_argument('--steps', type=int, default=50, help='DDIM steps')
  ap.add_argument('--guidance', type=float, default=0.0, help='classifier-free guidance weight w')
  ap.add_argument('--mask-gate', type=float, default=None, help="mask gate (default: the checkpoint's)")
  args = ap.parse_args(argv)
  plants = {p.strip() for p in args.plants.split(',') if p.strip()}
  sampler = motion_sampler.MotionSampler(args.checkpoint)
  groups = {'plants': [], 'rigid': []}
  print(f'{args.checkpoint}: T = {sampler.num_frames}, K = {sampler.num_freqs}; {args.seeds} seeds, '
        f'{args.steps} DDIM steps, guidance {args.guidance:g}, mask gate '
        f'{sampler.default_mask_gate() if args.mask_gate is None else args.mask_gate:g}')
  print('| photo | group | mean RMS px | % of width | max RMS px | plants world: % of width |')
  print('|---|---|---:|---:|---:|---:|')
  for name in sorted(os.listdir(args.photos)):
    stem = os.path.splitext(name)[0]
    photo = animate.load_photo(os.path.join(args.photos, name))
    vals, peaks, world = [], [], []
    for seed in range(args.seeds):
      opts = animate.Options(steps=args.steps, seed=seed, guidance=args.guidance, mask_gate=args.mask_gate)
      spec = animate.sample_motion(sampler, photo, opts)  # pixels of the model-size image
      rms = metrics.motion_rms(spec)
      vals.append(rms.mean() / spec.shape[2])
      peaks.append(rms.max())
      h, w = spec.shape[1:3]
      scene = synthetic.make_scene(photo, seed, width=w, height=h, fps=sampler.fps,
                                   num_frames=sampler.num_frames, world='plants')
      true = spectral.to_spectral_volume(synthetic.trajectories(scene, 0, sampler.num_frames), sampler.num_freqs)
      world.append(float(np.mean(metrics.motion_rms(np.asarray(true)))) / w)
    group = 'plants' if stem in plants else 'rigid'
    groups[group].append(float(np.mean(vals)))
    print(f'| {stem} | {group} | {np.mean(vals) * spec.shape[2]:.3f} | {100 * np.mean(vals):.3f} | '
          f'{np.mean(peaks):.2f} | {100 * np.mean(world):.3f} |')
  p, r = np.mean(groups['plants']), np.mean(groups['rigid'])
  print(f'\nplants {100 * p:.3f}% of the width, rigid {100 * r:.3f}%, ratio {p / max(r, 1e-12):.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
