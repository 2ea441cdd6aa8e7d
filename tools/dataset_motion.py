"""How much of a motion dataset moves, and what its normalisation scales measure.

    python tools/dataset_motion.py DATASET [DATASET ...] [--floor 1e-3] [--split train]

For one split (``train``: what the statistics are fitted on) of each gid-build dataset: the share of clips with no motion at all (every coefficient
above the mean bin exactly zero) and with no pixel moving more than 0.1 px RMS (the Table-1 threshold,
``eval.motion_metrics.motion_rms``), the share of moving pixels, the share of exactly zero coefficients per
bin, and per bin the dataset's stored scale next to the 95th percentile of |coefficient| over all
coefficients, over those of at least ``--floor`` px (``normalize.min_magnitude``) and over moving pixels
only (exact, float64 NumPy).
"""

import argparse

import numpy as np

from gid_jax.data import pipeline
from gid_jax.eval import motion_metrics as mm

MOVING_PX = 0.1


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('datasets', nargs='+')
  ap.add_argument('--floor', type=float, default=1e-3)
  ap.add_argument('--split', default='train')
  a = ap.parse_args()
  for d in a.datasets:
    src = pipeline.data_source(d, a.split)
    mags, moving, zero_clips = [], [], 0
    for i in range(len(src)):
      spec = np.asarray(src[i]['spectral_volume'], np.float64)  # K x H x W x 4, pixels
      mags.append(np.abs(spec).reshape(spec.shape[0], -1))
      moving.append(mm.motion_rms(spec) > MOVING_PX)
      zero_clips += not spec[1:].any()
    m, moving = np.concatenate(mags, 1), np.stack(moving)
    k = m.shape[0]
    mov = np.broadcast_to(moving.reshape(len(src), 1, -1, 1), (len(src), k, moving[0].size, 4))
    mov = mov.transpose(1, 0, 2, 3).reshape(k, -1)
    still_clips = ~moving.reshape(len(src), -1).any(1)
    fmt = lambda v: ' '.join(f'{x:.3g}' for x in v)
    print(f'{d}: {len(src)} {a.split} clips; no motion at all {zero_clips / len(src):.3f}, no pixel above '
          f'{MOVING_PX} px {still_clips.mean():.3f}; moving pixels {moving.mean():.4f}')
    print(f'  exact zeros per bin: {fmt((m == 0).mean(1))}')
    print(f'  stored scales: {fmt(pipeline.load_stats(d).scales_Kx4[:, 0])}')
    print(f'  95th percentile, all coefficients: {fmt(np.percentile(m, 95, axis=1))}')
    print(f'  95th percentile, >= {a.floor:g} px: '
          f'{fmt([np.percentile(v[v >= a.floor], 95) if (v >= a.floor).any() else 0.0 for v in m])}')
    print(f'  95th percentile, moving pixels: {fmt([np.percentile(v[w], 95) for v, w in zip(m, mov)])}')


if __name__ == '__main__':
  main()
