"""Photo -> spectral volume -> video: the library behind ``python -m gid_jax.sample`` and the web app.

Size policy (any photo size, aspect kept):

* the **output** is the photo scaled so that its longer side is at most ``max_side`` (never enlarged),
  rounded to even sizes (H.264 needs them); frame 0 is exactly that photo;
* the **motion model** runs on the photo resized (area filter) to the size with the same aspect ratio and
  about the same number of pixels as the model's training size, rounded to multiples of what the networks
  divide by; the sampled spectral volume is then resized to the output size with its x and y
  displacements rescaled, so motion is in output pixels. Motion fields are smooth, so this loses little.

Motion edits: ``motion_scale`` multiplies the oscillating terms (magnify > 1, calm < 1), ``slowdown``
plays the band-limited trajectories at ``t / slowdown`` (exact slow motion of a Fourier motion texture),
``mask`` animates a region only (feathered inside its edge).

Seamless loops (``loop=True``): a clip of N frames loops without a seam when the motion at frame N equals
the motion at frame 0 in position and velocity. Our spectral volumes are T-periodic by construction, so
N = T * slowdown loops already; any other N uses motion self-guidance (SPEC section 6, universal guidance
with self-recurrence; w = 1.75, 2 recurrences as in SPEC, u = 0.2 for our loss units): at every DDIM step
the gradient of

    L = ||F(N) - F(0)||_1 + ||(F(N) - F(N - 1)) - (F(1) - F(0))||_1

(px; F decoded by the VAE from the predicted clean latent, de-normalised and evaluated by the inverse
DFT) is added to the noise prediction, eps + u * sqrt(1 - abar) * grad L, and each step is repeated
``recurrence`` times.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.errors import InputError  # pylint: disable=unused-import  (gid_jax.animate.InputError)
from gid_jax.motion import edit
from gid_jax.motion import normalize as norm_lib

MAX_PIXELS = 50_000_000  # larger photos are refused (decompression bombs, memory)
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
DEFAULT_CHECKPOINT = os.path.join(ASSETS, 'default', 'ldm')
DEFAULT_RENDERER = os.path.join(ASSETS, 'default', 'renderer')
EXAMPLE_PHOTO = os.path.join(ASSETS, 'example.jpg')


MIN_SIDE = 16  # photos with a shorter side below this are refused: too small to animate (1 x 1, icons)
# Photos more elongated than this are refused: the motion model's input keeps the photo's aspect at about the
# training pixel count, so a 200000 x 16 strip would make a 2 x 20000 model input (and hours of work).
MAX_ASPECT = 4.0


@dataclasses.dataclass
class Options:
  num_frames: int = 150
  fps: float = 30.0
  steps: int = 250
  eta: float = 0.0
  guidance: float = 0.0
  seed: int = 0
  loop: bool = False
  loop_weight: float = 1.75  # w of classifier-free guidance while looping (SPEC)
  # u: SPEC's 200 is in the paper's (unstated) loss units; with our L1 sums in pixels it overshoots. On the
  # bundled model (N = 100, 20 steps) u in {0.02, 0.2, 2, 20, 200} gave closure 0.048/0.053/0.49/0.56/0.59 px
  # (unguided 0.144) and 0.2 kept the motion's strength: docs/RESULTS.md.
  loop_scale: float = 0.2
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
  import warnings  # pylint: disable=g-import-not-at-top
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
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
  import warnings  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageOps, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
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


def model_size(width: int, height: int, train_wh: tuple[int, int], multiple: int) -> tuple[int, int]:
  """(W, H) for the motion model: the photo's aspect, about the training pixel count, multiples."""
  area = train_wh[0] * train_wh[1]
  aspect = width / height
  snap = lambda v: max(multiple, int(round(v / multiple)) * multiple)
  return snap(np.sqrt(area * aspect)), snap(np.sqrt(area / aspect))


def resize(image_HxWxC: np.ndarray, width: int, height: int) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = image_HxWxC.shape[:2]
  interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
  out = cv2.resize(image_HxWxC, (width, height), interpolation=interp)
  return out.reshape(height, width, *image_HxWxC.shape[2:])


def resize_spectral(spec_KxHxWx4: np.ndarray, width: int, height: int) -> np.ndarray:
  """Resize a spectral volume to (height, width), rescaling x and y displacements to the new pixels."""
  k, h, w, _ = spec_KxHxWx4.shape
  flat = np.asarray(spec_KxHxWx4, np.float32).transpose(1, 2, 0, 3).reshape(h, w, k * 4)
  import cv2  # pylint: disable=g-import-not-at-top
  chunks = [cv2.resize(flat[..., i:i + 256], (width, height), interpolation=cv2.INTER_LINEAR)
            .reshape(height, width, -1) for i in range(0, k * 4, 256)]
  out = np.concatenate(chunks, axis=-1).reshape(height, width, k, 4).transpose(2, 0, 1, 3)
  return out * np.asarray([width / w, width / w, height / h, height / h], np.float32)


def load_mask(path: str, width: int, height: int) -> np.ndarray:
  """A mask image of the photo's size -> float (H, W) in [0, 1] (white = animate)."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
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


_LOOP_LOSSES = {}


def loop_loss_fn(stats: norm_lib.NormStats, num_frames_t: int, length: float, num_frames_out: int) -> Callable:
  """L(nspec_BxKxHxWx4) of the module docstring; ``length`` = N / slowdown in frames of the T-frame clip.

  Cached per settings: the sampler compiles once per loss function object, so reuse spares a recompile.
  """
  key = (stats.to_json(), num_frames_t, float(length), num_frames_out)
  if key not in _LOOP_LOSSES:
    _LOOP_LOSSES[key] = _make_loop_loss(stats, num_frames_t, length, num_frames_out)
  return _LOOP_LOSSES[key]


def _make_loop_loss(stats, num_frames_t, length, num_frames_out):
  k = stats.num_freqs
  step = length / num_frames_out  # one output frame, in frames of the T-frame clip (1 / slowdown)
  times = np.array([0.0, step, length - step, length])
  angle = 2.0 * np.pi * np.mod(np.arange(k)[:, None] * times[None, :], num_frames_t) / num_frames_t
  weight = np.where(np.arange(k) == 0, 1.0, 2.0)[:, None]
  cos = jnp.asarray(np.cos(angle) * weight, jnp.float32)
  sin = jnp.asarray(np.sin(angle) * weight, jnp.float32)

  def loss(nspec):
    spec = norm_lib.denormalize(nspec, stats)
    re, im = spec[..., 0::2], spec[..., 1::2]
    f = jnp.einsum('kn,...khwc->...nhwc', cos, re) - jnp.einsum('kn,...khwc->...nhwc', sin, im)
    f0, f1, fn1, fn = (f[..., i, :, :, :] for i in range(4))
    # L1 norms (sums over pixels and x/y), as SPEC writes them: the guidance scale u = 200 refers to these.
    return jnp.sum(jnp.abs(fn - f0)) + jnp.sum(jnp.abs((fn - fn1) - (f1 - f0)))

  return loss


def sample_motion(sampler, photo_HxWx3: np.ndarray, opts: Options, progress: Callable | None = None
                  ) -> np.ndarray:
  """S_KxHxWx4 (pixel units of the model-size image) for a uint8 photo; loop guidance if opts.loop."""
  h, w = photo_HxWx3.shape[:2]
  mw, mh = model_size(w, h, (sampler.size[1], sampler.size[0]), sampler.multiple)
  small = resize(photo_HxWx3, mw, mh)
  x = jnp.asarray(small, jnp.float32)[None] / 127.5 - 1.0
  length = opts.num_frames / opts.slowdown
  periodic = abs(length / sampler.num_frames - round(length / sampler.num_frames)) < 1e-9
  kw = dict(num_steps=opts.steps, eta=opts.eta, guidance=opts.guidance, progress=progress)
  if opts.loop and not periodic:
    kw.update(guidance=opts.loop_weight,
              guidance_fn=loop_loss_fn(sampler.stats, sampler.num_frames, length, opts.num_frames),
              guidance_scale=opts.loop_scale, recurrence=opts.loop_recurrence)
  nspec = sampler.sample_normalized(x, jax.random.PRNGKey(opts.seed), **kw)
  return np.asarray(norm_lib.denormalize(nspec[0], sampler.stats), np.float32)


def trajectories(spec_KxHxWx4: np.ndarray, num_frames_t: int, opts: Options) -> np.ndarray:
  """disp_NxHxWx2 for the output frames (times n / slowdown), with disp[0] = 0."""
  times = np.arange(opts.num_frames) / opts.slowdown
  disp = np.asarray(edit.displacements_at(spec_KxHxWx4, times, num_frames_t))
  return disp - disp[:1]


def animate(photo_HxWx3: np.ndarray, opts: Options, sampler=None, renderer=None, mask_HxW=None,
            spectral=None, progress: Callable | None = None, render_progress: Callable | None = None):
  """(frames_NxHxWx3 uint8, spec_KxHxWx4 at the output size, num_frames T of the volume).

  ``spectral``: a given (spec, T) instead of sampling one. ``mask_HxW`` at the photo's size.
  ``progress(done, total)``: after every DDIM step; ``render_progress(done, total)``: frames rendered.
  """
  from gid_jax.render import video as render_video  # pylint: disable=g-import-not-at-top
  opts.check()
  h, w = photo_HxWx3.shape[:2]
  ow, oh = output_size(w, h, opts.max_side)
  out_photo = resize(photo_HxWx3, ow, oh)
  if spectral is None:
    spec = sample_motion(sampler, photo_HxWx3, opts, progress)
    t = sampler.num_frames
  else:
    spec, t = spectral
  spec = resize_spectral(spec, ow, oh)
  if opts.motion_scale != 1.0:
    spec = np.asarray(edit.magnify(spec, opts.motion_scale))
  if mask_HxW is not None:
    if mask_HxW.shape != (h, w):
      raise InputError(f'mask is {mask_HxW.shape[1]}x{mask_HxW.shape[0]} but the photo is {w}x{h}')
    spec = np.asarray(edit.mask_motion(spec, resize(mask_HxW.astype(np.float32), ow, oh), feather_px=4.0))
  disp = trajectories(spec, t, opts)
  frames = render_video.render_frames(out_photo, disp, renderer=renderer, progress=render_progress)
  frames[0] = out_photo  # frame 0 is the photo, bit for bit
  return frames, spec, t


def load_renderer(workdir: str):
  """A trained renderer (configs/renderer.py run or exported model) or None when ``workdir`` is empty."""
  if not workdir:
    return None
  from gid_jax.training import loop  # pylint: disable=g-import-not-at-top
  from gid_jax.training import renderer as renderer_task  # pylint: disable=g-import-not-at-top
  cfg = loop.read_config(workdir)
  if cfg.get('trainer') != 'renderer':
    raise InputError(f'{workdir} is not a renderer run (its trainer is {cfg.get("trainer")!r})')
  return loop.load_model(workdir, cfg, renderer_task.model_task(cfg))


def check_model_dirs(checkpoint: str | None, renderer: str | None) -> None:
  """The fast check of ``load_models``' folders (no JAX): each exists, holds a checkpoint of the right kind."""
  from gid_jax.training import runinfo  # pylint: disable=g-import-not-at-top
  runinfo.check_run(checkpoint or DEFAULT_CHECKPOINT, ('ldm',), '--checkpoint')
  if renderer not in (None, '', 'none'):
    runinfo.check_run(renderer, ('renderer',), '--renderer')


def load_models(checkpoint: str | None, renderer: str | None):
  """(MotionSampler, renderer model or None) for the CLI and the app; defaults to the bundled model.

  ``renderer``: a run/export folder, None for the bundled renderer (if shipped), 'none' or '' for RGB
  softmax splatting. Failures are InputErrors naming the folder.
  """
  from gid_jax.diffusion import motion  # pylint: disable=g-import-not-at-top
  checkpoint = checkpoint or DEFAULT_CHECKPOINT
  check_model_dirs(checkpoint, renderer)
  try:
    sampler = motion.MotionSampler(checkpoint)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise InputError(f'cannot load the motion model from {checkpoint}: {str(e).splitlines()[0]}') from e
  if renderer is None:
    renderer = DEFAULT_RENDERER if os.path.isdir(DEFAULT_RENDERER) else ''
  renderer = '' if renderer == 'none' else renderer
  try:
    return sampler, load_renderer(renderer)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise InputError(f'cannot load the renderer from {renderer}: {str(e).splitlines()[0]}') from e
