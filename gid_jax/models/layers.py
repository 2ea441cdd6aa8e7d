"""Building blocks shared by the networks (NNX, NHWC)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


# Activation rematerialisation policies (``config.remat``): '' keeps every activation for the backward pass;
# 'full' keeps only each block's input and recomputes the block; 'dots' also keeps the outputs of its matrix
# multiplies and convolutions without batch dimensions (recomputing the cheap element-wise work only).
REMAT_POLICIES = {'': None, 'full': jax.checkpoint_policies.nothing_saveable,
                  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
COMPUTE_DTYPES = ('float32', 'bfloat16')


class _Stream(nnx.RngStream):
  """``nnx.RngStream`` with the same keys (``fold_in(key, count)``, then ``count + 1``), whose counter is replaced
  with ``set_value`` instead of ``count[...] += 1``. Inside a trace flax's indexed update asks the traced counter
  for its ``sharding``; JAX answers with an error whose message walks the whole program built so far (caught,
  but paid on every parameter: quadratic in their number, 3x the time of tracing a model's construction)."""

  def __call__(self) -> jax.Array:
    key = jax.random.fold_in(self.key[...], self.count[...])
    self.count.set_value(self.count[...] + 1)
    return key


def init_rngs(seed: int) -> nnx.Rngs:
  """``nnx.Rngs(seed)`` for building a model (one ``default`` stream; the same parameters), fast to trace."""
  return rngs(default=seed)


def rngs(**streams) -> nnx.Rngs:
  """``nnx.Rngs(**streams)`` (each a seed or a key; the same keys), fast to trace: for randomness drawn inside a
  traced step, such as dropout."""
  out = nnx.Rngs()
  for tag, key in streams.items():
    setattr(out, tag, _Stream(key, tag=tag))
  return out


def checkpointed(policy: str, fn, module: nnx.Module, *arrays):
  """``fn(module, *arrays)``; with a ``policy`` of :data:`REMAT_POLICIES` the block's activations are
  recomputed in the backward pass (``jax.checkpoint`` of the module's state) instead of kept. ``fn`` must
  not change the module (randomness comes in as a key among ``arrays``)."""
  if not policy:
    return fn(module, *arrays)
  if policy not in REMAT_POLICIES:
    raise ValueError(f'remat policy must be one of {tuple(REMAT_POLICIES)}, got {policy!r}')
  graphdef, state = nnx.split(module)
  pure = lambda st, *a: fn(nnx.merge(graphdef, st), *a)
  return jax.checkpoint(pure, policy=REMAT_POLICIES[policy])(state, *arrays)


def set_compute_dtype(model: nnx.Module, dtype: str) -> None:
  """Compute every convolution, linear layer, norm and embedding of ``model`` in ``dtype`` (their inputs and
  parameters cast at use); the parameters stay float32 (mixed precision: the optimiser updates float32)."""
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f'compute dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}')
  value = None if dtype == 'float32' else jnp.dtype(dtype)
  for _, m in nnx.iter_graph(model):  # every module (Module.iter_modules is deprecated)
    if isinstance(m, (nnx.Conv, nnx.Linear, nnx.GroupNorm, nnx.LayerNorm)):
      m.dtype = value
    elif isinstance(m, nnx.Embed):
      m.dtype = jnp.dtype(dtype)


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
