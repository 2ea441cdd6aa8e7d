"""The shared training loop: pure jitted steps on pytrees, orbax checkpoints with the data iterator, resume.

A ``Task`` says what is trained: which kind of model (``gid_jax.runs.checkpoints.KINDS``: its builder and
which parameters are trained), its loss on a batch, and its input pipeline.
``train(config, workdir, task)`` then

* splits the model into (graphdef, params, frozen, rest) so that the step is a pure function of pytrees:
  ``params`` are the parameters the task trains (its kind's ``trainable`` filter), ``frozen`` the other parameters
  (a pretrained VAE, a stage-1 U-Net), kept in the checkpoint so one checkpoint is the whole model;
* runs on a device mesh from ``config.mesh`` (gid_jax.sharding): batches split over the data
  axes, parameters and optimiser state FSDP-split, global batches assembled from per-process data;
* optimises with AdamW (linear warm-up, cosine decay, global-norm clipping) and keeps an EMA of the params;
* jits ``train_step(state, batch, rng)`` with ``donate_argnames='state'``; the step's randomness is
  ``fold_in(PRNGKey(seed), step)``, so a resumed run draws exactly what an uninterrupted one would;
* saves orbax checkpoints (state, grain iterator state, config) every ``checkpoint_every`` steps and at
  the end, and resumes from the latest one in ``workdir`` (same next batch, same next loss);
* stops on a non-finite loss without saving it (the last good checkpoint stays the latest) and raises
  ``TrainingDiverged``;
* writes metrics through clu metric writers (logging + ``workdir/metrics.jsonl``) and shows a progress bar
  with ETA.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from gid_jax import sharding as sharding_lib
from gid_jax.progress import Progress
from gid_jax.runs import checkpoints
from gid_jax.training.metrics import make_writer


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class Task:
  """What is trained: ``name`` is the trainer kind (``runs.checkpoints.KINDS``: the model and which of its
  parameters are trained), ``loss_fn`` its loss on a batch, ``make_dataset`` its input pipeline."""
  name: str
  loss_fn: Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]]  # -> (loss, metrics)
  make_dataset: Callable[..., Any]  # config -> grain IterDataset of batches (numpy dicts)
  # make_dataset(config, model) instead: the run's own model (fresh or restored), e.g. to cache its frozen
  # VAE's latents (training.ldm)
  dataset_uses_model: bool = False
  init_model: Callable[[nnx.Module, Any], None] | None = None  # fresh runs only: load pretrained parts
  shard_model: Callable[[nnx.Module, Any, Any], None] | None = None  # (model, mesh, config): constraints
  # What the trainer derived from the config's inputs (``gid_jax.runs``: the data's size and statistics, the
  # VAE, the latent scale, channel counts); stored beside the config, laid over it to build the model.
  facts: dict = dataclasses.field(default_factory=dict)


def run_config(config, task: Task):
  """The read-only config the run's model, data and callbacks see: ``config`` with ``task.facts`` over it."""
  return checkpoints.resolve(config, task.facts)


def init_state(config, task: Task, mesh=None, pretrained: bool = False, abstract: bool = False):
  """(graphdef, rest, state, tx) with state = {step, params, frozen, opt_state, ema} of a run of ``config``
  (:func:`run_config`: the task's facts laid over it).

  ``pretrained`` runs ``task.init_model`` (loading e.g. a stage-1 checkpoint); a resumed or restored run
  skips it because the checkpoint holds the frozen parameters too. ``abstract``: shapes only.
  """
  config = run_config(config, task)
  model = checkpoints.build(config, abstract)
  if pretrained and task.init_model is not None:
    task.init_model(model, config)
  if mesh is not None and task.shard_model is not None:
    task.shard_model(model, mesh, config)
  return checkpoints.run_state(config, model, abstract)


def state_shardings(state, mesh, config):
  return sharding_lib.tree_shardings(state, mesh, config)


def make_train_step(graphdef, rest, tx, task: Task, ema_decay: float, state_sh=None, batch_sh=None):
  def train_step(state, batch, rng):
    def loss_of(params):
      model = nnx.merge(graphdef, params, state['frozen'], rest)
      return task.loss_fn(model, batch, rng)

    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state['ema'], params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    new = {'step': state['step'] + 1, 'params': params, 'frozen': state['frozen'], 'opt_state': opt_state,
           'ema': ema}
    return new, metrics

  if state_sh is None:
    return jax.jit(train_step, donate_argnames='state')
  return jax.jit(train_step, donate_argnames='state', in_shardings=(state_sh, batch_sh, None),
                 out_shardings=(state_sh, None))


def _place(tree, shardings):
  """Full values held alike by every process (same seed, same pretrained checkpoint) -> global arrays.

  jax.device_put cannot send a committed array to other processes' devices, so in a multi-process run each
  process cuts the shards of its own devices out of its copy.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  return jax.tree.map(lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx]), tree, shardings)


def _has_data_state(mngr, step: int) -> bool:
  """Whether grain saved an iterator state for this process layout: it writes one file per process, named
  for the process count, so a run resumed on a different number of processes finds none for itself."""
  name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  return os.path.exists(os.path.join(os.fspath(mngr.directory), str(step), 'data', name))


def train(config, workdir: str, task: Task, progress: bool = True) -> dict:
  """Train (or resume) until ``config.num_steps``; returns the last logged metrics. ``config`` is the config as
  given (stored as is); the model, data and callbacks see it with ``task.facts`` laid over it."""

  given, facts = json.loads(config.to_json_best_effort()), dict(task.facts)
  config = run_config(config, task)
  os.makedirs(workdir, exist_ok=True)
  writer = make_writer(workdir, enabled=jax.process_index() == 0)
  mesh = sharding_lib.make_mesh(config)
  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  start = mngr.latest_step()
  graphdef, rest, state, tx = init_state(config, task, mesh, pretrained=start is None, abstract=start is not None)
  state_sh = state_shardings(state, mesh, config)
  batch_sh = sharding_lib.batch_sharding(mesh, config)
  if start is None:
    state = _place(state, state_sh)
  else:
    try:
      state = mngr.restore(start, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(checkpoints.abstract(state, state_sh))))['state']
    except (ValueError, KeyError) as e:
      raise ValueError(f'checkpoint in {workdir} does not fit the {task.name} config ({e})'.split('\n')[0]) from e
  if task.dataset_uses_model:
    data = iter(task.make_dataset(config, nnx.merge(graphdef, state['params'], state['frozen'], rest)))
  else:
    data = iter(task.make_dataset(config))
  if start is not None:
    if _has_data_state(mngr, start):
      mngr.restore(start, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data)))
    else:
      logging.getLogger('gid_jax.train').warning(
          'checkpoint %d in %s has no data iterator state for process %d of %d (saved with another number of '
          'processes): the model state is restored, the data order starts afresh', start, workdir,
          jax.process_index(), jax.process_count())
  start = int(state['step'])
  step_fn = make_train_step(graphdef, rest, tx, task, config.ema_decay, state_sh, batch_sh)
  key = jax.random.PRNGKey(config.seed)

  def save(step):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data),
        config=ocp.args.JsonSave(given), facts=ocp.args.JsonSave(facts)), force=True)

  last = {}
  # The bar opens after the first step (XLA compiles it): its rate and ETA count compiled steps only.
  bar = Progress(progress and jax.process_index() == 0).bar(f'train {task.name}', config.num_steps).start()
  t0 = time.perf_counter()
  for step in range(start, config.num_steps):
    batch = sharding_lib.global_batch(next(data), batch_sh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(key, step))
    loss = float(metrics['loss'])
    if not np.isfinite(loss):
      mngr.wait_until_finished()
      good = mngr.latest_step()
      bar.close()
      raise TrainingDiverged(f'non-finite loss ({loss}) at step {step + 1}; training stopped, the last good '
                             f'checkpoint is step {good} in {workdir}')
    done = step + 1
    bar(done)
    if done % config.log_every == 0 or done == config.num_steps:
      last = {k: float(v) for k, v in jax.device_get(metrics).items()}
      last['steps_per_sec'] = (done - start) / (time.perf_counter() - t0)
      writer.write_scalars(done, last)
      bar.set_postfix(loss=f'{loss:.4f}')
    if done % config.checkpoint_every == 0 or done == config.num_steps:
      save(done)
  bar.close()
  mngr.wait_until_finished()
  writer.flush()
  return last
