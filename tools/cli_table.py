"""Bad inputs tried on every entry point -> the tables of docs/CLI.md (message, exit code, wall time).

    python tools/cli_table.py > docs/CLI.md

Each case runs the real command in a fresh process, in a scratch folder holding the inputs made by
:func:`make_inputs`, and records the one line it printed, its exit code and its wall time (this is the
measurement behind "a bad value reaches its error in under 5 s"). ``tests/test_cli.py::test_cli_doc_cases``
runs every case in-process and checks its exit code and message, so each row is backed by a test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LDM = os.path.join(ROOT, 'gid_jax', 'assets', 'default', 'ldm')
RENDERER = os.path.join(ROOT, 'gid_jax', 'assets', 'default', 'renderer')

# (entry point module, what is wrong, arguments, a fragment of the expected message). '{d}' is the scratch
# folder, '{ldm}' / '{renderer}' the bundled runs.
CASES = [
    ('gid_jax.sample', 'missing photo', ['--image', 'nope.jpg'], 'photo not found: nope.jpg'),
    ('gid_jax.sample', 'corrupt photo', ['--image', 'corrupt.png'], 'corrupt.png is not a readable image'),
    ('gid_jax.sample', 'photo too small (1 x 1)', ['--image', 'tiny.png'],
     'photos need at least 16 pixels on each side'),
    ('gid_jax.sample', 'photo too large (12000 x 12000)', ['--image', 'bomb.png'],
     'over the limit of 50,000,000 pixels'),
    ('gid_jax.sample', 'photo too elongated (2000 x 20)', ['--image', 'strip.png'],
     'its longer side may be at most 4x its shorter (crop it)'),
    ('gid_jax.sample', 'mask of the wrong size', ['--image', 'photo.png', '--mask', 'tiny.png'],
     'but the photo is 96x64'),
    ('gid_jax.sample', 'bad number', ['--num-frames', '0'], '--num-frames must be at least 2, got 0'),
    ('gid_jax.sample', 'bad number', ['--steps', '-5'], '--steps must be at least 1, got -5'),
    ('gid_jax.sample', 'bad number', ['--mask-gate', '1.5'], '--mask-gate must be in [0, 1] (0 = off), got 1.5'),
    ('gid_jax.sample', 'not a number', ['--fps', 'fast'], "argument --fps: invalid float value: 'fast'"),
    ('gid_jax.sample', 'unknown option', ['--frames', '3'], 'unrecognized argument --frames'),
    ('gid_jax.sample', 'existing output folder', ['--out', 'mine'], '--out mine is a folder that is not empty'),
    ('gid_jax.sample', 'existing output file', ['--out', 'clip.mp4'], '--out clip.mp4 exists'),
    ('gid_jax.sample', 'unsupported output format', ['--out', 'clip.avi'], '--out must end in .mp4, .gif or .webm'),
    ('gid_jax.sample', 'missing checkpoint', ['--checkpoint', 'no_run'], '--checkpoint no_run: no such folder'),
    ('gid_jax.sample', 'folder without a checkpoint', ['--checkpoint', 'mine'], 'no checkpoint in it'),
    ('gid_jax.sample', 'wrong checkpoint kind', ['--checkpoint', '{renderer}'],
     "is a run of trainer 'renderer', not 'ldm'"),
    ('gid_jax.interact', 'no poke', ['--image', 'photo.png', '--out', 'p.mp4'], 'give at least one --poke'),
    ('gid_jax.interact', 'bad poke', ['--image', 'photo.png', '--poke', '2,0,1,1', '--out', 'p.mp4'],
     'X and Y are fractions of width and height'),
    ('gid_jax.interact', 'corrupt spectral volume', ['--image', 'photo.png', '--spectral', 'corrupt.npz', '--poke',
                                                     '0.5,0.5,1,0', '--out', 'p.mp4'], 'corrupt.npz'),
    ('gid_jax.interact', 'missing spectral volume', ['--image', 'photo.png', '--spectral', 'no.npz', '--poke',
                                                     '0.5,0.5,1,0', '--out', 'p.mp4'], '--spectral no.npz: no such file'),
    ('gid_jax.interact', 'existing output folder', ['--image', 'photo.png', '--poke', '0.5,0.5,1,0', '--out', 'mine'],
     '--out mine is a folder that is not empty'),
    ('gid_jax.interact', 'bad number', ['--image', 'photo.png', '--poke', '0.5,0.5,1,0', '--damping', '-1', '--out',
                                        'p.mp4'], '--damping must be a finite number >= 0, got -1.0'),
    ('gid_jax.train', 'missing --config', ['--workdir', 'w'], 'the following arguments are required: --config'),
    ('gid_jax.train', 'config file not found', ['--config=configs/nope.py', '--workdir', 'w'],
     'config file not found: configs/nope.py'),
    ('gid_jax.train', 'config key typo', ['--config=configs/ldm.py', '--workdir', 'w', '--config.num_step=3'],
     "config has no key 'num_step'; did you mean config.num_steps"),
    ('gid_jax.train', 'bad learning rate', ['--config=configs/ldm.py', '--workdir', 'w',
                                            '--config.optimizer.learning_rate=-1'],
     'config.optimizer.learning_rate must be > 0, got -1.0'),
    ('gid_jax.train', 'bad batch size', ['--config=configs/vae.py', '--workdir', 'w', '--config.batch_size=-4'],
     'config.batch_size must be >= 1, got -4'),
    ('gid_jax.train', 'wrong value type', ['--config=configs/vae.py', '--workdir', 'w', '--config.num_steps=many'],
     "--config.num_steps=many: expected int, got 'many'"),
    ('gid_jax.train', 'missing data_dir', ['--config=configs/vae.py', '--workdir', 'w'],
     '--config.data_dir is empty'),
    ('gid_jax.train', 'data_dir not found', ['--config=configs/vae.py', '--workdir', 'w', '--config.data_dir=nodata'],
     '--config.data_dir nodata: no such folder'),
    ('gid_jax.train', 'data_dir without a dataset', ['--config=configs/vae.py', '--workdir', 'w',
                                                    '--config.data_dir=mine'], 'holds no gid_motion dataset'),
    ('gid_jax.train', 'workdir holding user files', ['--config=configs/vae.py', '--workdir', 'mine'],
     'holds files that are not a gid_jax run'),
    ('gid_jax.train', 'workdir of another run', ['--config=configs/vae.py', '--workdir', 'ldm_copy'],
     'holds another run'),
    ('gid_jax.train', 'wrong run kind for vae_workdir', ['--config=configs/ldm.py', '--workdir', 'w',
                                                        '--config.data_dir=ds', '--config.vae_workdir={ldm}'],
     "is a run of trainer 'ldm', not 'vae'"),
    ('gid_jax.data.build', 'videos folder not found', ['--videos', 'novideos', '--out', 'o'],
     'video folder not found: novideos'),
    ('gid_jax.data.build', 'no videos in the folder', ['--videos', 'mine', '--out', 'o'], 'no video files'),
    ('gid_jax.data.build', 'existing output folder', ['--videos', 'videos', '--out', 'mine'],
     '--out mine is a folder that is not empty'),
    ('gid_jax.data.build', 'bad config value', ['--videos', 'videos', '--out', 'o', '--config.num_frames=1'],
     'config.num_frames must be >= 2'),
    ('gid_jax.data.build', 'bad config value', ['--videos', 'videos', '--out', 'o', '--config.image_scale=0'],
     'bad config value image_scale=0: expected a positive integer'),
    ('gid_jax.data.build', 'no --videos', ['--out', 'o'], '--videos is required'),
    ('gid_jax.data.build', '--refit-stats on a folder that is not a dataset', ['--out', 'mine', '--refit-stats'],
     'is not a finished dataset'),
    ('gid_jax.training.latents', 'data not found', ['--data', 'nodata', '--vae', '{ldm}', '--out', 'o'],
     '--data nodata: no such folder'),
    ('gid_jax.training.latents', 'folder without a dataset', ['--data', 'mine', '--vae', '{ldm}', '--out', 'o'],
     '--data mine holds no gid_motion dataset'),
    ('gid_jax.training.latents', 'wrong run kind for --vae', ['--data', 'ds', '--vae', '{renderer}', '--out', 'o'],
     "is a run of trainer 'renderer', not 'vae' or 'ldm'"),
    ('gid_jax.training.latents', 'existing output folder', ['--data', 'ds', '--vae', '{ldm}', '--out', 'mine'],
     '--out mine is a folder that is not empty'),
    ('gid_jax.training.latents', 'bad number', ['--data', 'ds', '--vae', '{ldm}', '--out', 'o', '--num-freqs', '-2'],
     '--num-freqs must be >= 0, got -2'),
    ('gid_jax.evaluate', 'config key typo', ['--config=configs/eval.py', '--config.sampling.step=3'],
     "config has no key 'sampling.step'; did you mean config.sampling.seed, config.sampling.num_steps"),
    ('gid_jax.evaluate', 'existing output folder', ['--config=configs/eval.py', '--config.out_dir=mine'],
     '--config.out_dir mine is a folder that is not empty'),
    ('gid_jax.export', 'not a run', ['--workdir', 'mine', '--out', 'e'], '--workdir mine: no checkpoint in it'),
    ('gid_jax.export', 'bad number', ['--workdir', '{ldm}', '--out', 'e', '--mask-gate', '-1'],
     '--mask-gate must be in [0, 1] (0 = off), got -1.0'),
    ('gid_jax.export', 'existing output folder', ['--workdir', '{ldm}', '--out', 'mine'],
     '--out mine is a folder that is not empty'),
    ('gid_jax.app', 'bad port', ['--port', '70000'], '--port must be in [0, 65535]'),
    ('gid_jax.app', 'wrong checkpoint kind', ['--checkpoint', '{renderer}'], "is a run of trainer 'renderer'"),
]


def make_inputs(d: str) -> None:
  """The scratch folder's inputs: good and bad photos, a user's folder and file, a bad .npz, a dataset stub."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(os.path.join(d, 'photo.png'))
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(os.path.join(d, 'tiny.png'))
  Image.fromarray(np.zeros((20, 2000, 3), np.uint8)).save(os.path.join(d, 'strip.png'))
  Image.new('1', (12000, 12000)).save(os.path.join(d, 'bomb.png'))
  with open(os.path.join(d, 'corrupt.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + bytes(rng.integers(0, 255, 200, dtype=np.uint8)))
  with open(os.path.join(d, 'corrupt.npz'), 'wb') as f:
    f.write(b'PK\x03\x04 not a zip')
  os.makedirs(os.path.join(d, 'mine'))
  with open(os.path.join(d, 'mine', 'notes.txt'), 'w', encoding='utf-8') as f:
    f.write('my notes')
  with open(os.path.join(d, 'clip.mp4'), 'wb') as f:
    f.write(b'my video')
  os.makedirs(os.path.join(d, 'ds', 'gid_motion'))
  os.makedirs(os.path.join(d, 'videos'))
  with open(os.path.join(d, 'videos', 'v.mp4'), 'wb') as f:
    f.write(b'not decoded before the config is checked')
  shutil.copytree(LDM, os.path.join(d, 'ldm_copy'))


def argv(case, d: str) -> list[str]:
  return [a.format(d=d, ldm=LDM, renderer=RENDERER) for a in case[2]]


def run_case(case, d: str) -> tuple[int, str, float, int]:
  """(exit code, stderr's last line, wall seconds, stderr lines) of the case as a fresh process in ``d``."""
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, '-m', case[0], *argv(case, d)], capture_output=True, text=True, cwd=d,
                     env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
  secs = time.perf_counter() - t0
  lines = r.stderr.strip().splitlines()
  return r.returncode, (lines[-1] if lines else ''), secs, len(lines)


def main() -> int:
  d = tempfile.mkdtemp(prefix='gid_cli_')
  try:
    make_inputs(d)
    print('# Bad input, entry point by entry point\n')
    print('Every command checks its options, config values, files and folders **before** any model, dataset '
          'or JAX device work, prints one line `error: ...` on stderr and exits with code 2, leaving nothing '
          'on disk. Made by `python tools/cli_table.py > docs/CLI.md` (a fresh process per row, in a scratch '
          'folder with the inputs named below; times are wall seconds on a 2-core CPU, Python start-up '
          'included). Every row is checked by `tests/test_cli.py::test_cli_doc_cases`.\n')
    print('Inputs: `photo.png` 96 x 64; `tiny.png` 1 x 1; `strip.png` 2000 x 20; `bomb.png` 12000 x 12000; '
          '`corrupt.png` a PNG header '
          'and noise; `mine/` a folder with the user\'s `notes.txt`; `clip.mp4` a user\'s file; `corrupt.npz` '
          'not a zip; `ds/` a dataset folder; `ldm_copy/` a copy of the bundled motion model run.\n')
    current = None
    worst = 0.0
    for case in CASES:
      if case[0] != current:
        current = case[0]
        if current == 'gid_jax.training.latents':  # no console script
          print(f'\n## `python -m {current}`\n')
        else:
          name = 'gid-' + {'gid_jax.data.build': 'build', 'gid_jax.app': 'app'}.get(current, current.split('.')[-1])
          print(f'\n## `{name}` (`python -m {current}`)\n')
        print('| bad input | arguments | message (stderr) | exit | s |')
        print('|---|---|---|---:|---:|')
      code, line, secs, n = run_case(case, d)
      worst = max(worst, secs)
      assert code == 2 and n == 1 and case[3] in line, (case, code, line, n)
      args = ' '.join(argv(case, d)).replace(ROOT + '/', '')
      line = line.replace(d + '/', '').replace(ROOT + '/', '')
      print(f'| {case[1]} | `{args}` | `{line}` | {code} | {secs:.1f} |')
    left = sorted(set(os.listdir(d)) - {'photo.png', 'tiny.png', 'strip.png', 'bomb.png', 'corrupt.png', 'corrupt.npz', 'mine',
                                        'clip.mp4', 'ds', 'videos', 'ldm_copy'})
    assert not left, left
    print(f'\nSlowest error: {worst:.1f} s. Nothing was written by any of these commands (the scratch folder '
          'held only its inputs afterwards, and `mine/notes.txt` and `clip.mp4` were unchanged).')
  finally:
    shutil.rmtree(d, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
