"""Distances between two sets of network features: Fréchet distance (FID, FVD, DT-FVD) and KID.

Everything here is NumPy float64 on features ``(N, D)``; the networks that make the features live in
``inception.py`` and ``i3d.py``.

* Fréchet distance of the Gaussians fitted to the two sets (mean, covariance with ``ddof=1``):
  ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``. The trace of the matrix square root is computed
  as ``sum(sqrt(eig(S1^{1/2} S2 S1^{1/2})))``: the matrix in the middle is symmetric positive semi-definite,
  so a symmetric eigensolver gives real, non-negative eigenvalues (tiny negative ones from rounding are
  clipped). This is exact in exact arithmetic (``S1 S2`` is similar to it), needs no complex ``sqrtm`` and
  stays well behaved when the covariances are singular, as they are whenever N <= D (2048-d Inception
  features of a few hundred frames). From features, small sets take an equivalent O(N M D) route that
  never forms the D x D covariances (see ``frechet_distance_from_features``).
* KID (Binkowski et al. 2018): the unbiased estimator of the squared MMD with the polynomial kernel
  ``k(x, y) = (x . y / D + 1)^3``, averaged over random subsets when the sets are large. Returned raw;
  papers (and Table 1) report KID x 100.
"""

from __future__ import annotations

import numpy as np


def _as_features(name: str, f) -> np.ndarray:
  f = np.asarray(f, dtype=np.float64)
  if f.ndim != 2:
    raise ValueError(f'{name}: expected features of shape (N, D), got {f.shape}')
  if f.shape[0] < 2:
    raise ValueError(f'{name}: need at least 2 samples to estimate a covariance / MMD, got {f.shape[0]}')
  if not np.all(np.isfinite(f)):
    raise ValueError(f'{name}: features contain NaN or inf')
  return f


def gaussian_stats(features_NxD) -> tuple[np.ndarray, np.ndarray]:
  """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of a feature set, float64."""
  f = _as_features('features', features_NxD)
  return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1)


def _sqrt_psd(sigma_DxD: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((sigma_DxD + sigma_DxD.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64, see the module docstring)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[-1]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'inconsistent Gaussian shapes: mu {mu1.shape} / {mu2.shape}, '
                     f'sigma {sigma1.shape} / {sigma2.shape}')
  root1 = _sqrt_psd(sigma1)
  middle = root1 @ sigma2 @ root1
  eig = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_covmean = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
  diff = mu1 - mu2
  dist = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
  # Identical sets give 0 up to rounding, which can land a hair below it.
  return float(max(dist, 0.0))


def frechet_distance_from_features(features1_NxD, features2_MxD) -> float:
  """Fréchet distance between the Gaussians fitted to two feature sets (FID / FVD from features).

  With few samples (N M min(N, M) < D^3, e.g. a few hundred 2048-d features) it never forms the D x D
  covariances: with centred features A1 (N x D), A2 (M x D), S1 S2 has the same non-zero eigenvalues as
  (A2 A1^T)^T (A2 A1^T) / ((N - 1)(M - 1)), so tr((S1 S2)^{1/2}) is the sum of the singular values of
  A2 A1^T divided by sqrt((N - 1)(M - 1)): exact, and O(N M D) instead of O(D^3).
  """
  f1 = _as_features('features1', features1_NxD)
  f2 = _as_features('features2', features2_MxD)
  if f1.shape[1] != f2.shape[1]:
    raise ValueError(f'feature dimensions differ: {f1.shape} vs {f2.shape}')
  (n, d), m = f1.shape, f2.shape[0]
  if n * m * min(n, m) >= d ** 3:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
  mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
  a1, a2 = f1 - mu1, f2 - mu2
  tr1 = np.sum(a1 * a1) / (n - 1)
  tr2 = np.sum(a2 * a2) / (m - 1)
  tr_covmean = np.sum(np.linalg.svd(a2 @ a1.T, compute_uv=False)) / np.sqrt((n - 1) * (m - 1))
  diff = mu1 - mu2
  return float(max(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean, 0.0))


def polynomial_kernel(x_NxD: np.ndarray, y_MxD: np.ndarray) -> np.ndarray:
  """KID's kernel ``(x . y / D + 1)^3``, (N, M)."""
  return (x_NxD @ y_MxD.T / x_NxD.shape[1] + 1.0) ** 3


def mmd2_unbiased(x_NxD, y_MxD) -> float:
  """Unbiased squared MMD with the polynomial kernel (the sets may differ in size).

  ``sum_{i != j} k(x_i, x_j) / (N (N - 1)) + sum_{i != j} k(y_i, y_j) / (M (M - 1)) - 2 mean k(x_i, y_j)``.
  """
  x = _as_features('x', x_NxD)
  y = _as_features('y', y_MxD)
  n, m = x.shape[0], y.shape[0]
  kxx = polynomial_kernel(x, x)
  kyy = polynomial_kernel(y, y)
  kxy = polynomial_kernel(x, y)
  return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2.0 * kxy.mean())


def kid_from_features(features1_NxD, features2_MxD, *, subset_size: int = 1000, num_subsets: int = 100,
                      seed: int = 0) -> float:
  """Kernel Inception Distance (raw, not x100).

  If both sets have at most ``subset_size`` samples, the unbiased MMD^2 of the full sets (deterministic).
  Otherwise the mean over ``num_subsets`` random subsets of ``min(subset_size, N, M)`` samples drawn
  without replacement from each set (the usual protocol, which bounds the cost at O(subset_size^2)),
  seeded by ``seed``. The estimator assumes independent sets: a set against itself gives
  ``2 / (N - 1) (mean_ij k(x_i, x_j) - mean_i k(x_i, x_i))``, a small negative number, not 0.
  """
  f1 = _as_features('features1', features1_NxD)
  f2 = _as_features('features2', features2_MxD)
  if f1.shape[1] != f2.shape[1]:
    raise ValueError(f'feature dimensions differ: {f1.shape} vs {f2.shape}')
  if subset_size < 2 or num_subsets < 1:
    raise ValueError(f'need subset_size >= 2 and num_subsets >= 1, got {subset_size}, {num_subsets}')
  if f1.shape[0] <= subset_size and f2.shape[0] <= subset_size:
    return mmd2_unbiased(f1, f2)
  m = min(subset_size, f1.shape[0], f2.shape[0])
  rng = np.random.default_rng(seed)
  total = 0.0
  for _ in range(num_subsets):
    a = f1[rng.choice(f1.shape[0], m, replace=False)]
    b = f2[rng.choice(f2.shape[0], m, replace=False)]
    total += mmd2_unbiased(a, b)
  return total / num_subsets
