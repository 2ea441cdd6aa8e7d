"""Motion metrics: how close predicted motion is to the true one, in pixels, NumPy float64.

Inputs follow the house conventions (ARCHITECTURE.md): displacements ``disp_TxHxWx2`` (pixels, x then y,
``disp[t]`` = where each pixel of frame 0 is at time t minus its position) and spectral volumes
``spec_KxHxWx4`` in pixel units (channels re x, im x, re y, im y; forward-normalised DFT of
``gid_jax.motion.spectral``: a cosine of amplitude A at bin k has ``|S_k| = A / 2``). Any leading batch axes
are allowed and pooled (each function says how). NumPy or JAX arrays are accepted; results are Python
floats or float64 NumPy arrays.

* ``trajectory_epe``: mean end-point error ``|pred - true|_2`` over all frames, pixels (and batch).
* ``power_spectrum_error``: per frequency, the mean motion power ``P_k = mean_pixels sum_c S_k,c^2``
  (``gid_jax.motion.spectral.power_spectrum`` in float64) of both volumes, the relative error
  ``(P_pred - P_true) / P_true`` and the log error ``log(P_pred / P_true)``, plus their mean absolute values.
* ``moving_region_iou``: IoU of the "moving" masks. A pixel moves when the RMS of its displacement about its
  mean position, ``sqrt(2 sum_{k>=1} sum_c S_k,c^2)`` (Parseval: the root-mean-square over one period of
  the trajectory the volume describes, DC term excluded because a constant offset is not motion), exceeds
  ``threshold_px``. For one cosine of amplitude A this RMS is A / sqrt(2).
* ``amplitude_ratios``: the mean RMS motion predicted on truly moving pixels over the truth's there (1 = the
  right amount), and on truly still pixels over the truth's on moving ones (0 = still things stay still);
  moving as for ``moving_region_iou``; nan when there is no moving (or no still) pixel.
* ``pixel_spectrum_distance``: the Fréchet distance between the per-pixel log-amplitude spectra
  ``log(EPS + |S_k|)``, k >= 1 (:func:`pixel_features`, one K-1 vector per pixel) of the two sets of volumes:
  a distribution-level distance that needs no pairing of predicted and true pixels.
* ``loop_closure_error``: the looping criterion of SPEC.md section 6 (motion self-guidance,
  ``||F_T - F_1|| + ||grad F_T - grad F_1||`` 1-indexed): a T-frame loop plays frames 0..T-1 and starts
  again, and is seamless when the last frame returns to the first one with the same velocity. Position
  error ``mean |F_{T-1} - F_0|_2``; velocity error ``mean |(F_{T-1} - F_{T-2}) - (F_1 - F_0)|_2`` (the
  one-sided velocities at the two ends, px / frame). Note: a trajectory that is exactly periodic with
  period T-1 has zero position error but a velocity error of the order of its acceleration
  (``~ A (2 pi / (T-1))^2`` for amplitude A), the resolution of one-sided differences.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from gid_jax.eval import frechet as frechet_lib

_TINY = 1e-12  # px^2: keeps the relative / log power errors finite for motionless frequencies
EPS = 1e-2  # px: amplitudes below this are "no motion" for the log features of pixel_features


def _arr(name: str, x, last: int) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim < 4 or x.shape[-1] != last:
    kind = 'displacements (..., T, H, W, 2)' if last == 2 else 'a spectral volume (..., K, H, W, 4)'
    raise ValueError(f'{name}: expected {kind}, got shape {x.shape}')
  return x


def _same(a_name, a, b_name, b):
  if a.shape != b.shape:
    raise ValueError(f'{a_name} {a.shape} and {b_name} {b.shape} must have the same shape')


def trajectory_epe(pred_disp_TxHxWx2, true_disp_TxHxWx2) -> float:
  """Mean end-point error in pixels over every frame, pixel (and batch item)."""
  pred = _arr('pred_disp', pred_disp_TxHxWx2, 2)
  true = _arr('true_disp', true_disp_TxHxWx2, 2)
  _same('pred_disp', pred, 'true_disp', true)
  return float(np.mean(np.sqrt(np.sum((pred - true) ** 2, axis=-1))))


def mean_power(spec_KxHxWx4) -> np.ndarray:
  """(K,) mean over pixels (and batch items) of ``sum_c S_k,c^2``, px^2."""
  spec = _arr('spec', spec_KxHxWx4, 4)
  power = np.sum(spec ** 2, axis=-1)  # (..., K, H, W)
  power = np.moveaxis(power, -3, 0).reshape(power.shape[-3], -1)
  return power.mean(axis=1)


def power_spectrum_error(pred_spec_KxHxWx4, true_spec_KxHxWx4) -> dict:
  """Per-frequency power of both volumes and its relative / log error (see the module docstring).

  Returns ``pred_power``, ``true_power``, ``relative``, ``log`` (each (K,)) and ``mean_abs_relative``,
  ``mean_abs_log`` (floats, over k).
  """
  pred = _arr('pred_spec', pred_spec_KxHxWx4, 4)
  true = _arr('true_spec', true_spec_KxHxWx4, 4)
  _same('pred_spec', pred, 'true_spec', true)
  p, q = mean_power(pred), mean_power(true)
  relative = (p - q) / np.maximum(q, _TINY)
  log = np.log(np.maximum(p, _TINY)) - np.log(np.maximum(q, _TINY))
  return dict(pred_power=p, true_power=q, relative=relative, log=log,
              mean_abs_relative=float(np.mean(np.abs(relative))), mean_abs_log=float(np.mean(np.abs(log))))


def motion_rms(spec_KxHxWx4) -> np.ndarray:
  """(..., H, W) RMS displacement about the mean position over one period: sqrt(2 sum_{k>=1} |S_k|^2), float64
  (the reference of ``gid_jax.motion.spectral.motion_rms``, which JAX code such as the training loss uses)."""
  spec = _arr('spec', spec_KxHxWx4, 4)
  return np.sqrt(2.0 * np.sum(spec[..., 1:, :, :, :] ** 2, axis=(-4, -1)))


def moving_region_iou(pred_spec_KxHxWx4, true_spec_KxHxWx4, threshold_px: float = 0.5) -> float:
  """IoU of the pixels whose motion RMS exceeds ``threshold_px`` (pooled over batch items).

  Both masks empty counts as perfect agreement (1.0).
  """
  pred = _arr('pred_spec', pred_spec_KxHxWx4, 4)
  true = _arr('true_spec', true_spec_KxHxWx4, 4)
  _same('pred_spec', pred, 'true_spec', true)
  a = motion_rms(pred) > threshold_px
  b = motion_rms(true) > threshold_px
  union = np.count_nonzero(a | b)
  return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def moving_region_auc(pred_spec_KxHxWx4, true_spec_KxHxWx4, threshold_px: float = 0.5) -> float:
  """Threshold-free localisation: ROC AUC of the predicted motion RMS as a detector of the truly moving
  pixels (RMS above ``threshold_px``), pooled over batch items; 0.5 = no better than chance, 1 = every
  moving pixel is predicted to move more than every still one. Ties count one half (Mann-Whitney U).
  NaN when the truth is all moving or all still."""
  pred = _arr('pred_spec', pred_spec_KxHxWx4, 4)
  true = _arr('true_spec', true_spec_KxHxWx4, 4)
  _same('pred_spec', pred, 'true_spec', true)
  return region_auc(motion_rms(pred), motion_rms(true) > threshold_px)


def region_auc(score, moving) -> float:
  """ROC AUC of any per-pixel ``score`` (e.g. a moving-mask probability) as a detector of the boolean
  ``moving`` of the same shape, pooled; ties count one half; NaN when ``moving`` is all true or all false."""
  score, label = np.asarray(score, np.float64).reshape(-1), np.asarray(moving, bool).reshape(-1)
  if score.shape != label.shape:
    raise ValueError(f'score and moving differ in size: {score.size} vs {label.size}')
  n1 = int(np.count_nonzero(label))
  n0 = label.size - n1
  if n1 == 0 or n0 == 0:
    return float('nan')
  ranks = rankdata(score)  # average ranks for ties
  return float((ranks[label].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def loop_closure_error(disp_TxHxWx2) -> dict:
  """``{'position': px, 'velocity': px / frame}``: how far a loop of these T frames is from seamless.

  Means over pixels (and batch items) of the Euclidean norms defined in the module docstring.
  """
  disp = _arr('disp', disp_TxHxWx2, 2)
  if disp.shape[-4] < 3:
    raise ValueError(f'disp: need at least 3 frames for velocities, got shape {disp.shape}')
  first, last = disp[..., 0, :, :, :], disp[..., -1, :, :, :]
  v_first = disp[..., 1, :, :, :] - first
  v_last = last - disp[..., -2, :, :, :]
  norm = lambda x: np.sqrt(np.sum(x ** 2, axis=-1))
  return dict(position=float(np.mean(norm(last - first))), velocity=float(np.mean(norm(v_last - v_first))))


def amplitude_ratios(pred_spec_KxHxWx4, true_spec_KxHxWx4, threshold_px: float = 0.5) -> tuple[float, float]:
  """(moving, still) amplitude ratios (module docstring), pooled over every pixel of the batch."""
  rms_p = np.asarray(motion_rms(pred_spec_KxHxWx4)).reshape(-1)
  rms_t = np.asarray(motion_rms(true_spec_KxHxWx4)).reshape(-1)
  moving = rms_t > threshold_px
  if not moving.any():
    return float('nan'), float('nan')
  true_amp = float(rms_t[moving].mean())
  still = float(rms_p[~moving].mean()) / true_amp if (~moving).any() else float('nan')
  return float(rms_p[moving].mean()) / true_amp, still


def log_amplitudes(spec_NxKxHxWx4) -> np.ndarray:
  """N x (K-1) x H x W log(EPS + |S_k|) for k >= 1."""
  amp = np.sqrt(np.sum(np.asarray(spec_NxKxHxWx4, np.float64)[:, 1:] ** 2, axis=-1))
  return np.log(EPS + amp)


def pixel_features(spec_NxKxHxWx4) -> np.ndarray:
  """(N*H*W) x (K-1): every pixel's log-amplitude spectrum (:func:`log_amplitudes`)."""
  la = log_amplitudes(spec_NxKxHxWx4)
  return la.transpose(0, 2, 3, 1).reshape(-1, la.shape[1])


def frechet(a_NxD: np.ndarray, b_NxD: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two sets of feature vectors."""
  return float(frechet_lib.frechet_distance(a_NxD.mean(0), np.cov(a_NxD, rowvar=False),
                                            b_NxD.mean(0), np.cov(b_NxD, rowvar=False)))


def pixel_spectrum_distance(pred_NxKxHxWx4, true_NxKxHxWx4) -> float:
  """The pixel-spectrum Fréchet distance (module docstring) between two sets of volumes (K >= 3)."""
  return frechet(pixel_features(true_NxKxHxWx4), pixel_features(pred_NxKxHxWx4))
