"""Renderer evaluation: PSNR / SSIM / LPIPS of rendered I_t against the true I_t on held-out data.

    python -m gid_jax.render.evaluate --data DATA [--workdir RUN] [--real-videos DIR] [--out results.json]

The renderer is rebuilt from the config stored with the run's checkpoints, so a run trained with any
overrides (widths, blocks, ...) evaluates as it was trained.

Methods compared on the same (I_0, I_t, F_t, W) examples:

* ``still``: I_0 itself (no motion at all): how far I_t is from the first frame, i.e. how much there is to
  render,
* ``backward_warp``: I_t(q) ~ I_0(q - F_t(q)) (bilinear sampling; the usual cheap approximation),
* ``average_splat``: RGB average splatting (the paper's "baseline splat" ablation),
* ``softmax_splat``: RGB softmax splatting with importance W(p) = mean_t ||F_t(p)||,
* ``renderer``: the trained feature-pyramid renderer (when ``--workdir`` is given).

Both splatting baselines get the same push-pull hole filling as ``render_video``'s fallback, so they are
not penalised for leaving black holes. Held-out sets: the ``test`` split of the ``gid_frames`` dataset in
``--data`` (videos never seen in training) and, with ``--real-videos``, clips of real videos decoded at
the dataset's size and fps with DIS flow from frame 0 (a few frames t per clip, seeded; never a frame
that repeats frame 0 exactly).
SSIM is scikit-image's (Gaussian window, sigma 1.5); LPIPS uses AlexNet (the usual metric; the renderer
trains with the VGG variant, so it is not scored by its own loss); PSNR on uint8 frames.

When the test split holds videos from several top-level folders of the build's video folder (e.g.
``synthetic/`` and ``handheld/``), each folder is also reported on its own. ``--motion-bins N`` also reports
every set in N bins of equal size by the frame's median motion (median over pixels of |F_t|, px).
``--camera-motion-px X`` keeps only the real clips that the build's camera-motion filter passes at X.
``--split train`` scores the build's training split instead of its test split (to tell how well the
renderer fits what it was trained on from how well it generalises).
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from skimage.metrics import structural_similarity

from gid_jax import cli
from gid_jax import runs
from gid_jax.data import build as build_lib
from gid_jax.data import clips as clips_lib
from gid_jax.data import pipeline
from gid_jax.data import video as video_lib
from gid_jax.errors import InputError
from gid_jax.fileio import atomic_write_text, check_output
from gid_jax.models import perceptual
from gid_jax.motion import flow as flow_lib
from gid_jax.ops import splat
from gid_jax.ops.image import fill_holes
from gid_jax.render.video import to_uint8
from gid_jax.runs import checkpoints

METHODS = ('still', 'backward_warp', 'average_splat', 'softmax_splat', 'renderer')


@jax.jit
def _baselines(image, flow, importance):
  back = splat.backward_warp(image, -flow)
  avg, m_avg = splat.softmax_splat(image, flow, mode='average', return_mask=True)
  soft, m_soft = splat.softmax_splat(image, flow, importance, mode='softmax', return_mask=True)
  return {'still': image, 'backward_warp': back, 'average_splat': fill_holes(avg, m_avg),
          'softmax_splat': fill_holes(soft, m_soft)}


def psnr(a_uint8: np.ndarray, b_uint8: np.ndarray) -> float:
  mse = np.mean((a_uint8.astype(np.float64) - b_uint8.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ssim(a_uint8: np.ndarray, b_uint8: np.ndarray) -> float:
  return float(structural_similarity(a_uint8, b_uint8, channel_axis=-1, data_range=255,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def summarize(scores: dict, keep=None) -> dict:
  """Mean of every method's per-frame scores (over the frames where ``keep`` is True, default all)."""
  out = {}
  for m, s in scores.items():
    k = np.ones(len(s['psnr']), bool) if keep is None else np.asarray(keep, bool)
    out[m] = {name: float(np.mean(np.asarray(v)[k])) for name, v in s.items()} | {'n': int(k.sum())}
  return out


def score_examples(examples, renderer=None, batch_size: int = 8) -> dict:
  """Per-frame scores {method: {'psnr'|'ssim'|'lpips': [one per example, in order]}}.

  examples: iterable of dicts image/target (uint8 HxWx3), flow (HxWx2), importance (HxWx1).
  """
  lpips = jax.jit(perceptual.get('alexnet').__call__)
  if renderer is not None:
    graphdef, state = nnx.split(renderer)
    run_renderer = jax.jit(lambda s, i, f, w: nnx.merge(graphdef, s)(i, f, w))
  scores = {m: {'psnr': [], 'ssim': [], 'lpips': []} for m in METHODS if m != 'renderer' or renderer}
  examples = list(examples)
  for i in range(0, len(examples), batch_size):
    chunk = examples[i:i + batch_size]
    img = jnp.asarray(np.stack([e['image'] for e in chunk]), jnp.float32) / 127.5 - 1
    tgt = np.stack([e['target'] for e in chunk])
    flow = jnp.asarray(np.stack([e['flow'] for e in chunk]), jnp.float32)
    imp = jnp.asarray(np.stack([e['importance'] for e in chunk]), jnp.float32)
    outs = dict(_baselines(img, flow, imp))
    if renderer is not None:
      outs['renderer'] = run_renderer(state, img, flow, imp)
    tgt_f = jnp.asarray(tgt, jnp.float32) / 127.5 - 1
    for m, out in outs.items():
      out8 = to_uint8(out)
      d = np.asarray(lpips(jnp.asarray(out8, jnp.float32) / 127.5 - 1, tgt_f))
      for j in range(len(chunk)):
        scores[m]['psnr'].append(psnr(out8[j], tgt[j]))
        scores[m]['ssim'].append(ssim(out8[j], tgt[j]))
        scores[m]['lpips'].append(float(d[j]))
  return scores


def median_motion(examples) -> np.ndarray:
  """Each example's median over pixels of |F_t| (px)."""
  return np.array([float(np.median(np.linalg.norm(e['flow'], axis=-1))) for e in examples])


def breakdown(name: str, examples: list, scores: dict, motion_bins: int = 0) -> dict:
  """{set name: summary}: the whole set, each top-level folder (if several), each motion bin."""
  results = {name: summarize(scores)}
  groups = np.array([e.get('group', '') for e in examples])
  if len(set(groups)) > 1:
    for g in sorted(set(groups)):
      results[f'{name}: {g}/'] = summarize(scores, groups == g)
  if motion_bins > 0 and examples:
    motion = median_motion(examples)
    order = np.argsort(motion, kind='stable')
    for idx in np.array_split(order, motion_bins):
      if len(idx):
        keep = np.zeros(len(examples), bool)
        keep[idx] = True
        results[f'{name}: median motion {motion[idx].min():.2f}-{motion[idx].max():.2f} px'] = summarize(scores, keep)
  return results


def dataset_examples(data_dir: str, split: str = 'test'):
  """The split's (I_0, I_t, F_t, W) triples, except those whose I_t repeats I_0 exactly (see ``video_examples``)."""
  src = pipeline.data_source(data_dir, split, build_lib.FRAMES_DATASET_NAME)
  for i in range(len(src)):
    ex = src[i]
    if np.array_equal(ex['image'], ex['target']):
      continue
    vid = ex['video_id'].decode() if isinstance(ex['video_id'], bytes) else str(ex['video_id'])
    yield {k: ex[k] for k in ('image', 'target', 'flow', 'importance')} | {
        'group': vid.split('/')[0] if '/' in vid else ''}


def video_examples(path: str, data_config, pairs_per_clip: int = 4, seed: int = 0, camera_motion_px: float = 0.0):
  """(I_0, I_t, F_t, W) from the clips of a real video, with DIS flow from each clip's frame 0.

  ``camera_motion_px > 0`` skips clips that the dataset builder's camera-motion filter would reject at that
  threshold (some frame's median flow above it), keeping the still-camera footage the method is made for.
  Frames t that repeat frame 0 exactly are never picked: a video decoded above its own frame rate repeats
  frames, such a pair has nothing to render, and its PSNR (infinite, capped) would swamp every mean.
  """
  method = data_config.flow.method
  est = flow_lib.FlowEstimator(method if method in flow_lib.METHODS else 'dis', data_config.flow.preset)
  rng = np.random.default_rng(seed)
  for _, frames in clips_lib.iter_clips(path, data_config):
    disp = flow_lib.extract_trajectories(frames, estimator=est)
    if camera_motion_px > 0 and not flow_lib.filter_clip(disp, camera_motion_px, static_px=0.0).keep:
      continue
    importance = np.asarray(splat.splat_weight(disp))
    moved = np.array([t for t in range(1, len(frames)) if not np.array_equal(frames[t], frames[0])])
    for t in np.sort(rng.choice(moved, min(pairs_per_clip, len(moved)), replace=False)):
      yield {'image': frames[0], 'target': frames[t], 'flow': disp[t], 'importance': importance}


def table(results: dict) -> str:
  lines = []
  for name, res in results.items():
    n = next(iter(res.values()))['n']
    lines += [f'\n{name} ({n} frames)', '| method | PSNR dB | SSIM | LPIPS (AlexNet) |', '|---|---|---|---|']
    lines += [f'| {m} | {r["psnr"]:.2f} | {r["ssim"]:.4f} | {r["lpips"]:.4f} |' for m, r in res.items()]
  return '\n'.join(lines)


def build_parser():
  ap = cli.Parser('python -m gid_jax.render.evaluate', __doc__)
  ap.add_argument('--data', required=True, help='a gid-build --out folder')
  ap.add_argument('--workdir', default=None, help='a renderer training run (its latest checkpoint)')
  ap.add_argument('--real-videos', default=None, help='folder of held-out real videos')
  ap.add_argument('--real-pairs', type=int, default=4, help='(I_0, I_t) pairs per clip of a real video')
  ap.add_argument('--camera-motion-px', type=float, default=0.0,
                  help='skip real clips with camera motion above this (as the build filter does; 0: keep all)')
  ap.add_argument('--motion-bins', type=int, default=0,
                  help='also report each set in this many bins by median motion (0: no bins)')
  ap.add_argument('--split', default='test', choices=('test', 'train'),
                  help="the build's split to score (train tells fitting from generalising)")
  ap.add_argument('--out', default=None, help='write the results as JSON here')
  ap.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  return ap


def main(argv=None) -> int:
  return cli.main(_run, build_parser(), argv, expected=(ValueError, FileNotFoundError))


def _run(args) -> None:
  if args.real_pairs < 1:
    raise InputError(f'--real-pairs must be at least 1, got {args.real_pairs}')
  if not 0.0 <= args.camera_motion_px < float('inf'):
    raise InputError(f'--camera-motion-px must be a finite number >= 0, got {args.camera_motion_px}')
  if args.motion_bins < 0:
    raise InputError(f'--motion-bins must be >= 0, got {args.motion_bins}')
  if not os.path.isdir(args.data):
    raise InputError(f'--data {args.data}: no such folder')
  if args.out:
    check_output(args.out, args.overwrite, '--out', kind='file')
  if args.workdir:
    runs.check_run(args.workdir, ('renderer',), '--workdir')
  # the run's own config, overrides included; no --workdir: the RGB baseline
  renderer = checkpoints.load_kind(args.workdir, 'renderer')[1] if args.workdir else None
  examples = list(dataset_examples(args.data, args.split))
  name = 'held-out test split' if args.split == 'test' else 'training split (seen in training)'
  results = breakdown(name, examples, score_examples(examples, renderer),
                      args.motion_bins)
  if args.real_videos:
    with open(os.path.join(args.data, build_lib.REPORT_FILENAME)) as f:
      data_cfg = ml_collections.ConfigDict(json.load(f)['config'])  # decode real clips like the data
    for path in video_lib.list_videos(args.real_videos):
      examples = list(video_examples(path, data_cfg, args.real_pairs, camera_motion_px=args.camera_motion_px))
      if not examples:  # every clip filtered out, or not one frame differs from its clip's first
        why = (f'every clip has camera motion above {args.camera_motion_px} px or no frame that moves'
               if args.camera_motion_px > 0 else 'no clip has a frame that differs from its first')
        print(f'note: {path}: {why}; skipped', file=sys.stderr)
        continue
      results.update(breakdown(f'held-out real: {os.path.basename(path)}', examples,
                               score_examples(examples, renderer), args.motion_bins))
  print(table(results))
  if args.out:
    atomic_write_text(args.out, json.dumps(results, indent=1))


if __name__ == '__main__':
  sys.exit(main())
