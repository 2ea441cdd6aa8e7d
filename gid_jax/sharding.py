"""Device mesh and sharding rules, all read from the config.

The mesh has three named axes (``config.mesh``):

* ``data``: plain data parallelism; the batch axis is split over it;
* ``fsdp``: the batch is split over it too, and every parameter (and its optimiser state and EMA) is split
  along its largest axis that the axis size divides (ZeRO-3 / FSDP style), so memory per device falls
  with the axis size;
* ``freq``: the K frequency slices of each example are split over it; frequency attention attends across
  this axis (XLA gathers the K slices it needs), everything else works on the local slices.

Sizes are integers; one of them may be -1 ("all remaining devices"). The logical-to-mesh rules live in
``config.sharding.rules`` as (logical name, mesh axes) pairs: ``batch`` (leading axis of every batch
array), ``freq`` (the K axis of spectral volumes) and ``params`` (the mesh axes parameters are split
over). Their defaults (pure data parallelism on all devices) are ``gid_jax.configs.parallelism``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'freq')


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """(data, fsdp, freq) sizes with a -1 resolved; ValueError when they do not multiply to the devices."""
  sizes = [int(mesh_cfg[a]) for a in AXES]
  if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
    raise ValueError(f'config.mesh sizes must be positive (one may be -1), got {dict(zip(AXES, sizes))}')
  if -1 in sizes:
    rest = math.prod(s for s in sizes if s != -1)
    if num_devices % rest:
      raise ValueError(f'config.mesh {dict(zip(AXES, sizes))} does not divide {num_devices} devices')
    sizes[sizes.index(-1)] = num_devices // rest
  if math.prod(sizes) != num_devices:
    raise ValueError(f'config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, '
                     f'there are {num_devices}')
  return tuple(sizes)


def make_mesh(config) -> jax.sharding.Mesh:
  shape = mesh_shape(config.mesh, jax.device_count())
  return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def rules(config) -> dict[str, Any]:
  return {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.sharding.rules}


def batch_spec(config, *, freq: bool = False) -> P:
  """Partition spec of a batch array: batch axis split, and the K axis too for B x K x ... volumes."""
  r = rules(config)
  return P(r['batch'], r['freq']) if freq else P(r['batch'])


def _axes(value) -> tuple[str, ...]:
  return () if value is None else ((value,) if isinstance(value, str) else tuple(value))


def sample_spec(config) -> P:
  """Partition spec of the motion LDM's sample axis (B * K slices in the order (batch shard, k, example);
  ``models.ldm``): split over the batch axes and then the freq axes, so each device holds exactly the slices
  of its batch shard and its frequency shard."""
  r = rules(config)
  return P(_axes(r['batch']) + _axes(r['freq']))


def batch_shards(mesh, config) -> int:
  """How many pieces the batch axis is split into on ``mesh``."""
  return _axis_size(mesh, rules(config)['batch'])


def batch_sharding(mesh, config) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(config))


def _axis_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def param_spec(shape, mesh, axes) -> P:
  """Split the largest axis that the params' mesh axes divide; replicate small or indivisible arrays."""
  n = _axis_size(mesh, axes)
  if n == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0 and shape[dim] >= n:
      spec = [None] * len(shape)
      spec[dim] = axes
      return P(*spec)
  return P()


def tree_shardings(tree, mesh, config):
  """NamedShardings for a pytree of parameters (or optimiser state / EMA): FSDP over ``params`` axes."""
  axes = rules(config)['params']
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), mesh, axes)), tree)


# Batch entries with a K axis after the batch axis (spectral volumes and their latents): split over freq too.
FREQ_KEYS = ('nspec', 'z0', 'z_mean')


def batch_shardings(mesh, config, keys) -> dict[str, NamedSharding]:
  """The sharding of every entry of a batch: the batch axis split; the K axis too for :data:`FREQ_KEYS`
  (so each freq device receives only its own slices)."""
  plain, freq = batch_sharding(mesh, config), NamedSharding(mesh, batch_spec(config, freq=True))
  return {k: freq if k in FREQ_KEYS else plain for k in keys}


def global_batch(batch: dict, shardings: dict[str, NamedSharding]) -> dict:
  """Process-local numpy batch -> global jax.Arrays (each process passes its own slice of the batch)."""
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(x)) for k, x in batch.items()}
