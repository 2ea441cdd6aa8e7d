"""Input pipeline: grain over a TFDS ArrayRecord dataset (random access, no TensorFlow).

``make_dataset(data_dir, split, batch_size=...)`` yields batches

    image_BxHxWx3      float32 in [-1, 1] (the clip's first frame)
    nspec_BxKxHxWx4    float32, the *normalised* spectral volume (gid_jax.motion.normalize)
    start_frame_B      int32

or, with ``name='gid_frames'``, the renderer's examples (image, target I_t, flow F_t, importance W, t);
with a seeded shuffle that changes every epoch, per-process sharding for multi-host training (each process
reads a disjoint 1/process_count of the examples; ``batch_size`` is per process) and an iterator whose
state can be saved with orbax (``grain.checkpoint.CheckpointSave(iterator)``) so a resumed run continues
with exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
from absl import flags as absl_flags
import jax
import numpy as np
import tensorflow_datasets as tfds

from gid_jax import fileio
from gid_jax.data import DATASET_NAME, FRAMES_DATASET_NAME
from gid_jax.data import records
from gid_jax.motion import normalize as norm_lib


@functools.lru_cache(maxsize=None)
def _local(data_dir: str) -> str:
  """``data_dir``, or for a URL (gs://bucket/data) its local mirror, brought up to date once per process."""
  return fileio.download(data_dir)


def _resolve(data_dir: str, name: str = DATASET_NAME) -> tuple[str, str]:
  """(TFDS version folder, folder holding norm_stats.json) from a build --out folder or the version folder."""
  where = fileio.path(_local(data_dir))  # a dataset in object storage is read from its local mirror
  data_dir = str(where)
  if (where / 'dataset_info.json').exists():
    return data_dir, str(where.parent.parent)
  version_dir = records.dataset_dir(data_dir, name)
  if not (fileio.path(version_dir) / 'dataset_info.json').exists():
    raise FileNotFoundError(f'no {name} dataset in {data_dir} (build one with python -m gid_jax.data.build)')
  return version_dir, data_dir


def load_stats(data_dir: str) -> norm_lib.NormStats:
  return norm_lib.NormStats.load(str(fileio.path(_resolve(data_dir)[1]) / norm_lib.STATS_FILENAME))


def training_stats(data_dir: str, normalize: str = '', num_freqs: int = 0) -> norm_lib.NormStats:
  """The normalisation a run trains with, and through it the K it uses.

  ``normalize``: '' keeps the dataset's own statistics (``norm_stats.json``, the paper's adaptive ones by
  default); 'image_size' is the "w/o adaptive norm" ablation (x by width, y by height) without rebuilding.
  ``num_freqs``: use the first ``num_freqs`` frequencies only (the K ablations); 0 keeps the dataset's K.
  """
  stats = load_stats(data_dir)
  k = stats.num_freqs
  if num_freqs:
    if not 1 <= int(num_freqs) <= k:
      raise ValueError(f'num_freqs must be in [1, {k}] (the dataset has K={k}), got {num_freqs}')
    k = int(num_freqs)
  if normalize == '':
    return dataclasses.replace(stats, scales=tuple(stats.scales[:k]))
  if normalize == 'image_size':
    built = load_build_config(data_dir)
    return norm_lib.image_size_stats(k, int(built['width']), int(built['height']), stats.power)
  raise ValueError(f"normalize must be '' (the dataset's statistics) or 'image_size', got {normalize!r}")


def data_source(data_dir: str, split: str, name: str = DATASET_NAME):
  """Random-access source of raw examples of the dataset ``name`` ('gid_motion' or 'gid_frames')."""
  version_dir, _ = _resolve(data_dir, name)
  builder = tfds.builder_from_directory(version_dir)
  if split not in builder.info.splits:
    raise ValueError(f'{data_dir} has no split {split!r} (it has {sorted(builder.info.splits)})')
  return builder.as_data_source(split)


def _to_float(image_HxWx3) -> np.ndarray:
  return np.asarray(image_HxWx3, np.float32) / 127.5 - 1.0


class Preprocess(grain.transforms.Map):
  """Raw motion example -> model inputs; normalises the spectral volume with the dataset's statistics."""

  def __init__(self, stats: norm_lib.NormStats | None):
    self.stats = stats

  def map(self, ex):
    spec = np.asarray(ex['spectral_volume'], np.float32)
    if self.stats is not None:
      spec = spec[:self.stats.num_freqs]  # a run may use the first K' < K frequencies
    out = {'image': _to_float(ex['image']), 'start_frame': np.int32(ex['start_frame'])}
    if self.stats is None:
      out['spec'] = spec  # pixel units, for evaluation
    else:
      out['nspec'] = norm_lib.normalize(spec, self.stats)
    return out


class PreprocessFrames(grain.transforms.Map):
  """Raw renderer example -> image/target HxWx3 in [-1, 1], flow_HxWx2 (px), importance_HxWx1, t."""

  def map(self, ex):
    return {'image': _to_float(ex['image']), 'target': _to_float(ex['target']),
            'flow': np.asarray(ex['flow'], np.float32), 'importance': np.asarray(ex['importance'], np.float32),
            't': np.int32(ex['t'])}


def read_options(prefetch: int) -> grain.ReadOptions:
  """A bounded read-ahead: ``prefetch`` batches (grain's default of 500 can hold gigabytes at paper size)."""
  return grain.ReadOptions(num_threads=max(1, min(16, prefetch)), prefetch_buffer_size=prefetch)


def make_dataset(data_dir: str, split: str = 'train', *, batch_size: int, seed: int = 0,
                 shuffle: bool = True, num_epochs: int | None = None, drop_remainder: bool = True,
                 shard_index: int | None = None, shard_count: int | None = None, normalize: bool = True,
                 worker_count: int = 0, prefetch: int = 4, name: str = DATASET_NAME,
                 stats: norm_lib.NormStats | None = None) -> grain.IterDataset:
  """Batched, shuffled, sharded, normalised dataset (see module docstring); ``num_epochs=None`` repeats.

  ``prefetch``: batches read ahead (by as many threads, at most 16); ``worker_count`` > 0 decodes in that
  many worker processes instead.

  ``stats`` (default: the dataset's own) normalises, and its K cuts the volume (:func:`training_stats`).

  ``name='gid_frames'`` reads the renderer's (I_0, I_t, F_t) triples instead (see PreprocessFrames).
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if shard_index is None or shard_count is None:
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, {shard_count})')
  src = data_source(data_dir, split, name)
  n = len(src)
  if n // shard_count < (batch_size if drop_remainder else 1):
    raise ValueError(f'split {split!r} of {data_dir} has {n} examples: too few for {shard_count} '
                     f'process(es) x batch {batch_size}')
  if name == FRAMES_DATASET_NAME:
    prep = PreprocessFrames()
  else:
    prep = Preprocess((stats or load_stats(data_dir)) if normalize else None)
  ds = grain.MapDataset.source(src)
  # Equal shards (the remainder is dropped) so that every process runs the same number of steps.
  per = n // shard_count
  ds = ds[shard_index * per:(shard_index + 1) * per]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  ds = ds.map(prep).batch(batch_size, drop_remainder=drop_remainder)
  it = ds.to_iter_dataset(read_options(prefetch))
  if worker_count > 0:
    # grain's worker processes read absl flags (its own options), which our argparse commands never parse:
    # without this, worker_count > 0 failed with UnparsedFlagAccessError. Parsed as "no command-line flags".
    if not absl_flags.FLAGS.is_parsed():
      absl_flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def load_build_config(data_dir: str, name: str = DATASET_NAME) -> dict:
  """The data config the dataset was built with (size, fps, num_frames, num_freqs, ...), as a dict."""
  version_dir, _ = _resolve(data_dir, name)
  return dict(tfds.builder_from_directory(version_dir).info.metadata['build_config'])
