"""The denoising U-Net of the motion diffusion model (LDM 2D U-Net + frequency embedding/attention).

SPEC.md section 4. ``UNet(z_Nxhxwxc, t_N, cond_Nxhxwx3, freq_N) -> eps_Nxhxwxc_out``:

* The latent of one 4-channel frequency slice of the spectral volume is denoised at a time. A batch of B
  images with K frequencies comes as N = B * K slices in the order (group, k, example in group) of
  ``models.ldm`` (``inner`` = examples per group; 1: b-major, n = b * K + k); the 2D layers treat them as
  independent samples. The condition is I_0 downsampled to the latent size (3 channels in [-1, 1],
  all zeros for the classifier-free null condition) and is concatenated with the noisy latent.
* Stage 1: the LDM / ADM U-Net (Rombach et al. 2022; Dhariwal & Nichol 2021): per level ``blocks``
  residual blocks (the embedding as scale/shift after their second norm, as in ADM), each followed by
  spatial self-attention where ``attention[level]``; stride-2 conv downsampling; a middle (res, attn, res);
  a decoder with skip concatenations and nearest upsampling to the exact skip size (so 10 x 16 or 40 x 64
  latents, with odd sizes at depth, work). A learned embedding of the frequency index k is added to the
  timestep embedding.
* Stage 2 (``freq_attention=True``): a ``FreqAttention`` after every spatial block (residual or attention,
  encoder, middle and decoder), which attends over the K slices of one image at every (h, w). Those layers
  live under ``freq_attn`` and start as the identity, so a stage-2 model is the stage-1 parameter tree plus
  ``freq_attn`` entries, and ``nnx.PathContains('freq_attn')`` selects exactly what stage 2 trains.
* The "volume prediction" ablation is the same class with ``in_channels = out_channels = 4 * K``,
  ``freq_embedding=False`` and ``num_freqs=0``.
* ``mask_head='out'`` or ``'middle'`` (not in the paper) adds ``mask_out``, a 1x1 conv to one logit per
  latent pixel from the features ``conv_out`` reads or from the middle block's output (nearest-upsampled);
  ``__call__(..., with_mask=True)`` returns ``(eps, logits_Nxhxw)``. The trainer's auxiliary moving-mask
  loss (``aux_mask_weight``) trains it; sampling never reads it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gid_jax.models import layers

_zeros = nnx.initializers.zeros


def group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  """LDM's 32 groups (fewer for narrow widths and concatenated decoder inputs: layers.group_norm)."""
  return layers.group_norm(channels, rngs, max_groups=32)


def timestep_embedding(t_N: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """ADM's sinusoidal embedding of (integer or float) timesteps: N -> N x dim, [cos | sin]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args_NxD = jnp.asarray(t_N, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args_NxD), jnp.sin(args_NxD)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def multi_head_attention(q_BxTxHxD: jax.Array, k_BxTxHxD: jax.Array, v_BxTxHxD: jax.Array) -> jax.Array:
  # jax.nn.dot_product_attention lets a backend swap in a fused kernel (implementation='cudnn') later.
  return jax.nn.dot_product_attention(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD)


class ResBlock(nnx.Module):
  """ADM residual block: GN, SiLU, conv; GN with embedding scale/shift, SiLU, dropout, zero conv; skip.

  The embedding enters as ADM's ``use_scale_shift_norm`` (FiLM after the second GroupNorm), not LDM's
  default of adding it before that norm: with one channel per group (widths <= 32) GroupNorm would subtract
  an added per-channel constant again and the network could not see t or k at all.
  """

  def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, *, rngs: nnx.Rngs):
    self.norm1 = group_norm(in_ch, rngs)
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), padding=1, rngs=rngs)
    self.emb_proj = nnx.Linear(emb_dim, 2 * out_ch, rngs=rngs)
    self.norm2 = group_norm(out_ch, rngs)
    self.dropout = nnx.Dropout(dropout)
    # Zero-initialised as in LDM (zero_module): every residual branch starts as the identity, which keeps
    # the activations' scale independent of depth at init.
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), padding=1, kernel_init=_zeros, rngs=rngs)
    self.skip = nnx.data(nnx.Conv(in_ch, out_ch, (1, 1), rngs=rngs) if in_ch != out_ch else None)

  def __call__(self, x_NxHxWxC: jax.Array, emb_NxE: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x_NxHxWxC)))
    scale_Nx1x1xC, shift_Nx1x1xC = jnp.split(self.emb_proj(jax.nn.silu(emb_NxE))[:, None, None, :], 2, axis=-1)
    h = self.norm2(h) * (1 + scale_Nx1x1xC) + shift_Nx1x1xC
    h = self.dropout(jax.nn.silu(h), deterministic=deterministic, rngs=rngs)
    h = self.conv2(h)
    s = x_NxHxWxC if self.skip is None else self.skip(x_NxHxWxC)
    return s + h


class SpatialAttention(nnx.Module):
  """Multi-head self-attention over the h * w positions of each slice (LDM AttentionBlock)."""

  def __init__(self, channels: int, heads: int, *, rngs: nnx.Rngs):
    if channels % heads:
      raise ValueError(f'attention over {channels} channels needs heads dividing it, got heads={heads}')
    self.heads = heads
    self.norm = group_norm(channels, rngs)
    self.qkv = nnx.Linear(channels, 3 * channels, rngs=rngs)
    self.proj = nnx.Linear(channels, channels, kernel_init=_zeros, rngs=rngs)  # identity at init (LDM)

  def __call__(self, x_NxHxWxC: jax.Array) -> jax.Array:
    n, h, w, c = x_NxHxWxC.shape
    qkv = self.qkv(self.norm(x_NxHxWxC)).reshape(n, h * w, 3, self.heads, c // self.heads)
    out = multi_head_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    return x_NxHxWxC + self.proj(out.reshape(n, h, w, c))


class FreqAttention(nnx.Module):
  """Multi-head attention across the K frequency slices of one image, at every spatial location.

  (B * K) x h x w x C -> B x K x h x w x C; GroupNorm; + learned frequency position embedding; attention
  with tokens = the K slices, independently at each (b, h, w); zero-initialised output projection (the
  layer starts as the identity, so inserting it into a trained stage-1 model changes nothing); residual.
  """

  def __init__(self, channels: int, heads: int, num_freqs: int, *, rngs: nnx.Rngs):
    if channels % heads:
      raise ValueError(f'attention over {channels} channels needs heads dividing it, got heads={heads}')
    self.heads = heads
    # Normalised over K, h, w jointly (per image and group), as video temporal layers do: per-slice
    # statistics would erase the relative amplitude of the frequencies, which is what there is to coordinate.
    self.norm = group_norm(channels, rngs)
    self.pos_emb = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (num_freqs, channels)))
    self.qkv = nnx.Linear(channels, 3 * channels, rngs=rngs)
    self.proj = nnx.Linear(channels, channels, kernel_init=_zeros, rngs=rngs)

  def __call__(self, x_NxHxWxC: jax.Array, num_freqs: int,
               constrain: Callable[[jax.Array], jax.Array] = lambda x: x, inner: int = 1) -> jax.Array:
    """``inner``: the slices come as (group, k, example in group) with ``inner`` examples per group."""
    n, h, w, c = x_NxHxWxC.shape
    k = num_freqs
    if n % (k * inner):
      raise ValueError(f'frequency attention: batch of {n} slices is not a multiple of K={k} x {inner}')
    if k > self.pos_emb.shape[0]:
      raise ValueError(f'frequency attention built for {self.pos_emb.shape[0]} frequencies, got K={k}')
    b = n // k
    g = b // inner
    x_BxKxhxwxC = constrain(x_NxHxWxC.reshape(g, k, inner, h, w, c).swapaxes(1, 2).reshape(b, k, h, w, c))
    y = self.norm(x_BxKxhxwxC) + self.pos_emb[:k][None, :, None, None, :]
    qkv = self.qkv(y).reshape(b, k, h, w, 3, self.heads, c // self.heads)
    # Tokens along K; (b, h, w) become independent attention batches.
    qkv_BhwxKx3xHxD = qkv.transpose(0, 2, 3, 1, 4, 5, 6).reshape(b * h * w, k, 3, self.heads, -1)
    out = multi_head_attention(qkv_BhwxKx3xHxD[:, :, 0], qkv_BhwxKx3xHxD[:, :, 1],
                               qkv_BhwxKx3xHxD[:, :, 2])
    out_BxKxhxwxC = out.reshape(b, h, w, k, c).transpose(0, 3, 1, 2, 4)
    x_BxKxhxwxC = constrain(x_BxKxhxwxC + self.proj(out_BxKxhxwxC))
    return x_BxKxhxwxC.reshape(g, inner, k, h, w, c).swapaxes(1, 2).reshape(n, h, w, c)


class Upsample(nnx.Module):
  """Nearest upsampling to an exact size (odd skip sizes), then a 3x3 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(channels, channels, (3, 3), padding=1, rngs=rngs)

  def __call__(self, x_NxHxWxC: jax.Array, height: int, width: int) -> jax.Array:
    n, _, _, c = x_NxHxWxC.shape
    return self.conv(jax.image.resize(x_NxHxWxC, (n, height, width, c), method='nearest'))


class Level(nnx.Module):
  """The blocks of one resolution: residual blocks, their attention (or None), the resampler (or None)."""

  def __init__(self, res: list[ResBlock], attn: list[SpatialAttention] | None, resample: nnx.Module | None):
    self.res = nnx.List(res)
    self.attn = nnx.data(None if attn is None else nnx.List(attn))
    self.resample = nnx.data(resample)


class Middle(nnx.Module):

  def __init__(self, channels: int, emb_dim: int, heads: int, dropout: float, *, rngs: nnx.Rngs):
    self.res1 = ResBlock(channels, channels, emb_dim, dropout, rngs=rngs)
    self.attn = SpatialAttention(channels, heads, rngs=rngs)
    self.res2 = ResBlock(channels, channels, emb_dim, dropout, rngs=rngs)


MASK_HEADS = ('', 'out', 'middle')


class UNet(nnx.Module):
  """See the module docstring. ``self.freq_attn[i]`` follows the i-th spatial block in call order."""

  def __init__(self, *, in_channels: int = 4, cond_channels: int = 3, out_channels: int = 4,
               widths: Sequence[int] = (64, 128, 256), blocks: int = 2,
               attention: Sequence[bool] = (False, True, True), heads: int = 4, num_freqs: int = 16,
               freq_embedding: bool = True, freq_attention: bool = False, dropout: float = 0.0,
               mask_head: str = '', rngs: nnx.Rngs):
    widths, attention = tuple(widths), tuple(attention)
    if not widths or len(attention) != len(widths):
      raise ValueError(f'widths {widths} and attention {attention} need the same nonzero length')
    if (freq_embedding or freq_attention) and num_freqs <= 0:
      raise ValueError(f'frequency embedding/attention need num_freqs > 0, got {num_freqs}')
    self.in_channels, self.cond_channels, self.out_channels = in_channels, cond_channels, out_channels
    self.num_freqs = num_freqs
    # Set by the trainer (e.g. a NamedSharding with K over a mesh axis); static, not a parameter.
    self.freq_sharding = None
    self.remat = ''  # activation rematerialisation of every block (layers.REMAT_POLICIES); set by a trainer
    w0 = widths[0]
    self.emb_dim = emb_dim = 4 * w0
    self.time_embed1 = nnx.Linear(w0, emb_dim, rngs=rngs)
    self.time_embed2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
    self.freq_embed = nnx.data(nnx.Embed(num_freqs, emb_dim, rngs=rngs) if freq_embedding else None)
    self.conv_in = nnx.Conv(in_channels + cond_channels, w0, (3, 3), padding=1, rngs=rngs)

    # Built in call order, so that the i-th spatial block gets freq_attn[i].
    spatial_channels = []
    ch, skip_chs = w0, [w0]
    encoder = []
    for level, (width, attn) in enumerate(zip(widths, attention)):
      res, attns = [], []
      for _ in range(blocks):
        res.append(ResBlock(ch, width, emb_dim, dropout, rngs=rngs))
        ch = width
        spatial_channels.append(ch)
        if attn:
          attns.append(SpatialAttention(ch, heads, rngs=rngs))
          spatial_channels.append(ch)
        skip_chs.append(ch)
      down = None
      if level < len(widths) - 1:
        # padding=1 on a stride-2 3x3 conv gives ceil(h / 2): odd sizes survive and upsampling restores them.
        down = nnx.Conv(ch, ch, (3, 3), strides=2, padding=1, rngs=rngs)
        skip_chs.append(ch)
      encoder.append(Level(res, attns if attn else None, down))
    self.encoder = nnx.List(encoder)

    self.middle = Middle(ch, emb_dim, heads, dropout, rngs=rngs)
    spatial_channels += [ch, ch, ch]

    decoder = []
    for level in reversed(range(len(widths))):
      width, attn = widths[level], attention[level]
      res, attns = [], []
      for _ in range(blocks + 1):
        res.append(ResBlock(ch + skip_chs.pop(), width, emb_dim, dropout, rngs=rngs))
        ch = width
        spatial_channels.append(ch)
        if attn:
          attns.append(SpatialAttention(ch, heads, rngs=rngs))
          spatial_channels.append(ch)
      up = Upsample(ch, rngs=rngs) if level > 0 else None
      decoder.append(Level(res, attns if attn else None, up))
    self.decoder = nnx.List(decoder)
    assert not skip_chs, skip_chs

    self.norm_out = group_norm(ch, rngs)
    # Zero-initialised: the untrained model predicts eps = 0, and the diffusion loss starts at its variance.
    self.conv_out = nnx.Conv(ch, out_channels, (3, 3), padding=1, kernel_init=_zeros, rngs=rngs)

    # Constructed last so that the stage-1 layers draw the same random numbers with or without them.
    self.freq_attn = nnx.data(
        nnx.List([FreqAttention(c, heads, num_freqs, rngs=rngs) for c in spatial_channels])
        if freq_attention else None)
    # Optional auxiliary moving-mask logit (training/ldm.py), read from the middle block's output or from the
    # features conv_out reads.
    if mask_head not in MASK_HEADS:
      raise ValueError(f'mask_head must be one of {MASK_HEADS}, got {mask_head!r}')
    self.mask_head = mask_head
    mask_ch = widths[-1] if mask_head == 'middle' else ch
    self.mask_out = nnx.data(nnx.Conv(mask_ch, 1, (1, 1), rngs=rngs) if mask_head else None)

  def __call__(self, z_Nxhxwxc: jax.Array, t_N: jax.Array, cond_Nxhxwx3: jax.Array,
               freq_N: jax.Array | None = None, *, num_freqs: int | None = None, inner: int = 1,
               deterministic: bool = True, rngs: nnx.Rngs | None = None, with_mask: bool = False):
    n, h, w, c = z_Nxhxwxc.shape
    if c != self.in_channels or cond_Nxhxwx3.shape != (n, h, w, self.cond_channels):
      raise ValueError(f'UNet: expected z N x h x w x {self.in_channels} and cond N x h x w x '
                       f'{self.cond_channels} of the same N, h, w; got {z_Nxhxwxc.shape}, {cond_Nxhxwx3.shape}')
    t_N = jnp.broadcast_to(jnp.asarray(t_N), (n,))
    emb = self.time_embed2(jax.nn.silu(self.time_embed1(timestep_embedding(t_N, self.conv_in.out_features))))
    if self.freq_embed is not None:
      if freq_N is None:
        raise ValueError('UNet: freq_N (int32 frequency index of every slice) is needed with freq_embedding')
      emb = emb + self.freq_embed(jnp.broadcast_to(jnp.asarray(freq_N, jnp.int32), (n,)))
    k = self.num_freqs if num_freqs is None else num_freqs
    policy = self.remat
    sharding = self.freq_sharding

    # The trainer's sharding of B x K x h x w x C around the K-axis attention, if it set one. A constraint,
    # not a reshard: the mesh axes must be Auto (jax.make_mesh(..., axis_types=...)), since with Explicit axes
    # the (B * K) -> B x K reshapes and the attention over a sharded K would each need their output shardings
    # spelled out. A plain function, not a method: it is closed over inside nnx.remat.
    def constrain(x):
      return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

    def block_res(m, a, e, key):
      return m(a, e, deterministic=deterministic, rngs=None if key is None else layers.rngs(dropout=key))

    def run_res(res, x, emb_):  # each block rematerialised under the policy (layers.checkpointed)
      key = None if rngs is None or deterministic else rngs.dropout()  # one dropout key per block
      return layers.checkpointed(policy, block_res, res, x, emb_, key)

    def run_attn(attn, x):
      return layers.checkpointed(policy, lambda m, a: m(a), attn, x)

    freq_layers = iter(self.freq_attn) if self.freq_attn is not None else None

    def mix(x):  # after every spatial block: the K-axis attention of stage 2, or nothing (stage 1)
      if freq_layers is None:
        return x
      return layers.checkpointed(policy, lambda m, a: m(a, k, constrain, inner), next(freq_layers), x)

    x = self.conv_in(jnp.concatenate([z_Nxhxwxc, cond_Nxhxwx3.astype(z_Nxhxwxc.dtype)], axis=-1))
    skips = [x]
    for level in self.encoder:
      for i, res in enumerate(level.res):
        x = mix(run_res(res, x, emb))
        if level.attn is not None:
          x = mix(run_attn(level.attn[i], x))
        skips.append(x)
      if level.resample is not None:
        x = level.resample(x)
        skips.append(x)

    x = mix(run_res(self.middle.res1, x, emb))
    x = mix(run_attn(self.middle.attn, x))
    x = mix(run_res(self.middle.res2, x, emb))
    middle = x

    for level in self.decoder:
      for i, res in enumerate(level.res):
        x = mix(run_res(res, jnp.concatenate([x, skips.pop()], axis=-1), emb))
        if level.attn is not None:
          x = mix(run_attn(level.attn[i], x))
      if level.resample is not None:
        x = level.resample(x, *skips[-1].shape[1:3])
    assert freq_layers is None or next(freq_layers, None) is None, 'freq_attn out of step with the blocks'

    feats = jax.nn.silu(self.norm_out(x))
    if with_mask:
      if self.mask_out is None:
        raise ValueError("UNet: with_mask=True needs a model built with mask_head='out' or 'middle'")
      if self.mask_head == 'middle':  # nearest upsampling of the bottleneck's logits to the latent size
        logits = self.mask_out(jax.nn.silu(middle))[..., 0]
        rows = (jnp.arange(h) * logits.shape[1]) // h
        cols = (jnp.arange(w) * logits.shape[2]) // w
        logits = logits[:, rows][:, :, cols]
      else:
        logits = self.mask_out(feats)[..., 0]
      return self.conv_out(feats), logits
    return self.conv_out(feats)


def from_config(model_cfg: Any, rngs: nnx.Rngs) -> UNet:
  """UNet from a resolved config's ``model`` (``gid_jax.runs``: the option and the derived channel counts)."""
  c = model_cfg
  return UNet(in_channels=c['in_channels'], cond_channels=c['cond_channels'], out_channels=c['out_channels'],
              widths=tuple(c['widths']), blocks=c['blocks'], attention=tuple(c['attention']), heads=c['heads'],
              num_freqs=c['num_freqs'], freq_embedding=c['freq_embedding'], freq_attention=c['freq_attention'],
              dropout=c['dropout'], mask_head=c['mask_head'], rngs=rngs)
