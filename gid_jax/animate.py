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
N = T * slowdown loops already. For any other N, two methods (``loop_method``):

* ``'snap'`` (default): the sampled volume is played with every frequency bin moved to the nearest whole
  number of cycles per loop (:func:`gid_jax.motion.edit.loop_bins`): exact closure in position, velocity
  and every derivative, each bin's amplitude and phase kept (the motion keeps its strength), frequencies
  moved by at most half a cycle per loop; sampling is exactly a plain run's (no extra cost).
* ``'guidance'``: the paper's motion self-guidance (SPEC section 6: universal guidance with self-recurrence,
  w = 1.75, 2 recurrences, u = 200): at every DDIM step the gradient of

      L = mean |F(N) - F(0)| + mean |F'(N) - F'(0)|,   F'(n) = (F(n + 1) - F(n - 1)) / 2

  (F decoded by the VAE from the predicted clean latent, de-normalised and evaluated by the inverse DFT)
  is added to the noise prediction, eps + u * sqrt(1 - abar) * grad_z L, and each step is repeated
  ``recurrence`` times. Units, so that the paper's u means what it meant: ``||.||_1`` is read as the mean
  absolute error (PyTorch's default reduction) over pixels and x / y, in pixels of the paper's 256-pixel-wide
  frames (our model's displacements times 256 / its width). An earlier version summed over pixels in
  model pixels; that is u_ours_old = u * (256 / W) / (2 H W): 0.156 for the paper's 200 at 64 x 40, which is
  why 0.2 looked right there. It differentiates through the U-Net and the VAE decoder at every step: about
  80x a plain run's sampling time on a CPU (docs/RESULTS.md). Velocities are central differences at both
  ends: the one-sided pair of SPEC's formula (F(N) - F(N-1) against F(1) - F(0)) differs by a frame, so it
  charges even an exactly periodic motion its acceleration.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax import runs
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
LOOP_METHODS = ('snap', 'guidance')
PAPER_WIDTH = 256  # the paper's frames are 256 x 160: the loop guidance's loss is in their pixels


@dataclasses.dataclass
class Options:
  num_frames: int = 150
  fps: float = 30.0
  steps: int = 250
  eta: float = 0.0
  guidance: float = 0.0
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


def loop_loss_fn(stats: norm_lib.NormStats, num_frames_t: int, length: float, num_frames_out: int,
                 model_width: int) -> Callable:
  """L(nspec_BxKxHxWx4) of the module docstring; ``length`` = N / slowdown in frames of the T-frame clip;
  ``model_width``: the width of the volumes' pixels (their displacements are scaled to 256-pixel frames).

  Cached per settings: the sampler compiles once per loss function object, so reuse spares a recompile.
  """
  key = (stats.to_json(), num_frames_t, float(length), num_frames_out, int(model_width))
  if key not in _LOOP_LOSSES:
    step = length / num_frames_out  # one output frame, in frames of the T-frame clip (1 / slowdown)
    times = np.array([-step, 0.0, step, length - step, length, length + step])
    to_paper_px = PAPER_WIDTH / float(model_width)

    def loss(nspec):
      f = edit.displacements_at(norm_lib.denormalize(nspec, stats), times, num_frames_t) * to_paper_px
      fm, f0, f1, fn1, fn, fn2 = (f[..., i, :, :, :] for i in range(6))
      return jnp.mean(jnp.abs(fn - f0)) + jnp.mean(jnp.abs((fn2 - fn1) - (f1 - fm)) / 2)

    _LOOP_LOSSES[key] = loss
  return _LOOP_LOSSES[key]


def is_periodic(num_frames_out: int, slowdown: float, num_frames_t: int) -> bool:
  """Whether N output frames are a whole number of the volume's T-frame periods (a loop by construction)."""
  length = num_frames_out / slowdown
  return abs(length / num_frames_t - round(length / num_frames_t)) < 1e-9


def loop_method(opts: Options, num_frames_t: int) -> str | None:
  """The loop method that has work to do: opts.loop_method for a loop that is not periodic already, else
  None."""
  if opts.loop and not is_periodic(opts.num_frames, opts.slowdown, num_frames_t):
    return opts.loop_method
  return None


def sample_motion(sampler, photo_HxWx3: np.ndarray, opts: Options, progress: Callable | None = None
                  ) -> np.ndarray:
  """S_KxHxWx4 (pixel units of the model-size image) for a uint8 photo; loop self-guidance if opts.loop
  and opts.loop_method == 'guidance' (a 'snap' loop samples exactly as a plain run)."""
  h, w = photo_HxWx3.shape[:2]
  mw, mh = model_size(w, h, (sampler.size[1], sampler.size[0]), sampler.multiple)
  small = resize(photo_HxWx3, mw, mh)
  x = jnp.asarray(small, jnp.float32)[None] / 127.5 - 1.0
  kw = dict(num_steps=opts.steps, eta=opts.eta, guidance=opts.guidance, progress=progress)
  if loop_method(opts, sampler.num_frames) == 'guidance':
    kw.update(guidance=opts.loop_weight,
              guidance_fn=loop_loss_fn(sampler.stats, sampler.num_frames, opts.num_frames / opts.slowdown,
                                       opts.num_frames, mw),
              guidance_scale=opts.loop_scale, recurrence=opts.loop_recurrence)
  nspec = sampler.sample_normalized(x, jax.random.PRNGKey(opts.seed), **kw)
  return np.asarray(norm_lib.denormalize(nspec[0], sampler.stats), np.float32)


def trajectories(spec_KxHxWx4: np.ndarray, num_frames_t: int, opts: Options, frames=None) -> np.ndarray:
  """disp_NxHxWx2 for the output frames n (times n / slowdown) minus the motion at frame 0 (so frame 0 shows
  the photo); an exact N-frame loop (frame n + N equals frame n) when opts.loop and opts.loop_method ==
  'snap'. ``frames``: which output frames (default 0..N-1; e.g. -1..N+1 to look across the seam)."""
  frames = np.arange(opts.num_frames) if frames is None else np.asarray(frames, np.float64)
  times = np.concatenate([[0.0], frames / opts.slowdown])
  bins = None
  if loop_method(opts, num_frames_t) == 'snap':
    bins = edit.loop_bins(np.shape(spec_KxHxWx4)[-4], num_frames_t, opts.num_frames, opts.slowdown)
  disp = np.asarray(edit.displacements_at(spec_KxHxWx4, times, num_frames_t, bins))
  return disp[1:] - disp[:1]


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
  from gid_jax.runs import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.load_kind(workdir, 'renderer')[1]
  except ValueError as e:
    raise InputError(str(e)) from e


def check_model_dirs(checkpoint: str | None, renderer: str | None) -> None:
  """The fast check of ``load_models``' folders (no JAX): each exists, holds a checkpoint of the right kind."""
  runs.check_run(checkpoint or DEFAULT_CHECKPOINT, ('ldm',), '--checkpoint')
  if renderer not in (None, '', 'none'):
    runs.check_run(renderer, ('renderer',), '--renderer')


def load_models(checkpoint: str | None, renderer: str | None):
  """(MotionSampler, renderer model or None) for the CLI and the app; defaults to the bundled model.

  ``renderer``: a run/export folder, None for the bundled renderer (if shipped), 'none' or '' for RGB
  softmax splatting. Failures are InputErrors naming the folder.
  """
  from gid_jax.diffusion import motion_sampler  # pylint: disable=g-import-not-at-top
  checkpoint = checkpoint or DEFAULT_CHECKPOINT
  check_model_dirs(checkpoint, renderer)
  try:
    sampler = motion_sampler.MotionSampler(checkpoint)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise InputError(f'cannot load the motion model from {checkpoint}: {str(e).splitlines()[0]}') from e
  if renderer is None:
    renderer = DEFAULT_RENDERER if os.path.isdir(DEFAULT_RENDERER) else ''
  renderer = '' if renderer == 'none' else renderer
  try:
    return sampler, load_renderer(renderer)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise InputError(f'cannot load the renderer from {renderer}: {str(e).splitlines()[0]}') from e
