"""Motion metrics against float64 NumPy references on fresh random inputs."""

import numpy as np
import pytest

from gid_jax.eval import motion_metrics as motion
from gid_jax.motion import spectral


def _spec(rng, k=6, h=5, w=7, scale=1.0):
  return rng.normal(0, scale, (k, h, w, 4))


def test_trajectory_epe(rng):
  pred = rng.normal(0, 2, (9, 5, 6, 2))
  true = rng.normal(0, 2, (9, 5, 6, 2))
  ref = np.mean([np.hypot(*(pred[t, y, x] - true[t, y, x]))
                 for t in range(9) for y in range(5) for x in range(6)])
  np.testing.assert_allclose(motion.trajectory_epe(pred, true), ref, rtol=1e-12)
  assert motion.trajectory_epe(pred, pred) == 0.0
  with pytest.raises(ValueError, match='same shape'):
    motion.trajectory_epe(pred, true[:-1])


def test_power_spectrum_error(rng):
  pred, true = _spec(rng), _spec(rng, scale=2.0)
  k = pred.shape[0]
  p = np.array([np.mean([[np.sum(pred[i, y, x] ** 2) for x in range(7)] for y in range(5)]) for i in range(k)])
  q = np.array([np.mean([[np.sum(true[i, y, x] ** 2) for x in range(7)] for y in range(5)]) for i in range(k)])
  out = motion.power_spectrum_error(pred, true)
  np.testing.assert_allclose(out['pred_power'], p, rtol=1e-12)
  np.testing.assert_allclose(out['true_power'], q, rtol=1e-12)
  np.testing.assert_allclose(out['relative'], (p - q) / q, rtol=1e-10)
  np.testing.assert_allclose(out['log'], np.log(p / q), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out['mean_abs_log'], np.mean(np.abs(np.log(p / q))), rtol=1e-10)
  # Same definition as the float32 helper of gid_jax.motion.spectral.
  np.testing.assert_allclose(out['pred_power'], np.asarray(spectral.power_spectrum(pred.astype(np.float32))),
                             rtol=1e-5)
  same = motion.power_spectrum_error(pred, pred)
  assert same['mean_abs_relative'] == 0.0 and same['mean_abs_log'] == 0.0
  # Batch axes are pooled.
  batched = motion.power_spectrum_error(np.stack([pred, pred]), np.stack([true, true]))
  np.testing.assert_allclose(batched['relative'], out['relative'], rtol=1e-12)


def test_motion_rms_is_rms_of_the_trajectory(rng):
  spec = _spec(rng, k=5, h=4, w=3)
  num_frames = 64
  # Trajectories by spectral.py's inverse DFT, in float64: F_t = Re S_0 + 2 sum_k Re[S_k e^{2 pi i k t / T}].
  t = np.arange(num_frames)
  disp = np.zeros((num_frames, 4, 3, 2))
  for c in range(2):
    s = spec[..., 2 * c] + 1j * spec[..., 2 * c + 1]
    disp[..., c] = s[0].real
    for k in range(1, 5):
      disp[..., c] += 2 * np.real(s[k][None] * np.exp(2j * np.pi * k * t / num_frames)[:, None, None])
  rms = np.sqrt(np.mean(np.sum((disp - disp.mean(axis=0)) ** 2, axis=-1), axis=0))
  np.testing.assert_allclose(motion.motion_rms(spec), rms, rtol=1e-10)
  # The JAX one (the training loss's moving-mask target) against this float64 reference, gradient included.
  import jax  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(spectral.motion_rms(np.float32(spec)), rms, rtol=1e-5)
  w = rng.normal(size=rms.shape)
  grad = jax.grad(lambda s: (spectral.motion_rms(s) * w).sum())(spec.astype(np.float32))
  ref = np.zeros_like(spec)
  ref[1:] = 2.0 * spec[1:] * (w / rms)[None, ..., None]  # d sqrt(2 sum s^2) / ds = 2 s / rms
  np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-6)


def test_moving_region_iou(rng):
  pred, true = _spec(rng, h=16, w=16), _spec(rng, h=16, w=16)
  thr = float(np.median(motion.motion_rms(true)))
  a = np.sqrt(2 * np.sum(pred[1:] ** 2, axis=(0, 3))) > thr
  b = np.sqrt(2 * np.sum(true[1:] ** 2, axis=(0, 3))) > thr
  ref = np.sum(a & b) / np.sum(a | b)
  np.testing.assert_allclose(motion.moving_region_iou(pred, true, thr), ref, rtol=1e-12)
  assert motion.moving_region_iou(pred, pred, thr) == 1.0
  # The DC term (a constant offset) is not motion.
  static = np.zeros_like(pred)
  static[0] = 50.0
  assert motion.moving_region_iou(static, static, 0.1) == 1.0  # both empty
  assert motion.moving_region_iou(static, true, thr) == 0.0


def test_moving_region_auc_matches_pairwise_counting(rng):
  pred, true = _spec(rng, h=8, w=8), _spec(rng, h=8, w=8)
  thr = float(np.median(motion.motion_rms(true)))
  pred[1:, 0, :5] = pred[1:, 0, 5:6]  # six tied scores: ties count one half
  score = np.sqrt(2 * np.sum(pred[1:].astype(np.float64) ** 2, axis=(0, 3))).ravel()
  label = (np.sqrt(2 * np.sum(true[1:].astype(np.float64) ** 2, axis=(0, 3))) > thr).ravel()
  pos, neg = score[label], score[~label]
  ref = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
  np.testing.assert_allclose(motion.moving_region_auc(pred, true, thr), ref, rtol=1e-12)
  assert motion.moving_region_auc(true, true, thr) == 1.0
  assert np.isnan(motion.moving_region_auc(pred, np.zeros_like(true), thr))
  # Any score (e.g. the mask head's probability) through the same counting.
  np.testing.assert_allclose(motion.region_auc(score.reshape(8, 8), label.reshape(8, 8)), ref, rtol=1e-12)
  with pytest.raises(ValueError, match='differ in size'):
    motion.region_auc(score, label[:-1])


def test_loop_closure_error(rng):
  disp = rng.normal(0, 1, (2, 10, 4, 5, 2))  # a batch of two
  pos = np.mean([np.linalg.norm(disp[b, -1, y, x] - disp[b, 0, y, x])
                 for b in range(2) for y in range(4) for x in range(5)])
  vel = np.mean([np.linalg.norm((disp[b, 9, y, x] - disp[b, 8, y, x]) - (disp[b, 1, y, x] - disp[b, 0, y, x]))
                 for b in range(2) for y in range(4) for x in range(5)])
  out = motion.loop_closure_error(disp)
  np.testing.assert_allclose(out['position'], pos, rtol=1e-12)
  np.testing.assert_allclose(out['velocity'], vel, rtol=1e-12)
  still = np.repeat(disp[0, :1], 10, axis=0)
  assert motion.loop_closure_error(still) == {'position': 0.0, 'velocity': 0.0}


def test_loop_closure_periodic_trajectory():
  # A cosine whose period is T - 1 frames returns exactly to its start: zero position error, and a velocity
  # error of the order of its acceleration (the resolution of one-sided differences).
  num_frames, amplitude = 61, 3.0
  t = np.arange(num_frames)
  x = amplitude * (np.cos(2 * np.pi * t / (num_frames - 1)) - 1)
  disp = np.zeros((num_frames, 2, 2, 2))
  disp[..., 0] = x[:, None, None]
  out = motion.loop_closure_error(disp)
  assert out['position'] < 1e-12
  omega = 2 * np.pi / (num_frames - 1)
  assert out['velocity'] < 1.1 * amplitude * omega ** 2
  # A clip that stops half-way round does not loop.
  half = motion.loop_closure_error(disp[:num_frames // 2])
  assert half['position'] > 5.0


def test_shape_errors():
  with pytest.raises(ValueError, match='spectral volume'):
    motion.moving_region_iou(np.zeros((4, 4, 4, 2)), np.zeros((4, 4, 4, 2)))
  with pytest.raises(ValueError, match='at least 3 frames'):
    motion.loop_closure_error(np.zeros((2, 4, 4, 2)))


def test_movability_score_auc_reads_the_synthetic_worlds_rule():
  from gid_jax.data import synthetic
  from gid_jax.eval import motion_report
  from gid_jax.motion import spectral
  scene = synthetic.make_scene(synthetic.load_photo('astronaut'), seed=0, width=64, height=40, num_frames=40)
  spec = np.asarray(spectral.to_spectral_volume(synthetic.trajectories(scene, 0, 40), 8))[None]
  auc = motion_report.movability_auc(scene.photo[None], spec, 0.1)
  score = synthetic.movability(scene.photo)
  moving = motion.motion_rms(spec)[0] > 0.1
  ref = np.mean(score[moving][:, None] > score[~moving][None])  # no ties in a blurred float score
  np.testing.assert_allclose(auc, ref, rtol=1e-9)
  assert auc > 0.6  # scenes move where the score is high


def test_amplitude_ratios_on_moving_and_still_pixels(rng):
  """motion_report.motion_metrics: the predicted RMS motion on truly moving pixels over the truth's, and on
  truly still pixels over the truth's moving amplitude (float64 reference by hand)."""
  from gid_jax.eval import motion_report  # pylint: disable=g-import-not-at-top
  true = _spec(rng, k=4, h=8, w=8)
  true[:, :, 4:] = 0.0  # the right half is still
  pred = 1.5 * true
  pred[:, :, 4:] = 0.05 * _spec(rng, k=4, h=8, w=8)[:, :, 4:]
  rms_t, rms_p = motion.motion_rms(true[None]), motion.motion_rms(pred[None])
  moving = rms_t > 0.1
  assert moving[..., :4].all() and not moving[..., 4:].any()
  out = motion_report.motion_metrics(pred[None], true[None], 0.1)
  assert out['amp_moving_ratio'] == pytest.approx(1.5, rel=1e-6)
  assert out['amp_still_ratio'] == pytest.approx(rms_p[~moving].mean() / rms_t[moving].mean(), rel=1e-6)
  assert 0 < out['amp_still_ratio'] < 0.2
  assert motion.amplitude_ratios(pred[None], true[None], 0.1) == (out['amp_moving_ratio'], out['amp_still_ratio'])
  assert all(np.isnan(motion.amplitude_ratios(pred[None], np.zeros_like(true)[None], 0.1)))  # nothing moves


def test_imag_real_ratio_flags_cosine_only_volumes(rng):
  """motion_report.motion_metrics' phase balance: 1 for the truth itself, ~0 when the imaginary parts are
  dropped (what the bundled VAE does), float64 reference by hand."""
  from gid_jax.eval import motion_report  # pylint: disable=g-import-not-at-top
  true = _spec(rng, k=4, h=8, w=8)[None]
  assert motion_report.motion_metrics(true, true, 0.1)['imag_real_ratio'] == pytest.approx(1.0)
  cos_only = true.copy()
  cos_only[..., 1::2] *= 0.04
  ratio = lambda s: np.abs(s[:, 1:, ..., 1::2].astype(np.float64)).mean() / np.abs(s[:, 1:, ..., 0::2]).mean()
  out = motion_report.motion_metrics(cos_only, true, 0.1)['imag_real_ratio']
  assert out == pytest.approx(ratio(cos_only) / ratio(true), rel=1e-5) and out < 0.05
