"""Motion extraction: dense trajectories from frame 0 to every later frame, and clip filters.

``extract_trajectories(frames_TxHxWx3) -> disp_TxHxWx2`` estimates optical flow from frame 0 directly to
each frame t (SPEC.md section 2: never chained frame-to-frame, so errors do not accumulate), with a
coarse-to-fine method:

* ``'dis'`` (default): OpenCV's Dense Inverse Search (Kroeger et al. 2016), a coarse-to-fine patch search
  with variational refinement; presets ``ultrafast``, ``fast``, ``medium`` (default), ``fine``.
* ``'farneback'``: OpenCV's pyramidal polynomial-expansion flow (slower, less accurate; for comparison).

Colour (``color``): ``'gray'`` runs the method on the luminance only, which misses a region whose colour
differs from its surroundings but whose luminance does not (a red flower on green leaves, isoluminant
chroma texture). ``'lab'`` (the default for datasets) runs it on each channel of CIE Lab (L, and a, b with
a gain of :data:`CHROMA_GAIN` so that chroma contrast is on the scale of luminance contrast) and fuses the
three flows per pixel, each weighted by its channel's local structure in frame 0 (the Gaussian-smoothed
squared gradient, the quantity that makes flow measurable there): luminance texture decides where there is
luminance texture, chroma texture where there is only that. It costs three flow estimates per frame.

Resolution: flow is most accurate at the video's own resolution. :func:`flow_size` picks the size to
estimate at (the video's centre crop, longer side capped at ``max_side``), and :func:`resize_displacements`
brings the trajectories to the dataset size with the displacements rescaled; motion under a pixel at the
dataset size is then still several pixels where it was measured.

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
COLORS = ('gray', 'lab')
CHROMA_GAIN = 2.0  # a and b of 8-bit Lab span about half the range of L in natural images
STRUCTURE_SIGMA = 3.0  # px: the neighbourhood over which a channel's structure weighs its flow
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


def channels(frames_TxHxWx3: np.ndarray, color: str = 'gray') -> list[np.ndarray]:
  """The uint8 (T, H, W) channel stacks that flow is estimated on: [gray] or [L, a, b] (a, b with gain)."""
  if color not in COLORS:
    raise ValueError(f'flow color must be one of {COLORS}, got {color!r}')
  if color == 'gray':
    return [np.stack([to_gray(f) for f in frames_TxHxWx3])]
  lab = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2LAB) for f in frames_TxHxWx3])
  out = [np.ascontiguousarray(lab[..., 0])]
  for c in (1, 2):  # 128 = neutral; the gain keeps the neutral point at 128
    chroma = (lab[..., c].astype(np.float32) - 128.0) * CHROMA_GAIN + 128.0
    out.append(np.clip(np.round(chroma), 0, 255).astype(np.uint8))
  return out


def structure_weight(channel_HxW: np.ndarray, sigma: float = STRUCTURE_SIGMA) -> np.ndarray:
  """Local structure of a channel: the Gaussian-smoothed squared gradient magnitude (float32, H x W)."""
  x = channel_HxW.astype(np.float32)
  gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
  gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
  return cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), sigma)


def extract_trajectories(frames_TxHxWx3: np.ndarray, method: str = 'dis', preset: str = 'medium',
                         warm_start: bool = True, estimator: FlowEstimator | None = None,
                         color: str = 'gray') -> np.ndarray:
  """Displacements disp_TxHxWx2 (float32, pixels) of every pixel of frame 0; disp[0] = 0."""
  frames = np.asarray(frames_TxHxWx3)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}')
  if len(frames) < 2:
    raise ValueError(f'need at least 2 frames to extract motion, got {len(frames)}')
  est = estimator or FlowEstimator(method, preset, warm_start)
  stacks = channels(frames, color)
  t_, h, w = frames.shape[:3]
  if len(stacks) == 1:
    return _trajectories(stacks[0], est)
  weights = np.stack([structure_weight(c[0]) for c in stacks])  # C x H x W
  weights += 1e-3 * weights.mean() + 1e-6  # flat everywhere: an even mix
  weights /= weights.sum(axis=0, keepdims=True)
  disp = np.zeros((t_, h, w, 2), np.float32)
  for c, wgt in zip(stacks, weights):
    disp += _trajectories(c, est) * wgt[None, :, :, None]
  return disp


def _trajectories(stack_TxHxW: np.ndarray, est: FlowEstimator) -> np.ndarray:
  t_, h, w = stack_TxHxW.shape
  disp = np.zeros((t_, h, w, 2), np.float32)
  prev = None
  for t in range(1, t_):
    disp[t] = est(stack_TxHxW[0], stack_TxHxW[t], prev if est.warm_start else None)
    prev = disp[t]
  return disp


def flow_size(native_wh: tuple[int, int], out_wh: tuple[int, int], max_side: int) -> tuple[int, int]:
  """(W, H) to estimate flow at for a video of ``native_wh`` whose frames become ``out_wh``: the centre crop
  to the output's aspect ratio at its own resolution, longer side capped at ``max_side``, never smaller than
  the output (``max_side`` <= the output's longer side: the output size itself)."""
  ow, oh = out_wh
  if max_side <= max(ow, oh):
    return ow, oh
  nw, nh = native_wh
  aspect = ow / oh
  cw, ch = (nh * aspect, nh) if nw / nh > aspect else (nw, nw / aspect)
  scale = min(1.0, max_side / max(cw, ch))
  fw = max(ow, int(round(cw * scale)))
  return fw, max(oh, int(round(fw / aspect)))


def resize_displacements(disp_TxHxWx2: np.ndarray, width: int, height: int) -> np.ndarray:
  """Trajectories at another size: every field area-resized and its x, y displacements rescaled."""
  disp = np.asarray(disp_TxHxWx2, np.float32)
  t_, h, w, _ = disp.shape
  if (w, h) == (width, height):
    return disp
  interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
  out = np.stack([cv2.resize(d, (width, height), interpolation=interp) for d in disp])
  return out * np.asarray([width / w, height / h], np.float32)


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
