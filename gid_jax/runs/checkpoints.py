"""Checkpoints of trained runs and exports: the one place that builds, reads, loads and exports them.

Every checkpoint of a run holds ``state`` = {step, params, frozen, opt_state, ema} (``params`` are what the
run trains, ``frozen`` the other parameters: a pretrained VAE, a stage-1 U-Net), the grain iterator state,
the config and its derived facts as JSON (``gid_jax.runs``); an export (``export``) holds ``model`` =
{params (EMA), frozen}, the config and the facts. Which
model a checkpoint holds is its config's ``trainer``: :data:`KINDS` maps it to the model builder and the
filter of trained parameters, so ``load(workdir)`` needs nothing but the folder. ``gid_jax.training.loop``
writes these checkpoints; the entry points (sampling, the app, evaluation, export) read them here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from flax import nnx

from gid_jax import fileio, runs
from gid_jax.models import layers
from gid_jax.models import ldm as ldm_lib
from gid_jax.models import renderer as renderer_lib
from gid_jax.models import vae as vae_lib


@dataclasses.dataclass(frozen=True)
class Kind:
  """How to rebuild one trainer's model from its config and which of its parameters the run trains."""
  build: Callable[[Any, nnx.Rngs], nnx.Module]  # (config, rngs) -> model
  trainable: Callable[[Any], Any]  # config -> nnx filter of the trained parameters (the others are frozen)


LDM_TRAINABLE = {'unet': nnx.PathContains('unet'), 'freq_attn': nnx.PathContains('freq_attn')}

KINDS = {
    'vae': Kind(lambda c, rngs: vae_lib.from_config(c.model, rngs), lambda c: nnx.Param),
    'ldm': Kind(ldm_lib.from_config, lambda c: LDM_TRAINABLE[c.trainable]),
    'renderer': Kind(lambda c, rngs: renderer_lib.from_config(c.model, rngs), lambda c: nnx.Param),
}


def kind(config) -> Kind:
  name = config.get('trainer')
  if name not in KINDS:
    raise ValueError(f'unknown trainer {name!r} (one of {sorted(KINDS)})')
  return KINDS[name]


def build(config, abstract: bool = False) -> nnx.Module:
  """The model of a resolved config (:func:`resolve`), initialised in one compiled program (eagerly, XLA:CPU
  compiles every initialiser on its own: seconds per model); ``abstract`` gives shapes only (to restore a
  checkpoint into), unless the model holds non-parameter state (e.g. RNG streams), which must be concrete."""
  create = lambda: kind(config).build(config, layers.init_rngs(config.seed))
  if abstract:
    model = nnx.eval_shape(create)
    if not jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):
      return model
  return nnx.jit(create)()


def split(model: nnx.Module, config):
  """(graphdef, params, frozen, rest): the trained parameters, the other parameters, the rest."""
  return nnx.split(model, nnx.All(nnx.Param, kind(config).trainable(config)), nnx.Param, ...)


def run_state(config, model: nnx.Module, abstract: bool = False):
  """(graphdef, rest, state, tx): a run of ``model`` at step 0 (``state`` as :func:`full_state`; shapes only
  if ``abstract``) and its optimiser."""
  graphdef, params, frozen, rest = split(model, config)
  if not jax.tree.leaves(params):
    raise ValueError(f'the {config.trainer} run has no trainable parameters')
  tx = make_optimizer(config.optimizer, config.num_steps)
  full = lambda p, f: full_state(tx, p, f)
  state = jax.eval_shape(full, params, frozen) if abstract else jax.jit(full)(params, frozen)
  return graphdef, rest, state, tx


def make_optimizer(opt_cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warm-up, cosine decay to 10% and global-norm clipping (its state is in every run
  checkpoint, so its structure is part of the checkpoint format)."""
  decay = opt_cfg.decay_steps or num_steps  # 0 = decay over the whole run
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_cfg.learning_rate, warmup_steps=opt_cfg.warmup_steps,
      decay_steps=max(decay, opt_cfg.warmup_steps + 1), end_value=opt_cfg.learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=opt_cfg.weight_decay))


def full_state(tx: optax.GradientTransformation, params, frozen) -> dict:
  """A run checkpoint's ``state`` at step 0."""
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'frozen': frozen, 'opt_state': tx.init(params),
          'ema': jax.tree.map(jnp.copy, params)}


def abstract(tree, shardings=None):
  """ShapeDtypeStructs to restore ``tree`` into (on this process's first device without ``shardings``)."""
  if shardings is None:
    # A local device: in a multi-process run jax.devices()[0] belongs to process 0, and every other process
    # would restore arrays with no shard it can read.
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), tree)
  return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree, shardings)


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      str(fileio.path(workdir) / 'checkpoints'),
      options=ocp.CheckpointManagerOptions(create=True, max_to_keep=keep))


def latest(workdir: str, step: int | None = None):
  """(manager, step) of the latest (or the given) checkpoint in ``workdir``; FileNotFoundError if none."""
  ckpt_dir = fileio.path(workdir) / 'checkpoints'
  if not ckpt_dir.is_dir():  # checked first: the manager would create the folder
    raise FileNotFoundError(f'no checkpoint in {ckpt_dir}')
  mngr = manager(workdir)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {ckpt_dir}')
  return mngr, step


def read_run(workdir: str, step: int | None = None):
  """(config, facts) of the run or export in ``workdir``: the config as it was given and what training derived
  (``gid_jax.runs``; runs saved by older code migrated), both read-only."""
  _, step = latest(workdir, step)
  config = runs.read_item(workdir, step, 'config')
  if config is None:
    raise FileNotFoundError(f'checkpoint {step} in {workdir} has no readable config')
  config, facts = runs.migrate(config, runs.read_item(workdir, step, 'facts'))
  return ml_collections.FrozenConfigDict(config), ml_collections.FrozenConfigDict(facts)


def _exported(workdir: str, step: int) -> bool:
  """Whether checkpoint ``step`` of ``workdir`` is an export (``model`` item) rather than a run (``state``)."""
  return (fileio.path(workdir) / 'checkpoints' / str(step) / 'model').is_dir()


def _plain(config) -> dict:
  return config if isinstance(config, dict) else json.loads(config.to_json_best_effort())


def resolve(config, facts) -> ml_collections.FrozenConfigDict:
  """What a model is built and sampled from: ``config`` with its run's derived ``facts`` laid over it
  (read-only; neither input is changed)."""
  return ml_collections.FrozenConfigDict(runs.resolve(_plain(config), _plain(facts)))


def read_config(workdir: str, step: int | None = None) -> ml_collections.FrozenConfigDict:
  """The resolved config (:func:`resolve`) of the run or export in ``workdir``."""
  return resolve(*read_run(workdir, step))


def load(workdir: str, ema: bool = True, step: int | None = None, config=None):
  """(config, model) of the run or export in ``workdir`` (the latest checkpoint, EMA params by default);
  ``config``: the config to rebuild the model from instead of the stored one (it must fit the checkpoint)."""
  mngr, step = latest(workdir, step)
  config = read_config(workdir, step) if config is None else config
  graphdef, rest, state, _ = run_state(config, build(config, abstract=True), abstract=True)
  exported = _exported(workdir, step)
  name = config.get('trainer')
  try:
    if exported:  # export's slim format: the (EMA) params and the frozen params only
      slim = {'params': state['params'], 'frozen': state['frozen']}
      st = mngr.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract(slim))))['model']
      return config, nnx.merge(graphdef, st['params'], st['frozen'], rest)
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract(state))))
  except (ValueError, KeyError) as e:
    raise ValueError(f'checkpoint in {workdir} does not fit the {name} config ({e})'.split('\n')[0]) from e
  st = restored['state']
  return config, nnx.merge(graphdef, st['ema' if ema else 'params'], st['frozen'], rest)


def flat(state) -> dict:
  """{path: variable} of an nnx.State."""
  return dict(nnx.to_flat_state(state))


def restore_params(workdir: str, target: nnx.State) -> nnx.State:
  """The model parameters of the run (EMA) or export in ``workdir`` at the paths of ``target`` (an nnx.State
  of ``jax.ShapeDtypeStruct`` with shardings, paths as in that run's model), read straight into those
  shardings: only these arrays are read (no optimiser state, no raw parameters), and each process reads only
  the shards its devices hold. A path the checkpoint lacks is a one-line ValueError."""
  config = read_config(workdir)
  _, params, frozen, _ = split(build(config, abstract=True), config)
  mngr, step = latest(workdir)
  item, names = ('model', ('params', 'frozen')) if _exported(workdir, step) else ('state', ('ema', 'frozen'))
  wanted = flat(target)
  partial = {}
  for name, source in zip(names, (params, frozen)):
    have = set(flat(source))
    sub = [(path, v) for path, v in wanted.items() if path in have]
    if sub:
      partial[name] = nnx.from_flat_state(sub)
  restored = mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.PyTreeRestore(
      item=partial, restore_args=ocp.checkpoint_utils.construct_restore_args(partial), partial_restore=True)}))
  got = [pv for part in restored[item].values() for pv in nnx.to_flat_state(part)]
  missing = sorted(set(wanted) - {path for path, _ in got})
  if missing:
    raise ValueError(f'{workdir} has no parameters at {"/".join(map(str, missing[0]))} '
                     f'(and {len(missing) - 1} more)')
  return nnx.from_flat_state(got)


def load_kind(workdir: str, trainer: str, ema: bool = True):
  """:func:`load`, refusing a run of another trainer in one line."""
  config = read_config(workdir)
  if config.get('trainer') != trainer:
    raise ValueError(f'{workdir} is not a {trainer} run (its trainer is {config.get("trainer")!r})')
  return load(workdir, ema, config=config)


def load_vae(workdir: str):
  """(config, VAE) of a VAE run, or the frozen VAE inside an LDM run or export (to reuse a trained VAE).

  The config returned has the VAE's ``model`` (and, for an LDM run, its normalisation choice).
  """
  config = read_config(workdir)
  if config.get('trainer') == 'ldm':
    ldm_cfg, ldm = load(workdir, config=config)
    vae_cfg = ml_collections.ConfigDict({'trainer': 'vae', 'model': ldm_cfg.vae.model.to_dict(),
                                         'normalize': ldm_cfg.normalize})
    return vae_cfg, ldm.vae
  return load(workdir, config=config)


def export(workdir: str, out_dir: str, ema: bool = True, sampling: dict | None = None) -> str:
  """Write the trained model of ``workdir`` (EMA params + frozen params + config and facts, no optimiser
  state) to ``out_dir`` in the form :func:`load` and :func:`read_run` read: what gets shipped (the bundled
  model). ``sampling``: default sampling settings to store with it instead of the run's (e.g.
  {'guidance': 4.0})."""
  config, facts = read_run(workdir)
  config = _plain(config)
  for key, value in (sampling or {}).items():
    old = config['sampling'].get(key)  # a run from before the setting existed has none
    config['sampling'][key] = value if old is None else type(old)(value)
  resolved = resolve(config, facts)
  _, model = load(workdir, ema, config=resolved)
  _, params, frozen, _ = split(model, resolved)
  step = latest(workdir)[1]
  mngr = manager(out_dir, keep=1)
  mngr.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave({'params': params, 'frozen': frozen}),
      config=ocp.args.JsonSave(config), facts=ocp.args.JsonSave(_plain(facts))), force=True)
  mngr.wait_until_finished()
  return out_dir
