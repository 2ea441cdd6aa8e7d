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

import os
from typing import Callable

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.diffusion import motion_sampler
from gid_jax.errors import InputError
# The JAX-free checks, re-exported: animate.Options, animate.load_photo, ... are this module's API.
from gid_jax.inputs import (ASSETS, DEFAULT_CHECKPOINT, DEFAULT_RENDERER, EXAMPLE_PHOTO, LOOP_METHODS,  # noqa: F401
                            MAX_ASPECT, MAX_PIXELS, MIN_SIDE, Options, check_model_dirs, check_photo_file,
                            load_mask, load_photo, output_size)
from gid_jax.motion import edit
from gid_jax.motion import normalize as norm_lib
from gid_jax.render import video as render_video
from gid_jax.runs import checkpoints

PAPER_WIDTH = 256  # the paper's frames are 256 x 160: the loop guidance's loss is in their pixels


def model_size(width: int, height: int, train_wh: tuple[int, int], multiple: int) -> tuple[int, int]:
  """(W, H) for the motion model: the photo's aspect, about the training pixel count, multiples."""
  area = train_wh[0] * train_wh[1]
  aspect = width / height
  snap = lambda v: max(multiple, int(round(v / multiple)) * multiple)
  return snap(np.sqrt(area * aspect)), snap(np.sqrt(area / aspect))


def resize(image_HxWxC: np.ndarray, width: int, height: int) -> np.ndarray:
  h, w = image_HxWxC.shape[:2]
  interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
  out = cv2.resize(image_HxWxC, (width, height), interpolation=interp)
  return out.reshape(height, width, *image_HxWxC.shape[2:])


def resize_spectral(spec_KxHxWx4: np.ndarray, width: int, height: int) -> np.ndarray:
  """Resize a spectral volume to (height, width), rescaling x and y displacements to the new pixels."""
  k, h, w, _ = spec_KxHxWx4.shape
  flat = np.asarray(spec_KxHxWx4, np.float32).transpose(1, 2, 0, 3).reshape(h, w, k * 4)
  chunks = [cv2.resize(flat[..., i:i + 256], (width, height), interpolation=cv2.INTER_LINEAR)
            .reshape(height, width, -1) for i in range(0, k * 4, 256)]
  out = np.concatenate(chunks, axis=-1).reshape(height, width, k, 4).transpose(2, 0, 1, 3)
  return out * np.asarray([width / w, width / w, height / h, height / h], np.float32)


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
  small = resize(photo_HxWx3, mw * sampler.image_scale, mh * sampler.image_scale)
  x = jnp.asarray(small, jnp.float32)[None] / 127.5 - 1.0
  kw = dict(num_steps=opts.steps, eta=opts.eta, guidance=opts.guidance, progress=progress,
            mask_gate=opts.mask_gate)
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
  try:
    return checkpoints.load_kind(workdir, 'renderer')[1]
  except ValueError as e:
    raise InputError(str(e)) from e


def load_models(checkpoint: str | None, renderer: str | None):
  """(MotionSampler, renderer model or None) for the CLI and the app; defaults to the bundled model.

  ``renderer``: a run/export folder, None for the bundled renderer (if shipped), 'none' or '' for RGB
  softmax splatting. Failures are InputErrors naming the folder.
  """
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
