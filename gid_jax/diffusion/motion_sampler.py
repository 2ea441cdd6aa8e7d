"""Photo -> spectral volume: DDIM sampling of a trained motion LDM, de-normalised to pixel units.

    spec_KxHxWx4 = sample_spectral_volume(image_HxWx3, checkpoint, num_steps=250, eta=0.0, guidance=0.0,
                                          seed=0)

``checkpoint`` is a training work dir of ``configs/ldm.py`` (stage 1 / independent prediction),
``configs/ldm_freq.py`` (stage 2, the paper's model) or ``configs/ldm_volume.py``. The config stored in the
checkpoint holds everything else (VAE, latent scale, normalisation statistics, K, T, fps).

All K latent slices of an image are denoised together (one DDIM trajectory, one shared timestep), so the
frequency attention of a stage-2 model sees the whole volume at every step. The motion may have any size
that is a multiple of :attr:`MotionSampler.multiple` (the networks are fully convolutional); the image is
:attr:`MotionSampler.image_scale` times that size (the scale of the model's training data: 1, or more for a
model conditioned on a finer image than the motion it predicts). The application layer (``gid_jax.sample``)
resizes photos to such a size near the training size.
The same seed gives the same volume.

**Mask gate** (``mask_gate`` > 0; not in the paper, off unless the checkpoint's ``sampling.mask_gate`` or the
caller sets it). A model trained with the auxiliary moving-mask loss (``aux_mask_weight`` > 0) has a head that
predicts, per latent pixel, the probability that its pixels move. Read at the last noise level (pure noise,
so only the image can answer, as in training; the mean of ``GATE_DRAWS`` noise draws), bilinearly upsampled to
the motion's size, it scales each pixel's sampled motion (in pixel units) by ``g = min(1, p / mask_gate)``:
pixels the head thinks move with probability ``mask_gate`` or more keep their motion, the rest fade with it.
The gate multiplies every coefficient of a pixel by the same real number, so loops stay loops.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax import sharding as sharding_lib
from gid_jax.data import video as video_lib
from gid_jax.diffusion import sampling
from gid_jax.diffusion import schedules
from gid_jax.motion import normalize as norm_lib
from gid_jax.runs import checkpoints

GATE_DRAWS = 4  # noise draws averaged for the mask gate's probability


class MotionSampler:
  """A loaded motion LDM, ready to sample (compiled once per image size and sampler settings)."""

  def __init__(self, checkpoint: str | None, ema: bool = True, mesh: jax.sharding.Mesh | None = None,
               loaded=None):
    """``mesh``: sample on a device mesh (axes as in gid_jax.sharding); batch and K are split.
    ``loaded``: an in-memory (config, MotionLDM) instead of a checkpoint (e.g. for benchmarks)."""
    self.config, model = loaded if loaded is not None else checkpoints.load_kind(checkpoint, 'ldm', ema)
    self.mesh = mesh
    if mesh is not None:
      self.batch_sharding = jax.sharding.NamedSharding(mesh, sharding_lib.batch_spec(self.config))
      self.batch_shards = sharding_lib.batch_shards(mesh, self.config)
      self.sample_sharding = jax.sharding.NamedSharding(mesh, sharding_lib.sample_spec(self.config))
      if self.config.model.freq_attention:
        model.unet.freq_sharding = jax.sharding.NamedSharding(
            mesh, sharding_lib.batch_spec(self.config, freq=True))
    self.graphdef, self.state = nnx.split(model)
    self.model = model
    self.stats = norm_lib.NormStats.from_json(self.config.norm_stats_json)
    self.sched = schedules.make_schedule(self.config.diffusion.schedule, self.config.diffusion.num_timesteps)
    info = self.config.data_info
    self.num_freqs, self.num_frames, self.fps = int(info.num_freqs), int(info.num_frames), float(info.fps)
    self.size = (int(info.height), int(info.width))  # the training size of the motion, H x W
    # The image is image_scale times the motion's size (the data's image_scale).
    self.image_scale = int(info.image_scale)
    # The VAE factor times the U-Net's deepest downsampling: the motion sizes every level divides exactly.
    self.multiple = model.vae.downsample * 2 ** (len(self.config.model.widths) - 1)
    self.has_mask_head = bool(self.config.model.get('mask_head', ''))

  def default_mask_gate(self) -> float:
    """The checkpoint's ``sampling.mask_gate`` (0 = off; runs from before it existed have none)."""
    return float(self.config.sampling.get('mask_gate', 0.0))

  def check_mask_gate(self, mask_gate: float) -> None:
    if not 0.0 <= mask_gate <= 1.0:
      raise ValueError(f'mask_gate must be in [0, 1] (0 = off), got {mask_gate}')
    if mask_gate > 0.0 and not self.has_mask_head:
      raise ValueError('mask_gate > 0 needs a model trained with the auxiliary moving-mask loss '
                       '(aux_mask_weight > 0); this one has no mask head')

  def image_size(self, motion_hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the image that gives motion of ``motion_hw``."""
    return motion_hw[0] * self.image_scale, motion_hw[1] * self.image_scale

  def fit_images(self, images_NxHxWx3: np.ndarray, motion_hw: tuple[int, int]) -> np.ndarray:
    """uint8 images (of any size, e.g. a dataset's at its own image_scale) resized to :meth:`image_size`."""
    ih, iw = self.image_size(motion_hw)
    return video_lib.center_crop_resize_all(images_NxHxWx3, iw, ih)

  def check_image(self, image_BxHxWx3) -> None:
    h, w = image_BxHxWx3.shape[-3:-1]
    m = self.multiple * self.image_scale
    if image_BxHxWx3.shape[-1] != 3 or h % m or w % m:
      raise ValueError(f'the image is {w}x{h}x{image_BxHxWx3.shape[-1]}; the motion model needs RGB with width '
                       f'and height multiples of {m} (trained at {self.image_scale * self.size[1]}x'
                       f'{self.image_scale * self.size[0]})')

  def sample_normalized(self, image_BxHxWx3, rng, *, num_steps: int, eta: float = 0.0, guidance: float = 0.0,
                        guidance_fn: Callable | None = None, guidance_scale: float = 0.0, recurrence: int = 1,
                        progress: Callable | None = None, mask_gate: float | None = None) -> jax.Array:
    """Normalised volumes nspec_BxKxhxwx4 for float images in [-1, 1] (see module docstring); h x w is the
    image's size over ``image_scale``. ``mask_gate``: None = the checkpoint's (module docstring)."""
    self.check_image(image_BxHxWx3)
    mask_gate = self.default_mask_gate() if mask_gate is None else float(mask_gate)
    self.check_mask_gate(mask_gate)
    image, state = self._placed(image_BxHxWx3)
    layout = None
    if self.mesh is not None and self.config.mode == 'slice' and image.shape[0] % self.batch_shards == 0:
      layout = (self.batch_shards, self.sample_sharding)  # each device samples only its own slices
    nspec = _sample(self.graphdef, state, self.sched, image, rng, eta,
                    guidance_scale, scale=self.image_scale, num_steps=int(num_steps), guidance=float(guidance),
                    objective=self.config.diffusion.objective, guidance_fn=guidance_fn,
                    recurrence=int(recurrence), progress=progress, layout=layout)
    if mask_gate > 0.0:
      p = self._head_probability(image, state, jax.random.fold_in(rng, 1))
      gate = jnp.minimum(1.0, p / mask_gate)[:, None, :, :, None]
      nspec = norm_lib.normalize(norm_lib.denormalize(nspec, self.stats) * gate, self.stats)
    return nspec

  def moving_probability(self, image_BxHxWx3, rng) -> jax.Array:
    """The mask head's probability that each pixel moves, B x h x w at the motion's size (module docstring:
    the mean over ``GATE_DRAWS`` pure-noise inputs at the last timestep)."""
    if not self.has_mask_head:
      raise ValueError('this model has no moving-mask head (trained without aux_mask_weight)')
    image, state = self._placed(image_BxHxWx3)
    return self._head_probability(image, state, rng)

  def _head_probability(self, image, state, rng):
    """:meth:`moving_probability` of an image and state already placed by :meth:`_placed`."""
    return _moving_probability(self.graphdef, state, image, rng, scale=self.image_scale,
                               timestep=self.sched.num_timesteps - 1)

  def _placed(self, image_BxHxWx3):
    """The float image and the model state, on the mesh when there is one (batch split, state replicated)."""
    image = jnp.asarray(image_BxHxWx3, jnp.float32)
    if self.mesh is None:
      return image, self.state
    return (jax.device_put(image, self.batch_sharding),
            jax.device_put(self.state, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())))

  def sample(self, image_HxWx3, *, num_steps: int | None = None, eta: float | None = None,
             guidance: float | None = None, seed: int = 0, progress: Callable | None = None) -> np.ndarray:
    """One spectral volume S_KxhxWx4 in pixel units for a uint8 (or [-1, 1] float) RGB image (h x w: its size
    over ``image_scale``)."""
    s = self.config.sampling
    image = np.asarray(image_HxWx3)
    if image.ndim != 3:
      raise ValueError(f'expected one H x W x 3 image, got shape {image.shape}')
    x = image.astype(np.float32) / 127.5 - 1.0 if image.dtype == np.uint8 else image.astype(np.float32)
    nspec = self.sample_normalized(x[None], jax.random.PRNGKey(seed),
                                   num_steps=s.num_steps if num_steps is None else num_steps,
                                   eta=s.eta if eta is None else eta,
                                   guidance=s.guidance if guidance is None else guidance, progress=progress)
    return np.asarray(norm_lib.denormalize(nspec[0], self.stats), np.float32)


@functools.partial(jax.jit, static_argnames=('graphdef', 'scale', 'num_steps', 'guidance', 'objective',
                                             'guidance_fn', 'recurrence', 'progress', 'layout'))
def _sample(graphdef, state, sched, image_BxHxWx3, rng, eta, guidance_scale, *, scale, num_steps, guidance,
            objective, guidance_fn, recurrence, progress, layout):
  """``scale``: the image's size over the motion's; ``layout``: None, or (the model's sample groups, the
  sharding of the sample axis) on a mesh."""
  model = nnx.merge(graphdef, state)
  if layout is not None:
    model.groups = layout[0]
  place = (lambda x: x) if layout is None else (lambda x: jax.lax.with_sharding_constraint(x, layout[1]))
  b, h, w = image_BxHxWx3.shape[0], image_BxHxWx3.shape[1] // scale, image_BxHxWx3.shape[2] // scale
  latent_hw = (h // model.vae.downsample, w // model.vae.downsample)
  cond_B = model.condition(image_BxHxWx3, latent_hw)

  per = model.samples_per_example()

  def f(x, t, use_cond):
    reps = x.shape[0] // (b * per)  # 2 under classifier-free guidance
    cond = jnp.concatenate([cond_B] * reps) if reps > 1 else cond_B
    keep = (model.split(use_cond, per, reps)[:, 0] if per > 1 else use_cond).astype(cond.dtype)
    return model.denoise(x, t, cond * keep[:, None, None, None], reps=reps)

  def decode(x0):  # samples -> normalised volume
    return model.decode(model.from_samples(x0), (h, w))

  def noise(key):  # drawn per (b, k), then put in the sample order: the order never changes the samples
    return place(model.to_samples(jax.random.normal(key, (b, model.num_freqs, *latent_hw,
                                                          model.vae_latent_channels))))

  gfn = None if guidance_fn is None else (lambda x0: guidance_fn(decode(x0)))
  x0 = sampling.ddim_sample(sampling.classifier_free(f, guidance), sched, model.sample_shape(b, latent_hw),
                            rng, num_steps=num_steps, eta=eta, objective=objective, guidance_fn=gfn,
                            guidance_scale=0.0 if gfn is None else guidance_scale, recurrence=recurrence,
                            progress=progress, noise_fn=noise if per > 1 else None)
  return decode(x0)


@functools.partial(jax.jit, static_argnames=('graphdef', 'scale', 'timestep'))
def _moving_probability(graphdef, state, image_BxHxWx3, rng, *, scale, timestep):
  model = nnx.merge(graphdef, state)
  b, h, w = image_BxHxWx3.shape[0], image_BxHxWx3.shape[1] // scale, image_BxHxWx3.shape[2] // scale
  latent_hw = (h // model.vae.downsample, w // model.vae.downsample)
  cond_B = model.condition(image_BxHxWx3, latent_hw)
  per = model.samples_per_example()

  def one(key):
    z = model.to_samples(jax.random.normal(key, (b, model.num_freqs, *latent_hw, model.vae_latent_channels)))
    _, logits = model.denoise(z, jnp.full((z.shape[0],), timestep, jnp.int32), cond_B, with_mask=True)
    p = jax.nn.sigmoid(logits.astype(jnp.float32))  # N x h' x w' (latent size)
    return model.split(p, per).mean(1) if per > 1 else p  # the slices of one example share one mask

  p = jnp.mean(jnp.stack([one(k) for k in jax.random.split(rng, GATE_DRAWS)]), axis=0)
  return jax.image.resize(p, (b, h, w), 'linear')


@functools.lru_cache(maxsize=4)
def load(checkpoint: str) -> MotionSampler:
  """A cached MotionSampler per checkpoint folder."""
  return MotionSampler(checkpoint)


def sample_spectral_volume(image_HxWx3, checkpoint: str, num_steps: int = 250, eta: float = 0.0,
                           guidance: float = 0.0, seed: int = 0) -> np.ndarray:
  """S_KxHxWx4 in pixel units (de-normalised) sampled for one RGB image; see module docstring."""
  return load(checkpoint).sample(image_HxWx3, num_steps=num_steps, eta=eta, guidance=guidance, seed=seed)
