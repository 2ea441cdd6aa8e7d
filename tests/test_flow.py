import os

import numpy as np
import psutil
import pytest

from gid_jax.data import synthetic, video
from gid_jax.motion import flow, spectral


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
  """A synthetic scene at 128 x 80, written as H.264 and decoded again: flow sees real codec noise."""
  scene = synthetic.make_scene(synthetic.load_photo('astronaut'), seed=11, width=128, height=80,
                               num_frames=150)
  path = str(tmp_path_factory.mktemp('flow') / 'scene.mp4')
  video.write_video(path, synthetic.render(scene, np.arange(150)), fps=30, quality=12)
  return scene, video.read_video(path)


def test_trajectories_recover_ground_truth(recorded):
  scene, frames = recorded
  disp = flow.extract_trajectories(frames)
  gt = synthetic.trajectories(scene, 0, 150)
  assert disp.shape == gt.shape and np.all(disp[0] == 0)
  epe = np.linalg.norm(disp - gt, axis=-1)
  moving = synthetic.moving_mask(scene, 0.1)
  far = ~synthetic.moving_mask(scene, 0.01)
  print(f'EPE all {epe.mean():.3f} moving {epe[:, moving].mean():.3f} static {epe[:, far].mean():.3f}')
  assert epe.mean() < 0.5
  assert np.linalg.norm(disp, axis=-1)[:, far].mean() < 0.1  # static regions ~0
  s = np.asarray(spectral.amplitude(spectral.to_spectral_volume(disp, 16)))[1:]
  g = np.asarray(spectral.amplitude(spectral.to_spectral_volume(gt, 16)))[1:]
  # "Dominant" is well defined where the strongest ground-truth bin beats the runner-up by 1.5x.
  top2 = np.sort(g, axis=0)[-2:]
  clear = (top2[1] > 0.25) & (top2[1] > 1.5 * top2[0])
  agree = (np.argmax(s, axis=0) == np.argmax(g, axis=0))[clear].mean()
  print(f'dominant bin exact on {agree:.4f} of {clear.sum()} moving pixels')
  assert clear.sum() > 200 and agree > 0.99


def test_flow_is_from_frame_zero_not_chained(recorded):
  _, frames = recorded
  est = flow.FlowEstimator(warm_start=False)
  disp = flow.extract_trajectories(frames[:20], estimator=est)
  direct = est(flow.to_gray(frames[0]), flow.to_gray(frames[19]))
  np.testing.assert_array_equal(disp[19], direct)


def test_filters():
  t, h, w = 30, 20, 30
  osc = np.zeros((t, h, w, 2), np.float32)
  osc[:, :8, :8, 0] = 2.0 * np.sin(np.arange(t) / 3)[:, None, None]
  assert flow.filter_clip(osc).keep
  pan = osc + np.linspace(0, 5, t)[:, None, None, None]  # camera pans 5 px
  r = flow.filter_clip(pan)
  assert not r.keep and r.reason == 'camera_motion' and 'camera motion' in r.describe()
  r = flow.filter_clip(osc * 0.01)
  assert not r.keep and r.reason == 'static'
  assert flow.filter_clip(pan, camera_motion_px=0).keep  # a threshold <= 0 disables the test


def test_methods_and_bad_input(recorded):
  _, frames = recorded
  d = flow.extract_trajectories(frames[:5], method='farneback')
  assert d.shape == (5, 80, 128, 2) and np.isfinite(d).all()
  with pytest.raises(ValueError, match='flow method'):
    flow.FlowEstimator('raft')
  with pytest.raises(ValueError, match='uint8'):
    flow.extract_trajectories(frames.astype(np.float32))
  with pytest.raises(ValueError, match='at least 2 frames'):
    flow.extract_trajectories(frames[:1])


def test_memory_does_not_grow_with_clips(recorded):
  _, frames = recorded
  est = flow.FlowEstimator()
  proc = psutil.Process(os.getpid())
  for _ in range(3):  # warm up allocator pools
    flow.extract_trajectories(frames[:40], estimator=est)
  before = proc.memory_info().rss
  for _ in range(40):
    flow.extract_trajectories(frames[:40], estimator=est)
  grown = (proc.memory_info().rss - before) / 2**20
  assert grown < 16, f'RSS grew {grown:.1f} MiB over 40 clips'
