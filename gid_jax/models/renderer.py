"""The image-based renderer: a feature pyramid of I_0, softmax-splatted by F_t, decoded into I_t.

SPEC.md section 5. ``Renderer(image_BxHxWx3, flow_BxHxWx2, importance_BxHxWx1) -> frame_BxHxWx3``:

* ``FeaturePyramid`` (ResNet-34 style): level 0 at full resolution, each further level halves it with a
  strided residual block; ``blocks`` residual blocks per level (ResNet-34: 3, 4, 6, 3).
* For every level l the flow is resized to that level (block average) and rescaled by 1 / 2^l, the
  importance (the motion-aware weight W(p) = mean_t ||F_t(p)||, in full-resolution pixels) block-averaged,
  and the features are softmax-splatted forward; a mask marks pixels that received nothing.
* ``Synthesis`` (an inpainting-style decoder): starts from the coarsest warped features and their mask,
  and at every finer level upsamples, concatenates that level's warped features and mask (and, at full
  resolution, the splatted RGB of I_0 with its holes push-pull filled), and refines with residual
  blocks; a final 3x3 conv predicts a correction that is added to that filled RGB (our choice: zero-
  initialised, so training starts from the splatting baseline and learns what it gets wrong: bilinear
  blur, overlaps, disocclusions). The masks tell it where to inpaint. That RGB base is softmax-splatted
  with W like the features (``rgb_base='softmax'``) or average-splatted (``'average'``).

Images are float32 in [-1, 1]; flow in pixels (channel 0 = x, 1 = y).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gid_jax.models.layers import ResBlock
from gid_jax.ops import splat
from gid_jax.ops.image import avg_pool, fill_holes, upsample_to

RGB_BASES = ('softmax', 'average')


class FeaturePyramid(nnx.Module):
  """I_0 -> [features at 1, 1/2, ..., 1/2^(L-1)], widths[l] channels at level l."""

  def __init__(self, widths: Sequence[int], blocks: Sequence[int], *, rngs: nnx.Rngs):
    if len(widths) != len(blocks) or not widths:
      raise ValueError(f'widths {tuple(widths)} and blocks {tuple(blocks)} need the same nonzero length')
    self.stem = nnx.Conv(3, widths[0], (3, 3), padding=1, rngs=rngs)
    levels = []
    prev = widths[0]
    for level, (w, n) in enumerate(zip(widths, blocks)):
      stage = [ResBlock(prev, w, stride=1 if level == 0 else 2, rngs=rngs)]
      stage += [ResBlock(w, w, rngs=rngs) for _ in range(n - 1)]
      levels.append(nnx.List(stage))
      prev = w
    self.levels = nnx.List(levels)

  def __call__(self, image_BxHxWx3: jax.Array) -> list[jax.Array]:
    x = jax.nn.relu(self.stem(image_BxHxWx3))
    feats = []
    for stage in self.levels:
      for block in stage:
        x = block(x)
      feats.append(x)
    return feats


class Synthesis(nnx.Module):
  """Warped pyramid (+ masks, + warped RGB) -> frame."""

  def __init__(self, widths: Sequence[int], decoder_blocks: int, *, rngs: nnx.Rngs):
    num_levels = len(widths)
    stages = []
    for level in reversed(range(num_levels)):
      extra = 0 if level == num_levels - 1 else widths[level + 1]  # the upsampled coarser decoder state
      in_ch = widths[level] + 1 + extra + (4 if level == 0 else 0)  # features, mask, (RGB + its mask)
      stage = [ResBlock(in_ch, widths[level], rngs=rngs)]
      stage += [ResBlock(widths[level], widths[level], rngs=rngs) for _ in range(decoder_blocks - 1)]
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)  # coarsest first
    # Zero-initialised: an untrained renderer returns the splatted, hole-filled RGB exactly, and training
    # learns the correction (sharpening bilinear blur, resolving overlaps, inpainting disocclusions).
    self.out = nnx.Conv(widths[0], 3, (3, 3), padding=1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, warped: list[jax.Array], masks: list[jax.Array], rgb_BxHxWx3: jax.Array,
               rgb_mask_BxHxWx1: jax.Array) -> jax.Array:
    x = None
    for stage, level in zip(self.stages, reversed(range(len(warped)))):
      parts = [warped[level], masks[level]]
      if x is not None:
        parts.append(upsample_to(x, *warped[level].shape[1:3]))
      if level == 0:
        parts += [rgb_BxHxWx3, rgb_mask_BxHxWx1]
      x = jnp.concatenate(parts, axis=-1)
      for block in stage:
        x = block(x)
    return rgb_BxHxWx3 + self.out(x)


class Renderer(nnx.Module):
  """(I_0, F_t, W) -> I_t. See the module docstring."""

  def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), blocks: Sequence[int] = (3, 4, 6, 3),
               decoder_blocks: int = 2, rgb_base: str = 'softmax', *, rngs: nnx.Rngs):
    if rgb_base not in RGB_BASES:
      raise ValueError(f'rgb_base must be one of {RGB_BASES}, got {rgb_base!r}')
    self.num_levels = len(widths)
    self.rgb_base = rgb_base
    self.encoder = FeaturePyramid(widths, blocks, rngs=rngs)
    self.synthesis = Synthesis(widths, decoder_blocks, rngs=rngs)

  def __call__(self, image_BxHxWx3: jax.Array, flow_BxHxWx2: jax.Array,
               importance_BxHxWx1: jax.Array) -> jax.Array:
    feats = self.encoder(image_BxHxWx3)
    warped, masks = [], []
    for level, f in enumerate(feats):
      factor = 2 ** level
      flow_l = avg_pool(flow_BxHxWx2, factor)[:, :f.shape[1], :f.shape[2]] / factor
      imp_l = avg_pool(importance_BxHxWx1, factor)[:, :f.shape[1], :f.shape[2]]
      w, m = splat.softmax_splat(f, flow_l, imp_l, mode='softmax', return_mask=True)
      warped.append(w)
      masks.append(m)
    # The RGB the correction is added to: I_0 softmax-splatted with W like the features, or average-splatted
    # (``rgb_base``; the features are softmax-splatted either way). Both leave the same holes.
    rgb, rgb_mask = splat.softmax_splat(image_BxHxWx3, flow_BxHxWx2, importance_BxHxWx1, mode=self.rgb_base,
                                        return_mask=True)
    return self.synthesis(warped, masks, fill_holes(rgb, rgb_mask), rgb_mask)


def from_config(model_cfg, rngs: nnx.Rngs) -> Renderer:
  return Renderer(tuple(model_cfg.widths), tuple(model_cfg.blocks), model_cfg.decoder_blocks,
                  model_cfg.rgb_base, rngs=rngs)
