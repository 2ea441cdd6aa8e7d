"""Dataset builder: a folder of videos -> a TFDS ArrayRecord dataset of (image, spectral volume) pairs.

    gid-build --videos DIR --out DIR [--config=configs/data.py:size=tiny] [--keep-cache] [--overwrite]
    (or python -m gid_jax.data.build ...)

For every video (decoded at ``fps``, centre-cropped and resized to ``width x height``), every
``start_stride``-th frame starts a clip of ``num_frames`` frames; motion from the clip's first frame to each
of its frames is extracted (``gid_jax.motion.flow``), filtered (camera motion, static) and turned into a
spectral volume with ``num_freqs`` terms. Videos are split into train/test *by video* (a seeded permutation
of the sorted video ids; ``test_fraction`` of them, at least one when there are two or more, held out), and
the normalisation statistics are fitted on train only.

Layout of ``--out``::

    gid_motion/1.0.0/        the TFDS dataset (ArrayRecord shards; splits 'train' and 'test')
    gid_frames/1.0.0/        (I_0, I_t, F_t) triples for the renderer, frame_pairs_per_clip per clip
    norm_stats.json          normalisation statistics (gid_jax.motion.normalize.NormStats)
    build_report.json        per video: split, status, reason if skipped, clips kept / rejected and why
    cache/                   per-video results while building (removed at the end unless --keep-cache)

Resuming: each video's clips are written to a temporary folder that is renamed into ``cache/`` only when
the video is complete, with a record of the config it was made with; a rerun reuses every finished video
made with the same config and redoes the rest. TFDS writes the dataset into an ``incomplete.*`` folder and
renames it at the end, so a killed build never leaves a readable half-written dataset.
Unreadable, corrupt and too-short videos are skipped with a warning and listed in the report.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from gid_jax import cli, fileio
from gid_jax.data import clips as clips_lib
from gid_jax.data import pipeline
from gid_jax.data import records as records_lib
from gid_jax.data import video as video_lib
from gid_jax.errors import InputError
from gid_jax.fileio import atomic_path, atomic_write_text
from gid_jax.motion import flow as flow_lib
from gid_jax.motion import normalize as norm_lib
from gid_jax.motion import spectral
from gid_jax.ops import splat
from gid_jax.progress import Progress
from gid_jax.data import DATASET_NAME, FRAMES_DATASET_NAME, REPORT_FILENAME  # pylint: disable=g-bad-import-order

_RECORD = 'record.json'
# 'auto': synthetic scenes' exact motion where a scene file exists, DIS flow elsewhere (ClipMotion).
FLOW_METHODS = flow_lib.METHODS + ('ground_truth', 'auto')

log = logging.getLogger('gid_jax.build')


class BuildError(InputError):
  """The build cannot produce a dataset (no videos, no usable clips, bad config)."""


# ----------------------------------------------------------------------------------------------- config

def _fingerprint(config) -> str:
  """Hash of everything that changes a video's clips (not the split or the normalisation)."""
  keys = {k: config[k] for k in ('width', 'height', 'fps', 'num_frames', 'num_freqs', 'start_stride',
                                 'spectral_dtype', 'frame_pairs_per_clip')}
  if clips_lib.image_scale(config) != 1:  # caches of builds older than the option stay valid
    keys['image_scale'] = clips_lib.image_scale(config)
  keys['flow'] = config.flow.to_dict()
  keys['filters'] = config.filters.to_dict()
  return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def validate_config(config) -> None:
  """Raise BuildError naming the first bad value."""
  def bad(name, value, want):
    raise BuildError(f'bad config value {name}={value!r}: expected {want}')
  if not isinstance(config.frame_pairs_per_clip, int) or config.frame_pairs_per_clip < 0:
    bad('frame_pairs_per_clip', config.frame_pairs_per_clip, 'an integer >= 0')
  for k in ('width', 'height', 'num_frames', 'num_freqs', 'start_stride'):
    if not isinstance(config[k], int) or config[k] < 1:
      bad(k, config[k], 'a positive integer')
  if not isinstance(config.get('image_scale', 1), int) or config.get('image_scale', 1) < 1:
    bad('image_scale', config.image_scale, 'a positive integer')
  if config.width < 8 or config.height < 8:
    bad('width/height', (config.width, config.height), 'at least 8 x 8 pixels')
  if not config.fps > 0:
    bad('fps', config.fps, 'a positive number')
  if 2 * (config.num_freqs - 1) >= config.num_frames:
    bad('num_freqs', config.num_freqs, f'fewer than {config.num_frames // 2 + 1} (Nyquist of num_frames)')
  if config.spectral_dtype not in ('float32', 'float16'):
    bad('spectral_dtype', config.spectral_dtype, "'float32' or 'float16'")
  if config.flow.method not in FLOW_METHODS:
    bad('flow.method', config.flow.method, f'one of {FLOW_METHODS}')
  if config.flow.method in ('dis', 'auto') and config.flow.preset not in flow_lib.DIS_PRESETS:
    bad('flow.preset', config.flow.preset, f'one of {tuple(flow_lib.DIS_PRESETS)}')
  if config.flow.color not in flow_lib.COLORS:
    bad('flow.color', config.flow.color, f'one of {flow_lib.COLORS}')
  if not isinstance(config.flow.max_side, int) or config.flow.max_side < 0:
    bad('flow.max_side', config.flow.max_side, 'an integer >= 0')
  if not 0.0 <= config.split.test_fraction < 1.0:
    bad('split.test_fraction', config.split.test_fraction, 'a number in [0, 1)')
  if config.normalize.mode not in norm_lib.MODES:
    bad('normalize.mode', config.normalize.mode, f'one of {norm_lib.MODES}')
  if config.normalize.power not in norm_lib.POWERS:
    bad('normalize.power', config.normalize.power, f'one of {norm_lib.POWERS}')
  if not 0.0 < config.normalize.percentile <= 100.0:
    bad('normalize.percentile', config.normalize.percentile, 'a number in (0, 100]')
  if not 0.0 <= config.normalize.get('min_magnitude', 0.0) < 1.0:
    bad('normalize.min_magnitude', config.normalize.min_magnitude, 'a number of pixels in [0, 1)')
  if not 0.0 < config.filters.static_quantile <= 1.0:
    bad('filters.static_quantile', config.filters.static_quantile, 'a number in (0, 1]')


# ------------------------------------------------------------------------------------------------ split

def video_id(videos_dir: str, path: str) -> str:
  return os.path.splitext(os.path.relpath(path, videos_dir))[0].replace(os.sep, '/')


def split_videos(ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
  """Seeded split *by video*: {id: 'train' | 'test'}."""
  ids = sorted(ids)
  n_test = int(round(test_fraction * len(ids)))
  if test_fraction > 0 and len(ids) >= 2:
    n_test = max(n_test, 1)
  n_test = min(n_test, len(ids) - 1) if ids else 0
  order = np.random.default_rng(seed).permutation(len(ids))
  test = {ids[i] for i in order[:n_test]}
  return {i: ('test' if i in test else 'train') for i in ids}


def _cache_name(vid: str) -> str:
  safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', vid)[-80:]
  return f'{safe}-{hashlib.sha1(vid.encode()).hexdigest()[:8]}'


# ------------------------------------------------------------------------------------------- per video

def _pair_times(vid: str, start: int, config) -> np.ndarray:
  """Seeded frame offsets t in 1..T-1 whose (I_0, I_t, F_t) triples train the renderer."""
  n = min(config.frame_pairs_per_clip, config.num_frames - 1)
  seed = int(hashlib.sha1(f'{vid}@{start}'.encode()).hexdigest()[:8], 16)
  return np.sort(np.random.default_rng([config.split.seed, seed]).choice(
      np.arange(1, config.num_frames), n, replace=False)).astype(np.int32)


def process_video(path: str, vid: str, split: str, config, motion: clips_lib.ClipMotion, dest: str) -> dict:
  """Extract every clip of one video into the folder ``dest`` (made atomically); returns its record."""
  record = {'video_id': vid, 'path': os.path.abspath(path), 'split': split,
            'fingerprint': _fingerprint(config), 'status': 'ok', 'reason': '', 'clips': 0,
            'rejected': {}, 'starts': []}
  dtype = np.dtype(config.spectral_dtype)
  with atomic_path(dest, is_dir=True) as tmp:
    try:
      for start, frames, disp, image in clips_lib.clips_with_motion(path, config, motion):
        verdict = flow_lib.filter_clip(disp, config.filters.camera_motion_px, config.filters.static_px,
                                       config.filters.static_quantile)
        if not verdict.keep:
          record['rejected'][verdict.reason] = record['rejected'].get(verdict.reason, 0) + 1
          log.debug('%s: clip at frame %d rejected (%s)', vid, start, verdict.describe())
          continue
        spec = np.asarray(spectral.to_spectral_volume(disp, config.num_freqs)).astype(dtype)
        if not np.all(np.isfinite(spec)):
          record['rejected']['non_finite'] = record['rejected'].get('non_finite', 0) + 1
          continue
        ts = _pair_times(vid, start, config)
        extra = {'cond_image': image} if clips_lib.image_scale(config) != 1 else {}  # at image_scale
        np.savez(os.path.join(tmp, f'clip_{start:06d}.npz'), image=frames[0], spec=spec, pair_t=ts, **extra,
                 pair_frames=frames[ts], pair_flows=disp[ts].astype(np.float32),
                 importance=np.asarray(splat.splat_weight(disp), np.float32))
        record['clips'] += 1
        record['starts'].append(start)
    except video_lib.VideoError as e:
      for f in glob.glob(os.path.join(tmp, 'clip_*.npz')):
        os.remove(f)
      record.update(status='skipped', reason=str(e), clips=0, starts=[])
    with open(os.path.join(tmp, _RECORD), 'w') as f:
      json.dump(record, f, indent=1)
  return record


def _load_record(dest: str, fingerprint: str) -> dict | None:
  try:
    with open(os.path.join(dest, _RECORD)) as f:
      rec = json.load(f)
  except (OSError, ValueError):
    return None
  return rec if rec.get('fingerprint') == fingerprint else None


def _clip_files(cache_dir: str, records: list[dict]) -> list[tuple[dict, str]]:
  out = []
  for rec in records:
    d = os.path.join(cache_dir, _cache_name(rec['video_id']))
    out.extend((rec, os.path.join(d, f'clip_{s:06d}.npz')) for s in rec['starts'])
  return out


# ------------------------------------------------------------------------------------------------- build

@dataclasses.dataclass
class BuildReport:
  out_dir: str
  videos: list[dict]
  num_clips: dict
  reused: int
  stats: dict

  def summary(self) -> str:
    ok = [v for v in self.videos if v['status'] == 'ok']
    lines = [f'{len(ok)}/{len(self.videos)} videos used ({self.reused} reused from a previous run); '
             f'clips: train {self.num_clips.get("train", 0)}, test {self.num_clips.get("test", 0)}']
    rejected = collections.Counter()
    for v in self.videos:
      rejected.update(v['rejected'])
      if v['status'] != 'ok':
        lines.append(f'  skipped {v["video_id"]}: {v["reason"]}')
    if rejected:
      lines.append('  clips rejected: ' + ', '.join(f'{k} {n}' for k, n in sorted(rejected.items())))
    lines.append(f'dataset: {records_lib.dataset_dir(self.out_dir)}')
    return '\n'.join(lines)


def build(videos_dir: str, out_dir: str, config, keep_cache: bool = False, progress: bool = True
          ) -> BuildReport:
  """Build (or resume building) the dataset; see the module docstring."""
  validate_config(config)
  paths = video_lib.list_videos(videos_dir)
  if not paths:
    raise BuildError(f'no video files ({", ".join(video_lib.VIDEO_EXTENSIONS)}) found in {videos_dir}')
  ids = [video_id(videos_dir, p) for p in paths]
  splits = split_videos(ids, config.split.test_fraction, config.split.seed)
  fingerprint = _fingerprint(config)
  cache_dir = os.path.join(out_dir, 'cache')
  os.makedirs(cache_dir, exist_ok=True)
  for stale in glob.glob(os.path.join(cache_dir, '.tmp-*')):  # left by a killed run
    shutil.rmtree(stale, ignore_errors=True)

  motion = clips_lib.ClipMotion(config)
  records, reused = [], 0
  bar = tqdm(list(zip(paths, ids)), desc='videos', unit='video', disable=not progress)
  for path, vid in bar:
    dest = os.path.join(cache_dir, _cache_name(vid))
    rec = _load_record(dest, fingerprint)
    if rec is not None:
      reused += 1
    else:
      if os.path.exists(dest):
        shutil.rmtree(dest)  # made with another config
      rec = process_video(path, vid, splits[vid], config, motion, dest)
      if rec['status'] != 'ok':
        log.warning('skipping %s', rec['reason'])
        if progress:
          tqdm.write(f'warning: skipping {rec["reason"]}', file=sys.stderr)
    rec['split'] = splits[vid]  # the split depends on the whole folder, not on the video
    records.append(rec)
    bar.set_postfix(clips=sum(r['clips'] for r in records))

  clips = {s: _clip_files(cache_dir, [r for r in records if r['split'] == s]) for s in ('train', 'test')}
  report_path = os.path.join(out_dir, REPORT_FILENAME)
  if not clips['train']:
    atomic_write_text(report_path, json.dumps({'videos': records, 'complete': False}, indent=1))
    raise BuildError(f'no usable training clips in {videos_dir} (see {report_path})')

  # Normalisation statistics, fitted on train clips only.
  def train_specs():
    for _, f in clips['train']:
      with np.load(f) as z:
        yield z['spec']

  stats = fit_normalization(config.normalize, train_specs, len(clips['train']), config.num_freqs, config.width,
                            config.height, progress)
  stats.save(os.path.join(out_dir, norm_lib.STATS_FILENAME))

  # The TFDS dataset: always rewritten from the cache (cheap next to flow extraction).
  tfds.disable_progress_bar()  # ours is enough
  records_lib.allow_spill()
  meta = {'build_config': config.to_dict(), 'norm_stats': json.loads(stats.to_json()),
          'num_videos': {s: sum(1 for r in records if r['split'] == s and r['status'] == 'ok')
                         for s in ('train', 'test')}}
  names = [DATASET_NAME] + ([FRAMES_DATASET_NAME] if config.frame_pairs_per_clip else [])
  for name in records_lib.DATASETS:
    ds_root = os.path.join(out_dir, name)
    if os.path.isdir(ds_root):
      shutil.rmtree(ds_root)
  for name in names:
    builder = records_lib.builder_classes()[name](config_dict=config.to_dict(), clips=clips, metadata=meta,
                                        data_dir=out_dir, file_format='array_record')
    # TFDS prints "Downloading and preparing dataset ..." for a local build: said only with --verbose.
    quiet = logging.getLogger('gid_jax').getEffectiveLevel() > logging.INFO
    with Progress(progress).phase(f'writing the {name} ArrayRecord dataset'), \
         contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))

  report = BuildReport(out_dir=out_dir, videos=records, reused=reused,
                       num_clips={s: len(c) for s, c in clips.items()},
                       stats=json.loads(stats.to_json()))
  atomic_write_text(report_path, json.dumps(dict(dataclasses.asdict(report), complete=True,
                                                 config=config.to_dict()), indent=1))
  if not keep_cache:
    shutil.rmtree(cache_dir, ignore_errors=True)
  shutil.rmtree(os.path.join(out_dir, 'downloads'), ignore_errors=True)  # TFDS makes an empty one
  return report


def build_parser():
  p = cli.Parser('gid-build', __doc__, config_default='configs/data.py')
  p.add_argument('--videos', help='folder of input videos (searched recursively)')
  p.add_argument('--out', required=True, help='output folder for the dataset (a new, empty or earlier build)')
  p.add_argument('--overwrite', action='store_true',
                 help='build into a folder that holds other files (they are kept; our own parts are replaced)')
  p.add_argument('--keep-cache', action='store_true',
                 help='keep per-video extraction results after a successful build')
  p.add_argument('--refit-stats', action='store_true',
                 help="refit the finished dataset --out's normalisation statistics (config.normalize.*) "
                      'from its training clips, without --videos; runs trained on the old ones keep theirs')
  return p


def fit_normalization(normalize, specs, count: int, num_freqs: int, width: int, height: int,
                      progress: bool = False) -> norm_lib.NormStats:
  """The statistics of the config block ``normalize`` over ``specs()`` (a callable giving the ``count``
  training volumes, pixel units; read only for the adaptive mode)."""
  acc = None
  if normalize.mode == 'adaptive':
    acc = norm_lib.ScaleAccumulator(num_freqs)
    for spec in tqdm(specs(), total=count, desc='normalisation stats', unit='clip', disable=not progress):
      acc.update(spec)
  return norm_lib.make_stats(normalize.mode, acc, percentile=normalize.percentile, power=normalize.power,
                             num_freqs=num_freqs, width=width, height=height,
                             min_magnitude=normalize.get('min_magnitude', 0.0))


def refit_stats(out_dir: str, config, progress: bool = False) -> norm_lib.NormStats:
  """Refit ``out_dir``'s ``norm_stats.json`` with ``config.normalize`` from its stored training clips.

  Only the statistics change (the clips are stored in pixels): a run records the statistics it trained
  with, so earlier runs and their exports are unaffected; a run trained after this uses the new ones."""
  report_path = os.path.join(out_dir, REPORT_FILENAME)
  report = json.loads(fileio.path(report_path).read_text()) if os.path.isfile(report_path) else {}
  if not report.get('complete'):
    raise BuildError(f'--refit-stats: {out_dir} is not a finished dataset (no complete {REPORT_FILENAME})')
  built = pipeline.load_build_config(out_dir)
  source = pipeline.data_source(out_dir, 'train')
  specs = lambda: (np.asarray(source[i]['spectral_volume'], np.float32) for i in range(len(source)))
  stats = fit_normalization(config.normalize, specs, len(source), int(built['num_freqs']), int(built['width']),
                            int(built['height']), progress)
  stats.save(os.path.join(out_dir, norm_lib.STATS_FILENAME))
  report['stats'] = json.loads(stats.to_json())
  report.setdefault('config', {})['normalize'] = config.normalize.to_dict()
  atomic_write_text(report_path, json.dumps(report, indent=1))
  return stats


def is_build_folder(out_dir: str) -> bool:
  """True if ``out_dir`` was made by this builder (a finished or interrupted build)."""
  where = fileio.path(out_dir)
  return (where / REPORT_FILENAME).is_file() or (where / 'cache').is_dir()


def check_out(out_dir: str, overwrite: bool) -> None:
  """A new or empty folder, or an earlier build (resumed); anything else only with ``overwrite``."""
  if fileio.path(out_dir).is_dir() and is_build_folder(out_dir):
    return
  fileio.check_output(out_dir, overwrite, '--out', kind='dir')


def run(args) -> None:
  validate_config(args.config)
  if args.refit_stats:
    if fileio.is_remote(args.out):
      raise BuildError('--refit-stats works on a local dataset folder')
    stats = refit_stats(args.out, args.config, progress=args.progress)
    print(f'{args.out}: normalisation statistics refitted ({args.config.normalize.mode}, percentile '
          f'{stats.percentile:g} of |coefficients| >= {stats.min_magnitude:g} px): scales '
          + ' '.join(f'{row[0]:.3g}' for row in stats.scales))
    return
  if not args.videos:
    raise BuildError('--videos is required (the folder of input videos), except with --refit-stats')
  # Object storage (gs://...): videos are read from their local mirror; the dataset is built in the local
  # mirror of --out (an earlier build there is fetched first, so the build resumes) and uploaded at the end.
  videos = fileio.download(args.videos) if fileio.is_remote(args.videos) else args.videos
  if not video_lib.list_videos(videos):
    raise BuildError(f'no video files ({", ".join(video_lib.VIDEO_EXTENSIONS)}) found in {args.videos}')
  check_out(args.out, args.overwrite)
  out = args.out
  if fileio.is_remote(out):
    out = fileio.download(out) if fileio.path(out).is_dir() else fileio.mirror(out)
  report = build(videos, out, args.config, keep_cache=args.keep_cache, progress=args.progress)
  if out != args.out:
    fileio.upload(out, args.out)
  print(report.summary())


def main(argv=None) -> int:
  return cli.main(run, build_parser(), argv, expected=(FileNotFoundError,))


if __name__ == '__main__':
  sys.exit(main())
