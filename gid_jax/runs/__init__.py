"""Trained runs and exports: what a run folder holds, read here without JAX or orbax; loaded by
:mod:`gid_jax.runs.checkpoints`.

A run (``python -m gid_jax.train --workdir RUN``) or an export keeps orbax checkpoints in
``RUN/checkpoints/<step>/``, each with its config as JSON in ``config/metadata``. The entry points use this
package's functions to refuse a wrong folder (no checkpoint, another trainer's run, another run's workdir) in
one line before any model is built. This module imports nothing heavy on purpose: ``gid-sample --help`` and
an argument error answer in well under a second, where importing JAX, flax and orbax takes seconds;
``gid_jax.runs.checkpoints`` holds everything that needs them (the registry of run kinds, read_config,
load, export).
"""

from __future__ import annotations

import json
import os

from gid_jax.errors import InputError

# What makes two configs the same run (resuming with a different value would be another experiment, or fail
# to restore): compared when a workdir already holds checkpoints. Values filled in at the start of training
# (the model's channel counts from the data and the VAE) are not compared.
IDENTITY_KEYS = ('trainer', 'size', 'mode', 'trainable', 'model', 'diffusion', 'loss', 'num_freqs', 'normalize',
                 'batch_size', 'seed')
FILLED_IN = ('model.in_channels', 'model.out_channels', 'model.num_freqs', 'model.cond_channels',
             'model.mask_head')


def steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in ``workdir`` (sorted); [] if none."""
  ckpt = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt):
    return []
  return sorted(int(n) for n in os.listdir(ckpt)
                if n.isdigit() and os.path.isfile(os.path.join(ckpt, n, '_CHECKPOINT_METADATA')))


def stored_config(workdir: str) -> dict | None:
  """The config (a dict) stored with the latest checkpoint of ``workdir``; None if there is none."""
  found = steps(workdir)
  if not found:
    return None
  path = os.path.join(workdir, 'checkpoints', str(found[-1]), 'config', 'metadata')
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def check_run(workdir: str, trainers: tuple[str, ...], option: str) -> dict:
  """The stored config of the run or export at ``workdir``; InputError if it is not one of ``trainers``."""
  if not os.path.isdir(workdir):
    raise InputError(f'{option} {workdir}: no such folder')
  config = stored_config(workdir)
  if config is None:
    raise InputError(f'{option} {workdir}: no checkpoint in it (expected a training run or an export)')
  if config.get('trainer') not in trainers:
    raise InputError(f'{option} {workdir} is a run of trainer {config.get("trainer")!r}, not '
                     f'{" or ".join(map(repr, trainers))}')
  return config


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + k + '.'))
    else:
      out[prefix + k] = list(v) if isinstance(v, tuple) else v
  return out


def config_differences(stored: dict, config: dict) -> list[str]:
  """Keys (dotted) of :data:`IDENTITY_KEYS` whose values differ between a stored run config and ``config``."""
  a, b = _flat(stored), _flat(json.loads(json.dumps(config)))
  compared = lambda k: (any(k == r or k.startswith(r + '.') for r in IDENTITY_KEYS) and k not in FILLED_IN)
  return sorted(k for k in set(a) | set(b) if compared(k) and a.get(k) != b.get(k))
