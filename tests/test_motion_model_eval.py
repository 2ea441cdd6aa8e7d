"""`python -m gid_jax.eval.motion_model`: the held-out motion report and its placement references."""

import json
import os

import numpy as np

from gid_jax.eval import motion_model


def test_placement_probe_learns_its_training_pictures(ldm_runs):
  # In-sample (held-out = the training clips): a working classifier must place motion far above chance,
  # and its IoU / AUC must be the ones of its own mask and scores.
  _, images, true = motion_model.load_clips(ldm_runs['data'], 'train', start_frame=None)
  out = motion_model.placement_probe(ldm_runs['data'], images, true, 0.1, steps=150, batch_size=8)
  assert out['auc'] > 0.8, out
  assert out['iou'] > 0.4, out
  assert 0.0 < out['moving_fraction'] < 1.0


def test_report_cli(ldm_runs, tmp_path, capsys):
  out = str(tmp_path / 'r.json')
  assert motion_model.main(['--data', ldm_runs['data'], '--split', 'train', '--train_data', ldm_runs['data'],
                            '--run', f's1={ldm_runs["s1"]}', '--samples', '1', '--steps', '2', '--limit', '2',
                            '--probe_steps', '5', '--out', out]) == 0
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
  assert os.path.exists(out)


def test_report_cli_errors(capsys):
  assert motion_model.main(['--data', 'x', '--train_data', 'y', '--probe_steps', '-1']) == 2
  assert capsys.readouterr().err.strip() == 'error: --probe_steps must be >= 0, got -1'
  assert motion_model.main(['--data', 'x', '--train_data', 'y', '--run', 'nope']) == 2
  assert 'NAME=WORKDIR' in capsys.readouterr().err
