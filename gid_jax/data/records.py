"""The datasets on disk: TFDS ArrayRecord builders of ``gid_motion`` (image, spectral volume) and ``gid_frames``
((I_0, I_t, F_t) triples for the renderer), written from the builder's per-video cache without TensorFlow.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import shuffle

from gid_jax.data import DATASET_NAME, FRAMES_DATASET_NAME

DATASET_VERSION = '1.0.0'
DESCRIPTION = 'Dataset builder: a folder of videos -> a TFDS ArrayRecord dataset of (image, spectral volume) pairs.'


def _png(image_HxWx3: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image_HxWx3).save(buf, format='png')
  return buf.getvalue()


def _motion_features(c):
  k, h, w, s = c['num_freqs'], c['height'], c['width'], c.get('image_scale', 1)
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(s * h, s * w, 3), encoding_format='png'),  # at image_scale
      'spectral_volume': tfds.features.Tensor(shape=(k, h, w, 4), dtype=np.dtype(c['spectral_dtype'])),
      'video_id': tfds.features.Text(),
      'start_frame': tfds.features.Scalar(dtype=np.int32),
  })


def _motion_examples(rec, start, z):
  yield f'{rec["video_id"]}@{start}', {
      'image': _png(z['cond_image'] if 'cond_image' in z else z['image']), 'spectral_volume': z['spec'],
      'video_id': rec['video_id'],
      'start_frame': start}


def _frames_features(c):
  h, w = c['height'], c['width']
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(h, w, 3), encoding_format='png'),
      'target': tfds.features.Image(shape=(h, w, 3), encoding_format='png'),
      'flow': tfds.features.Tensor(shape=(h, w, 2), dtype=np.float32),
      # The motion-aware splat weight of the whole clip, W(p) = mean_t ||F_t(p)|| (SPEC.md section 5).
      'importance': tfds.features.Tensor(shape=(h, w, 1), dtype=np.float32),
      't': tfds.features.Scalar(dtype=np.int32),
      'video_id': tfds.features.Text(),
      'start_frame': tfds.features.Scalar(dtype=np.int32),
  })


def _frames_examples(rec, start, z):
  for t, frame, flow in zip(z['pair_t'], z['pair_frames'], z['pair_flows']):
    yield f'{rec["video_id"]}@{start}+{int(t)}', {
        'image': _png(z['image']), 'target': _png(frame), 'flow': flow, 'importance': z['importance'],
        't': int(t),
        'video_id': rec['video_id'], 'start_frame': start}


# name -> (features, examples): 'gid_motion' trains the motion model, 'gid_frames' the renderer.
DATASETS = {DATASET_NAME: (_motion_features, _motion_examples),
            FRAMES_DATASET_NAME: (_frames_features, _frames_examples)}


class _NoSuchError(Exception):
  """Stands in for tf.errors.ResourceExhaustedError (never raised by local files)."""
  message = ''


class _GfileShim:
  """The four tf.io.gfile / tf.errors names TFDS's shuffler uses, on local files (see _allow_spill)."""

  class io:  # pylint: disable=invalid-name
    class gfile:  # pylint: disable=invalid-name
      GFile = staticmethod(lambda path, mode='r': open(os.fspath(path), mode))  # noqa: SIM115
      exists = staticmethod(lambda path: os.path.exists(os.fspath(path)))
      remove = staticmethod(lambda path: os.remove(os.fspath(path)))

  class errors:  # pylint: disable=invalid-name
    ResourceExhaustedError = _NoSuchError


def allow_spill() -> None:
  """Let TFDS write splits larger than its 1 GB shuffle buffer without TensorFlow.

  Past ``shuffle.MAX_MEM_BUFFER_SIZE`` TFDS's writer spills the split to temporary bucket files through
  ``tf.io.gfile``, which needs TensorFlow (``ModuleNotFoundError`` after all the extraction work). Any real
  dataset is past 1 GB (a paper-size example is 10 MB), so without TensorFlow we give that module the few
  local-file calls it makes. With TensorFlow installed nothing changes.
  """
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    shuffle.tf = _GfileShim


@functools.lru_cache(maxsize=None)
def builder_classes() -> dict:

  class _FromCache(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Examples extracted from videos by gid_jax.data.build (written from its per-video cache)."""
    VERSION = tfds.core.Version(DATASET_VERSION)

    def __init__(self, *, config_dict, clips, metadata, **kwargs):
      self._cfg = config_dict
      self._clips = clips  # {'train': [(record, npz path)], 'test': [...]}
      self._meta = metadata
      super().__init__(**kwargs)

    def _info(self):
      features_fn = DATASETS[self.name][0]
      return tfds.core.DatasetInfo(builder=self, description=DESCRIPTION,
                                   features=features_fn(self._cfg),
                                   metadata=tfds.core.MetadataDict(self._meta))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split, clips in self._clips.items() if clips}

    def _generate_examples(self, split='train'):
      examples_fn = DATASETS[self.name][1]
      for rec, path in self._clips[split]:
        with np.load(path) as z:
          yield from examples_fn(rec, int(os.path.basename(path)[5:11]), z)

  class GidMotion(_FromCache, skip_registration=True):
    name = DATASET_NAME

  class GidFrames(_FromCache, skip_registration=True):
    name = FRAMES_DATASET_NAME

  return {DATASET_NAME: GidMotion, FRAMES_DATASET_NAME: GidFrames}


def dataset_dir(out_dir: str, name: str = DATASET_NAME) -> str:
  return os.path.join(out_dir, name, DATASET_VERSION)
