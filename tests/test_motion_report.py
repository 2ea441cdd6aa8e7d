"""`python -m gid_jax.eval.motion_report`: the held-out motion report and its placement references."""

import json
import os

import numpy as np

from gid_jax.eval import motion_report


def test_placement_probe_learns_its_training_pictures(ldm_runs):
  # In-sample (held-out = the training clips): a working classifier must place motion far above chance,
  # and its IoU / AUC must be the ones of its own mask and scores.
  _, images, true = motion_report.load_clips(ldm_runs['data'], 'train', start_frame=None)
  out = motion_report.placement_probe(ldm_runs['data'], images, true, 0.1, steps=150, batch_size=8)
  assert out['auc'] > 0.8, out
  assert out['iou'] > 0.4, out
  assert 0.0 < out['moving_fraction'] < 1.0


def test_report_cli(ldm_runs, tmp_path, capsys):
  out = str(tmp_path / 'r.json')
  assert motion_report.main(['--data', ldm_runs['data'], '--split', 'train', '--train-data', ldm_runs['data'],
                            '--run', f's1={ldm_runs["s1"]}', '--samples', '1', '--steps', '2', '--limit', '2',
                            '--probe-steps', '5', '--condition-check', '--out', out]) == 0
  table = capsys.readouterr().out
  res = json.load(open(out))
  assert res['held_out_clips'] == 2
  names = set(res['methods'])
  assert {'s1', 'mean spectral volume', 'direct moving-mask classifier (reference)',
          'VAE reconstruction of the truth (reference)'} <= names
  for name in names:
    assert f'| {name} |' in table
    assert 0.0 <= res['methods'][name]['iou'] <= 1.0
  assert '| direct moving-mask classifier (reference) | ' in table and 'n/a' in table
  assert np.isfinite(res['methods']['s1']['pixel_fd'])
  assert len(res['condition_use']['s1']) == 5 and '| s1 | 99 |' in table
  assert os.path.exists(out)


def test_condition_use(ldm_runs):
  _, images, true = motion_report.load_clips(ldm_runs['data'], 'train', limit=2)
  rows = motion_report.condition_use(ldm_runs['s1'], images, true, 0.1, levels=(1.0, 0.5))
  assert [r['t'] for r in rows] == [99, 50]  # the fixture's schedule has T = 100
  for r in rows:
    assert 0.0 <= r['auc_image'] <= 1.0 and 0.0 <= r['auc_null'] <= 1.0
    assert r['mean_abs_diff_px'] >= 0.0 and r['mean_rms_px'] > 0.0
  # The null image is all zeros: a run fed zeros as "the image" must show no difference at all.
  zero = np.full_like(images, 127)  # 127 / 127.5 - 1 ~ -0.004, nearly the null condition
  near = motion_report.condition_use(ldm_runs['s1'], zero, true, 0.1, levels=(0.5,))[0]
  assert near['mean_abs_diff_px'] < rows[1]['mean_abs_diff_px']


def test_report_without_later_clips_and_a_missing_dataset(ldm_runs, tmp_path, monkeypatch, capsys):
  """Held-out videos of exactly T frames have no clip from frame 10: the report leaves that reference out
  (it used to crash); a folder without a dataset is one line, exit 2."""
  assert motion_report.main(['--data', str(tmp_path), '--train-data', str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --data no gid_motion dataset in') and len(err.strip().splitlines()) == 1
  real = motion_report.load_clips

  def only_frame_0(data_dir, split, start_frame=0, limit=None):
    if start_frame == 10:
      raise ValueError(f'{data_dir} split {split!r} has no clips starting at frame 10')
    return real(data_dir, split, start_frame, limit)

  monkeypatch.setattr(motion_report, 'load_clips', only_frame_0)
  out = str(tmp_path / 'r.json')
  assert motion_report.main(['--data', ldm_runs['data'], '--split', 'train', '--train-data', ldm_runs['data'],
                            '--limit', '2', '--out', out]) == 0
  assert 'reference is left out' in capsys.readouterr().err
  assert list(json.load(open(out))['methods']) == ['mean spectral volume']


def test_report_cli_errors(capsys):
  assert motion_report.main(['--data', 'x', '--train-data', 'y', '--probe-steps', '-1']) == 2
  assert capsys.readouterr().err.strip() == 'error: --probe-steps must be >= 0, got -1'
  assert motion_report.main(['--data', 'x', '--train-data', 'y', '--run', 'nope']) == 2
  assert 'NAME=WORKDIR' in capsys.readouterr().err
