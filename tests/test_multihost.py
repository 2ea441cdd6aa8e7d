"""Multi-process training on localhost: 2 JAX processes x 4 fake CPU devices through ``python -m gid_jax.train``.

What multi-host adds over one process with 8 devices, and what is checked here:

* jax.distributed starts from the ``--coordinator-address/--num-processes/--process-id`` flags;
* each process reads its own half of the examples (pipeline.make_dataset shards by process index: a
  contiguous half each, shuffled on its own) and hands its half of every global batch to
  ``jax.make_array_from_process_local_data``. The global batch is therefore [process 0's 2 examples;
  process 1's 2 examples], not what one process reading the whole split would draw, so the reference run is
  one process on one device that reads the two halves the same way and concatenates them (``emulate`` below):
  same examples, same order, so the same losses up to reduction order;
* only process 0 writes metrics and prints; every process writes its own data-iterator state;
* a checkpoint written by 2 processes restores in 1 process on another mesh and training goes on;
* SIGTERM to one process (a preemption notice; JAX's preemption sync service tells the other) makes both save
  the same step and exit 0; the same command resumes, and the run matches the uninterrupted reference step
  for step;
* evaluation during training gathers the model to process 0 and logs there (eval/ scalars).

The same one-device reference is the check of sharding itself: the 2 x 4 fake devices train on a 2 x 2 x 2
mesh (batch over data x fsdp, parameters split over fsdp, K over freq, so frequency attention attends across
a sharded axis), and a DDIM sample of the reference's weights on that mesh in one process of 8 fake devices
is the sample of one device.

Run as a script, ``python tests/test_multihost.py DATA STAGE1_RUN WORKDIR`` is the reference run (1 device)
and ``python tests/test_multihost.py sample WORKDIR DATA,FSDP,FREQ`` its sample on that mesh.
"""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per launch. Compiling the tiny model takes 1-2 minutes of CPU per process, several times that on a busy
# 2-core machine; a hung coordinator or collective still fails here instead of hanging the session.
TIMEOUT_S = 480

# Stage 2 (frequency attention, K split over the freq axis) on tests/ldm_runs.py's tiny sizes, with the
# global batch of 4 split over data x fsdp = 2 x 2: each process holds one data row of the 2 x 2 x 2 mesh.
CONFIG = 'configs/ldm_freq.py:size=tiny'
OVERRIDES = {
    'model.widths': (8, 16), 'model.heads': 2, 'batch_size': 4, 'num_steps': 4, 'log_every': 1,
    'checkpoint_every': 2, 'optimizer.warmup_steps': 1, 'diffusion.num_timesteps': 100,
    'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.freq': 2,
}


def _free_port() -> int:
  # The port is released before the coordinator binds it: a small race, fine on a test machine.
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _xla_flags(devices: int) -> str:
  # Keeps the suite's own flags (conftest.py) and adds the fake device count.
  return f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'.strip()


def _train_args(data: str, stage1: str, workdir: str, **extra) -> list[str]:
  values = dict(OVERRIDES, data_dir=data, stage1_workdir=stage1, **extra)
  return ([sys.executable, '-m', 'gid_jax.train', f'--config={CONFIG}', f'--workdir={workdir}', '--no-progress']
          + [f'--config.{k}={v}' for k, v in values.items()])


def _launch(runs: list[tuple[list[str], int]], logs: str, what: str, watch=None) -> list[tuple[str, str]]:
  """Start every (argv, fake CPU devices) process at once and wait; (stdout, stderr) of each.

  Kills the others as soon as one fails (its peers would wait for it in a collective until JAX's heartbeat
  gives up) or the time is up. ``watch(procs)`` is called while waiting (e.g. to send a signal).
  """
  os.makedirs(logs, exist_ok=True)
  procs, paths = [], []
  for i, (args, devices) in enumerate(runs):
    env = dict(os.environ, XLA_FLAGS=_xla_flags(devices), JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    out, err = os.path.join(logs, f'{i}.out'), os.path.join(logs, f'{i}.err')
    with open(out, 'w', encoding='utf-8') as fo, open(err, 'w', encoding='utf-8') as fe:
      procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=fo, stderr=fe))
    paths.append((out, err))
  deadline = time.monotonic() + TIMEOUT_S
  while time.monotonic() < deadline and not all(p.poll() == 0 for p in procs):
    if any(p.poll() for p in procs):  # one failed (a non-zero code)
      break
    if watch is not None:
      watch(procs)
    time.sleep(0.5)
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  texts = []
  for out, err in paths:
    with open(out, encoding='utf-8') as fo, open(err, encoding='utf-8') as fe:
      texts.append((fo.read(), fe.read()))
  for i, (p, (_, err)) in enumerate(zip(procs, texts)):
    assert p.returncode == 0, f'{what}: process {i} exited with {p.returncode} (-9: killed)\n{err[-3000:]}'
  return texts


def _losses(workdir: str) -> dict[int, float]:
  from gid_jax.training import metrics  # pylint: disable=g-import-not-at-top
  return {m['step']: m['loss'] for m in metrics.read_metrics(workdir) if 'loss' in m}


def _steps(workdir: str) -> list[int]:
  """The steps of the training log lines (evaluations log on lines of their own)."""
  from gid_jax.training import metrics  # pylint: disable=g-import-not-at-top
  return [m['step'] for m in metrics.read_metrics(workdir) if 'loss' in m]


@pytest.fixture(scope='module')
def runs(ldm_runs, tmp_path_factory):
  """Stage 2 trained by 2 processes x 4 fake devices (preempted by SIGTERM, then resumed) and, at the same
  time, the one-device reference; beside the resume, the reference's sample on 8 fake devices.

  Concurrent because each process spends most of its time compiling on one core.
  """
  root = tmp_path_factory.mktemp('multihost')
  two, one = str(root / 'two'), str(root / 'one')

  def pair(workdir, **extra):
    coordinator = f'127.0.0.1:{_free_port()}'
    return [(_train_args(ldm_runs['data'], ldm_runs['s1'], workdir, **extra) +
             [f'--coordinator-address={coordinator}', '--num-processes=2', f'--process-id={i}'], 4) for i in range(2)]

  evaluated = dict(eval_every=4, eval_examples=2, eval_ddim_steps=2)
  script = [sys.executable, os.path.abspath(__file__)]
  reference = [(script + [ldm_runs['data'], ldm_runs['s1'], one], 1)]
  sent = []

  def preempt(procs):  # SIGTERM to process 1 of the pair once its training has started (it compiles)
    if not sent and os.path.isdir(os.path.join(two, 'tensorboard')):
      procs[1].send_signal(signal.SIGTERM)
      sent.append(time.monotonic())

  # The 2-process run is preempted, then resumed by the same command: both halves are checked against the
  # uninterrupted 1-process reference reading the same global batches.
  outs = _launch(pair(two, **evaluated) + reference, str(root / 'logs'), '2 processes + reference + SIGTERM',
                 preempt)
  saved = _steps(two)
  resumed = _launch(pair(two, **evaluated) + [(script + ['sample', one, '2,2,2'], 8)], str(root / 'logs_resume'),
                    'resume after SIGTERM + the sample on 8 devices')
  return {'two': two, 'ref': one, 'sig_outs': outs[:2], 'sig_saved': saved, 'sent': bool(sent),
          'outs': resumed[:2], 'eight_result': json.loads(resumed[2][0].strip().splitlines()[-1]),
          'one_result': json.loads(outs[2][0].strip().splitlines()[-1])}


def test_sharded_training_and_sampling_match_one_device(runs):
  # 8 fake CPU devices: batch over data (2) x fsdp (2, parameters split too), K over freq (2). Training on that
  # mesh (by 2 processes) gives the one-device losses: the next test. Sampling the same weights on it:
  eight, one = runs['eight_result'], runs['one_result']
  assert (one['devices'], eight['devices']) == (1, 8)
  np.testing.assert_allclose(eight['sample'], one['sample'], rtol=1e-3, atol=1e-4)


def test_two_processes_match_one_device_reading_the_same_global_batches(runs):
  assert _steps(runs['two']) == [1, 2, 3, 4]  # one writer: each step logged once
  two, one = _losses(runs['two']), _losses(runs['ref'])
  assert sorted(one) == [1, 2, 3, 4]
  np.testing.assert_allclose([two[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=1e-4)
  (out0, _), (out1, _) = runs['outs']
  assert 'final metrics' in out0 and 'final metrics' not in out1
  # Each process saved its own data-iterator position beside the shared model state.
  data_dir = os.path.join(runs['two'], 'checkpoints', '4', 'data')
  assert sorted(f for f in os.listdir(data_dir) if f.startswith('process_')) == [
      'process_0-of-2.json', 'process_1-of-2.json']


def test_sigterm_to_one_process_saves_the_same_step_on_both_and_resumes_step_for_step(runs):
  assert runs['sent']
  (out0, err0), (out1, _) = runs['sig_outs']
  assert 'run the same command to resume' in err0 and 'final metrics' not in out0 + out1
  saved = runs['sig_saved']  # the steps logged before the preemption
  assert saved and saved[-1] < 4
  from gid_jax.runs import checkpoints  # pylint: disable=g-import-not-at-top
  steps = [int(s) for s in os.listdir(os.path.join(runs['two'], 'checkpoints')) if s.isdigit()]
  assert saved[-1] in steps
  data_dir = os.path.join(runs['two'], 'checkpoints', str(saved[-1]), 'data')
  assert sorted(f for f in os.listdir(data_dir) if f.startswith('process_')) == [
      'process_0-of-2.json', 'process_1-of-2.json']  # both processes saved that same step
  # Resumed by the same command to the end; step for step the uninterrupted reference's losses
  # (test_two_processes_match_one_process_reading_the_same_global_batches).
  assert 'final metrics' in runs['outs'][0][0] and checkpoints.manager(runs['two']).latest_step() == 4


def test_evaluation_gathers_the_model_to_process_0(runs):
  from gid_jax.training import metrics  # pylint: disable=g-import-not-at-top
  evals = [m for m in metrics.read_metrics(runs['two']) if 'eval/moving_auc' in m]
  assert [m['step'] for m in evals] == [4]  # logged once, by process 0
  assert 0 <= evals[0]['eval/moving_auc'] <= 1 and np.isfinite(evals[0]['eval/pixel_spectrum_fd'])


def test_two_process_checkpoint_resumes_in_one_process_on_another_mesh(ldm_runs, runs, tmp_path):
  w = str(tmp_path / 'resumed')
  shutil.copytree(runs['two'], w)
  # 1 process x 4 devices, mesh 1 x 2 x 2: the FSDP-split state is resharded on restore. The data iterator
  # was saved per process for 2 processes, so this run starts the data order afresh (the loop warns).
  args = _train_args(ldm_runs['data'], ldm_runs['s1'], w, num_steps=6, **{'mesh.data': 1})
  (out, err), = _launch([(args, 4)], str(tmp_path / 'logs'), 'resume in 1 process')
  assert 'final metrics' in out and 'no data iterator state' in err
  assert _steps(w) == [1, 2, 3, 4, 5, 6]  # steps 1-4 by the 2 processes, 5-6 after the restore
  assert all(np.isfinite(v) for v in _losses(w).values())
  from gid_jax.runs import checkpoints  # pylint: disable=g-import-not-at-top
  assert checkpoints.manager(w).latest_step() == 6


def test_initialize_decides_from_flags_and_environment():
  from gid_jax.training import distributed  # pylint: disable=g-import-not-at-top
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0'}
  assert distributed.cluster_env(dict(slurm, SLURM_NTASKS='16')) == 'slurm'
  assert distributed.cluster_env(dict(slurm, SLURM_NTASKS='1')) is None  # keep all GPUs of a 1-task job
  assert distributed.cluster_env({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}) is None  # the sbatch body
  assert distributed.cluster_env({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '2'}) == 'openmpi'
  assert distributed.cluster_env({'TPU_WORKER_HOSTNAMES': 'a,b'}) == 'tpu'
  assert distributed.cluster_env({'TPU_WORKER_HOSTNAMES': 'a'}) is None
  assert distributed.cluster_env({'JAX_COORDINATOR_ADDRESS': 'h:1'}) == 'jax'
  assert distributed.parse_device_ids(['0', '2']) == [0, 2] and distributed.parse_device_ids('') is None
  with pytest.raises(ValueError, match='contradicts'):
    distributed.maybe_initialize(process_id=0, mode='off')
  with pytest.raises(ValueError, match='integers'):
    distributed.maybe_initialize(local_device_ids='0,a')
  info = distributed.maybe_initialize(num_processes=1)  # a single process starts no coordinator
  assert (info.process_count, info.process_index) == (1, 0)


def emulate(data: str, stage1: str, workdir: str) -> None:
  """The reference: one process on one device, the global batch built as 2 processes build it.

  Prints one JSON line: device count, losses per step and a strided slice of a 5-step DDIM sample.
  """
  import grain  # pylint: disable=g-import-not-at-top
  from gid_jax.configs import ldm_freq, override  # pylint: disable=g-import-not-at-top
  from gid_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from gid_jax.training import ldm, loop  # pylint: disable=g-import-not-at-top

  values = dict(OVERRIDES, data_dir=data, stage1_workdir=stage1, **{'mesh.data': 1, 'mesh.fsdp': 1, 'mesh.freq': 1})
  c = override(ldm_freq.get_config(CONFIG.split(':')[1]), **values)
  processes = 2

  def make_dataset(cfg, model=None):  # the uncached pipeline, split over two 'processes'
    del model
    halves = [pipeline.make_dataset(cfg.data_dir, 'train', batch_size=cfg.batch_size // processes,
                                    seed=cfg.seed, shard_index=i, shard_count=processes)
              for i in range(processes)]
    # Process order = global batch order: process i's devices hold the i-th block of the batch axis.
    return grain.experimental.ZipIterDataset(halves).map(
        lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})

  task = dataclasses.replace(ldm.make_task(c), make_dataset=make_dataset)
  loop.train(c, workdir, task, progress=False)
  losses = _losses(workdir)
  print(json.dumps(dict(_sample(workdir, '1,1,1'), losses=[losses[s] for s in sorted(losses)])))


def _sample(workdir: str, mesh: str) -> dict:
  """Device count and a strided slice of a 5-step DDIM sample of the run in ``workdir`` on ``mesh``."""
  import jax  # pylint: disable=g-import-not-at-top
  from gid_jax.configs import override  # pylint: disable=g-import-not-at-top
  from gid_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from gid_jax.diffusion import motion_sampler  # pylint: disable=g-import-not-at-top
  from gid_jax import sharding  # pylint: disable=g-import-not-at-top
  from gid_jax.runs import checkpoints  # pylint: disable=g-import-not-at-top

  d, f, q = (int(v) for v in mesh.split(','))
  c = override(checkpoints.read_config(workdir).as_configdict(), **{'mesh.data': d, 'mesh.fsdp': f, 'mesh.freq': q})
  sampler = motion_sampler.MotionSampler(workdir, mesh=sharding.make_mesh(c))
  ds = pipeline.make_dataset(c.data_dir, 'train', batch_size=4, shuffle=False, shard_index=0, shard_count=1)
  nspec = np.asarray(sampler.sample_normalized(next(iter(ds))['image'], jax.random.PRNGKey(3), num_steps=5,
                                               guidance=1.0))
  return {'devices': jax.device_count(), 'sample': nspec.ravel()[::97].tolist()}


if __name__ == '__main__':
  if sys.argv[1] == 'sample':
    print(json.dumps(_sample(*sys.argv[2:4])))
  else:
    emulate(*sys.argv[1:4])
