"""Where a motion model moves truly still pixels: entirely still clips vs the still parts of moving ones.

    python tools/still_motion.py [--checkpoint RUN_OR_EXPORT] [--data out/plants/ds_heldout_mm] [--guidance 2.5]

One sample per clip of ``--data`` (its ``train`` split: the held-out motion-model report set of
tools/plants_model.sh), 50 DDIM steps, seed = clip index. Prints the Table-1 ratios (mean predicted RMS motion on
truly still / truly moving pixels over the truth's on moving ones, moving = RMS above 0.1 px) and how the
still-pixel motion splits: the share in entirely still clips (rigid photos and the world's still scenes),
the ratio without them, the share within 2 px of truly moving pixels (blur across a boundary) and the ratio
far from any motion in moving clips.
"""

import argparse

import jax
import numpy as np
from scipy import ndimage

from gid_jax import animate
from gid_jax.data import pipeline
from gid_jax.diffusion import motion_sampler
from gid_jax.eval import motion_metrics as mm
from gid_jax.motion import normalize as norm_lib


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', default=animate.DEFAULT_CHECKPOINT)
  ap.add_argument('--data', default='out/plants/ds_heldout_mm')
  ap.add_argument('--guidance', type=float, default=2.5)
  ap.add_argument('--steps', type=int, default=50)
  ap.add_argument('--mask-gate', type=float, default=None, help="mask gate (default: the checkpoint's)")
  a = ap.parse_args()
  s = motion_sampler.MotionSampler(a.checkpoint)
  stats = norm_lib.NormStats.from_json(s.config.norm_stats_json)
  ds = pipeline.make_dataset(a.data, 'train', batch_size=1, shuffle=False, num_epochs=1, shard_index=0,
                             shard_count=1, drop_remainder=False, stats=stats)
  preds, trues, heads = [], [], []
  for i, b in enumerate(ds):
    image = np.round((np.asarray(b['image']) + 1.0) * 127.5).astype(np.uint8)  # at the data's image_scale
    x = s.fit_images(image, b['nspec'].shape[2:4]).astype(np.float32) / 127.5 - 1.0
    p = s.sample_normalized(x, jax.random.PRNGKey(i), num_steps=a.steps, guidance=a.guidance,
                            mask_gate=a.mask_gate)
    preds.append(np.asarray(norm_lib.denormalize(p, stats))[0])
    trues.append(np.asarray(norm_lib.denormalize(b['nspec'], stats))[0])
    if s.has_mask_head:  # what the mask gate reads (the same draws as a gated sample of this clip)
      heads.append(np.asarray(s.moving_probability(x, jax.random.fold_in(jax.random.PRNGKey(i), 1)))[0])
  pred, true = np.stack(preds), np.stack(trues)
  rp, rt = np.asarray(mm.motion_rms(pred)), np.asarray(mm.motion_rms(true))
  moving = rt > 0.1
  still = ~moving
  amp = rt[moving].mean()
  still_clip = ~moving.reshape(len(true), -1).any(1)
  near = np.stack([ndimage.binary_dilation(m, iterations=2) for m in moving]) & still
  total = rp[still].sum()
  gate = s.default_mask_gate() if a.mask_gate is None else a.mask_gate
  print(f'{a.checkpoint}, w = {a.guidance}, mask gate {gate:g}: {len(true)} clips, {int(still_clip.sum())} entirely still')
  amp_moving, amp_still = mm.amplitude_ratios(pred, true, 0.1)
  print(f'amplitude, moving / true: {amp_moving:.3f}; moving AUC {mm.moving_region_auc(pred, true, 0.1):.3f}')
  print(f'amplitude, still / true moving: {amp_still:.3f}')
  if heads:
    head = np.stack(heads)
    print(f'mask head: moving AUC {mm.region_auc(head, moving):.3f}; mean probability on moving / still pixels '
          f'{head[moving].mean():.3f} / {head[still].mean():.3f}')
  print(f'  share of it in entirely still clips: {rp[still_clip][still[still_clip]].sum() / total:.2f}')
  print(f'  the ratio without those clips: {rp[~still_clip][still[~still_clip]].mean() / amp:.3f}')
  print(f'  share within 2 px of moving pixels: {rp[near].sum() / total:.2f} '
        f'({near.sum() / still.sum():.2f} of the still pixels)')
  print(f'  the ratio farther from motion, moving clips only: '
        f'{rp[~near & still & ~still_clip[:, None, None]].mean() / amp:.3f}')


if __name__ == '__main__':
  main()
