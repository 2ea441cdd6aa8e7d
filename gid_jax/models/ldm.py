"""The motion latent diffusion model: a frozen spectral VAE plus the denoising U-Net, as one NNX module.

Shapes: a batch of B examples with K frequencies is a normalised spectral volume ``nspec_BxKxHxWx4``; its
latent is ``z_BxKxhxwxL`` (L = 4 channels, h x w = H x W / the VAE factor). The diffusion runs on
*samples* ``x_NxhxwxC``:

* ``mode='slice'`` (the paper): N = B * K samples of L channels; each carries its frequency index k; with
  frequency attention the U-Net attends across the K samples of an example. Their order (``groups``) is
  (group, k, example in group): the B examples fall into G groups of M = B / G, and n = (g * K + k) * M + m.
  ``groups=None`` (the default) makes every example its own group (n = b * K + k). A trainer on a device mesh
  sets G to the number of batch shards: then the samples of one (batch shard, frequency shard) pair are one
  contiguous block of the sample axis, so splitting that axis over (batch axes, freq) keeps every device on
  its own slices through the whole step (VAE, U-Net, loss); with b-major order each device would compute all
  of its batch shard's slices (docs/SCALING.md). Randomness is drawn per (b, k), so the order never changes
  what a step computes;
* ``mode='volume'`` (the "volume prediction" ablation): N = B samples of K * L channels.

The first frame conditions every sample, concatenated with the noisy latent inside the U-Net; a zero image
is the null condition of classifier-free guidance. ``cond_mode='resize'`` (default) is the paper's
downsampled I_0 (3 channels); ``'space_to_depth'`` brings it to h x w losslessly, each f x f block of
pixels becoming 3 f^2 channels (fine texture, which decides what moves, survives). The image may be larger
than the motion (a dataset's ``image_scale``): f is then the VAE's factor times that scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gid_jax.models import unet as unet_lib
from gid_jax.models import vae as vae_lib

MODES = ('slice', 'volume')
COND_MODES = ('space_to_depth', 'resize')


class MotionLDM(nnx.Module):
  """VAE + U-Net; ``latent_scale`` maps VAE latents to roughly unit variance (as in LDM)."""

  def __init__(self, vae_cfg, unet_cfg, *, mode: str, num_freqs: int, latent_scale: float, rngs: nnx.Rngs):
    if mode not in MODES:
      raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    self.vae = vae_lib.from_config(vae_cfg, rngs)
    self.unet = unet_lib.from_config(unet_cfg, rngs)
    self.mode = mode
    self.cond_mode = unet_cfg['cond_mode']
    if self.cond_mode not in COND_MODES:
      raise ValueError(f'model.cond_mode must be one of {COND_MODES}, got {self.cond_mode!r}')
    self.num_freqs = num_freqs
    self.latent_scale = float(latent_scale) or 1.0
    self.groups = None  # the sample order (module docstring); a trainer on a mesh sets the batch shards

  # --- the sample order --------------------------------------------------------------------------------
  def _groups(self, b: int, reps: int = 1) -> tuple[int, int]:
    """(G, M) for ``reps`` concatenated copies of a batch of ``b`` examples (each copy in the order)."""
    g = b if self.groups is None else self.groups * reps
    if b % g:
      raise ValueError(f'a batch of {b // reps} examples cannot be split into {g // reps} sample groups')
    return g, b // g

  def merge(self, a_BxKx: jax.Array, reps: int = 1) -> jax.Array:
    """B x K x ... -> (B * K) x ... in the sample order; ``reps``: B holds that many concatenated batches."""
    b, k = a_BxKx.shape[:2]
    g, m = self._groups(b, reps)
    return a_BxKx.reshape(g, m, k, *a_BxKx.shape[2:]).swapaxes(1, 2).reshape(b * k, *a_BxKx.shape[2:])

  def split(self, a_Nx: jax.Array, k: int, reps: int = 1) -> jax.Array:
    """The inverse of :meth:`merge`: (B * K) x ... -> B x K x ..."""
    b = a_Nx.shape[0] // k
    g, m = self._groups(b, reps)
    return a_Nx.reshape(g, k, m, *a_Nx.shape[1:]).swapaxes(1, 2).reshape(b, k, *a_Nx.shape[1:])

  def per_sample(self, a_Bx: jax.Array, reps: int = 1) -> jax.Array:
    """A per-example array (B x ...) for every sample: its example's value (B x ... -> N x ...)."""
    if self.mode != 'slice':
      return a_Bx
    k = self.num_freqs
    return self.merge(jnp.broadcast_to(a_Bx[:, None], (a_Bx.shape[0], k, *a_Bx.shape[1:])), reps)

  # --- latents -----------------------------------------------------------------------------------------
  def encode(self, nspec_BxKxHxWx4: jax.Array) -> jax.Array:
    """Scaled posterior means z_BxKxhxwxL (deterministic: the KL weight keeps the variance tiny)."""
    mean, _ = self.vae.encode(self.merge(nspec_BxKxHxWx4))
    return self.split(mean * self.latent_scale, nspec_BxKxHxWx4.shape[1])

  def decode(self, z_BxKxhxwxL: jax.Array, out_hw: tuple[int, int] | None = None) -> jax.Array:
    x = self.vae.decode(self.merge(z_BxKxhxwxL) / self.latent_scale, out_hw)
    return self.split(x, z_BxKxhxwxL.shape[1])

  # --- samples <-> latents ---------------------------------------------------------------------------
  def samples_per_example(self) -> int:
    return self.num_freqs if self.mode == 'slice' else 1

  def to_samples(self, z_BxKxhxwxL: jax.Array) -> jax.Array:
    b, k, h, w, l = z_BxKxhxwxL.shape
    if self.mode == 'slice':
      return self.merge(z_BxKxhxwxL)
    return z_BxKxhxwxL.transpose(0, 2, 3, 1, 4).reshape(b, h, w, k * l)

  def from_samples(self, x_NxhxwxC: jax.Array) -> jax.Array:
    k = self.num_freqs
    if self.mode == 'slice':
      return self.split(x_NxhxwxC, k)
    b, h, w, c = x_NxhxwxC.shape
    return x_NxhxwxC.reshape(b, h, w, k, c // k).transpose(0, 3, 1, 2, 4)

  def sample_shape(self, batch: int, latent_hw: tuple[int, int]) -> tuple[int, ...]:
    l = self.vae_latent_channels
    if self.mode == 'slice':
      return (batch * self.num_freqs, *latent_hw, l)
    return (batch, *latent_hw, self.num_freqs * l)

  @property
  def vae_latent_channels(self) -> int:
    return self.unet_out_channels if self.mode == 'slice' else self.unet_out_channels // self.num_freqs

  @property
  def unet_out_channels(self) -> int:
    return self.unet.out_channels

  # --- denoising ---------------------------------------------------------------------------------------
  def condition(self, image_BxHxWx3: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """The first frame at the latent resolution: B x h x w x 3 f^2 (space_to_depth) or x 3 (resize)."""
    b, hh, ww, c = image_BxHxWx3.shape
    if self.cond_mode == 'resize':
      return jax.image.resize(image_BxHxWx3, (b, *latent_hw, c), method='linear', antialias=True)
    h, w = latent_hw
    if hh % h or ww % w or hh // h != ww // w:
      raise ValueError(f'space-to-depth conditioning needs the image ({hh}x{ww}) to be a multiple of the '
                       f'latent ({h}x{w})')
    f = hh // h
    x = image_BxHxWx3.reshape(b, h, f, w, f, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, f * f * c)

  def denoise(self, x_NxhxwxC: jax.Array, t_N: jax.Array, cond_Bxhxwx3: jax.Array, *, reps: int = 1,
              deterministic: bool = True, rngs: nnx.Rngs | None = None, with_mask: bool = False):
    """The U-Net's prediction for every sample (eps or v, by the training objective); with ``with_mask``
    also its auxiliary moving-mask logits (N x h x w). ``reps``: x holds that many concatenated batches, each
    in the sample order, and cond their concatenated conditions (classifier-free guidance)."""
    cond = self.per_sample(cond_Bxhxwx3, reps)
    if self.mode != 'slice':
      return self.unet(x_NxhxwxC, t_N, cond, None, deterministic=deterministic, rngs=rngs, with_mask=with_mask)
    k = self.num_freqs
    b = x_NxhxwxC.shape[0] // k
    freq = self.merge(jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k)), reps)
    return self.unet(x_NxhxwxC, t_N, cond, freq, num_freqs=k, inner=self._groups(b, reps)[1],
                     deterministic=deterministic, rngs=rngs, with_mask=with_mask)


def from_config(config, rngs: nnx.Rngs) -> MotionLDM:
  """The model of a resolved LDM config (``gid_jax.runs.checkpoints.resolve``: the config with the run's
  derived facts, ``vae.model``, ``data_info``, ``latent_scale`` and the U-Net's channel counts)."""
  return MotionLDM(config.vae.model, config.model, mode=config.mode, num_freqs=config.data_info.num_freqs,
                   latent_scale=config.latent_scale, rngs=rngs)
