"""Trained runs and exports: what a run folder holds, read here without JAX or orbax; loaded by
:mod:`gid_jax.runs.checkpoints`.

A run (``python -m gid_jax.train --workdir RUN``) or an export keeps orbax checkpoints in
``RUN/checkpoints/<step>/``, each with two JSON items: ``config`` (the config as the user gave it, never
changed by the program) and ``facts`` (what training derived from its inputs: the dataset's size and
normalisation statistics, the VAE's architecture, the latent scale, the U-Net's channel counts; see
``gid_jax.training.ldm.derive_facts``). A model is built from the two merged (:func:`resolve`, read-only).
Runs saved by older code kept the facts inside the config; :func:`migrate` is the one place that reads them
(the bundled model of 2026-12-06 was one). The entry points use this
package's functions to refuse a wrong folder (no checkpoint, another trainer's run, another run's workdir) in
one line before any model is built. This module imports nothing heavy on purpose: ``gid-sample --help`` and
an argument error answer in well under a second, where importing JAX, flax and orbax takes seconds;
``gid_jax.runs.checkpoints`` holds everything that needs them (the registry of run kinds, read_config,
load, export).
"""

from __future__ import annotations

import copy
import importlib
import json

from gid_jax import fileio
from gid_jax.errors import InputError

# What makes two configs the same run (resuming with a different value would be another experiment, or fail
# to restore): compared when a workdir already holds checkpoints.
IDENTITY_KEYS = ('trainer', 'size', 'mode', 'trainable', 'model', 'diffusion', 'loss', 'num_freqs', 'normalize',
                 'batch_size', 'seed')

# The derived facts of each trainer's runs (dotted paths; ``resolve`` lays them over the config). Older code
# stored them inside the config: ``migrate`` moves them out.
FACTS = {
    'ldm': ('data_info', 'norm_stats_json', 'latent_scale', 'vae.model', 'model.in_channels',
            'model.out_channels', 'model.cond_channels', 'model.num_freqs', 'model.mask_head'),
    'vae': ('norm_stats_json',),  # runs saved before 2026-12-07 have none: they used the dataset's
    'renderer': (),
}
# Options whose effective value is a fact too: the data selection an LDM run saw (stage 2 inherits its stage-1
# run's). Older code overwrote the option with it: ``migrate`` copies it into the facts and leaves the option.
EFFECTIVE = {'ldm': ('num_freqs', 'normalize'), 'vae': (), 'renderer': ()}


def merge(base: dict, over: dict) -> dict:
  """A new dict: ``base`` with ``over`` laid over it, nested dicts merged key by key."""
  out = copy.deepcopy(base)
  for k, v in over.items():
    out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
  return out


def _pop(d: dict, path: str):
  """Remove ``path`` (dotted) from ``d``; returns a dict holding just it ({} if absent)."""
  *parents, last = path.split('.')
  node = d
  for p in parents:
    if not isinstance(node.get(p), dict):
      return {}
    node = node[p]
  if last not in node:
    return {}
  out = value = node.pop(last)
  for p in reversed(path.split('.')):
    out = {p: out}
  return out if value is not None else {}


def defaults(trainer: str, size: str) -> dict:
  """The packaged config of ``trainer`` at ``size`` (a dict): every option's default, stated once there."""
  module = importlib.import_module(f'gid_jax.configs.{trainer}')
  return module.get_config(f'size={size}').to_dict()


def migrate(stored: dict, facts: dict | None = None) -> tuple[dict, dict]:
  """(config, facts) of a run saved by any version of this code (dicts; ``facts`` None: a run of the old
  format, whose facts are inside its config).

  * facts stored inside the config (:data:`FACTS`) move to ``facts``; effective values (:data:`EFFECTIVE`)
    are copied there;
  * values of an old type: ``model.mask_head`` True (the first version's only head) is ``'out'``;
  * options added since the run was saved take their packaged defaults (``defaults``), which are what the
    code that saved it did (tests/test_runs.py and tests/test_ldm.py load such runs).
  """
  config = copy.deepcopy(stored)
  trainer = config.get('trainer')
  if trainer not in FACTS:
    raise ValueError(f'unknown trainer {trainer!r} (one of {sorted(FACTS)})')
  moved = {}
  for path in FACTS[trainer]:
    moved = merge(moved, _pop(config, path))
  if facts is None:
    facts = merge(moved, {k: config[k] for k in EFFECTIVE[trainer] if k in config})
  else:
    facts = copy.deepcopy(facts)
  if trainer == 'ldm':
    head = facts.get('model', {}).get('mask_head')
    if head is True or head is False:
      facts['model']['mask_head'] = 'out' if head else ''
      if head and 'aux_mask_at' not in config:
        config['aux_mask_at'] = 'out'
    config.pop('vae', None)  # only ever held the VAE's model (a fact)
    if 'data_info' in facts:  # data facts added since: what the code of the time used
      facts['data_info'].setdefault('image_scale', 1)
    if 'vae' in facts:  # VAE options added since (model.norm)
      facts['vae']['model'] = merge(defaults('vae', config.get('size', 'tiny'))['model'], facts['vae']['model'])
  config = merge(_without(defaults(trainer, config.get('size', 'tiny')), FACTS[trainer]), config)
  return config, facts


def _without(d: dict, paths) -> dict:
  d = copy.deepcopy(d)
  for path in paths:
    _pop(d, path)
  return d


def steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in ``workdir`` (sorted); [] if none."""
  ckpt = fileio.path(workdir) / 'checkpoints'
  if not ckpt.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and (p / '_CHECKPOINT_METADATA').is_file())


def read_item(workdir: str, step: int, item: str) -> dict | None:
  """The JSON item ``item`` (config, facts) of checkpoint ``step`` in ``workdir``; None if absent or unreadable."""
  try:
    return json.loads((fileio.path(workdir) / 'checkpoints' / str(step) / item / 'metadata').read_text())
  except (OSError, ValueError):
    return None


def stored_run(workdir: str) -> tuple[dict, dict] | None:
  """(config, facts) stored with the latest checkpoint of ``workdir``, migrated (:func:`migrate`); None if
  there is none."""
  found = steps(workdir)
  if not found:
    return None
  config = read_item(workdir, found[-1], 'config')
  if config is None:
    return None
  facts = read_item(workdir, found[-1], 'facts')
  if config.get('trainer') not in FACTS:  # not ours to migrate: the callers name its trainer
    return config, facts or {}
  return migrate(config, facts)


def stored_config(workdir: str) -> dict | None:
  """The config (a dict, as the user gave it) stored with the latest checkpoint of ``workdir``; None if there
  is none."""
  run = stored_run(workdir)
  return None if run is None else run[0]


def resolve(config: dict, facts: dict) -> dict:
  """What a model is built from: the config with its run's derived facts laid over it (a new dict)."""
  return merge(config, facts)


def check_run(workdir: str, trainers: tuple[str, ...], option: str) -> dict:
  """The stored config of the run or export at ``workdir``; InputError if it is not one of ``trainers``."""
  if not fileio.path(workdir).is_dir():
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
  compared = lambda k: any(k == r or k.startswith(r + '.') for r in IDENTITY_KEYS)
  return sorted(k for k in set(a) | set(b) if compared(k) and a.get(k) != b.get(k))
