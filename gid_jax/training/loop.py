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
* on SIGTERM (a preemption notice; every process agrees on the step in multi-process runs) saves a
  checkpoint and raises ``Preempted``: the same command resumes it exactly;
* stops on a non-finite loss without saving it (the last good checkpoint stays the latest) and raises
  ``TrainingDiverged``; losses are fetched at log and checkpoint steps only (no host sync per step);
* computes in ``config.compute_dtype`` (parameters and optimiser state float32), rematerialises blocks under
  ``config.remat`` and accumulates ``config.grad_accum`` micro-batches per update (``make_train_step``);
* evaluates every ``config.eval_every`` steps (and at the last step) on a fixed held-out batch when the task
  has an evaluation (``Task.make_eval``): the EMA model, on process 0 (the parameters gathered to it in a
  multi-process run), scalars logged under ``eval/`` with the seconds it took (``eval/seconds``);
* writes metrics (logging, ``workdir/metrics.jsonl`` and TensorBoard event files) and shows a progress bar
  with ETA.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from gid_jax import fileio
from gid_jax import sharding as sharding_lib
from gid_jax.models import layers
from gid_jax.progress import Progress
from gid_jax.runs import checkpoints
from gid_jax.training.metrics import PROFILE_DIR, make_writer


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


class Preempted(Exception):
  """SIGTERM (a preemption notice) arrived: a checkpoint of ``step`` was saved; the same command resumes."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f'preempted: saved a checkpoint at step {step} in {workdir}; run the same command to resume')
    self.step = step


class _Preemption:
  """When to stop for a preemption notice (SIGTERM): in a multi-process run JAX's preemption sync service
  catches it on any process and names the next step every process reaches (all save that step); in one
  process our own handler marks it and the run stops after the step in flight."""

  def __init__(self):
    self.flag = False
    self.multi = jax.process_count() > 1
    self.previous = None
    if not self.multi and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._notice)

  def _notice(self, signum, frame):
    del signum, frame
    self.flag = True

  def reached(self, step: int) -> bool:
    return multihost_utils.reached_preemption_sync_point(step) if self.multi else self.flag

  def close(self) -> None:
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


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
  # Fresh runs only: (config, target) -> the pretrained parameters of the run's frozen part (``target``: an
  # nnx.State of its ShapeDtypeStructs with shardings; the arrays come back in them, read from a checkpoint).
  pretrained: Callable[[Any, nnx.State], nnx.State] | None = None
  shard_model: Callable[[nnx.Module, Any, Any], None] | None = None  # (model, mesh, config): constraints
  # Evaluation during training: (config) -> evaluate(model, rng) -> {name: float}, the model being the run's
  # EMA model; make_eval reads its fixed held-out batch once, at the start (a missing split fails early).
  make_eval: Callable[[Any], Callable[[nnx.Module, jax.Array], dict]] | None = None
  # What the trainer derived from the config's inputs (``gid_jax.runs``: the data's size and statistics, the
  # VAE, the latent scale, channel counts); stored beside the config, laid over it to build the model.
  facts: dict = dataclasses.field(default_factory=dict)


def run_config(config, task: Task):
  """The read-only config the run's model, data and callbacks see: ``config`` with ``task.facts`` over it."""
  return checkpoints.resolve(config, task.facts)


def init_state(config, task: Task, mesh=None, pretrained: bool = False, abstract: bool = False):
  """(graphdef, rest, state, tx) with state = {step, params, frozen, opt_state, ema} of a run of ``config``
  (:func:`run_config`: the task's facts laid over it), on one device.

  ``pretrained`` loads the frozen parameters from their checkpoints (``task.pretrained``); a resumed or
  restored run skips it because the checkpoint holds them too. ``abstract``: shapes only. Training on a mesh
  creates its state sharded instead (:func:`sharded_state`).
  """
  config = run_config(config, task)
  model = checkpoints.build(config, abstract)
  prepare(model, config)
  if mesh is not None and task.shard_model is not None:
    task.shard_model(model, mesh, config)
  graphdef, rest, state, tx = checkpoints.run_state(config, model, abstract)
  if pretrained and not abstract:
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state = _with_pretrained(state, task, config, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), state['frozen']))
  return graphdef, rest, state, tx


def _with_pretrained(state: dict, task: Task, config, target) -> dict:
  """``state`` with its frozen parameters replaced by ``task.pretrained``'s (restored into ``target``)."""
  if task.pretrained is None:
    return state
  frozen = checkpoints.flat(state['frozen'])
  frozen.update(checkpoints.flat(task.pretrained(config, target)))
  return dict(state, frozen=nnx.from_flat_state(list(frozen.items())))


def sharded_state(config, task: Task, mesh):
  """(graphdef, rest, state, tx, shardings) of a fresh run on ``mesh``: every array created directly in its
  sharding (one compiled initialiser with ``out_shardings``) and the pretrained parameters read straight into
  theirs, so no device or process ever holds a full replica it does not need."""
  graphdef, rest, abstract, tx = init_state(config, task, mesh, abstract=True)
  shardings = state_shardings(abstract, mesh, config)
  if jax.tree.leaves(rest):  # non-parameter state (e.g. RNG streams): concrete, built once on one device
    _, _, state, _ = init_state(config, task, mesh)
    return graphdef, rest, _place(state, shardings), tx, shardings
  config = run_config(config, task)

  def create():
    model = checkpoints.kind(config).build(config, layers.init_rngs(config.seed))
    _, params, frozen, _ = checkpoints.split(model, config)
    return checkpoints.full_state(tx, params, frozen)

  state = jax.jit(create, out_shardings=shardings)()
  target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract['frozen'],
                        shardings['frozen'])
  return graphdef, rest, _with_pretrained(state, task, config, target), tx, shardings


def compute_dtype(config) -> str:
  """``config.compute_dtype``, 'auto' resolved: bfloat16 on accelerators, float32 on CPU."""
  if config.compute_dtype == 'auto':
    return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
  return config.compute_dtype


def prepare(model: nnx.Module, config) -> None:
  """How the run computes (static attributes of the model, not parameters): ``compute_dtype`` for every
  layer (parameters and optimiser state stay float32) and the ``remat`` policy of every block."""
  layers.set_compute_dtype(model, compute_dtype(config))
  for _, m in nnx.iter_graph(model):  # (Module.iter_modules is deprecated; nnx.iter_modules is flax >= 0.12)
    if isinstance(m, nnx.Module) and hasattr(m, 'remat'):
      m.remat = config.remat


def state_shardings(state, mesh, config):
  return sharding_lib.tree_shardings(state, mesh, config)


def make_train_step(graphdef, rest, tx, task: Task, ema_decay: float, state_sh=None, batch_sh=None,
                    grad_accum: int = 1):
  """The jitted ``train_step(state, batch, rng) -> (state, metrics)``. ``grad_accum`` > 1 splits the batch
  into that many micro-batches (example i in micro-batch i % grad_accum, so each stays spread over the
  batch's shards), averages their gradients and metrics, and applies one update: the same update as the
  whole batch at once for a loss that is a mean over examples (micro-batch j draws its randomness from
  fold_in(rng, j)), with a micro-batch's activations in memory instead of the batch's."""

  def loss_of(params, frozen, batch, rng):
    model = nnx.merge(graphdef, params, frozen, rest)
    return task.loss_fn(model, batch, rng)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)

  def gradients(state, batch, rng):
    if grad_accum == 1:
      (loss, metrics), grads = grad_fn(state['params'], state['frozen'], batch, rng)
      return dict(metrics, loss=loss), grads

    def micro(x):
      if x.shape[0] % grad_accum:
        raise ValueError(f'a batch of {x.shape[0]} cannot be split into grad_accum={grad_accum} micro-batches')
      return jnp.moveaxis(x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]), 1, 0)

    def body(carry, xs):
      j, mb = xs
      (loss, metrics), grads = grad_fn(state['params'], state['frozen'], mb, jax.random.fold_in(rng, j))
      add = lambda a, b: jax.tree.map(jnp.add, a, b)
      return (add(carry[0], dict(metrics, loss=loss)), add(carry[1], grads)), None

    shapes = jax.eval_shape(grad_fn, state['params'], state['frozen'], jax.tree.map(lambda x: micro(x)[0], batch),
                            rng)
    (loss, metrics), grads = shapes
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    (metrics, grads), _ = jax.lax.scan(body, (zeros(dict(metrics, loss=loss)), zeros(grads)),
                                       (jnp.arange(grad_accum), jax.tree.map(micro, batch)))
    scale = lambda tree: jax.tree.map(lambda x: x / grad_accum, tree)
    return scale(metrics), scale(grads)

  def train_step(state, batch, rng):
    metrics, grads = gradients(state, batch, rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state['ema'], params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
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
  return (fileio.path(os.fspath(mngr.directory)) / str(step) / 'data' / name).exists()


def train(config, workdir: str, task: Task, progress: bool = True) -> dict:
  """Train (or resume) until ``config.num_steps``; returns the last logged metrics. ``config`` is the config as
  given (stored as is); the model, data and callbacks see it with ``task.facts`` laid over it."""

  given, facts = json.loads(config.to_json_best_effort()), dict(task.facts)
  config = run_config(config, task)
  fileio.path(workdir).mkdir(parents=True, exist_ok=True)
  writer = make_writer(workdir, enabled=jax.process_index() == 0)
  mesh = sharding_lib.make_mesh(config)
  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  start = mngr.latest_step()
  if start is None:
    graphdef, rest, state, tx, state_sh = sharded_state(config, task, mesh)
  else:
    graphdef, rest, state, tx = init_state(config, task, mesh, abstract=True)
    state_sh = state_shardings(state, mesh, config)
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
  evaluate = task.make_eval(config) if config.eval_every and task.make_eval is not None else None
  step_fn = None  # compiled for the first batch's entries (their shardings: sharding.batch_shardings)
  key = jax.random.PRNGKey(config.seed)

  def save(step):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data),
        config=ocp.args.JsonSave(given), facts=ocp.args.JsonSave(facts)), force=True)

  def run_eval(done):
    """The task's evaluation of the EMA model at step ``done``, logged under ``eval/`` (process 0)."""
    t = time.perf_counter()
    params, frozen = state['ema'], state['frozen']
    if jax.process_count() > 1:  # the whole model on process 0 (a collective: every process takes part)
      params, frozen = multihost_utils.process_allgather((params, frozen), tiled=True)
    if jax.process_index() != 0:
      return {}
    # One key for every evaluation, never a step's.
    scores = evaluate(nnx.merge(graphdef, params, frozen, rest), jax.random.fold_in(key, 2 ** 31 - 1))
    scores = {f'eval/{k}': float(v) for k, v in scores.items()}
    scores['eval/seconds'] = time.perf_counter() - t
    writer.write_scalars(done, scores)
    return scores

  def check(pending):
    """Fetch the losses of the steps since the last check (one transfer) and stop at the first non-finite
    one, before anything of it is saved: the last good checkpoint stays the latest."""
    for done, loss in zip([d for d, _ in pending], jax.device_get([l for _, l in pending])):
      if not np.isfinite(loss):
        mngr.wait_until_finished()
        good = mngr.latest_step()
        bar.close()
        raise TrainingDiverged(f'non-finite loss ({float(loss)}) at step {done}; training stopped, the last good '
                               f'checkpoint is step {good} in {workdir}')

  last = {}
  # The bar opens after the first step (XLA compiles it): its rate and ETA count compiled steps only.
  bar = Progress(progress and jax.process_index() == 0).bar(f'train {task.name}', config.num_steps).start()
  t0 = time.perf_counter()
  # No host sync per step: losses are fetched at log and checkpoint steps only, so the next batch is read and
  # dispatched while the device computes (JAX dispatches asynchronously; at most log_every steps queue).
  pending = []
  preemption = _Preemption()
  # The profiler trace: profile_steps steps after warm-up (the first steps compile), on process 0.
  trace_from = min(start + 5, config.num_steps - config.profile_steps)
  if not config.profile_steps or jax.process_index() != 0 or trace_from < start:
    trace_from = None
  try:
    window = {'t': time.perf_counter(), 'steps': 0, 'wait': 0.0}  # throughput since the last log step
    for step in range(start, config.num_steps):
      if step == trace_from:
        # The trace goes to a local folder and, for a workdir in object storage, is uploaded after.
        trace_dir = (tempfile.mkdtemp(prefix='gid_jax-profile-') if fileio.is_remote(workdir)
                     else os.path.join(workdir, PROFILE_DIR))
        jax.profiler.start_trace(trace_dir)
      t_wait = time.perf_counter()
      local = next(data)
      window['wait'] += time.perf_counter() - t_wait
      window['steps'] += 1
      if step_fn is None:
        batch_sh = sharding_lib.batch_shardings(mesh, config, local.keys())
        step_fn = make_train_step(graphdef, rest, tx, task, config.ema_decay, state_sh, batch_sh, config.grad_accum)
      batch = sharding_lib.global_batch(local, batch_sh)
      state, metrics = step_fn(state, batch, jax.random.fold_in(key, step))
      done = step + 1
      if trace_from is not None and done == trace_from + config.profile_steps:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        if fileio.is_remote(workdir):
          fileio.upload(trace_dir, str(fileio.path(workdir) / PROFILE_DIR))
          shutil.rmtree(trace_dir, ignore_errors=True)
      pending.append((done, metrics['loss']))
      bar(done)
      log_now = done % config.log_every == 0 or done == config.num_steps
      save_now = done % config.checkpoint_every == 0 or done == config.num_steps
      if log_now or save_now:
        check(pending)
        pending = []
      if log_now:
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        # Over the steps since the last log (compile and checkpoint pauses of earlier windows excluded):
        # steps and examples per second, and the seconds per step spent waiting for the input pipeline.
        rate = window['steps'] / max(now - window['t'], 1e-9)
        last.update(steps_per_sec=rate, examples_per_sec=rate * config.batch_size,
                    data_wait_sec=window['wait'] / window['steps'],
                    steps_per_sec_cumulative=(done - start) / (now - t0))
        memory = jax.local_devices()[0].memory_stats() or {}
        if 'bytes_in_use' in memory:  # backends that report it (GPU, TPU)
          last['device_memory_gib'] = memory['bytes_in_use'] / 2 ** 30
        window = {'t': now, 'steps': 0, 'wait': 0.0}
        writer.write_scalars(done, last)
        bar.set_postfix(loss=f"{last['loss']:.4f}")
      if evaluate is not None and (done % config.eval_every == 0 or done == config.num_steps):
        t_eval = time.perf_counter()
        last.update(run_eval(done))
        window['t'] += time.perf_counter() - t_eval  # the next window's throughput counts training only
      if save_now:
        save(done)
      if preemption.reached(done):  # SIGTERM: save this step, stop; the same command resumes from it
        if not save_now:
          check(pending)
          save(done)
        mngr.wait_until_finished()
        bar.close()
        raise Preempted(done, workdir)
  finally:
    preemption.close()
    writer.flush()
  bar.close()
  mngr.wait_until_finished()
  writer.close()
  return last
