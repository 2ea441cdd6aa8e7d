"""What ``gid-sample``, ``gid-interact`` and the web app check before any model is loaded, without JAX: the
options of an animation, the photo (its header, then its pixels), a mask, and the model folders. The
entry points import this module at start and :mod:`gid_jax.animate` (the JAX stack: about 1-3 s to import)
only once their arguments passed, so ``--help`` and a bad argument answer at once; ``animate`` re-exports
these names.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gid_jax import runs
from gid_jax.errors import InputError

MAX_PIXELS = 50_000_000  # larger photos are refused (decompression bombs, memory)
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
DEFAULT_CHECKPOINT = os.path.join(ASSETS, 'default', 'ldm')
DEFAULT_RENDERER = os.path.join(ASSETS, 'default', 'renderer')
EXAMPLE_PHOTO = os.path.join(ASSETS, 'example.jpg')


MIN_SIDE = 16  # photos with a shorter side below this are refused: too small to animate (1 x 1, icons)
# Photos more elongated than this are refused: the motion model's input keeps the photo's aspect at about the
# training pixel count, so a 200000 x 16 strip would make a 2 x 20000 model input (and hours of work).
MAX_ASPECT = 4.0
LOOP_METHODS = ('snap', 'guidance')


@dataclasses.dataclass
class Options:
  num_frames: int = 150
  fps: float = 30.0
  steps: int = 250
  eta: float = 0.0
  guidance: float = 0.0
  mask_gate: float | None = None  # None = the checkpoint's (gid_jax/diffusion/motion_sampler.py); 0 = off
  seed: int = 0
  loop: bool = False
  loop_method: str = 'snap'  # 'snap' or 'guidance' (module docstring)
  loop_weight: float = 1.75  # w of classifier-free guidance while looping by guidance (SPEC)
  loop_scale: float = 200.0  # u of the self-guidance, in the paper's units (module docstring; SPEC: 200)
  loop_recurrence: int = 2  # SPEC
  motion_scale: float = 1.0
  slowdown: float = 1.0
  max_side: int = 512

  def check(self) -> None:
    if self.num_frames < 2:
      raise InputError(f'--num-frames must be at least 2, got {self.num_frames}')
    if not 0 < self.fps <= 240:
      raise InputError(f'--fps must be in (0, 240], got {self.fps}')
    if self.steps < 1:
      raise InputError(f'--steps must be at least 1, got {self.steps}')
    if self.eta < 0:
      raise InputError(f'--eta must be >= 0, got {self.eta}')
    if self.guidance < 0:
      raise InputError(f'--guidance must be >= 0, got {self.guidance}')
    if self.mask_gate is not None and not 0 <= self.mask_gate <= 1:
      raise InputError(f'--mask-gate must be in [0, 1] (0 = off), got {self.mask_gate}')
    if self.loop_method not in LOOP_METHODS:
      raise InputError(f'--loop-method must be one of {", ".join(LOOP_METHODS)}, got {self.loop_method!r}')
    if self.loop_recurrence < 1:
      raise InputError(f'--loop-recurrence must be at least 1, got {self.loop_recurrence}')
    if self.loop_scale < 0:
      raise InputError(f'--loop-scale must be >= 0, got {self.loop_scale}')
    if self.motion_scale < 0:
      raise InputError(f'--motion-scale must be >= 0, got {self.motion_scale}')
    if self.slowdown <= 0:
      raise InputError(f'--slowdown must be > 0, got {self.slowdown}')
    if self.max_side < 16:
      raise InputError(f'--max-side must be at least 16, got {self.max_side}')


def check_photo_file(path: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
  """(width, height) from the file's header, without decoding it; InputError if missing, unreadable, too
  large (over ``max_pixels``), too small (shorter side under :data:`MIN_SIDE`) or too elongated (over
  :data:`MAX_ASPECT`)."""
  if not os.path.isfile(path):
    raise InputError(f'photo not found: {path}')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # our own limit speaks first
      with Image.open(path) as im:
        w, h = im.size
  except Image.DecompressionBombError:
    raise InputError(f'{path} is over {max(max_pixels, Image.MAX_IMAGE_PIXELS or 0):,} pixels, too large to '
                     'open safely') from None
  except (UnidentifiedImageError, OSError) as e:
    raise InputError(f'{path} is not a readable image ({str(e).splitlines()[0]})') from None
  if w * h > max_pixels:
    raise InputError(f'{path} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} pixels')
  if min(w, h) < MIN_SIDE:
    raise InputError(f'{path} is {w}x{h} pixels; photos need at least {MIN_SIDE} pixels on each side')
  if max(w, h) > MAX_ASPECT * min(w, h):
    raise InputError(f'{path} is {w}x{h} pixels; its longer side may be at most {MAX_ASPECT:g}x its shorter '
                     '(crop it)')
  return w, h


def load_photo(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """Any PIL-readable photo as uint8 RGB: EXIF rotation applied, alpha composited on white, greyscale
  replicated, 16-bit and float images scaled from their full range. Checked first by
  :func:`check_photo_file` (size limits, one-line InputErrors)."""
  check_photo_file(path, max_pixels)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.load()
  except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
    raise InputError(f'{path} is not a readable image ({str(e).splitlines()[0]})') from None
  if im.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    a = np.asarray(im, np.float64)
    top = 65535.0 if im.mode.startswith('I;16') or a.max() > 255 else 255.0
    if im.mode == 'F':
      top = 1.0 if a.max() <= 1.0 else max(float(a.max()), 1.0)
    a = np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)
  if im.mode in ('RGBA', 'LA', 'PA') or (im.mode == 'P' and 'transparency' in im.info):
    im = im.convert('RGBA')
    background = Image.new('RGBA', im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(background, im)
  return np.asarray(im.convert('RGB'), np.uint8)


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
  """(W, H) of the output: aspect kept, longer side <= max_side, even sizes."""
  scale = min(1.0, max_side / max(width, height))
  even = lambda v: max(2, int(round(v * scale / 2)) * 2)
  return even(width), even(height)


def load_mask(path: str, width: int, height: int) -> np.ndarray:
  """A mask image of the photo's size -> float (H, W) in [0, 1] (white = animate)."""
  if not os.path.isfile(path):
    raise InputError(f'mask not found: {path}')
  try:
    with Image.open(path) as im:
      im.load()
      if im.size != (width, height):
        raise InputError(f'mask {path} is {im.size[0]}x{im.size[1]} but the photo is {width}x{height}')
      if im.mode in ('RGBA', 'LA'):
        a = np.asarray(im.getchannel('A'), np.float32) / 255.0
      else:
        a = np.asarray(im.convert('L'), np.float32) / 255.0
  except (UnidentifiedImageError, OSError) as e:
    raise InputError(f'mask {path} is not a readable image') from e
  return a


def check_model_dirs(checkpoint: str | None, renderer: str | None) -> None:
  """The fast check of ``load_models``' folders (no JAX): each exists, holds a checkpoint of the right kind."""
  runs.check_run(checkpoint or DEFAULT_CHECKPOINT, ('ldm',), '--checkpoint')
  if renderer not in (None, '', 'none'):
    runs.check_run(renderer, ('renderer',), '--renderer')
