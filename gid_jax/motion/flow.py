"""Motion extraction: dense trajectories from frame 0 to every later frame, and clip filters.

``extract_trajectories(frames_TxHxWx3) -> disp_TxHxWx2`` estimates optical flow from frame 0 directly to
each frame t (SPEC.md section 2: never chained frame-to-frame, so errors do not accumulate), with a
coarse-to-fine method:

* ``'dis'`` (default): OpenCV's Dense Inverse Search (Kroeger et al. 2016), a coarse-to-fine patch search
  with variational refinement; presets ``ultrafast``, ``fast``, ``medium`` (default), ``fine``.
* ``'farneback'``: OpenCV's pyramidal polynomial-expansion flow (slower, less accurate; for comparison).

``warm_start=True`` initialises the flow 0 -> t with the estimate 0 -> t-1. Each estimate is still made
against frame 0 (nothing is chained or summed), but oscillations far from the rest position start from a
nearby solution instead of zero, which helps the coarse levels lock on.

One estimator object is reused for every pair and every clip and nothing is cached, so memory stays flat no
matter how many clips are processed (checked in tests/test_flow.py).

Clip filters (SPEC.md section 2; thresholds are config values): a clip whose median per-frame flow magnitude
exceeds ``camera_motion_px`` is taken to have camera motion (in oscillating scenes most pixels are still),
and a clip whose moving pixels (the ``static_quantile`` quantile of mean motion magnitude) move less than
``static_px`` is static.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

METHODS = ('dis', 'farneback')
DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    'fine': None,  # medium plus a finer last scale and more refinement, set below
}


class FlowEstimator:
  """Reusable optical-flow estimator: ``est(gray0_HxW, gray1_HxW, init=None) -> flow_HxWx2`` (x, y)."""

  def __init__(self, method: str = 'dis', preset: str = 'medium', warm_start: bool = True):
    if method not in METHODS:
      raise ValueError(f'flow method must be one of {METHODS}, got {method!r}')
    self.method = method
    self.warm_start = warm_start
    if method == 'dis':
      if preset not in DIS_PRESETS:
        raise ValueError(f'DIS preset must be one of {tuple(DIS_PRESETS)}, got {preset!r}')
      if preset == 'fine':
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._dis.setFinestScale(0)
        self._dis.setPatchStride(3)
        self._dis.setVariationalRefinementIterations(10)
      else:
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

  def __call__(self, gray0: np.ndarray, gray1: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    if self.method == 'dis':
      flow = None if init is None else init.copy()
      return self._dis.calc(gray0, gray1, flow)
    flags = 0
    flow = None
    if init is not None:
      flow, flags = init.copy(), cv2.OPTFLOW_USE_INITIAL_FLOW
    return cv2.calcOpticalFlowFarneback(gray0, gray1, flow, pyr_scale=0.5, levels=5, winsize=13,
                                        iterations=5, poly_n=5, poly_sigma=1.1, flags=flags)


def to_gray(frame_HxWx3: np.ndarray) -> np.ndarray:
  if frame_HxWx3.dtype != np.uint8 or frame_HxWx3.ndim != 3 or frame_HxWx3.shape[-1] != 3:
    raise ValueError(f'expected uint8 RGB frames (H, W, 3), got {frame_HxWx3.dtype} {frame_HxWx3.shape}')
  return cv2.cvtColor(frame_HxWx3, cv2.COLOR_RGB2GRAY)


def extract_trajectories(frames_TxHxWx3: np.ndarray, method: str = 'dis', preset: str = 'medium',
                         warm_start: bool = True, estimator: FlowEstimator | None = None) -> np.ndarray:
  """Displacements disp_TxHxWx2 (float32, pixels) of every pixel of frame 0; disp[0] = 0."""
  frames = np.asarray(frames_TxHxWx3)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}')
  if len(frames) < 2:
    raise ValueError(f'need at least 2 frames to extract motion, got {len(frames)}')
  est = estimator or FlowEstimator(method, preset, warm_start)
  t_, h, w = frames.shape[:3]
  disp = np.zeros((t_, h, w, 2), np.float32)
  gray0 = to_gray(frames[0])
  prev = None
  for t in range(1, t_):
    disp[t] = est(gray0, to_gray(frames[t]), prev if est.warm_start else None)
    prev = disp[t]
  return disp


@dataclasses.dataclass(frozen=True)
class FilterResult:
  keep: bool
  reason: str  # '' when kept, else 'camera_motion' or 'static'
  median_flow_px: float  # max over frames of the per-frame median flow magnitude
  moving_flow_px: float  # the static_quantile quantile over pixels of the mean flow magnitude

  def describe(self) -> str:
    if self.keep:
      return 'kept'
    if self.reason == 'camera_motion':
      return f'camera motion: median flow {self.median_flow_px:.2f} px'
    return f'static: moving pixels move {self.moving_flow_px:.3f} px on average'


def filter_clip(disp_TxHxWx2: np.ndarray, camera_motion_px: float = 0.5, static_px: float = 0.1,
                static_quantile: float = 0.99) -> FilterResult:
  """Decide whether a clip's motion is usable (see module docstring); thresholds <= 0 disable a test."""
  mag = np.linalg.norm(np.asarray(disp_TxHxWx2, np.float32), axis=-1)  # T x H x W
  median = float(np.max(np.median(mag.reshape(len(mag), -1), axis=1)))
  moving = float(np.quantile(mag.mean(axis=0), static_quantile))
  if camera_motion_px > 0 and median > camera_motion_px:
    return FilterResult(False, 'camera_motion', median, moving)
  if static_px > 0 and moving < static_px:
    return FilterResult(False, 'static', median, moving)
  return FilterResult(True, '', median, moving)
