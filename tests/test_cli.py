"""The command-line convention of every entry point (gid_jax.cli): nothing lost, early one-line errors, help,
version, console scripts, quiet logs, progress. Each row of docs/CLI.md is backed by a test here or in the
entry point's own test file (named in the table)."""

import importlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from gid_jax import cli, fileio, runs
from gid_jax.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_LDM = os.path.join(ROOT, 'gid_jax', 'assets', 'default', 'ldm')
ENTRY_POINTS = {  # console script -> module with build_parser() and main(argv)
    'gid-sample': 'gid_jax.sample', 'gid-interact': 'gid_jax.interact', 'gid-train': 'gid_jax.train',
    'gid-build': 'gid_jax.data.build', 'gid-app': 'gid_jax.app.__main__', 'gid-evaluate': 'gid_jax.evaluate',
    'gid-export': 'gid_jax.export'}


@pytest.fixture()
def user_folder(tmp_path):
  """A folder of the user's own files, which no command may delete."""
  d = tmp_path / 'mine'
  d.mkdir()
  (d / 'notes.txt').write_text('my notes')
  Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(d / 'holiday.png')
  return d


def _intact(d):
  assert (d / 'notes.txt').read_text() == 'my notes'
  assert np.asarray(Image.open(d / 'holiday.png')).max() == 7


def _err(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  return err[0]


def _photo(tmp_path, w=96, h=64):
  p = tmp_path / f'photo_{w}x{h}.png'
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
  return str(p)


# ---------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize('module,args', [
    ('gid_jax.sample', ['--num-frames', '3', '--steps', '1']),
    ('gid_jax.interact', ['--image', 'PHOTO', '--poke', '0.5,0.5,2,0', '--num-frames', '3']),
])
@pytest.mark.parametrize('as_folder', [True, False])
def test_existing_output_is_refused_and_the_users_files_survive(module, args, as_folder, user_folder, tmp_path,
                                                                capsys):
  out = user_folder
  if not as_folder:
    out = user_folder / 'clip.mp4'
    out.write_bytes(b'a video of mine')
  args = [str(_photo(tmp_path)) if a == 'PHOTO' else a for a in args]
  assert _code(importlib.import_module(module).main, args + ['--out', str(out)]) == 2
  msg = _err(capsys)
  assert '--overwrite' in msg and str(out) in msg
  _intact(user_folder)
  if not as_folder:
    assert out.read_bytes() == b'a video of mine'


def test_overwrite_into_a_users_folder_replaces_only_our_frames(user_folder, tmp_path, capsys):
  from gid_jax import sample  # pylint: disable=g-import-not-at-top
  base = ['--image', _photo(tmp_path), '--out', str(user_folder), '--overwrite', '--steps', '1',
          '--max-side', '48', '--renderer', 'none', '--no-progress']
  assert sample.main(base + ['--num-frames', '4']) == 0, capsys.readouterr().err
  _intact(user_folder)
  frames = sorted(f for f in os.listdir(user_folder) if f.endswith('.png') and f != 'holiday.png')
  assert frames == [f'{i:05d}.png' for i in range(4)]
  assert fileio.owned_entries(str(user_folder)) == set(frames)
  assert sample.main(base + ['--num-frames', '2']) == 0
  left = sorted(os.listdir(user_folder))
  assert left == ['.gid_jax-output.json', '00000.png', '00001.png', 'holiday.png', 'notes.txt']  # old 2-3 gone
  _intact(user_folder)


def test_publish_dir_swaps_our_own_folder_whole_and_merges_into_a_users(tmp_path):
  ours = tmp_path / 'frames'
  for n in (3, 1):
    with fileio.atomic_path(str(ours), is_dir=True) as tmp:
      for i in range(n):
        open(os.path.join(tmp, f'{i}.png'), 'w').close()
  assert sorted(os.listdir(ours)) == ['.gid_jax-output.json', '0.png']
  (ours / 'added_by_user.txt').write_text('x')
  with fileio.atomic_path(str(ours), is_dir=True) as tmp:
    open(os.path.join(tmp, '5.png'), 'w').close()
  assert sorted(os.listdir(ours)) == ['.gid_jax-output.json', '5.png', 'added_by_user.txt']
  with pytest.raises(RuntimeError):  # a failed write leaves the folder as it was
    with fileio.atomic_path(str(ours), is_dir=True) as tmp:
      open(os.path.join(tmp, '9.png'), 'w').close()
      raise RuntimeError('killed')
  assert sorted(os.listdir(ours)) == ['.gid_jax-output.json', '5.png', 'added_by_user.txt']
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # no temporary left behind


def test_check_output_policy(tmp_path):
  f = tmp_path / 'a.mp4'
  fileio.check_output(str(f))  # new: fine
  f.write_bytes(b'x')
  with pytest.raises(InputError, match='exists; choose a new name, or pass --overwrite'):
    fileio.check_output(str(f))
  fileio.check_output(str(f), overwrite=True)
  with pytest.raises(InputError, match='is a folder; give a file name'):
    fileio.check_output(str(tmp_path), overwrite=True, kind='file')
  with pytest.raises(InputError, match='is a file, not a folder'):
    fileio.check_output(str(f / 'x.mp4'))
  (tmp_path / 'empty').mkdir()
  fileio.check_output(str(tmp_path / 'empty'))


def test_save_spectral_and_interact_spectral_outputs_are_protected(user_folder, tmp_path, capsys):
  from gid_jax import sample  # pylint: disable=g-import-not-at-top
  assert sample.main(['--out', str(tmp_path / 'new.mp4'), '--save-spectral', str(user_folder / 'notes.txt')]) == 2
  assert 'must end in .npz' in _err(capsys)
  (user_folder / 'm.npz').write_bytes(b'mine')
  assert sample.main(['--out', str(tmp_path / 'new.mp4'), '--save-spectral', str(user_folder / 'm.npz')]) == 2
  assert '--save-spectral' in _err(capsys) and (user_folder / 'm.npz').read_bytes() == b'mine'


def test_train_refuses_a_users_folder_and_another_runs_workdir(user_folder, tmp_path, capsys):
  from gid_jax import train  # pylint: disable=g-import-not-at-top
  assert train.main(['--config=configs/vae.py', '--workdir', str(user_folder)]) == 2
  assert 'holds files that are not a gid_jax run' in _err(capsys)
  _intact(user_folder)
  other = tmp_path / 'ldm_run'
  shutil.copytree(BUNDLED_LDM, other)
  assert train.main(['--config=configs/vae.py', '--workdir', str(other)]) == 2
  assert 'holds another run (its config differs in' in _err(capsys)
  assert os.listdir(other / 'checkpoints') == os.listdir(os.path.join(BUNDLED_LDM, 'checkpoints'))


def test_build_export_and_evaluate_refuse_a_users_folder(user_folder, tmp_path, capsys):
  from gid_jax import evaluate, export  # pylint: disable=g-import-not-at-top
  from gid_jax.data import build  # pylint: disable=g-import-not-at-top
  videos = tmp_path / 'videos'
  videos.mkdir()
  shutil.copy(os.path.join(os.path.dirname(__file__), '..', 'gid_jax', 'assets', 'example.jpg'), videos)
  (videos / 'v.mp4').write_bytes(b'not checked before the output folder')
  assert build.main(['--videos', str(videos), '--out', str(user_folder)]) == 2
  assert '--out' in _err(capsys)
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(user_folder)]) == 2
  assert '--out' in _err(capsys)
  assert evaluate.main(['--config=configs/eval.py', f'--config.out_dir={user_folder}',
                        '--config.order=repeat_i0']) == 2
  assert '--config.out_dir' in _err(capsys)
  _intact(user_folder)


# ---------------------------------------------------------------------------------------------- early errors


@pytest.mark.parametrize('argv,message', [
    (['--config=configs/ldm.py', '--workdir=W', '--config.optimizer.learnin_rate=1'],
     "config has no key 'optimizer.learnin_rate'; did you mean config.optimizer.learning_rate"),
    (['--config=configs/ldm.py', '--workdir=W', '--config.num_step=3'],
     "config has no key 'num_step'; did you mean config.num_steps"),
    (['--config=configs/ldm.py', '--workdir=W', '--config.optimizer.learning_rate=-1'],
     'config.optimizer.learning_rate must be > 0, got -1.0'),
    (['--config=configs/ldm.py', '--workdir=W', '--config.batch_size=-4'], 'config.batch_size must be >= 1'),
    (['--config=configs/ldm.py', '--workdir=W', '--config.batch_size=four'], 'expected int'),
    (['--config=configs/ldm.py', '--workdir=W', '--config.ema_decay=nan'], 'must be a finite number'),
    (['--config=configs/ldm.py', '--workdir=W'], '--config.data_dir is empty'),
    (['--config=configs/ldm.py', '--workdir=W', '--config.data_dir=nowhere'], '--config.data_dir nowhere: no such'),
    (['--config=configs/nope.py', '--workdir=W'], 'config file not found: configs/nope.py (packaged configs:'),
    (['--config=configs/ldm.py:size=huge', '--workdir=W'], "size must be one of"),
    (['--workdir=W'], 'the following arguments are required: --config'),
])
def test_train_config_errors_are_one_line_and_leave_no_workdir(argv, message, tmp_path, capsys, monkeypatch):
  from gid_jax import train  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)  # configs/ldm.py must resolve from any directory
  assert _code(train.main, argv) == 2
  assert message in _err(capsys)
  assert not (tmp_path / 'W').exists()


def _code(main, argv):
  """The exit code of an entry point, whether it returns it or argparse exits with it."""
  try:
    return main(argv)
  except SystemExit as e:
    return e.code


def test_ldm_needs_its_vae_run_before_jax(tmp_path, capsys):
  from gid_jax import train  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'ds'
  (data / 'gid_motion').mkdir(parents=True)
  assert train.main(['--config=configs/ldm.py', f'--config.data_dir={data}', '--workdir', str(tmp_path / 'w')]) == 2
  assert '--config.vae_workdir is empty' in _err(capsys)
  assert train.main(['--config=configs/ldm.py', f'--config.data_dir={data}', f'--config.vae_workdir={BUNDLED_LDM}',
                     '--workdir', str(tmp_path / 'w')]) == 2
  assert "is a run of trainer 'ldm', not 'vae'" in _err(capsys)
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('argv,message', [
    (['--num-frames', '0'], '--num-frames must be at least 2, got 0'),
    (['--steps', '-5'], '--steps must be at least 1, got -5'),
    (['--guidance', '-1'], '--guidance must be >= 0'),
    (['--mask-gate', '1.5'], '--mask-gate must be in [0, 1] (0 = off), got 1.5'),
    (['--out', 'x.avi'], '--out must end in .mp4, .gif or .webm'),
    (['--image', 'TINY'], 'photos need at least 16 pixels on each side'),
    (['--image', 'BOMB'], 'over the limit of 50,000,000 pixels'),
    (['--checkpoint', '/nonexistent'], '--checkpoint /nonexistent: no such folder'),
    (['--renderer', BUNDLED_LDM], "is a run of trainer 'ldm', not 'renderer'"),
    (['--num_frames', '0'], '--num-frames must be at least 2'),  # absl spelling
    (['--frames', '3'], 'unrecognized argument --frames'),
])
def test_sample_errors_come_before_any_model_work(argv, message, tmp_path, capsys, monkeypatch):
  from gid_jax import animate, sample  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(animate, 'load_models', lambda *a: pytest.fail('models loaded before the check'))
  tiny = _photo(tmp_path, 1, 1)
  bomb = tmp_path / 'bomb.png'
  if 'BOMB' in argv:
    Image.new('1', (12000, 12000)).save(bomb)
  argv = [tiny if a == 'TINY' else str(bomb) if a == 'BOMB' else a for a in argv]
  out = tmp_path / 'o.mp4'
  argv = argv if '--out' in argv else argv + ['--out', str(out)]
  with _no_warnings():
    code = _code(sample.main, argv)
  assert code == 2
  assert message in _err(capsys)
  assert not out.exists()


class _no_warnings:  # pylint: disable=invalid-name
  """Fails if a warning (PIL's DecompressionBombWarning) is shown before our one line."""

  def __enter__(self):
    import warnings  # pylint: disable=g-import-not-at-top
    self._cm = warnings.catch_warnings(record=True)
    self.log = self._cm.__enter__()
    warnings.simplefilter('always')
    return self

  def __exit__(self, *exc):
    self._cm.__exit__(*exc)
    shown = [w for w in self.log if 'Decompression' in str(w.category.__name__) or 'pixels' in str(w.message)]
    assert not shown, shown


def test_bad_options_fail_within_seconds_in_a_fresh_process(tmp_path):
  """The one-line error of a bad value comes before JAX, data or models (not a timed test: the budget is
  generous; docs/CLI.md states the measured times)."""
  cmds = [['gid_jax.sample', '--num-frames', '0'],
          ['gid_jax.train', '--config=configs/ldm.py', '--workdir', 'w', '--config.optimizer.learning_rate=-1'],
          ['gid_jax.data.build', '--videos', 'nowhere', '--out', 'o']]
  for cmd in cmds:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, '-m', *cmd], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ''
    assert time.perf_counter() - t0 < 30
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- convention


@pytest.mark.parametrize('script', sorted(ENTRY_POINTS))
def test_every_entry_point_has_help_defaults_and_version(script, capsys):
  module = importlib.import_module(ENTRY_POINTS[script])
  parser = module.build_parser()
  for action in parser._actions:  # pylint: disable=protected-access
    assert action.help, f'{script}: {action.option_strings} has no help text'
  with pytest.raises(SystemExit) as e:
    parser.parse(['--help'])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert f'usage: {script}' in text
  if script == 'gid-sample':
    assert '(default: 150)' in text and '(default: out.mp4)' in text
  with pytest.raises(SystemExit):
    parser.parse(['--version'])
  assert capsys.readouterr().out.strip() == f'gid_jax {importlib.import_module("gid_jax").__version__}'


def test_console_scripts_are_installed():
  eps = {e.name: e.value for e in importlib.metadata.entry_points(group='console_scripts')}
  for script, module in ENTRY_POINTS.items():
    assert eps.get(script) == f'{module}:main', (script, eps.get(script))
    assert callable(getattr(importlib.import_module(module), 'main'))
  # The installed wrapper exits with main's return value: 2 for bad input.
  bad = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'gid-export'), '--workdir', '/nonexistent',
                        '--out', '/tmp/x'], capture_output=True, text=True, check=False)
  assert bad.returncode == 2 and 'error: --workdir /nonexistent: no such folder' in bad.stderr


def test_config_overrides_types_and_paths(tmp_path):
  c = cli.load_config('ldm', [('model.freq_attention', 'true'), ('optimizer.learning_rate', '2'),
                              ('model.widths', '(8, 16)'), ('mesh.freq', '2'), ('data_dir', '/x y')])
  assert c.model.freq_attention is True and c.optimizer.learning_rate == 2.0
  assert tuple(c.model.widths) == (8, 16) and c.mesh.freq == 2 and c.data_dir == '/x y'
  own = tmp_path / 'mine.py'
  own.write_text('import ml_collections\ndef get_config(arg=None):\n  return ml_collections.ConfigDict({"a": 1})\n')
  assert cli.load_config(str(own), [('a', '3')]).a == 3
  with pytest.raises(InputError, match="--config.model is a section"):
    cli.load_config('configs/ldm.py', [('model', '3')])
  with pytest.raises(InputError, match='expected true or false'):
    cli.load_config('configs/ldm.py', [('model.freq_attention', 'maybe')])


def test_quiet_by_default_verbose_brings_logs_back(tmp_path):
  """A full sample run prints its phases and the result, and no third-party log line or warning."""
  out = tmp_path / 'v.gif'
  cmd = [sys.executable, '-m', 'gid_jax.sample', '--out', str(out), '--num-frames', '3', '--steps', '2',
         '--max-side', '48', '--renderer', 'none']
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == f'wrote {out}'
  lines = [l for l in r.stderr.replace('\r', '\n').splitlines() if l.strip()]
  noise = [l for l in lines if not l.startswith(('loading models', 'sampling motion', 'rendering', 'encoding'))]
  assert not noise, noise
  assert any(l.startswith('loading models ... done') for l in lines)
  assert any('sampling motion: compiling' in l for l in lines) and any('rendering' in l for l in lines)
  r = subprocess.run(cmd + ['--no-progress', '--overwrite'], capture_output=True, text=True, cwd=tmp_path,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 0 and '|' not in r.stderr, r.stderr  # no bars with --no-progress


def test_bar_eta_skips_the_compiling_first_step():
  stream = io.StringIO()
  bar = cli.Progress(True, stream).bar('sampling', 10).start()
  time.sleep(0.5)  # the first step: XLA compiles
  bar(1, 10)
  for i in range(2, 6):
    bar(i, 10)
  assert 'sampling: compiling ...' in stream.getvalue()
  rate = bar._bar.format_dict['rate'] or (bar._bar.n - bar._bar.initial) / max(  # pylint: disable=protected-access
      bar._bar.format_dict['elapsed'], 1e-9)  # pylint: disable=protected-access
  assert bar._bar.initial == 1 and rate > 20  # 4 quick steps, not 5 steps in 0.5 s  # pylint: disable=protected-access
  bar.close()
  silent = io.StringIO()
  quiet = cli.Progress(False, silent).bar('x', 3).start()
  quiet(1, 3)
  quiet.close()
  assert silent.getvalue() == ''


def test_notebook_install_cell_has_no_placeholder_and_detects_tpu():
  nb = json.load(open(os.path.join(ROOT, 'notebooks', 'demo.ipynb'), encoding='utf-8'))
  code = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
  assert '<owner>' not in code and 'jax[tpu]' in code and 'jax[cuda12]' in code and 'COLAB_TPU_ADDR' in code


def test_cli_doc_cases(tmp_path, capsys, monkeypatch):
  """Every row of docs/CLI.md (tools/cli_table.py's CASES), in-process: exit 2, the one line, nothing written."""
  sys.path.insert(0, os.path.join(ROOT, 'tools'))
  try:
    import cli_table  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  cli_table.make_inputs(str(tmp_path))
  before = sorted(os.listdir(tmp_path))
  monkeypatch.chdir(tmp_path)
  doc = open(os.path.join(ROOT, 'docs', 'CLI.md'), encoding='utf-8').read()
  for case in cli_table.CASES:
    module = importlib.import_module(case[0] if case[0] != 'gid_jax.app' else 'gid_jax.app.__main__')
    assert _code(module.main, cli_table.argv(case, str(tmp_path))) == 2, case
    assert case[3] in _err(capsys), case
    assert case[3].replace('|', '\\|') in doc, f'docs/CLI.md has no row for {case}'
  assert sorted(os.listdir(tmp_path)) == before
  assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'my notes' and (tmp_path / 'clip.mp4').read_bytes() == b'my video'


def test_config_choices_agree_with_the_libraries():
  from gid_jax import configs  # pylint: disable=g-import-not-at-top
  from gid_jax.data import build  # pylint: disable=g-import-not-at-top
  from gid_jax.diffusion import schedules  # pylint: disable=g-import-not-at-top
  from gid_jax.models import ldm, renderer, unet  # pylint: disable=g-import-not-at-top
  from gid_jax.motion import normalize  # pylint: disable=g-import-not-at-top
  from gid_jax.training import ldm as ldm_task  # pylint: disable=g-import-not-at-top
  c = configs.CHOICES
  assert set(c['mode']) == set(ldm.MODES) and set(c['trainable']) == set(ldm_task.TRAINABLE)
  assert set(c['aux_mask_at']) == set(unet.MASK_HEADS[1:]) and set(c['model.rgb_base']) == set(renderer.RGB_BASES)
  assert set(c['model.cond_mode']) == set(ldm.COND_MODES) and set(c['diffusion.objective']) == set(schedules.OBJECTIVES)
  assert set(c['diffusion.schedule']) == set(schedules.KINDS) and set(c['normalize.mode']) == set(normalize.MODES)
  assert set(c['normalize.power']) == set(normalize.POWERS) and set(c['flow.method']) == set(build.FLOW_METHODS)
  from gid_jax.motion import flow  # pylint: disable=g-import-not-at-top
  assert set(c['flow.color']) == set(flow.COLORS)
  with pytest.raises(InputError, match=r"config.flow.color must be one of \('gray', 'lab'\), got 'rgb'"):
    cli.load_config('data', [('flow.color', 'rgb')])
  with pytest.raises(InputError, match=r'config.flow.max_side must be >= 0, got -1'):
    cli.load_config('data', [('flow.max_side', '-1')])
  with pytest.raises(InputError, match=r"config.model.rgb_base must be one of \('softmax', 'average'\), got 'median'"):
    cli.load_config('renderer', [('model.rgb_base', 'median')])


def test_export_stores_default_sampling_settings(tmp_path, capsys):
  from gid_jax import export  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'e'
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(out), '--guidance', '2.5', '--steps', '40',
                      '--no-progress']) == 0, capsys.readouterr().err
  assert runs.stored_config(str(out))['sampling'] == dict(runs.stored_config(BUNDLED_LDM)['sampling'],
                                                             guidance=2.5, num_steps=40)
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(out), '--guidance', '-1']) == 2
  assert '--guidance must be a finite number >= 0' in _err(capsys)
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(out), '--mask-gate', '2']) == 2
  assert '--mask-gate must be in [0, 1] (0 = off), got 2.0' in _err(capsys)
  gated = tmp_path / 'g'
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(gated), '--mask-gate', '0.4', '--no-progress']) == 0
  assert runs.stored_config(str(gated))['sampling']['mask_gate'] == 0.4
  assert export.main(['--workdir', BUNDLED_LDM, '--out', str(out)]) == 2  # an earlier export: --overwrite
  assert '--overwrite' in _err(capsys)
