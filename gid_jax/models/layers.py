"""Building blocks shared by the networks (NNX, NHWC)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def group_norm(channels: int, rngs: nnx.Rngs, max_groups: int = 8) -> nnx.GroupNorm:
  """GroupNorm with gcd(max_groups, channels) groups (valid for any width, narrow test widths included).

  GroupNorm instead of BatchNorm: no batch statistics to carry, same behaviour at batch 1 (sampling) and in
  training, and independent of how the batch is sharded. The renderer uses 8 groups, the U-Net LDM's 32.
  """
  return nnx.GroupNorm(channels, num_groups=math.gcd(max_groups, channels), rngs=rngs)


class ResBlock(nnx.Module):
  """ResNet basic block (two 3x3 convs) with GroupNorm; ``stride=2`` halves the resolution."""

  def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, padding=1, rngs=rngs)
    self.norm1 = group_norm(out_ch, rngs)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), padding=1, rngs=rngs)
    self.norm2 = group_norm(out_ch, rngs)
    needs_skip = stride != 1 or in_ch != out_ch
    self.skip = nnx.data(nnx.Conv(in_ch, out_ch, (1, 1), strides=stride, rngs=rngs) if needs_skip else None)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.norm1(self.conv1(x_BxHxWxC)))
    h = self.norm2(self.conv2(h))
    s = x_BxHxWxC if self.skip is None else self.skip(x_BxHxWxC)
    return jax.nn.relu(h + s)
