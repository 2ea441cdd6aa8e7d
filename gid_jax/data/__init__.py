"""Video I/O, the synthetic world, the dataset builder and the grain pipeline.

The names of a built dataset's parts live here (no heavy imports), so that the entry points can check a
``--config.data_dir`` in milliseconds, before any JAX or TFDS work.
"""

from __future__ import annotations

from gid_jax import fileio
from gid_jax.errors import InputError

DATASET_NAME = 'gid_motion'  # (image, spectral volume) pairs: the VAE and the LDM train on it
FRAMES_DATASET_NAME = 'gid_frames'  # (I_0, I_t, F_t) triples: the renderer trains on it
REPORT_FILENAME = 'build_report.json'


def check_built(data_dir: str, name: str = DATASET_NAME, option: str = '--config.data_dir') -> None:
  """InputError (one line) unless ``data_dir`` holds the built dataset ``name``."""
  if not data_dir:
    raise InputError(f'{option} is empty: pass a folder made by gid-build (python -m gid_jax.data.build)')
  where = fileio.path(data_dir)  # a local folder, or object storage (read from a local mirror: fileio.download)
  if not where.is_dir():
    raise InputError(f'{option} {data_dir}: no such folder')
  if not (where / name).is_dir():
    raise InputError(f'{option} {data_dir} holds no {name} dataset (build one with gid-build; '
                     f'the frames dataset needs frame_pairs_per_clip > 0)')
