"""Input pipeline: grain over a TFDS ArrayRecord dataset (random access, no TensorFlow).

``make_dataset(data_dir, split, batch_size=...)`` yields batches

    image_BxHxWx3      float32 in [-1, 1] (the clip's first frame)
    nspec_BxKxHxWx4    float32, the *normalised* spectral volume (gid_jax.motion.normalize)
    start_frame_B      int32

with a seeded shuffle that changes every epoch, per-process sharding for multi-host training (each process
reads a disjoint 1/process_count of the examples; ``batch_size`` is per process) and an iterator whose
state can be saved with orbax (``grain.checkpoint.CheckpointSave(iterator)``) so a resumed run continues
with exactly the next batch.
"""

from __future__ import annotations

import os

import grain
import numpy as np

from gid_jax.data import build as build_lib
from gid_jax.motion import normalize as norm_lib


def _resolve(data_dir: str) -> tuple[str, str]:
  """(TFDS version folder, folder holding norm_stats.json) from a build --out folder or the version folder."""
  data_dir = os.path.abspath(data_dir)
  if os.path.exists(os.path.join(data_dir, 'dataset_info.json')):
    return data_dir, os.path.dirname(os.path.dirname(data_dir))
  version_dir = build_lib.dataset_dir(data_dir)
  if not os.path.exists(os.path.join(version_dir, 'dataset_info.json')):
    raise FileNotFoundError(f'no gid_jax dataset in {data_dir} (build one with python -m gid_jax.data.build)')
  return version_dir, data_dir


def load_stats(data_dir: str) -> norm_lib.NormStats:
  return norm_lib.NormStats.load(os.path.join(_resolve(data_dir)[1], norm_lib.STATS_FILENAME))


def data_source(data_dir: str, split: str):
  """Random-access source of raw examples (image uint8, spectral_volume, video_id, start_frame)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  version_dir, _ = _resolve(data_dir)
  builder = tfds.builder_from_directory(version_dir)
  if split not in builder.info.splits:
    raise ValueError(f'{data_dir} has no split {split!r} (it has {sorted(builder.info.splits)})')
  return builder.as_data_source(split)


class Preprocess(grain.transforms.Map):
  """Raw example -> model inputs; normalises the spectral volume with the dataset's statistics."""

  def __init__(self, stats: norm_lib.NormStats | None):
    self.stats = stats

  def map(self, ex):
    spec = np.asarray(ex['spectral_volume'], np.float32)
    out = {'image': np.asarray(ex['image'], np.float32) / 127.5 - 1.0,
           'start_frame': np.int32(ex['start_frame'])}
    if self.stats is None:
      out['spec'] = spec  # pixel units, for evaluation
    else:
      out['nspec'] = norm_lib.normalize(spec, self.stats)
    return out


def make_dataset(data_dir: str, split: str = 'train', *, batch_size: int, seed: int = 0,
                 shuffle: bool = True, num_epochs: int | None = None, drop_remainder: bool = True,
                 shard_index: int | None = None, shard_count: int | None = None, normalize: bool = True,
                 worker_count: int = 0) -> grain.IterDataset:
  """Batched, shuffled, sharded, normalised dataset (see module docstring); ``num_epochs=None`` repeats."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, {shard_count})')
  src = data_source(data_dir, split)
  n = len(src)
  if n // shard_count < (batch_size if drop_remainder else 1):
    raise ValueError(f'split {split!r} of {data_dir} has {n} examples: too few for {shard_count} '
                     f'process(es) x batch {batch_size}')
  stats = load_stats(data_dir) if normalize else None
  ds = grain.MapDataset.source(src)
  # Equal shards (the remainder is dropped) so that every process runs the same number of steps.
  per = n // shard_count
  ds = ds[shard_index * per:(shard_index + 1) * per]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  ds = ds.map(Preprocess(stats)).batch(batch_size, drop_remainder=drop_remainder)
  it = ds.to_iter_dataset()
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it
