"""Training entry point: ``python -m gid_jax.train --config=configs/<x>.py[:size=...] --workdir DIR``.

Parses flags and hands the config to the trainer it names (``config.trainer``). Resumes from the latest
checkpoint in ``--workdir``. Exit code 2 for bad input (config, data), 3 when training diverged.
"""

import importlib
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/renderer.py:size=tiny')
_WORKDIR = flags.DEFINE_string('workdir', None, 'where checkpoints and metrics go', required=True)
_PROGRESS = flags.DEFINE_bool('progress', True, 'show a progress bar')

TRAINERS = ('renderer', 'vae', 'ldm')


def main(argv):
  del argv
  import logging  # pylint: disable=g-import-not-at-top
  from gid_jax.training import loop  # pylint: disable=g-import-not-at-top
  logging.getLogger('gid_jax').setLevel(logging.INFO)
  config = _CONFIG.value
  if config is None:
    print('error: --config is required (e.g. --config=configs/renderer.py:size=tiny)', file=sys.stderr)
    sys.exit(2)
  trainer = config.get('trainer')
  if trainer not in TRAINERS:
    print(f'error: config.trainer={trainer!r} is not one of {TRAINERS}', file=sys.stderr)
    sys.exit(2)
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
  print('final metrics: ' + ', '.join(f'{k}={v:.5g}' for k, v in metrics.items()))


if __name__ == '__main__':
  app.run(main)
