"""A video's clips and their motion: decoding clip by clip, and per clip the trajectories from its first frame
(estimated optical flow at the accurate size, or the synthetic world's exact motion), at the dataset size.

Used by the dataset builder (``gid_jax.data.build``) and by the evaluations that score videos the same way.
"""

from __future__ import annotations

import collections
import os
from typing import Iterator

import numpy as np

from gid_jax.data import synthetic
from gid_jax.data import video as video_lib
from gid_jax.motion import flow as flow_lib


class ClipMotion:
  """Trajectories of a clip: estimated flow, or the synthetic world's exact ground truth.

  ``flow.method='auto'``: the ground truth for videos with a synthetic-world scene file beside them, DIS
  flow (``flow.preset``) for the rest, e.g. a renderer dataset of synthetic scenes and real videos.
  """

  def __init__(self, config):
    self.config = config
    self.estimator = None
    method = config.flow.method
    if method != 'ground_truth':
      self.estimator = flow_lib.FlowEstimator('dis' if method == 'auto' else method, config.flow.preset,
                                              config.flow.warm_start)

  def scene_for(self, path: str):
    method = self.config.flow.method
    if method not in ('ground_truth', 'auto'):
      return None
    sp = synthetic.scene_path(path)
    if not os.path.exists(sp):
      if method == 'auto':
        return None
      raise video_lib.VideoError(f'{path}: flow.method=ground_truth needs the scene file {sp}')
    scene = synthetic.Scene.load(sp)
    c = self.config
    if abs(scene.width / scene.height - c.width / c.height) > 0.01 * c.width / c.height or \
        scene.width < c.width or abs(scene.fps - c.fps) > 1e-6:
      raise video_lib.VideoError(
          f'{path}: scene is {scene.width}x{scene.height} at {scene.fps} fps but the config asks for '
          f'{c.width}x{c.height} at {c.fps} fps; ground-truth motion needs the same fps and aspect ratio, and '
          'a scene at least as large')
    return scene

  def flow_size(self, path: str, scene) -> tuple[int, int]:
    """(W, H) to decode a video at for its motion: larger than the dataset only for estimated flow."""
    c = self.config
    if scene is not None:  # the exact motion at the scene's own size, resized like estimated flow
      return scene.width, scene.height
    if self.estimator is None or c.flow.max_side <= max(c.width, c.height):
      return c.width, c.height
    info = video_lib.probe(path)
    return flow_lib.flow_size((info['width'], info['height']), (c.width, c.height), c.flow.max_side)

  def __call__(self, frames_TxHxWx3, scene, start) -> np.ndarray:
    """Trajectories at the dataset size of frames decoded at :meth:`flow_size`."""
    c = self.config
    if scene is not None:
      return flow_lib.resize_displacements(synthetic.trajectories(scene, start, len(frames_TxHxWx3)),
                                           c.width, c.height)
    disp = flow_lib.extract_trajectories(frames_TxHxWx3, estimator=self.estimator,
                                         color=c.flow.color)
    return flow_lib.resize_displacements(disp, c.width, c.height)


def iter_clips(path: str, config, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """(start frame, frames_TxHxWx3) of every clip of a video, holding only T frames in memory; frames at
  ``size`` (W, H; default the dataset's width x height)."""
  t_ = config.num_frames
  ring = collections.deque(maxlen=t_)
  n = 0
  for frame in video_lib.iter_frames(path, config.fps, size or (config.width, config.height)):
    ring.append(frame)
    n += 1
    start = n - t_
    if start >= 0 and start % config.start_stride == 0:
      yield start, np.stack(ring)
  if n < t_:
    raise video_lib.VideoError(
        f'{path}: too short: {n} frames at {config.fps:g} fps, a clip needs {t_}')


def image_scale(config) -> int:
  """The data config's ``image_scale`` (1 for configs older than it)."""
  return int(config.get('image_scale', 1))


def clips_with_motion(path: str, config, motion: ClipMotion, starts=None
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
  """(start, frames_TxHxWx3, disp_TxHxWx2, image_sHxsWx3) of every clip of a video (or of those in
  ``starts``): frames and motion at the dataset size, the first frame also at ``image_scale`` s times it (the
  motion model's condition); the frames are decoded at :meth:`ClipMotion.flow_size` for the motion, so an
  image larger than that size is upsampled from it."""
  scene = motion.scene_for(path)
  size = motion.flow_size(path, scene)
  s = image_scale(config)
  for start, frames in iter_clips(path, config, size):
    if starts is not None and start not in starts:
      continue
    disp = motion(frames, scene, start)
    image = None if s == 1 else video_lib.center_crop_resize(frames[0], s * config.width, s * config.height)
    if size != (config.width, config.height):
      frames = np.stack([video_lib.center_crop_resize(f, config.width, config.height) for f in frames])
    yield start, frames, disp, frames[0] if image is None else image
