import os

import cv2
import numpy as np
import pytest

from gid_jax.data import synthetic, video
from gid_jax.motion import spectral


@pytest.fixture(scope='module')
def scene():
  return synthetic.make_scene(synthetic.load_photo('coffee'), seed=3, width=128, height=80, num_frames=90)


def test_same_seed_same_scene():
  photo = synthetic.load_photo('chelsea')
  a = synthetic.make_scene(photo, seed=5, width=64, height=40)
  b = synthetic.make_scene(photo, seed=5, width=64, height=40)
  c = synthetic.make_scene(photo, seed=6, width=64, height=40)
  np.testing.assert_array_equal(a.shapes, b.shapes)
  np.testing.assert_array_equal(a.phase, b.phase)
  assert not np.allclose(a.phase, c.phase)  # stochastic given the image ...
  np.testing.assert_array_equal(a.region, c.region)  # ... but where things move is set by the image


def test_what_moves_depends_on_content():
  # Left half flat grey, right half a textured colourful photo: only the right half may move.
  photo = video.center_crop_resize(synthetic.load_photo('coffee'), 128, 80).copy()
  photo[:, :64] = 128
  s = synthetic.make_scene(photo, seed=0, width=128, height=80)
  amp = s.amplitude_map()
  assert amp[:, :56].max() < 0.05 * amp.max()
  assert amp[:, 64:].max() > 0.5


def test_flat_picture_still_moves():
  # No pixel reaches the movability threshold: the best superpixel moves whole instead of failing.
  photo = np.full((40, 64, 3), 120, np.uint8)
  photo[:, 32:] = 126
  s = synthetic.make_scene(photo, seed=0, width=64, height=40)
  assert len(s.amp) >= 1 and s.amplitude_map().max() > 0.1


def test_power_falls_with_frequency(scene):
  order = np.argsort(scene.freq)
  # Within a region, higher modes carry less amplitude on average (exp(-f / 2 f_c) times jitter).
  for r in np.unique(scene.region):
    m = scene.region == r
    if m.sum() >= 2:
      f, a = scene.freq[m], scene.amp[m]
      assert a[np.argmax(f)] < a[np.argmin(f)] * 1.5
  assert scene.freq.max() <= 2.9 and scene.freq[order][0] >= 0.3


def test_rendered_frames_follow_the_ground_truth(scene):
  frames = synthetic.render(scene, np.arange(30, 60))
  disp = synthetic.trajectories(scene, 30, 30)
  assert disp.shape == (30, 80, 128, 2) and np.all(disp[0] == 0)
  # Photometric check: frame t sampled at q + disp_t(q) equals frame 0 at q (away from borders).
  for t in (7, 19, 29):
    warped = synthetic._sample(frames[t], synthetic._grid(80, 128) + disp[t])
    err = np.abs(warped - frames[0].astype(np.float32))[4:-4, 4:-4].mean()
    assert err < 1.0, (t, err)
  # Trajectories with and without the time offset agree with the field at rest.
  p = synthetic.rest_positions(synthetic.field(scene, [30])[0])
  q = p + synthetic._sample(synthetic.field(scene, [30])[0], p)
  assert np.abs(q - synthetic._grid(80, 128)).max() < 1e-4


def test_dominant_frequency_of_each_mode_is_recoverable(scene):
  disp = synthetic.trajectories(scene, 0, 90)
  s = np.asarray(spectral.to_spectral_volume(disp, 16))
  amp = np.asarray(spectral.amplitude(s))
  strongest = np.argmax(scene.amp)
  ys, xs = np.unravel_index(np.argmax(np.abs(scene.shapes[strongest])), scene.shapes.shape[1:])
  expect = scene.freq[strongest] * 90 / 30.0  # bin index
  assert abs(np.argmax(amp[1:, ys, xs]) + 1 - expect) <= 1.0


def test_generate_cli_and_resume(tmp_path):
  out = str(tmp_path / 'w')
  assert synthetic.main(['--out', out, '--num-scenes', '2', '--width', '32', '--height', '24',
                         '--num-frames', '8']) == 0
  names = sorted(os.listdir(out))
  assert names == ['scene_00000.mp4', 'scene_00000.scene.npz', 'scene_00001.mp4', 'scene_00001.scene.npz']
  assert video.read_video(os.path.join(out, 'scene_00001.mp4')).shape == (8, 24, 32, 3)
  loaded = synthetic.Scene.load(os.path.join(out, names[1]))
  assert loaded.num_frames == 8 and loaded.photo.shape == (24, 32, 3)
  mtime = os.path.getmtime(os.path.join(out, names[0]))
  synthetic.generate(out, 3, width=32, height=24, num_frames=8, progress=False)
  assert os.path.getmtime(os.path.join(out, names[0])) == mtime  # finished scenes are kept
  assert len(os.listdir(out)) == 6


def test_cli_bad_input(tmp_path, capsys):
  assert synthetic.main(['--out', str(tmp_path), '--photos', str(tmp_path / 'none')]) == 2
  assert 'photo folder not found' in capsys.readouterr().err
  assert synthetic.main(['--out', str(tmp_path), '--crop-min', '0']) == 2
  assert capsys.readouterr().err.strip() == 'error: --crop-min must be in (0, 1], got 0.0'
  with pytest.raises(ValueError, match='not a readable image'):
    bad = tmp_path / 'x.png'
    bad.write_bytes(b'nope')
    synthetic.load_photo(str(bad))


def test_cli_takes_scikit_image_photo_names(tmp_path, capsys):
  out = str(tmp_path / 'named')
  assert synthetic.main(['--out', out, '--num-scenes', '2', '--width', '32', '--height', '24', '--num-frames', '8',
                         '--photos', 'coins,grass', '--seed', '3']) == 0
  ref = str(tmp_path / 'ref')
  synthetic.generate(ref, 2, photos=('coins', 'grass'), seed=3, width=32, height=24, num_frames=8, progress=False)
  for i in range(2):
    a = synthetic.Scene.load(os.path.join(out, f'scene_{i:05d}.scene.npz'))
    b = synthetic.Scene.load(os.path.join(ref, f'scene_{i:05d}.scene.npz'))
    np.testing.assert_array_equal(a.photo, b.photo)
  # Close-up crops (crop_min) give other pictures of the same photos.
  close = str(tmp_path / 'close')
  synthetic.generate(close, 2, photos=('coins', 'grass'), seed=3, width=32, height=24, num_frames=8,
                     progress=False, crop_min=0.2)
  c = synthetic.Scene.load(os.path.join(close, 'scene_00000.scene.npz'))
  a = synthetic.Scene.load(os.path.join(ref, 'scene_00000.scene.npz'))
  assert c.photo.shape == a.photo.shape and not np.array_equal(c.photo, a.photo)
  capsys.readouterr()  # the progress bar of the run above
  assert synthetic.main(['--out', out, '--photos', 'coins,nope']) == 2
  err = capsys.readouterr().err
  assert err.strip() == 'error: not scikit-image photos of DEFAULT_PHOTOS: nope'


def test_occluding_layer_follows_its_ground_truth_and_occludes(tmp_path):
  photo = synthetic.load_photo('coffee')
  plain = synthetic.make_scene(photo, seed=3, width=128, height=80, num_frames=90)
  s = synthetic.make_scene(photo, seed=3, width=128, height=80, num_frames=90, layer_amp_px=8.0)
  assert s.has_layer and not plain.has_layer
  np.testing.assert_array_equal(s.shapes, plain.shapes)  # the option leaves the modal motion alone
  np.testing.assert_array_equal(s.phase, plain.phase)
  frames = synthetic.render(s, np.arange(30, 60))
  disp = synthetic.trajectories(s, 30, 30)
  grid = synthetic._grid(80, 128)
  shifts = synthetic.layer_offset(s, np.arange(30, 60)).astype(np.float32)
  alpha0 = synthetic._sample(s.layer_mask, grid - shifts[0])
  occluded_any = 0
  for t in (7, 19, 29):
    target = grid + disp[t]
    alpha_t = synthetic._sample(s.layer_mask, target - shifts[t])  # layer cover where each pixel lands
    err = np.abs(synthetic._sample(frames[t], target) - frames[0].astype(np.float32)).mean(-1)
    inner = np.zeros_like(alpha0, bool)
    inner[4:-4, 4:-4] = True
    # The layer's inside (2 px from its edge): only bilinear resampling of its texture differs, far less than
    # the same pixels compared without motion.
    on_layer = inner & (cv2.erode((alpha0 > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    background = inner & (alpha0 < 0.01) & (alpha_t < 0.01)
    still = np.abs(frames[t].astype(np.float32) - frames[0]).mean(-1)
    assert on_layer.sum() > 100 and err[on_layer].mean() < min(2.0, 0.4 * still[on_layer].mean()), (
        t, err[on_layer].mean(), still[on_layer].mean())
    assert err[background].mean() < 1.0, (t, err[background].mean())
    # The layer moves by its exact shift; background pixels it lands on are hidden at t (an occlusion).
    moved = disp[t][alpha0 > 0.5]
    np.testing.assert_allclose(moved, np.broadcast_to(shifts[t] - shifts[0], moved.shape), atol=1e-5)
    occluded = inner & (alpha0 < 0.01) & (alpha_t > 0.5)
    occluded_any += occluded.sum()
    if occluded.sum() >= 20:
      assert err[occluded].mean() > 2 * err[background].mean()
  assert occluded_any > 50
  assert s.amplitude_map()[s.layer_mask > 0.5].min() > 2.0  # the layer (at rest) counts as moving
  # Saved and loaded with its layer; a scene file without layer fields still loads (no layer).
  path = str(tmp_path / 'x.scene.npz')
  s.save(path)
  back = synthetic.Scene.load(path)
  np.testing.assert_array_equal(back.plate, s.plate)
  np.testing.assert_array_equal(synthetic.trajectories(back, 30, 5), disp[:5])
  with np.load(path) as z:
    old = {k: z[k] for k in z.files if k in ('photo', 'shapes', 'amp', 'direction', 'freq', 'phase', 'region',
                                            'fps', 'num_frames')}
  np.savez(str(tmp_path / 'old.scene.npz'), **old)
  assert not synthetic.Scene.load(str(tmp_path / 'old.scene.npz')).has_layer
  with pytest.raises(SystemExit):
    synthetic.main(['--out', str(tmp_path / 'bad'), '--layer-amp-px', 'x'])
  assert synthetic.main(['--out', str(tmp_path / 'bad'), '--layer-amp-px', '-1']) == 2


def test_camera_shake_moves_every_pixel_by_its_ground_truth(tmp_path):
  photo = synthetic.load_photo('chelsea')
  plain = synthetic.make_scene(photo, seed=5, width=128, height=80, num_frames=90, layer_amp_px=8.0)
  s = synthetic.make_scene(photo, seed=5, width=128, height=80, num_frames=90, layer_amp_px=8.0, camera_px=12.0)
  assert s.has_camera and not plain.has_camera
  for k in ('shapes', 'phase', 'plate', 'layer_amp'):  # the option leaves the scene's own motion alone
    np.testing.assert_array_equal(getattr(s, k), getattr(plain, k))
  view = synthetic.camera_offset(s, np.arange(90))
  assert 1.5 < np.abs(view - view.mean(0)).max() < 6.0  # about 12 px at 256 width -> ~6 px peak at 128
  frames = synthetic.render(s, np.arange(20, 50))
  disp = synthetic.trajectories(s, 20, 30)
  disp_plain = synthetic.trajectories(plain, 20, 30)
  grid = synthetic._grid(80, 128)
  inner = np.zeros((80, 128), bool)
  inner[10:-10, 10:-10] = True
  for t in (9, 17, 29):
    # Where a layer does not cover it, each pixel lands where its exact trajectory says (as in the photo).
    err = np.abs(synthetic._sample(frames[t], grid + disp[t]) - frames[0].astype(np.float32)).mean(-1)
    still = np.abs(frames[t].astype(np.float32) - frames[0]).mean(-1)
    moving = inner & (np.linalg.norm(view[20 + t] - view[20]) > 0.5)
    if moving.any():
      assert np.median(err[moving]) < 0.3 * np.median(still[moving]) and np.median(err[moving]) < 2.0, (
          t, np.median(err[moving]), np.median(still[moving]))
    # The camera adds the same shift to every pixel's own motion (here the view at frame 0 differs, so
    # compare where the scene's own motion is smooth: the median over the inner pixels).
    extra = np.median((disp[t] - disp_plain[t])[inner], axis=0)
    np.testing.assert_allclose(extra, view[20 + t] - view[20], atol=0.05)
  assert (s.amplitude_map() >= float(np.sum(s.camera_amp))).all()  # every pixel moves
  path = str(tmp_path / 'c.scene.npz')
  s.save(path)
  np.testing.assert_array_equal(synthetic.trajectories(synthetic.Scene.load(path), 20, 5), disp[:5])
  assert synthetic.main(['--out', str(tmp_path / 'bad'), '--camera-px', '-1']) == 2


def test_plants_world_moves_plant_like_pixels_only():
  """Green-yellow textured pixels move; grey texture of the same strength and a flat green never do; a
  still scene moves nothing."""
  rng = np.random.default_rng(0)
  h, w = 80, 128
  tex = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.0)
  tex = 60 * tex / tex.std()
  photo = np.zeros((h, w, 3), np.float32)
  photo[:, :64] = np.stack([70 + tex[:, :64], 150 + tex[:, :64], 40 + 0.3 * tex[:, :64]], -1)  # textured green
  photo[:, 64:96] = (120 + tex[:, 64:96])[..., None]  # textured grey
  photo[:, 96:] = (60, 160, 50)  # flat green
  photo = np.clip(photo, 0, 255).astype(np.uint8)
  plant = synthetic.plant_mask(photo)
  assert plant[:, 8:56].mean() > 0.9 and plant[:, 72:88].max() < 0.5 and plant[:, 104:].max() < 0.5
  scene = synthetic.make_scene(photo, seed=1, width=w, height=h, num_frames=30, world='plants', still_fraction=0)
  amp = scene.amplitude_map()
  assert amp[:, 8:56].mean() > 0.3 and amp[:, 76:84].max() < 0.01 and amp[:, 108:].max() < 0.01
  d = synthetic.trajectories(scene, 0, 30)
  assert np.abs(d[:, :, 72:90]).max() < 0.05 and np.abs(d[:, :, 106:]).max() < 0.05  # grey texture, flat green
  assert np.abs(d[:, :, 8:56]).max() > 0.5
  still = synthetic.make_scene(photo, seed=1, width=w, height=h, num_frames=30, world='plants', still_fraction=1)
  assert still.amplitude_map().max() == 0 and np.abs(synthetic.trajectories(still, 3, 10)).max() == 0
  frames = synthetic.render(still, [0, 7])
  assert np.array_equal(frames[0], frames[1])
  with pytest.raises(ValueError, match='world must be one of'):
    synthetic.make_scene(photo, seed=1, world='jungle')


def test_plants_world_cli_options_are_checked(tmp_path, capsys):
  out = tmp_path / 'bad'
  assert synthetic.main(['--out', str(out), '--world', 'plants', '--still-fraction', '2']) == 2
  assert capsys.readouterr().err.strip() == 'error: --still-fraction must be in [0, 1], got 2.0'
  with pytest.raises(SystemExit) as e:
    synthetic.main(['--out', str(out), '--world', 'jungle'])
  assert e.value.code == 2 and "invalid choice: 'jungle'" in capsys.readouterr().err
  assert not out.exists()


def test_photometric_jitter_changes_the_photo_and_the_motion_follows_the_rule(tmp_path):
  """jitter_photo is seeded, keeps the shape and dtype, and strength 0 is the identity; generate --jitter
  changes each scene's photo while --jitter 0 leaves every scene as before (its own random stream)."""
  photo = synthetic.load_photo('grass')
  a = synthetic.jitter_photo(photo, np.random.default_rng(3), 0.7)
  assert a.shape == photo.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, synthetic.jitter_photo(photo, np.random.default_rng(3), 0.7))
  assert np.abs(a.astype(int) - photo).mean() > 3
  np.testing.assert_allclose(synthetic.jitter_photo(photo, np.random.default_rng(3), 0.0), photo, atol=2)
  kw = dict(num_scenes=2, photos=('chelsea',), width=32, height=20, num_frames=4, progress=False, world='plants')
  plain = synthetic.generate(str(tmp_path / 'plain'), **kw)
  again = synthetic.generate(str(tmp_path / 'again'), jitter=0.0, **kw)
  jittered = synthetic.generate(str(tmp_path / 'jit'), jitter=0.8, **kw)
  load = lambda p: synthetic.Scene.load(synthetic.scene_path(p))
  for p, q, r in zip(plain, again, jittered):
    np.testing.assert_array_equal(load(p).photo, load(q).photo)
    assert not np.array_equal(load(p).photo, load(r).photo)
  with pytest.raises(ValueError, match='jitter must be in'):
    synthetic.generate(str(tmp_path / 'bad'), jitter=1.5, **kw)
  assert synthetic.main(['--out', str(tmp_path / 'bad'), '--jitter', '-0.1']) == 2
