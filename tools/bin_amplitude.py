"""Mean motion magnitude per frequency bin on truly moving pixels: the truth, its VAE reconstruction, samples.

    python tools/bin_amplitude.py [--videos out/plants_s0/scenes_heldout] [--checkpoint RUN_OR_EXPORT]
                                  [--pred out/fvd_s0/pred_....npz ...]

The `size=mini` synthetic Table-1 set of configs/eval.py (``--videos`` another folder of plants-world scenes), its
exact spectral volumes S; ``--checkpoint``'s VAE encodes and decodes S (what the latent keeps); each ``--pred``
is a volume saved by tools/fvd_probe.py (one model sample per clip). Prints, per bin k (k / 5 Hz for T = 150 at
30 fps), sqrt(|S_x|^2 + |S_y|^2) averaged over the pixels whose true RMS motion exceeds 0.1 px (at 64 x 40).
"""

import argparse

import numpy as np

from gid_jax import animate
from gid_jax import evaluate as ev
from gid_jax.configs import eval as eval_config
from gid_jax.diffusion import motion_sampler
from gid_jax.eval import motion_metrics as mm
from gid_jax.eval import motion_report


def per_bin(spec, moving):
  a = np.sqrt((np.asarray(spec) ** 2).sum(-1))  # N x K x H x W
  return [float(a[:, k][moving].mean()) for k in range(a.shape[1])]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--videos', default='', help="another folder of plants-world scenes (default: the set's)")
  ap.add_argument('--checkpoint', default=animate.DEFAULT_CHECKPOINT, help='motion LDM whose VAE to apply')
  ap.add_argument('--pred', nargs='*', default=[], help='volumes saved by tools/fvd_probe.py')
  a = ap.parse_args()
  config = eval_config.get_config('size=mini')
  if a.videos:
    config.sets.synthetic.videos = a.videos
  true = ev.load_set('synthetic', config.sets.synthetic, config).spec
  moving = np.asarray(mm.motion_rms(true)) > 0.1
  rec = motion_report.vae_reconstruction(motion_sampler.load(a.checkpoint), true)
  rows = {'truth': per_bin(true, moving), 'VAE reconstruction': per_bin(rec, moving)}
  for p in a.pred:
    rows[p] = per_bin(np.load(p)['spec'], moving)
  print('| | ' + ' | '.join(f'bin {k}' for k in range(true.shape[1])) + ' |')
  for name, vals in rows.items():
    print(f'| {name} | ' + ' | '.join(f'{v:.3f}' for v in vals) + ' |')


if __name__ == '__main__':
  main()
