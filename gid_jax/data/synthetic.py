"""A synthetic oscillating world: real photos animated with modal motion whose truth is known exactly.

No dataset of oscillating natural scenes is reachable offline, so tests, small trainings and the bundled
default model use this world. A scene is one real photo (scikit-image's bundled photos by default) plus a
set of vibration modes; it is written as a real video file (H.264) with a sidecar ``.scene.npz`` from which
the exact trajectories of any clip can be recomputed (:func:`trajectories`).

How a scene is made from a photo (all of it a function of the image, except where *random* is said):

* The photo is cut into superpixels (SLIC). Each superpixel gets a *movability* score
  ``2 * texture + saturation`` (texture = mean Sobel gradient magnitude / 255, saturation in HSV). Superpixels
  are taken in decreasing score while the score is at least ``min_score`` and the moving area stays under
  ``max_area`` (at least one always moves); within a chosen superpixel only pixels whose smoothed
  ``2 * gradient + saturation`` reaches ``min_score / 2`` move (if none does, as in a flat picture, the
  best superpixel moves whole). Textured, colourful things sway, flat grey ones do not, so where things
  move is learnable from the image.
* Each moving superpixel is a cantilever anchored at its lowest row: its lever coordinate s runs from 0 at
  the bottom to 1 at the top, and mode j has the shape ``sin((2j + 1) * pi / 2 * s)`` (the shape family of a
  clamped beam), multiplied by the superpixel's mask and Gaussian-blurred so that motion fades smoothly.
* Fundamental frequency ``f0 = 0.3 + 0.9 * brightness + 0.6 * (1 - min(1, area / 0.08))`` Hz: small, bright
  things oscillate faster. Mode j has frequency ``f0 * (1, 2.4, 4.1, ...)[j]`` (times a random 3% jitter);
  modes above ``max_freq_hz`` are dropped.
* Amplitudes follow the paper's observation that motion power falls exponentially with frequency:
  ``a_j = A * exp(-f_j / (2 f_c))`` (power ``~ exp(-f_j / f_c)``), times a random log-normal factor;
  ``A`` grows with texture. Phases are random and the direction is random around the horizontal, so motion
  is stochastic given the image.
* Amplitudes are scaled down, if needed, so that the displacement field is a contraction
  (sum of |grad| < 0.5): then the warp is invertible and frames are rendered exactly.

**The plants world** (``world='plants'``: the paper's domain; ``'textured'``, the default above, is what
the earlier bundled model and the tests use): only *plant-like* pixels move, by a rule a model can read from
the picture (:func:`plant_mask`): a colour from yellow through green (HSV hue 34-170 degrees) with
saturation >= 0.25 and value >= 0.15, and local texture (smoothed Sobel gradient >= 0.03 of full range),
smoothed over about 1% of the width. A superpixel moves when at least half of it is plant; within it, only
plant pixels move. Sky, water, ground, buildings, rigid objects, people and grey or brown things never move.
Frequency and amplitude follow the size of the structure, read from the superpixel's texture (fine texture =
thin blades and small leaves; coarse = broad leaves, crowns): ``fineness = clip((texture - 0.08) / 0.3, 0,
1)`` (texture: the superpixel's mean Sobel magnitude / 255),
``f0 = 0.4 + 2.2 * fineness`` Hz (thin grass near 2.5 Hz, crowns near 0.5 Hz) and ``A = amp_px * (1.6 -
fineness)`` (broad structures sway further), so power falls with frequency across structures; over a
structure's modes it falls as ``exp(-(f_j - f0) / (2 f_c))``. Superpixel shapes are blurred twice as wide as
in the textured world (neighbours sway with their own phases) and then limited to the plant pixels. A
scene is entirely still when its view shows no plant (a crop of sky, ground or buildings, a rigid or man-made
picture): stillness too is read from the picture. ``still_fraction`` > 0 (default 0; the models bundled until
2026-12-07 were trained on 0.15) also stills that share of the scenes at random (no wind), which no model can
read from the picture: a model that learned the world exactly would still move those scenes' plants. Limits:
red, orange or purple flowers and autumn leaves do not move unless their superpixel is mostly green-yellow; a
green, textured man-made thing (a green bench) would move; greyscale photos never move.

* Optional *occluding layer* (``layer_amp_px > 0``, off by default; for renderer data, where splatting must
  resolve overlaps and fill disocclusions): one more superpixel (not a moving one, the most textured of
  those covering 2-15% of the picture) is cut out as a rigid layer that sways as a whole by ``t(tau) =
  sum_l a_l dir_l cos(2 pi f_l tau + phi_l)`` (two modes, about ``layer_amp_px`` at 256 px width, far more
  than the contraction allows the modal motion) in front of a background plate: the photo with that
  superpixel inpainted (OpenCV Telea), itself animated by the modes. So the layer covers background on one
  side and uncovers plate on the other, with exact motion for both.
* Optional *camera shake* (``camera_px > 0``, off by default; for renderer data like hand-held video): the
  whole view shifts by ``c(tau) = sum_l a_l dir_l cos(2 pi f_l tau + phi_l)`` (three components at 0.2-0.6,
  0.8-1.6 and 2-3 Hz, amplitudes about 0.7 / 0.25 / 0.1 of ``camera_px`` at 256 px width, random
  directions), so every pixel moves; what enters the view at the borders is the photo's edge, replicated
  (a band at most ``sum a_l`` wide).

Frame at time tau: the rest photo forward-warped by ``D_tau(p) = sum_m a_m dir_m shape_m(p) cos(2 pi f_m tau
+ phi_m)``, i.e. ``I_tau(p + D_tau(p)) = photo(p)``, computed by inverting the warp with a fixed-point
iteration (residual < 1e-4 px) and sampling the photo bilinearly. With a layer, that frame is made of the
plate, and the layer (the photo and its alpha mask shifted by ``t(tau)``) is composited over it. With camera
shake, the frame shows that picture shifted by ``c(tau)`` (one bilinear sampling in all: the shift enters
the warp inversion's target positions).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

import cv2
import numpy as np
import skimage.data
from skimage.segmentation import slic
from tqdm.auto import tqdm

from gid_jax import cli
from gid_jax.data import video as video_lib
from gid_jax.fileio import atomic_path

SCENE_SUFFIX = '.scene.npz'
DEFAULT_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                  'retina', 'stereo_motorcycle', 'cat', 'grass', 'gravel', 'brick', 'camera', 'coins',
                  'clock', 'moon')
_MODE_RATIOS = (1.0, 2.4, 4.1, 6.0)


@dataclasses.dataclass
class Scene:
  """A photo at rest plus M vibration modes. Shapes: photo HxWx3, shapes MxHxW, others (M,) or (M, 2)."""
  photo: np.ndarray
  shapes: np.ndarray
  amp: np.ndarray
  direction: np.ndarray
  freq: np.ndarray
  phase: np.ndarray
  region: np.ndarray
  fps: float
  num_frames: int
  # The optional occluding layer (empty arrays when there is none; scene files from before it load as such):
  # plate HxWx3 (the photo with the layer's region inpainted), layer_mask HxW alpha at rest, and L rigid modes.
  plate: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8))
  layer_mask: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32))
  layer_amp: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
  layer_direction: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.float32))
  layer_freq: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
  layer_phase: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
  # Optional camera shake (empty when none): C rigid components of the view's shift c(tau).
  camera_amp: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
  camera_direction: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.float32))
  camera_freq: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
  camera_phase: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))

  @property
  def has_layer(self) -> bool:
    return self.layer_amp.size > 0

  @property
  def has_camera(self) -> bool:
    return self.camera_amp.size > 0

  @property
  def height(self) -> int:
    return self.photo.shape[0]

  @property
  def width(self) -> int:
    return self.photo.shape[1]

  def save(self, path: str) -> None:
    with atomic_path(path) as tmp:
      with open(tmp, 'wb') as f:
        np.savez_compressed(f, **dataclasses.asdict(self))

  @classmethod
  def load(cls, path: str) -> 'Scene':
    if not os.path.exists(path):
      raise FileNotFoundError(f'scene file not found: {path}')
    with np.load(path) as z:
      d = {k: z[k] for k in z.files}
    d['fps'] = float(d['fps'])
    d['num_frames'] = int(d['num_frames'])
    return cls(**d)

  def amplitude_map(self) -> np.ndarray:
    """Upper bound of the displacement magnitude at every rest pixel, H x W (px)."""
    amp = np.tensordot(self.amp, np.abs(self.shapes), axes=1)
    if self.has_layer:  # the layer's pixels (alpha > 1/2 at rest) move with it
      amp = np.where(self.layer_mask > 0.5, float(np.sum(self.layer_amp)), amp)
    return amp + float(np.sum(self.camera_amp))  # the camera moves every pixel


def load_photo(name: str) -> np.ndarray:
  """A scikit-image bundled photo (by name) or an image file, as uint8 RGB."""
  if os.path.exists(name):
    img = cv2.imread(name, cv2.IMREAD_UNCHANGED)
    if img is None:
      raise ValueError(f'{name}: not a readable image')
    if img.ndim == 3:
      img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
  else:
    if not hasattr(skimage.data, name):
      raise ValueError(f'{name}: neither an image file nor a scikit-image bundled photo')
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs
      img = img[0]
  img = np.asarray(img)
  if img.dtype != np.uint8:  # 16-bit, bool or float images: scale their full range to 0..255
    top = float(np.iinfo(img.dtype).max) if img.dtype.kind in 'ui' else 1.0
    img = (img.astype(np.float64) / top * 255).clip(0, 255).astype(np.uint8)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  return np.ascontiguousarray(img[..., :3])


def _gradient_saturation(photo: np.ndarray):
  gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
  grad = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)) / 255.0
  hsv = cv2.cvtColor(photo, cv2.COLOR_RGB2HSV).astype(np.float32)
  return grad, hsv


def movability(photo: np.ndarray) -> np.ndarray:
  """Per-pixel movability score (smoothed ``2 * gradient + saturation``) of an RGB uint8 image, H x W."""
  grad, hsv = _gradient_saturation(np.asarray(photo, np.uint8))
  sigma = max(1.0, photo.shape[1] / 128.0)
  return cv2.GaussianBlur(2.0 * grad + hsv[..., 1] / 255.0, (0, 0), sigma)


def _segment_features(photo: np.ndarray, n_segments: int):
  labels = slic(photo, n_segments=n_segments, compactness=10, start_label=0)
  grad, hsv = _gradient_saturation(photo)
  n = labels.max() + 1
  area = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
  mean = lambda v: np.bincount(labels.ravel(), weights=v.ravel(), minlength=n) / np.maximum(area, 1)
  sat = hsv[..., 1] / 255.0
  # Per-pixel movability (smoothed), so that flat parts of a mixed superpixel stay still.
  pixel_score = movability(photo)
  return labels, pixel_score, {'texture': mean(grad), 'saturation': mean(sat),
                               'brightness': mean(hsv[..., 2] / 255.0), 'area': area / labels.size}


WORLDS = ('textured', 'plants')


def plant_mask(photo: np.ndarray) -> np.ndarray:
  """The plants world's rule (module docstring): float H x W in [0, 1], 1 = plant-like pixel."""
  photo = np.asarray(photo, np.uint8)
  grad, hsv = _gradient_saturation(photo)
  sigma = max(1.0, photo.shape[1] / 128.0)
  hue, sat, val = hsv[..., 0] * 2.0, hsv[..., 1] / 255.0, hsv[..., 2] / 255.0  # hue in degrees
  colour = ((hue >= 34) & (hue <= 170) & (sat >= 0.25) & (val >= 0.15)).astype(np.float32)
  texture = cv2.GaussianBlur(grad, (0, 0), sigma) >= 0.03
  return cv2.GaussianBlur(colour * texture, (0, 0), sigma)


def make_scene(photo: np.ndarray, seed: int, width: int = 256, height: int = 160, fps: float = 30.0,
               num_frames: int = 300, amp_px: float = 2.5, n_segments: int = 24, min_score: float = 0.35,
               max_area: float = 0.4, num_modes: int = 3, max_freq_hz: float = 2.9,
               falloff_hz: float = 0.6, blur_px: float = 4.0, layer_amp_px: float = 0.0,
               camera_px: float = 0.0, world: str = 'textured', still_fraction: float = 0.0) -> Scene:
  """Build a scene from a photo (any size; centre-cropped and resized to width x height).

  ``layer_amp_px > 0`` adds the occluding layer (module docstring), its sway about that many pixels at a
  width of 256 (scaled with the width like the modal amplitudes); ``camera_px > 0`` adds camera shake of
  about that many pixels at 256 width. Each has its own random stream, so either leaves the rest unchanged.
  """
  if world not in WORLDS:
    raise ValueError(f'world must be one of {WORLDS}, got {world!r}')
  rng = np.random.default_rng(seed)
  photo = video_lib.center_crop_resize(np.asarray(photo, np.uint8), width, height)
  labels, pixel_score, feat = _segment_features(photo, n_segments)
  scale = width / 256.0
  sigma = blur_px * scale
  ys = np.arange(height, dtype=np.float32)[:, None]
  shapes, amps, dirs, freqs, phases, regions = [], [], [], [], [], []
  if world == 'plants':
    plant = plant_mask(photo)
    still = rng.random() < still_fraction  # drawn first: the rest of the scene does not depend on it
    n = labels.max() + 1
    frac = np.bincount(labels.ravel(), weights=(plant >= 0.5).ravel(), minlength=n) / np.maximum(
        np.bincount(labels.ravel(), minlength=n), 1)
    chosen = [] if still else [int(g) for g in np.nonzero(frac >= 0.5)[0]]
    # Whole superpixels, blurred wider than in the textured world (neighbours sway with their own phases, so
    # a wide blend keeps the field a contraction at full amplitude), then limited to the plant pixels.
    masks = [(labels == seg).astype(np.float32) for seg in chosen]
    restrict = cv2.GaussianBlur((plant >= 0.5).astype(np.float32), (0, 0), max(1.0, width / 128.0))
    sigma = 2.0 * sigma
  else:
    restrict = None
    score = 2.0 * feat['texture'] + feat['saturation']
    chosen, area = [], 0.0
    for seg in np.argsort(-score, kind='stable'):
      if chosen and (score[seg] < min_score or area + feat['area'][seg] > max_area):
        continue
      chosen.append(int(seg))
      area += feat['area'][seg]
    masks = [((labels == seg) & (pixel_score >= 0.5 * min_score)).astype(np.float32) for seg in chosen]
    if not any(m.any() for m in masks):  # a flat picture: its best superpixel moves as a whole
      masks[0] = (labels == chosen[0]).astype(np.float32)
  for seg, mask in zip(chosen, masks):
    if not mask.any():
      continue
    rows = np.nonzero(mask.any(axis=1))[0]
    top, bottom = rows.min(), rows.max()
    lever = np.clip((bottom - ys) / max(bottom - top, 1), 0.0, 1.0) * np.ones((1, width), np.float32)
    if world == 'plants':
      fineness = float(np.clip((feat['texture'][seg] - 0.08) / 0.3, 0.0, 1.0))
      f0 = 0.4 + 2.2 * fineness
      a0 = amp_px * scale * (1.6 - fineness)
    else:
      f0 = 0.3 + 0.9 * feat['brightness'][seg] + 0.6 * (1.0 - min(1.0, feat['area'][seg] / 0.08))
      a0 = amp_px * scale * (0.6 + 4.0 * min(feat['texture'][seg], 0.25))
    theta = rng.uniform(-0.5, 0.5)
    for j in range(num_modes):
      f = f0 * _MODE_RATIOS[j] * (1.0 + rng.uniform(-0.03, 0.03))
      if f > max_freq_hz:
        break
      shape = cv2.GaussianBlur(mask * np.sin((2 * j + 1) * np.pi / 2 * lever), (0, 0), sigma)
      if restrict is not None:
        shape = shape * restrict
      shapes.append(shape.astype(np.float32))
      # Power falls exponentially with frequency: over all modes (textured world), or from each structure's
      # fundamental (plants world, whose thin, fast structures already start with a smaller amplitude).
      f_ref = f - f0 if world == 'plants' else f
      amps.append(a0 * np.exp(-f_ref / (2.0 * falloff_hz)) * rng.lognormal(0.0, 0.2))
      ang = theta + rng.uniform(-0.3, 0.3)
      dirs.append((np.cos(ang), np.sin(ang)))
      freqs.append(f)
      phases.append(rng.uniform(0, 2 * np.pi))
      regions.append(seg)
  if not shapes:  # nothing moves (a still scene, or no plant in the picture): one mode of zero amplitude
    shapes, amps, dirs, freqs, phases, regions = [np.zeros((height, width), np.float32)], [0.0], [(1.0, 0.0)], \
        [1.0], [0.0], [-1]
  shapes = np.stack(shapes)
  amps = np.asarray(amps, np.float64)
  # Contraction bound: |grad D| <= sum_m a_m |grad shape_m| everywhere; keep it under 0.5.
  gy, gx = np.gradient(shapes, axis=(1, 2))
  lip = float(np.max(np.tensordot(amps, np.hypot(gx, gy), axes=1)))
  if lip > 0.5:
    amps *= 0.5 / lip
  layer = {}
  if layer_amp_px > 0:  # its own random stream: scenes without a layer are unchanged by this option
    layer = _make_layer(photo, labels, feat, set(regions), layer_amp_px * scale, np.random.default_rng([seed, 1]))
  if camera_px > 0:
    layer.update(_make_camera(camera_px * scale, np.random.default_rng([seed, 2])))
  return Scene(photo=photo, shapes=shapes, amp=amps.astype(np.float32),
               direction=np.asarray(dirs, np.float32), freq=np.asarray(freqs, np.float32),
               phase=np.asarray(phases, np.float32), region=np.asarray(regions, np.int32), fps=float(fps),
               num_frames=int(num_frames), **layer)


def _make_layer(photo, labels, feat, moving, amp_px: float, rng) -> dict:
  """The occluding layer's Scene fields (module docstring); {} if no superpixel qualifies."""
  candidates = [seg for seg in range(len(feat['area']))
                if seg not in moving and 0.02 <= feat['area'][seg] <= 0.15]
  if not candidates:
    return {}
  seg = max(candidates, key=lambda g: (feat['texture'][g], -g))
  hard = (labels == seg).astype(np.uint8)
  alpha = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), 0.5)  # an anti-aliased edge
  plate = cv2.inpaint(np.ascontiguousarray(photo), cv2.dilate(hard, np.ones((3, 3), np.uint8)), 3,
                      cv2.INPAINT_TELEA)
  f0 = rng.uniform(0.4, 1.2)
  freq = f0 * np.array([1.0, 2.4])
  amp = amp_px * np.array([0.8, 0.3]) * rng.lognormal(0.0, 0.2, 2)
  theta = rng.uniform(-0.5, 0.5) + rng.uniform(-0.3, 0.3, 2)
  return {'plate': plate, 'layer_mask': alpha.astype(np.float32), 'layer_amp': amp.astype(np.float32),
          'layer_direction': np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32),
          'layer_freq': freq.astype(np.float32), 'layer_phase': rng.uniform(0, 2 * np.pi, 2).astype(np.float32)}


def _make_camera(amp_px: float, rng) -> dict:
  """The camera shake's Scene fields (module docstring)."""
  freq = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.8, 1.6), rng.uniform(2.0, 3.0)])
  amp = amp_px * np.array([0.7, 0.25, 0.1]) * rng.lognormal(0.0, 0.2, 3)
  theta = rng.uniform(0, 2 * np.pi, 3)
  return {'camera_amp': amp.astype(np.float32),
          'camera_direction': np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32),
          'camera_freq': freq.astype(np.float32), 'camera_phase': rng.uniform(0, 2 * np.pi, 3).astype(np.float32)}


def camera_offset(scene: Scene, frame_indices) -> np.ndarray:
  """(N, 2): the view's shift c(tau) at the frame times (zeros without camera shake)."""
  return _oscillators(scene.fps, frame_indices, scene.camera_freq, scene.camera_phase, scene.camera_amp,
                      scene.camera_direction).sum(axis=1)


def layer_offset(scene: Scene, frame_indices) -> np.ndarray:
  """(N, 2): the occluding layer's shift t(tau) at the frame times (zeros without a layer)."""
  return _oscillators(scene.fps, frame_indices, scene.layer_freq, scene.layer_phase, scene.layer_amp,
                      scene.layer_direction).sum(axis=1)


def _oscillators(fps: float, frame_indices, freq, phase, amp, direction) -> np.ndarray:
  """(N, M, 2): a_m * dir_m * cos(2 pi f_m tau + phi_m) at the frame times (float64)."""
  tau = np.asarray(frame_indices, np.float64)[:, None] / fps
  c = np.cos(2 * np.pi * freq[None].astype(np.float64) * tau + phase[None])
  return (c * amp[None])[..., None] * direction[None].astype(np.float64)


def _coefficients(scene: Scene, frame_indices) -> np.ndarray:
  """(N, M, 2): the modes' a_m * dir_m * cos(2 pi f_m tau + phi_m) at the frame times."""
  return _oscillators(scene.fps, frame_indices, scene.freq, scene.phase, scene.amp, scene.direction)


def field(scene: Scene, frame_indices) -> np.ndarray:
  """Rest-state displacement D_NxHxWx2 at the given (possibly fractional) frame indices."""
  coef = _coefficients(scene, frame_indices).astype(np.float32)
  return np.einsum('nmc,mhw->nhwc', coef, scene.shapes)


def _grid(h: int, w: int) -> np.ndarray:
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  return np.stack([xs, ys], axis=-1)


def _sample(img: np.ndarray, pos_HxWx2: np.ndarray) -> np.ndarray:
  """Bilinear sampling in float32 with edge replication (cv2.remap rounds positions to 1/32 px)."""
  h, w = img.shape[:2]
  x = np.clip(pos_HxWx2[..., 0], 0, w - 1)
  y = np.clip(pos_HxWx2[..., 1], 0, h - 1)
  x0 = np.minimum(np.floor(x).astype(np.int32), w - 2)
  y0 = np.minimum(np.floor(y).astype(np.int32), h - 2)
  fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
  if img.ndim == 3:
    fx, fy = fx[..., None], fy[..., None]
  src = img.astype(np.float32, copy=False)
  top = src[y0, x0] * (1 - fx) + src[y0, x0 + 1] * fx
  bot = src[y0 + 1, x0] * (1 - fx) + src[y0 + 1, x0 + 1] * fx
  return top * (1 - fy) + bot * fy


def rest_positions(d_HxWx2: np.ndarray, iters: int = 20, exact_iters: int = 5, q=None) -> np.ndarray:
  """For every output pixel q, the rest pixel p with p + D(p) = q (fixed point; D is a contraction).

  ``q`` (H x W x 2, default the pixel grid) gives other target positions, e.g. the grid shifted by the camera.

  The first iterations use cv2.remap (fast, positions rounded to 1/32 px), the last ones an exact float32
  bilinear sampler, which brings the residual |p + D(p) - q| below 1e-4 px.
  """
  if q is None:
    q = _grid(*d_HxWx2.shape[:2])
    p = q - d_HxWx2
  else:
    p = q - _sample(d_HxWx2, q)
  for _ in range(iters):
    p = q - cv2.remap(d_HxWx2, p[..., 0], p[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  for _ in range(exact_iters):
    p = q - _sample(d_HxWx2, p)
  return p


def render(scene: Scene, frame_indices) -> np.ndarray:
  """Frames (N, H, W, 3) uint8 at the given frame indices."""
  out = np.empty((len(frame_indices), scene.height, scene.width, 3), np.uint8)
  grid = _grid(scene.height, scene.width)
  shifts = layer_offset(scene, frame_indices).astype(np.float32)
  view = camera_offset(scene, frame_indices).astype(np.float32)
  for i, d in enumerate(field(scene, frame_indices)):
    q = grid - view[i]  # where each pixel of the frame looks in the scene (the grid without camera shake)
    if scene.has_layer:
      back = _sample(scene.plate, rest_positions(d, q=q))
      src = q - shifts[i]
      alpha = _sample(scene.layer_mask, src)[..., None]
      frame = alpha * _sample(scene.photo, src) + (1 - alpha) * back
    else:
      frame = _sample(scene.photo, rest_positions(d, q=q))
    out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
  return out


def trajectories(scene: Scene, start: int, num_frames: int) -> np.ndarray:
  """Exact disp_TxHxWx2 of the clip whose frame 0 is video frame ``start`` (disp[0] = 0)."""
  frames = np.arange(start, start + num_frames)
  view = camera_offset(scene, frames).astype(np.float32)
  q = _grid(scene.height, scene.width) - view[0]
  p = rest_positions(field(scene, [start])[0], q=q)
  shapes_at_p = np.stack([_sample(s, p) for s in scene.shapes])  # M x H x W
  coef = _coefficients(scene, frames).astype(np.float32)
  d = np.einsum('nmc,mhw->nhwc', coef, shapes_at_p)
  d = d - d[:1]
  if scene.has_layer:  # pixels of the layer at frame 0 move rigidly with it
    shifts = layer_offset(scene, frames).astype(np.float32)
    on_layer = _sample(scene.layer_mask, q - shifts[0]) > 0.5
    d[:, on_layer] = (shifts - shifts[:1])[:, None]
  return d + (view - view[:1])[:, None, None]  # and everything with the view


def moving_mask(scene: Scene, threshold_px: float = 0.1) -> np.ndarray:
  """Rest pixels whose motion bound exceeds ``threshold_px`` (H x W bool)."""
  return scene.amplitude_map() > threshold_px


def scene_path(video_path: str) -> str:
  return os.path.splitext(video_path)[0] + SCENE_SUFFIX


def generate(out_dir: str, num_scenes: int, photos=DEFAULT_PHOTOS, seed: int = 0, width: int = 256,
             height: int = 160, fps: float = 30.0, num_frames: int = 300, progress: bool = True,
             crop_min: float = 0.6, jitter: float = 0.0, **scene_kwargs) -> list[str]:
  """Write ``scene_XXXXX.mp4`` + ``scene_XXXXX.scene.npz`` for N scenes; existing ones are kept (resumable).

  Scene i animates photo ``i % len(photos)``, randomly cropped (``crop_min``-100% of each side, 60% by
  default) and flipped, so that several scenes from one photo still differ in content. A smaller
  ``crop_min`` makes more distinct pictures of few photos (a 20% crop is a close-up of one part of it).
  ``jitter`` > 0 also changes each scene's exposure, contrast, saturation, white balance and hue
  (``jitter_photo``) before its motion is placed, so that few photos teach the rule under many lights.
  """
  if not 0.0 < crop_min <= 1.0:
    raise ValueError(f'crop_min must be in (0, 1], got {crop_min}')
  if not 0.0 <= jitter <= 1.0:
    raise ValueError(f'jitter must be in [0, 1], got {jitter}')
  if num_scenes < 1:
    raise ValueError(f'num_scenes must be >= 1, got {num_scenes}')
  os.makedirs(out_dir, exist_ok=True)
  cache = {}
  paths = []
  for i in tqdm(range(num_scenes), desc='synthetic scenes', disable=not progress):
    path = os.path.join(out_dir, f'scene_{i:05d}.mp4')
    paths.append(path)
    if os.path.exists(path) and os.path.exists(scene_path(path)):
      continue
    name = photos[i % len(photos)]
    if name not in cache:
      cache[name] = load_photo(name)
    photo = cache[name]
    rng = np.random.default_rng([seed, i])
    h, w = photo.shape[:2]
    ch, cw = max(2, int(h * rng.uniform(crop_min, 1.0))), max(2, int(w * rng.uniform(crop_min, 1.0)))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = photo[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
      crop = crop[:, ::-1]
    if jitter:  # its own stream: jitter = 0 leaves every other draw (and earlier datasets) unchanged
      crop = jitter_photo(crop, np.random.default_rng([seed, i, 1]), jitter)
    scene = make_scene(crop, seed=int(rng.integers(2**31)), width=width, height=height, fps=fps,
                       num_frames=num_frames, **scene_kwargs)
    frames = render(scene, np.arange(num_frames))
    # Sidecar first: a video without its sidecar is regenerated, never mistaken for a finished scene.
    scene.save(scene_path(path))
    video_lib.write_video(path, frames, fps=fps, quality=12)
  return paths


def jitter_photo(photo: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """A photometric variant of an RGB uint8 photo, ``strength`` in [0, 1] (1: exposure x2^(+-1.5) by a
  gamma curve, contrast x(1 +- 0.5), saturation x2^(+-1), white balance x2^(+-0.3) on red vs blue, hue
  +-12 degrees, each drawn uniformly). Dark, backlit, hazy and warm versions of a sunny meadow are still
  meadows: the plants world's rule is applied to the result, so the motion follows what the picture shows.
  """
  u = lambda: rng.uniform(-strength, strength)
  x = np.asarray(photo, np.float32) / 255.0
  x = x ** (2.0 ** (1.5 * u()))  # exposure by a gamma curve (black and white stay put)
  mean = x.mean()
  x = np.clip(mean + (x - mean) * (1.0 + 0.5 * u()), 0.0, 1.0)
  wb = 2.0 ** (0.3 * u())
  x = np.clip(x * np.float32([wb, 1.0, 1.0 / wb]), 0.0, 1.0)
  hsv = cv2.cvtColor((x * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
  hsv[..., 0] = np.mod(hsv[..., 0] + 6.0 * u(), 180.0)  # OpenCV hue is degrees / 2
  hsv[..., 1] = np.clip(hsv[..., 1] * 2.0 ** u(), 0.0, 255.0)
  return cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB)


def isoluminant_probe(path: str, width: int = 256, height: int = 160, num_frames: int = 60, amp_px: float = 2.0,
                      cycles: int = 2, period: int = 40, radius: int = 30, fps: float = 30.0, seed: int = 0):
  """A probe of motion-target fidelity: a disc of chroma-only texture (constant CIE L, equal to the mean L
  of the background's grey luminance texture) swaying in x, ``amp_px * sin(2 pi cycles t / period)``.

  Luminance-only flow sees the disc as flat; at a quarter of ``width`` its motion is also sub-pixel. Writes
  the video to ``path`` (H.264) and returns (x shift of the disc per frame in px, its frame-0 coverage H x W
  in [0, 1]); the exact displacement of a covered pixel from frame s to t is shift[t] - shift[s].
  """
  rng = np.random.default_rng(seed)

  def noise(h, w, sigma):
    n = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
    return n / n.std()

  l0, pad = 140.0, 8  # 8-bit CIE L of both; margin around the disc's texture
  bg = np.stack([np.clip(l0 + 35 * noise(height, width, 2.0), 0, 255), np.full((height, width), 128.0),
                 np.full((height, width), 128.0)], -1)
  side = 2 * (radius + pad)
  tex = np.clip(np.stack([np.full((side, side), l0), 128 + 30 * noise(side, side, 3.0),
                          128 + 30 * noise(side, side, 3.0)], -1), 0, 255).astype(np.float32)
  yy, xx = np.mgrid[:side, :side]
  disc = (((xx - side / 2 + 0.5) ** 2 + (yy - side / 2 + 0.5) ** 2) <= radius ** 2).astype(np.float32)
  shifts = amp_px * np.sin(2 * np.pi * cycles * np.arange(num_frames) / period)
  frames, coverage = [], None
  for dx in shifts:
    m = np.float32([[1, 0, width // 2 - side / 2 + dx], [0, 1, height // 2 - side / 2]])
    tex_t = np.stack([cv2.warpAffine(np.ascontiguousarray(tex[..., c]), m, (width, height), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REPLICATE) for c in range(3)], -1)
    cov = cv2.warpAffine(disc, m, (width, height), flags=cv2.INTER_LINEAR)
    coverage = cov if coverage is None else coverage
    lab = bg * (1 - cov[..., None]) + tex_t * cov[..., None]
    frames.append(cv2.cvtColor(np.clip(np.round(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB))
  video_lib.write_video(path, np.stack(frames), fps=fps)
  return shifts.astype(np.float32), coverage


def main(argv=None) -> int:
  parser = cli.Parser('python -m gid_jax.data.synthetic', __doc__, progress=False)
  parser.add_argument('--out', required=True, help='output folder for videos and .scene.npz sidecars')
  parser.add_argument('--overwrite', action='store_true', help='write into a folder that holds other files')
  parser.add_argument('--num-scenes', type=int, default=16, help='scenes (videos) to write')
  parser.add_argument('--photos', default=None,
                      help='folder of photos to animate, or comma-separated scikit-image photo names '
                           '(default: all of DEFAULT_PHOTOS)')
  parser.add_argument('--seed', type=int, default=0, help='random seed of the scenes')
  parser.add_argument('--width', type=int, default=256, help='video width')
  parser.add_argument('--height', type=int, default=160, help='video height')
  parser.add_argument('--fps', type=float, default=30.0, help='frame rate')
  parser.add_argument('--num-frames', type=int, default=300, help='frames per video')
  parser.add_argument('--crop-min', type=float, default=0.6,
                      help='smallest random crop of a photo, as a fraction of each side (default 0.6)')
  parser.add_argument('--jitter', type=float, default=0.0,
                      help="photometric jitter of each scene's photo in [0, 1] (exposure, contrast, colour)")
  parser.add_argument('--layer-amp-px', type=float, default=0.0,
                      help='add an occluding layer swaying about this many px at 256 px width (default 0: none)')
  parser.add_argument('--world', default='textured', choices=WORLDS,
                      help="what moves: 'plants' (plant-like pixels only, some scenes still: the paper's "
                           "domain) or 'textured' (textured, colourful regions: the earlier world)")
  parser.add_argument('--still-fraction', type=float, default=0.0,
                      help='plants world: share of scenes drawn still at random (no wind), whatever they show '
                           '(default 0: only scenes without plants are still)')
  parser.add_argument('--camera-px', type=float, default=0.0,
                      help='add camera shake of about this many px at 256 px width (default 0: none)')
  args = parser.parse(argv)
  if os.path.isdir(args.out) and not args.overwrite:
    others = [f for f in os.listdir(args.out) if not re.fullmatch(r'scene_\d{5}(\.mp4|\.scene\.npz)', f)]
    if others:
      print(f'error: --out {args.out} holds files that are not synthetic scenes ({others[0]}, ...); choose a new '
            'folder or pass --overwrite (those files are kept)', file=sys.stderr)
      return 2
  photos = DEFAULT_PHOTOS
  names = args.photos and not os.path.isdir(args.photos) and (',' in args.photos or args.photos in DEFAULT_PHOTOS)
  if names:
    photos = tuple(n.strip() for n in args.photos.split(',') if n.strip())
    unknown = [n for n in photos if n not in DEFAULT_PHOTOS]
    if unknown:
      print(f'error: not scikit-image photos of DEFAULT_PHOTOS: {", ".join(unknown)}', file=sys.stderr)
      return 2
  elif args.photos:
    if not os.path.isdir(args.photos):
      print(f'error: photo folder not found: {args.photos}', file=sys.stderr)
      return 2
    exts = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
    photos = tuple(sorted(os.path.join(args.photos, f) for f in os.listdir(args.photos)
                          if f.lower().endswith(exts)))
    if not photos:
      print(f'error: no photos (png/jpg/...) in {args.photos}', file=sys.stderr)
      return 2
  for v in ('width', 'height', 'num_frames'):
    if getattr(args, v) < 2:
      print(f'error: --{v.replace("_", "-")} must be >= 2', file=sys.stderr)
      return 2
  if not 0.0 < args.crop_min <= 1.0:
    print(f'error: --crop-min must be in (0, 1], got {args.crop_min}', file=sys.stderr)
    return 2
  if not 0.0 <= args.jitter <= 1.0:
    print(f'error: --jitter must be in [0, 1], got {args.jitter}', file=sys.stderr)
    return 2
  for v in ('layer_amp_px', 'camera_px'):
    if not 0.0 <= getattr(args, v) < float('inf'):
      print(f'error: --{v.replace("_", "-")} must be a finite number >= 0, got {getattr(args, v)}', file=sys.stderr)
      return 2
  if not 0.0 <= args.still_fraction <= 1.0:
    print(f'error: --still-fraction must be in [0, 1], got {args.still_fraction}', file=sys.stderr)
    return 2
  paths = generate(args.out, args.num_scenes, photos, args.seed, args.width, args.height, args.fps,
                   args.num_frames, crop_min=args.crop_min, jitter=args.jitter, layer_amp_px=args.layer_amp_px,
                   camera_px=args.camera_px, world=args.world, still_fraction=args.still_fraction)
  print(f'wrote {len(paths)} scenes to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
