"""Training entry point: ``python -m gid_jax.train --config=configs/<x>.py[:size=...] --workdir DIR``.

Parses flags, starts jax.distributed when the run is one of several processes (gid_jax.training.distributed:
the flags below, or the SLURM / Open MPI / TPU environment) and hands the config to the trainer it names
(``config.trainer``). Resumes from the latest checkpoint in ``--workdir``, which every process must see
(a shared file system). Exit code 2 for bad input (config, data, distributed flags), 3 when training
diverged. Launch scripts for TPU pods, SLURM and local multi-process runs are in ``launch/``.
"""

import importlib
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/renderer.py:size=tiny')
_WORKDIR = flags.DEFINE_string('workdir', None, 'where checkpoints and metrics go (shared by all processes)',
                               required=True)
_PROGRESS = flags.DEFINE_bool('progress', True, 'show a progress bar (process 0 only)')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'start jax.distributed: auto = when the flags below or the cluster environment (SLURM, Open MPI, '
    'JAX_COORDINATOR_ADDRESS) name several processes; on = always, JAX detects the rest (TPU pods); off = never')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs)')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes (multi-process runs)')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'index of this process in [0, num_processes)')
_LOCAL_DEVICE_IDS = flags.DEFINE_list('local_device_ids', None,
                                      'local accelerator ids this process uses, e.g. 0,1 (default: all)')

TRAINERS = ('renderer', 'vae', 'ldm')


def main(argv):
  del argv
  import logging  # pylint: disable=g-import-not-at-top
  from gid_jax.training import distributed  # pylint: disable=g-import-not-at-top
  logging.getLogger('gid_jax').setLevel(logging.INFO)
  config = _CONFIG.value
  if config is None:
    print('error: --config is required (e.g. --config=configs/renderer.py:size=tiny)', file=sys.stderr)
    sys.exit(2)
  trainer = config.get('trainer')
  if trainer not in TRAINERS:
    print(f'error: config.trainer={trainer!r} is not one of {TRAINERS}', file=sys.stderr)
    sys.exit(2)
  # Before anything touches a JAX device: the backend sees the devices jax.distributed assigns it.
  try:
    info = distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                        _LOCAL_DEVICE_IDS.value, mode=_DISTRIBUTED.value)
  except ValueError as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    sys.exit(2)
  # One process speaks for the run: the others only warn (their metrics and progress are process 0's).
  if info.process_index != 0:
    logging.getLogger('gid_jax').setLevel(logging.WARNING)
  from gid_jax.training import loop  # pylint: disable=g-import-not-at-top
  try:
    module = importlib.import_module(f'gid_jax.training.{trainer}')
    task = module.make_task(config)
    metrics = loop.train(config, _WORKDIR.value, task, progress=_PROGRESS.value)
  except loop.TrainingDiverged as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    sys.exit(2)
  if info.process_index == 0:
    print('final metrics: ' + ', '.join(f'{k}={v:.5g}' for k, v in metrics.items()))


if __name__ == '__main__':
  app.run(main)
