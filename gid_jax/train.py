"""Train a model: ``gid-train --config=configs/<x>.py[:size=...] --workdir DIR`` (or python -m gid_jax.train).

The config file names its trainer (``config.trainer``: vae, ldm or renderer); packaged configs resolve from
any directory (``configs/ldm.py``, ``ldm``); override any value with ``--config.KEY=VALUE``. Every value, the
dataset folder, the runs it builds on and ``--workdir`` are checked before JAX starts: bad input is one line
on stderr and exit code 2, and nothing is written. Resumes from the latest checkpoint in ``--workdir`` (which
every process must see: a shared file system); a workdir that holds another run (another trainer or model)
or files that are not a run is refused unless ``--overwrite``, which replaces only the run's own checkpoints
and metrics. SIGTERM (a cluster's preemption notice) saves a checkpoint at the next step and exits 0; the
same command resumes it. Starts jax.distributed when the run is one of several processes (the flags below, or the SLURM
/ Open MPI / TPU environment). Exit code 3 when training diverged. Launch scripts: ``launch/``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import ml_collections

from gid_jax import cli
from gid_jax import data
from gid_jax import fileio
from gid_jax import runs
from gid_jax.errors import InputError

PROG = 'gid-train'
TRAINERS = ('renderer', 'vae', 'ldm')
OUR_FILES = ('checkpoints', 'metrics.jsonl', 'tensorboard', 'profile')  # what a run writes in its workdir


def build_parser() -> cli.Parser:
  p = cli.Parser(PROG, __doc__, config_required=True)
  p.add_argument('--workdir', required=True, help='where checkpoints and metrics go (shared by all processes)')
  p.add_argument('--overwrite', action='store_true',
                 help='start afresh in a --workdir that holds another run (its checkpoints and metrics are '
                      'replaced; other files are kept)')
  p.add_argument('--distributed', default='auto', choices=['auto', 'on', 'off'],
                 help='start jax.distributed: auto = when the flags below or the cluster environment (SLURM, '
                      'Open MPI, JAX_COORDINATOR_ADDRESS) name several processes; on = always, JAX detects the '
                      'rest (TPU pods); off = never')
  p.add_argument('--coordinator-address', default=None, help='host:port of process 0 (multi-process runs)')
  p.add_argument('--num-processes', type=int, default=None, help='number of processes (multi-process runs)')
  p.add_argument('--process-id', type=int, default=None, help='index of this process in [0, num_processes)')
  p.add_argument('--local-device-ids', default=None,
                 help='local accelerator ids this process uses, e.g. 0,1 (default: all)')
  return p


def check_workdir(workdir: str, config, overwrite: bool) -> bool:
  """Refuse a workdir that holds another run or a user's files; True if it holds this run (a resume)."""
  if not workdir:
    raise InputError('--workdir must not be empty')
  where = fileio.path(workdir)  # a local folder or an object-storage URL (gs://bucket/run)
  if where.exists() and not where.is_dir():
    raise InputError(f'--workdir {workdir} is a file, not a folder')
  if not where.is_dir():
    return False
  entries = {p.name for p in where.iterdir()}
  stored = runs.stored_config(workdir)
  if stored is not None:
    diff = runs.config_differences(stored, config.to_dict())
    if not diff:
      return True
    if not overwrite:
      raise InputError(f'--workdir {workdir} holds another run (its config differs in {", ".join(diff[:4])}); '
                       'resume it with its own config, use a new --workdir, or pass --overwrite to start afresh')
    return False
  if entries - set(OUR_FILES) and not overwrite:
    raise InputError(f'--workdir {workdir} holds files that are not a gid_jax run; use a new or empty folder '
                     '(or pass --overwrite to train there, keeping those files)')
  return False


def precheck(args) -> bool:
  """Everything that can be checked without JAX: config values, data, the runs it builds on, the workdir."""
  config = args.config
  trainer = config.get('trainer')
  if trainer not in TRAINERS:
    raise InputError(f'config.trainer={trainer!r} is not one of {TRAINERS}')
  resume = check_workdir(args.workdir, config, args.overwrite)
  data.check_built(config.data_dir, data.FRAMES_DATASET_NAME if trainer == 'renderer' else data.DATASET_NAME)
  if trainer == 'ldm' and not resume:
    if config.trainable == 'freq_attn':
      if not config.stage1_workdir:
        raise InputError('--config.stage1_workdir is empty: stage 2 needs a trained configs/ldm.py run')
      runs.check_run(config.stage1_workdir, ('ldm',), '--config.stage1_workdir')
    else:
      if not config.vae_workdir:
        raise InputError('--config.vae_workdir is empty: pass a trained configs/vae.py run')
      runs.check_run(config.vae_workdir, ('vae',), '--config.vae_workdir')
  if args.num_processes is not None and args.num_processes < 1:
    raise InputError(f'--num-processes must be >= 1, got {args.num_processes}')
  return resume


def run(args) -> int:
  resume = precheck(args)
  workdir = args.workdir
  where = fileio.path(workdir)
  if args.overwrite and not resume and where.is_dir():
    for name in OUR_FILES:  # only what a run writes; the user's other files stay
      path = where / name
      if path.is_dir():
        path.rmtree()
      elif path.exists():
        path.unlink()
  created = not where.exists()
  try:
    return _train(args, resume)
  except (InputError, ValueError, FileNotFoundError):
    if created and where.is_dir() and not any(where.iterdir()):
      where.rmdir()  # nothing of this run to keep
    raise


def _train(args, resume: bool) -> int:
  # The JAX stack (about 1-3 s to import) only now: --help and every check above answered without it.
  from gid_jax.training import distributed  # pylint: disable=g-import-not-at-top
  config = ml_collections.FrozenConfigDict(args.config)  # read-only from here on
  # Before anything touches a JAX device: the backend sees the devices jax.distributed assigns it.
  try:
    info = distributed.maybe_initialize(args.coordinator_address, args.num_processes, args.process_id,
                                        args.local_device_ids, mode=args.distributed)
  except ValueError as e:
    raise InputError(str(e).splitlines()[0]) from None
  # One process speaks for the run: the others only warn (their metrics and progress are process 0's).
  main_process = info.process_index == 0
  if main_process and not args.verbose:
    logging.getLogger('gid_jax.train').setLevel(logging.WARNING)
  elif not main_process:
    logging.getLogger('gid_jax').setLevel(logging.WARNING)
  progress = cli.Progress(args.progress and main_process)
  with progress.phase(f'loading data and building the {config.trainer} model'):
    from gid_jax.training import loop  # pylint: disable=g-import-not-at-top
    module = importlib.import_module(f'gid_jax.training.{config.trainer}')
    # A resumed run keeps the facts it derived when it started (gid_jax.runs); a fresh one derives them.
    task = module.make_task(config, runs.stored_run(args.workdir)[1] if resume else None)
  try:
    metrics = loop.train(config, args.workdir, task, progress=progress.enabled)
  except loop.TrainingDiverged as e:
    print(f'error: {e}', file=sys.stderr)
    return cli.EXIT_DIVERGED
  except loop.Preempted as e:
    if main_process:
      print(str(e), file=sys.stderr)
    return 0
  if main_process:
    print('final metrics: ' + ', '.join(f'{k}={v:.5g}' for k, v in metrics.items()))
  return 0


def main(argv=None) -> int:
  # ValueError / FileNotFoundError: the trainers' own checks of data and runs (after JAX starts).
  return cli.main(run, build_parser(), argv, expected=(ValueError, FileNotFoundError))


if __name__ == '__main__':
  sys.exit(main())
