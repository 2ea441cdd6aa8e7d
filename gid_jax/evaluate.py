"""Table-1 style evaluation: every method's videos against the real held-out videos.

    gid-evaluate --config=configs/eval.py[:size=tiny] [--config.out_dir=out/eval_table]
    (or python -m gid_jax.evaluate ...)

For every evaluation set (``config.sets``: the synthetic held-out videos and a folder of real held-out
videos) the clips are cut as the dataset builder cuts them (``configs/data.py`` at ``config.size``: same
size, fps, T and K), their true motion taken from the synthetic world's exact trajectories or estimated
with optical flow (real videos). Each method then makes one video per clip from the clip's first frame:

* ``ldm``: a trained motion LDM run samples a spectral volume (``config.sampling``), the renderer renders
  it. Our model, the ablations (K = 4 / 8 / 24, w/o adaptive norm, independent and volume prediction)
  are all runs of this kind; the "baseline splat" ablation is our model rendered with RGB average
  splatting (``splat: 'average'``) instead of the learned renderer.
* ``repeat``: the first frame repeated ("repeat I_0").
* ``mean``: the mean spectral volume of the training set (pixel units) for every clip, rendered.
* ``truth``: the clip's true motion rendered: an upper bound for motion prediction with this renderer.

Metrics (``gid_jax.eval.metrics``, frames centre-cropped to ``config.crop``; the paper's 256 x 128,
scaled with the frame size): FID and KID x 100 per frame (every ``fid_frame_stride``-th frame),
FVD and FVD32 (Kinetics I3D), DT-FVD and DT-FVD32 when a DTDB I3D weight file is given (else "n/a"),
sliding-window FID (``sliding_fid_window`` frames), and for methods with a spectral volume the motion
metrics of ``gid_jax.eval.motion_report`` against the true volumes (moving-region IoU, pixel-spectrum FD).

Written to ``config.out_dir``: ``results.json`` (everything) and ``results.md`` (one table per set, with the
command). Features of every (set, method) are cached in ``out_dir/cache`` as they are computed, so an
interrupted evaluation resumes where it stopped (``--config.overwrite`` recomputes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from gid_jax import animate
from gid_jax import cli
from gid_jax import fileio
from gid_jax import runs
from gid_jax.configs import data as data_configs
from gid_jax.data import build as build_lib
from gid_jax.data import clips as clips_lib
from gid_jax.data import video as video_lib
from gid_jax.diffusion import motion_sampler
from gid_jax.errors import InputError
from gid_jax.eval import frechet
from gid_jax.eval import metrics
from gid_jax.eval import motion_report
from gid_jax.motion import normalize as norm_lib
from gid_jax.motion import spectral
from gid_jax.progress import Progress
from gid_jax.render import video as render_video

log = logging.getLogger('gid_jax.evaluate')
KINDS = ('ldm', 'repeat', 'mean', 'truth')
COLUMNS = (('fid', 'FID'), ('kid100', 'KID x100'), ('fvd', 'FVD'), ('fvd32', 'FVD32'), ('dtfvd', 'DT-FVD'),
           ('dtfvd32', 'DT-FVD32'), ('iou', 'moving IoU'), ('auc', 'moving AUC'), ('pixel_fd', 'pixel-spectrum FD'),
           ('amp_moving_ratio', 'amplitude, moving / true'), ('amp_still_ratio', 'amplitude, still / true moving'),
           ('train_steps', 'train steps'))


class EvalError(InputError):
  """Bad evaluation input (missing folder or checkpoint, bad config value): one line for the user."""


@dataclasses.dataclass
class EvalSet:
  """Clips of one held-out folder: frames N x T x H x W x 3 uint8, true volumes N x K x H x W x 4 (px), and
  the first frames at FIRST_SCALE times the size, N x sH x sW x 3 (for models conditioned on finer images)."""
  name: str
  clip_ids: list[str]
  frames: np.ndarray
  spec: np.ndarray
  first: np.ndarray

  @property
  def images(self) -> np.ndarray:
    return self.frames[:, 0]


# First frames are also kept at this many times the set's size: a motion model trained on data of a larger
# image_scale (up to it) is given its image resized from them, as its training data was.
FIRST_SCALE = 4


def data_config(config, flow_method: str):
  c = data_configs.get_config(f'size={config.size}')
  c.flow.method = flow_method
  c.image_scale = FIRST_SCALE
  return c


def load_set(name: str, set_cfg, config) -> EvalSet:
  """Cut the clips of every video of ``set_cfg.videos`` (at most ``clips_per_video`` evenly spaced ones)."""
  if not os.path.isdir(set_cfg.videos):
    raise EvalError(f'sets.{name}.videos: no folder {set_cfg.videos!r}')
  paths = video_lib.list_videos(set_cfg.videos)
  if set_cfg.max_videos:
    paths = paths[:set_cfg.max_videos]
  if not paths:
    raise EvalError(f'sets.{name}.videos: no videos in {set_cfg.videos}')
  dcfg = data_config(config, set_cfg.flow)
  motion = clips_lib.ClipMotion(dcfg)
  ids, frames, specs, first = [], [], [], []
  for path in paths:
    vid = build_lib.video_id(set_cfg.videos, path)
    try:
      motion.scene_for(path)  # a missing scene file fails here, before any decoding
      starts = [start for start, _ in clips_lib.iter_clips(path, dcfg)]
      keep = np.unique(np.linspace(0, len(starts) - 1, min(len(starts), set_cfg.clips_per_video)).round()
                       .astype(int))
      for start, clip, disp, image in clips_lib.clips_with_motion(path, dcfg, motion, {starts[i] for i in keep}):
        ids.append(f'{vid}@{start}')
        frames.append(clip)
        first.append(image)
        specs.append(np.asarray(spectral.to_spectral_volume(disp, dcfg.num_freqs), np.float32))
    except video_lib.VideoError as e:
      raise EvalError(str(e)) from e
  log.info('%s: %d clips from %d videos', name, len(ids), len(paths))
  return EvalSet(name, ids, np.stack(frames), np.stack(specs), np.stack(first))


def _checkpoint_steps(run: str) -> int:
  steps = runs.steps(run)
  return steps[-1] if steps else 0


def _checkpoint_fingerprint(run: str) -> str:
  """Names, sizes and modification times of the latest checkpoint's files: a retrained or re-exported run
  at the same path and step count (e.g. a new bundled model) must not reuse cached features."""
  h = hashlib.sha1()
  if fileio.is_remote(run):  # object storage: names, sizes and modification times (seconds) through epath
    step = fileio.path(run) / 'checkpoints' / str(_checkpoint_steps(run))
    for p in sorted(fileio.files(step)):
      st = p.stat()
      h.update(f'{p.relative_to(step)}:{st.length}:{st.mtime};'.encode())
    return h.hexdigest()[:16]
  step_dir = os.path.join(run, 'checkpoints', str(_checkpoint_steps(run)))
  for root, _, files in sorted(os.walk(step_dir)):
    for f in sorted(files):
      st = os.stat(os.path.join(root, f))
      h.update(f'{os.path.relpath(os.path.join(root, f), step_dir)}:{st.st_size}:{st.st_mtime_ns};'.encode())
  return h.hexdigest()[:16]


def _fit_k(spec_NxKxHxWx4: np.ndarray, k: int) -> np.ndarray:
  """Cut or zero-pad the frequency axis to K (a K = 4 model predicts no motion above its band)."""
  n, k0 = spec_NxKxHxWx4.shape[:2]
  if k0 >= k:
    return spec_NxKxHxWx4[:, :k]
  pad = np.zeros((n, k - k0) + spec_NxKxHxWx4.shape[2:], spec_NxKxHxWx4.dtype)
  return np.concatenate([spec_NxKxHxWx4, pad], axis=1)


def sample_ldm(run: str, evalset: EvalSet, sampling, batch: int = 8) -> np.ndarray:
  """Spectral volumes (pixels) from a motion LDM run, ``batch`` images per call, seeded per batch."""
  sampler = motion_sampler.MotionSampler(run)
  if tuple(evalset.images.shape[1:3]) != sampler.size:
    raise EvalError(f'{run} was trained at {sampler.size[1]}x{sampler.size[0]} but the clips are '
                    f'{evalset.images.shape[2]}x{evalset.images.shape[1]}: set config.size to match')
  if sampler.image_scale > FIRST_SCALE:
    raise EvalError(f'{run} was trained on images at {sampler.image_scale}x its motion; the evaluation keeps '
                    f'first frames at up to {FIRST_SCALE}x')
  images_NxHxWx3 = evalset.images if sampler.image_scale == 1 else sampler.fit_images(evalset.first, sampler.size)
  out = []
  for i in range(0, len(images_NxHxWx3), batch):
    x = images_NxHxWx3[i:i + batch].astype(np.float32) / 127.5 - 1.0
    n = len(x)
    if n < batch:  # one compiled shape
      x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
    nspec = sampler.sample_normalized(x, jax.random.PRNGKey(sampling.seed + i), num_steps=sampling.num_steps,
                                      eta=sampling.eta, guidance=sampling.guidance,
                                      mask_gate=sampling.get('mask_gate', None))  # None: the checkpoint's
    out.append(np.asarray(norm_lib.denormalize(np.asarray(nspec[:n]), sampler.stats), np.float32))
  return np.concatenate(out)


def method_volumes(method, evalset: EvalSet, config, mean_volume) -> np.ndarray | None:
  """The spectral volumes a method renders (None for repeat I_0)."""
  if method.kind == 'repeat':
    return None
  if method.kind == 'truth':
    return evalset.spec
  if method.kind == 'mean':
    return np.broadcast_to(mean_volume(), evalset.spec.shape[:1] + mean_volume().shape).copy()
  return sample_ldm(method.run, evalset, config.sampling)


def render_videos(evalset: EvalSet, spec, renderer, splat_mode: str) -> np.ndarray:
  n, t = evalset.frames.shape[:2]
  if spec is None:
    return np.repeat(evalset.images[:, None], t, axis=1)
  return np.stack([render_video.render_video(evalset.images[i], spec[i], t, renderer=renderer,
                                             splat_mode=splat_mode) for i in range(n)])


def video_features(videos_NxTxHxWx3: np.ndarray, config) -> dict:
  """Inception features of every ``fid_frame_stride``-th frame, I3D features of the first 16 / 32 frames
  (``fvd_frames``)."""
  crop = tuple(config.crop)
  t = videos_NxTxHxWx3.shape[1]
  sel = videos_NxTxHxWx3[:, ::config.fid_frame_stride]
  feats = {'inception': metrics.inception_features(sel.reshape((-1,) + sel.shape[2:]), crop=crop)
           .reshape(sel.shape[0], sel.shape[1], -1)}
  for n in _fvd_frames(config):
    if t >= n:
      feats[f'i3d{n}'] = metrics.fvd_features(videos_NxTxHxWx3, num_frames=n, crop=crop)
      if config.dtfvd_weights:
        feats[f'dt{n}'] = metrics.dtfvd_features(videos_NxTxHxWx3, num_frames=n, weights=_dt_path(config, n),
                                                 crop=crop)
  return feats


def _fvd_frames(config) -> tuple[int, ...]:
  return tuple(int(n) for n in config.fvd_frames)


def _dt_path(config, n: int) -> str:
  return config.dtfvd_weights.replace('{n}', str(n))


def distances(real: dict, fake: dict, config) -> dict:
  """Table-1 numbers (plus sliding-window FID) from two feature dicts of ``video_features``."""
  fr, ff = real['inception'], fake['inception']
  flat = lambda f: f.reshape(-1, f.shape[-1])
  out = {'fid': frechet.frechet_distance_from_features(flat(fr), flat(ff)),
         'kid100': 100.0 * frechet.kid_from_features(flat(fr), flat(ff))}
  for n in (16, 32):
    sfx = '' if n == 16 else '32'
    out['fvd' + sfx] = (frechet.frechet_distance_from_features(real[f'i3d{n}'], fake[f'i3d{n}'])
                        if f'i3d{n}' in real else None)
    out['dtfvd' + sfx] = (frechet.frechet_distance_from_features(real[f'dt{n}'], fake[f'dt{n}'])
                          if f'dt{n}' in real else None)
  w = max(1, config.sliding_fid_window // config.fid_frame_stride)  # window in sampled frames
  t = fr.shape[1]
  out['sliding_fid'] = [frechet.frechet_distance_from_features(flat(fr[:, s:s + w]), flat(ff[:, s:s + w]))
                        for s in range(0, t - w + 1, w)]
  return out


class _Cache:
  """Features per (set, method) in ``out_dir/cache``, keyed by what produced them; written atomically (an
  object in object storage is written whole)."""

  def __init__(self, out_dir: str, enabled: bool):
    self.dir = fileio.path(out_dir) / 'cache'
    self.enabled = enabled
    self.dir.mkdir(parents=True, exist_ok=True)

  def _path(self, key: str):
    return self.dir / (hashlib.sha1(key.encode()).hexdigest()[:16] + '.npz')

  def get(self, key: str):
    path = self._path(key)
    if not self.enabled or not path.exists():
      return None
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
      if str(z['_key']) != key:
        return None
      return {k: z[k] for k in z.files if k != '_key'}

  def put(self, key: str, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, _key=np.asarray(key), **arrays)
    fileio.atomic_write_bytes(str(self._path(key)), buf.getvalue())


def _method_key(name: str, method, evalset: EvalSet, config) -> str:
  run_id = ''
  if method.kind == 'ldm':
    run_id = (f'{fileio.absolute(method.run)}:{_checkpoint_steps(method.run)}:{_checkpoint_fingerprint(method.run)}:'
              f'{config.sampling.to_json()}')
  # The true volumes enter the motion metrics of every method (and are the 'truth' method's videos): their
  # hash keeps a cache made with other flow settings (or older targets) from being reused.
  truth = hashlib.sha1(np.ascontiguousarray(evalset.spec).tobytes()).hexdigest()[:16]
  parts = [evalset.name, str(len(evalset.clip_ids)), hashlib.sha1(''.join(evalset.clip_ids).encode()).hexdigest(),
           name, method.kind, run_id, method.splat, config.renderer, _feature_settings(config), truth]
  return '|'.join(parts)


def _real_key(set_name: str, evalset: EvalSet, config) -> str:
  """The cache key of a set's real videos' features."""
  return f'{set_name}|real|{len(evalset.clip_ids)}|{"".join(evalset.clip_ids)}|{_feature_settings(config)}'


def _feature_settings(config) -> str:
  """The part of a cache key that decides what ``video_features`` extracts."""
  return '|'.join([str(tuple(config.crop)), str(config.fid_frame_stride), config.dtfvd_weights,
                   str(_fvd_frames(config))])


def method_order(config) -> list[str]:
  """``config.order`` as a list (``--config.order=a,b`` arrives as one comma-separated string)."""
  order = [config.order] if isinstance(config.order, str) else list(config.order)
  return [k.strip() for item in order for k in str(item).split(',') if k.strip()] or sorted(config.methods)


def check_config(config) -> None:
  """Fail early, naming the value, before hours of work."""
  for key in method_order(config):
    if key not in config.methods:
      raise EvalError(f'config.order names {key!r}, which is not in config.methods')
  for name in method_order(config):
    m = config.methods[name]
    if m.kind not in KINDS:
      raise EvalError(f'methods.{name}.kind must be one of {KINDS}, got {m.kind!r}')
    if m.kind == 'ldm' and not (fileio.path(m.run) / 'checkpoints').is_dir():
      raise EvalError(f'methods.{name}.run: no LDM checkpoint in {m.run!r} (train it, or drop the method '
                      f'with --config.order)')
    if m.splat not in ('', 'softmax', 'average', 'linear'):
      raise EvalError(f"methods.{name}.splat must be '', softmax, average or linear, got {m.splat!r}")
  if config.fid_frame_stride < 1 or config.sliding_fid_window < 1:
    raise EvalError('fid_frame_stride and sliding_fid_window must be >= 1')
  if not set(_fvd_frames(config)) <= {16, 32}:
    raise EvalError(f'fvd_frames must be 16 and/or 32 (FVD and FVD32), got {tuple(config.fvd_frames)}')
  if config.dtfvd_weights:
    for n in _fvd_frames(config):
      if not os.path.exists(_dt_path(config, n)):
        raise EvalError(f'dtfvd_weights: no file {_dt_path(config, n)!r} ("" reports DT-FVD as n/a)')
  if not config.sets:
    raise EvalError('config.sets is empty')
  for name, s in config.sets.items():
    if s.flow not in ('ground_truth', 'dis', 'farneback'):
      raise EvalError(f'sets.{name}.flow must be ground_truth, dis or farneback, got {s.flow!r}')


def _method_features(method, evalset, config, mean_volume, renderer) -> dict:
  """One method's videos for every clip of ``evalset``, their features and (with a volume) motion metrics."""
  spec = method_volumes(method, evalset, config, mean_volume)
  splat_mode = method.splat
  videos = render_videos(evalset, spec, None if splat_mode else renderer, splat_mode or 'softmax')
  feats = video_features(videos, config)
  if spec is not None:
    mm = motion_report.motion_metrics(_fit_k(spec, evalset.spec.shape[1]), evalset.spec, config.moving_px)
    feats['motion'] = np.asarray(json.dumps({k: mm[k] for k in ('iou', 'auc', 'pixel_fd', 'power_log_err',
                                                                'moving_fraction', 'amp_moving_ratio',
                                                                'amp_still_ratio')}))
  return feats


def evaluate(config, progress: bool = False) -> dict:
  """Run every method on every set (see module docstring); returns the results dict also written to JSON."""
  check_config(config)
  show = Progress(progress)
  fileio.path(config.out_dir).mkdir(parents=True, exist_ok=True)
  cache = _Cache(config.out_dir, not config.overwrite)
  renderer_dir = config.renderer or (animate.DEFAULT_RENDERER if os.path.isdir(animate.DEFAULT_RENDERER) else '')
  renderer = animate.load_renderer(renderer_dir) if renderer_dir != 'none' else None
  mean_cache = {}

  def mean_volume():
    if 'v' not in mean_cache:
      mean_cache['v'] = motion_report.mean_volume(config.train_data)
    return mean_cache['v']

  order = method_order(config)
  results = {'config': json.loads(config.to_json()), 'renderer': renderer_dir or 'RGB softmax splat',
             'sets': {}}
  for set_name, set_cfg in config.sets.items():
    if not set_cfg.videos:
      continue
    with show.phase(f'{set_name}: cutting clips and their true motion'):
      evalset = load_set(set_name, set_cfg, config)
    if len(evalset.clip_ids) < 2:  # FID, KID and FVD estimate covariances: one clip cannot be scored
      raise EvalError(f'sets.{set_name}: {len(evalset.clip_ids)} clip(s) in {set_cfg.videos}; the video metrics '
                      'need at least 2 (more videos, or a larger max_videos / clips_per_video)')
    real_key = _real_key(set_name, evalset, config)
    real = cache.get(real_key)
    if real is None:
      with show.phase(f'{set_name}: features of the real videos'):
        real = video_features(evalset.frames, config)
      cache.put(real_key, real)
    rows = {}
    for name in order:
      method = config.methods[name]
      key = _method_key(name, method, evalset, config)
      t0 = time.time()
      feats = cache.get(key)
      if feats is None:
        with show.phase(f'{set_name} / {name}: sampling, rendering and scoring {len(evalset.clip_ids)} clips'):
          feats = _method_features(method, evalset, config, mean_volume, renderer)
        cache.put(key, feats)
      row = distances(real, feats, config)
      motion = json.loads(str(feats['motion'])) if 'motion' in feats else {}
      row.update(motion)
      for k, _ in COLUMNS:
        row.setdefault(k, None)
      row['train_steps'] = _train_steps(method)
      row['label'] = method.label
      rows[name] = row
      log.info('%s / %s: %s (%.0f s)', set_name, name, {k: row[k] for k in ('fid', 'fvd')}, time.time() - t0)
    results['sets'][set_name] = {'label': set_cfg.label, 'clips': len(evalset.clip_ids),
                                 'videos': set_cfg.videos, 'methods': rows}
  fileio.atomic_write_text(str(fileio.path(config.out_dir) / 'results.json'), json.dumps(results, indent=1))
  fileio.atomic_write_text(str(fileio.path(config.out_dir) / 'results.md'), markdown(results))
  return results


def _train_steps(method) -> str:
  if method.kind != 'ldm':
    return ''
  steps = [_checkpoint_steps(method.run)]
  cfg = runs.stored_config(method.run)
  if cfg.get('trainable') == 'freq_attn' and cfg.get('stage1_workdir'):
    # An export (the bundled model) no longer has its stage-1 run beside it: its steps are unknown here.
    stage1 = cfg['stage1_workdir']
    steps.insert(0, _checkpoint_steps(stage1) if fileio.path(stage1).is_dir() else '?')
  return ' + '.join(str(s) for s in steps)


def _fmt(v) -> str:
  if v is None or v == '':
    return 'n/a' if v is None else ''
  if isinstance(v, str):
    return v
  return f'{v:.3g}' if abs(v) < 100 else f'{v:.1f}'


def markdown(results: dict) -> str:
  cfg = results['config']
  lines = ['# Evaluation', '',
           f'`python -m gid_jax.evaluate --config=configs/eval.py:size={cfg["size"]}` '
           f'(renderer: {results["renderer"]}; {cfg["sampling"]["num_steps"]} DDIM steps, eta '
           f'{cfg["sampling"]["eta"]}, guidance {cfg["sampling"]["guidance"]}; crop {cfg["crop"][1]} x '
           f'{cfg["crop"][0]}; FID/KID on every {cfg["fid_frame_stride"]}th frame). Lower is better except '
           'moving IoU. DT-FVD is n/a without a DTDB I3D weight file (config.dtfvd_weights).', '']
  for s in results['sets'].values():
    lines += [f'## {s["label"]} ({s["clips"]} clips from {s["videos"]})', '',
              '| method | ' + ' | '.join(c[1] for c in COLUMNS) + ' |',
              '|---|' + '---:|' * len(COLUMNS)]
    for row in s['methods'].values():
      lines.append(f'| {row["label"]} | ' + ' | '.join(_fmt(row.get(c[0])) for c in COLUMNS) + ' |')
    first = next(iter(s['methods'].values()))
    lines += ['', f'Sliding-window FID ({cfg["sliding_fid_window"]}-frame windows, one column per window):', '',
              '| method | ' + ' | '.join(f'w{i}' for i in range(len(first['sliding_fid']))) + ' |',
              '|---|' + '---:|' * len(first['sliding_fid'])]
    for row in s['methods'].values():
      lines.append(f'| {row["label"]} | ' + ' | '.join(_fmt(v) for v in row['sliding_fid']) + ' |')
    lines.append('')
  return '\n'.join(lines) + '\n'


def build_parser():
  p = cli.Parser('gid-evaluate', __doc__, config_required=True)
  p.add_argument('--overwrite', action='store_true',
                 help='write results into a config.out_dir that holds other files (they are kept)')
  return p


def precheck(config, overwrite: bool) -> None:
  """Every check that needs no model or data loading: config values, the sets' folders, the output folder."""
  out = config.out_dir
  where = fileio.path(out)  # a local folder or an object-storage URL
  earlier = (where / 'results.json').is_file() or (where / 'cache').is_dir()
  if not earlier:
    fileio.check_output(out, overwrite, '--config.out_dir', kind='dir')
  check_config(config)
  for name, s in config.sets.items():
    if s.videos and not os.path.isdir(s.videos):
      raise EvalError(f'sets.{name}.videos: no folder {s.videos!r}')


def run(args) -> None:
  precheck(args.config, args.overwrite)
  results = evaluate(args.config, progress=args.progress)
  print(markdown(results))


def main(argv=None) -> int:
  return cli.main(run, build_parser(), argv, expected=(FileNotFoundError,))


if __name__ == '__main__':
  sys.exit(main())
