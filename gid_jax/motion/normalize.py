"""Frequency-adaptive normalisation of spectral volumes (SPEC.md section 3).

Pixel-unit volumes are called ``spec_KxHxWx4``; normalised ones ``nspec_KxHxWx4``. The two never mix: only
:func:`normalize` makes an ``nspec`` and only :func:`denormalize` turns one back.

    nspec = sign(spec) * sqrt(|spec| / s)        (power='sqrt', the paper's choice)
    spec  = sign(nspec) * nspec**2 * s           (its exact inverse)

``s`` has shape (K, 4). In the paper's mode (``'adaptive'``) ``s[k, :]`` is the ``percentile``-th (95th by
default) percentile of |coefficient| at frequency k over the training set, the same for all four real
channels, taken over the coefficients of at least ``min_magnitude`` pixels (1e-3 by default; 0 takes all).
Why the floor: on estimated flow (the paper's data) almost every coefficient is above it, so the scale is
the paper's; on exact synthetic motion most pixels are exactly still, and the percentile over all of them
measures how much of the world moves instead of how it moves. Where more than 95% of a bin's coefficients
are exact zeros its scale falls to the 1e-6 floor and moving pixels normalise to hundreds (docs/RESULTS.md,
"Believable motion"). The ablation "w/o adaptive norm" (``'image_size'``) divides x channels
by the image width and y channels by the image height instead.

Percentiles over a real dataset (150K volumes of 160x256x4 values per frequency) do not fit in memory, so
:class:`ScaleAccumulator` streams them into a log-spaced histogram per frequency: 12 decades in 6144 bins,
interpolated in log space, so a fitted scale is within 0.5% (relative) of the exact percentile.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from gid_jax import fileio
from gid_jax.fileio import atomic_write_text

MODES = ('adaptive', 'image_size')
POWERS = ('sqrt', 'none')
STATS_FILENAME = 'norm_stats.json'

_LOG_LO, _LOG_HI, _NUM_BINS = -8.0, 4.0, 6144


@dataclasses.dataclass(frozen=True)
class NormStats:
  """Everything needed to (de)normalise: scales (K x 4) plus how they were made."""
  scales: tuple[tuple[float, float, float, float], ...]
  mode: str = 'adaptive'
  power: str = 'sqrt'
  percentile: float = 95.0
  num_values: int = 0
  min_magnitude: float = 0.0  # the percentile is over |coefficients| >= this (0: all; older stats files)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'normalisation mode must be one of {MODES}, got {self.mode!r}')
    if self.power not in POWERS:
      raise ValueError(f'normalisation power must be one of {POWERS}, got {self.power!r}')
    arr = np.asarray(self.scales, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
      raise ValueError(f'normalisation scales must be a finite positive K x 4 table, got {arr.tolist()}')

  @property
  def num_freqs(self) -> int:
    return len(self.scales)

  @property
  def scales_Kx4(self) -> np.ndarray:
    return np.asarray(self.scales, np.float32)

  def to_json(self) -> str:
    d = dataclasses.asdict(self)
    if not self.min_magnitude:  # stats fitted over all coefficients serialise as they always have
      del d['min_magnitude']
    return json.dumps(d, indent=1)

  @classmethod
  def from_json(cls, text: str) -> 'NormStats':
    d = json.loads(text)
    d['scales'] = tuple(tuple(float(v) for v in row) for row in d['scales'])
    return cls(**d)

  def save(self, path: str) -> None:
    atomic_write_text(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> 'NormStats':
    where = fileio.path(path)  # local, or object storage (gs://)
    if where.is_dir():
      where = where / STATS_FILENAME
    if not where.exists():
      raise FileNotFoundError(f'normalisation statistics not found: {where}')
    return cls.from_json(where.read_text())


def _xp(x):
  """NumPy for NumPy inputs (input pipelines stay free of JAX), jax.numpy otherwise."""
  return np if isinstance(x, np.ndarray) else jnp


def _scales(stats: NormStats, like, xp):
  scales = stats.scales_Kx4
  k = like.shape[-4]
  if k != scales.shape[0]:
    raise ValueError(f'spectral volume has K={k} frequencies but the normalisation stats have '
                     f'{scales.shape[0]}')
  return xp.asarray(scales)[:, None, None, :]


def normalize(spec_KxHxWx4, stats: NormStats):
  """Pixel-unit spectral volume (..., K, H, W, 4) -> normalised ``nspec`` of the same shape."""
  xp = _xp(spec_KxHxWx4)
  x = xp.asarray(spec_KxHxWx4, xp.float32) / _scales(stats, spec_KxHxWx4, xp)
  if stats.power == 'sqrt':
    return xp.sign(x) * xp.sqrt(xp.abs(x))
  return x


def denormalize(nspec_KxHxWx4, stats: NormStats):
  """Normalised ``nspec`` (..., K, H, W, 4) -> pixel-unit spectral volume; exact inverse of normalize."""
  xp = _xp(nspec_KxHxWx4)
  x = xp.asarray(nspec_KxHxWx4, xp.float32)
  if stats.power == 'sqrt':
    x = x * xp.abs(x)  # sign(x) * x^2, differentiable everywhere
  return x * _scales(stats, nspec_KxHxWx4, xp)


def image_size_stats(num_freqs: int, width: int, height: int, power: str = 'sqrt') -> NormStats:
  """The "w/o adaptive norm" ablation: x by image width, y by image height, at every frequency."""
  row = (float(width), float(width), float(height), float(height))
  return NormStats(scales=(row,) * num_freqs, mode='image_size', power=power, percentile=0.0)


class ScaleAccumulator:
  """Streams |coefficients| into per-frequency log histograms; percentiles without keeping the data."""

  def __init__(self, num_freqs: int):
    self.num_freqs = num_freqs
    # Bin 0 holds values below 10**_LOG_LO (exact zeros of static pixels included).
    self.counts = np.zeros((num_freqs, _NUM_BINS + 1), np.int64)

  def update(self, spec_KxHxWx4) -> None:
    spec = np.asarray(spec_KxHxWx4, np.float32)
    spec = spec.reshape((-1,) + spec.shape[-4:])
    if spec.shape[-4] != self.num_freqs or spec.shape[-1] != 4:
      raise ValueError(f'expected (..., {self.num_freqs}, H, W, 4), got {spec.shape}')
    with np.errstate(divide='ignore'):
      logv = np.log10(np.abs(np.moveaxis(spec, -4, 0)).reshape(self.num_freqs, -1))
    if not np.all(np.isfinite(logv) | (logv == -np.inf)):
      raise ValueError('spectral volume contains NaN or Inf')
    logv = np.where(np.isfinite(logv), logv, _LOG_LO - 1.0)  # zeros go to the underflow bin
    idx = np.clip(np.floor((logv - _LOG_LO) / (_LOG_HI - _LOG_LO) * _NUM_BINS).astype(np.int64) + 1,
                  0, _NUM_BINS)
    offsets = np.arange(self.num_freqs)[:, None] * (_NUM_BINS + 1)
    self.counts += np.bincount((idx + offsets).ravel(),
                               minlength=self.num_freqs * (_NUM_BINS + 1)).reshape(self.counts.shape)

  def merge(self, other: 'ScaleAccumulator') -> None:
    self.counts += other.counts

  @property
  def num_values(self) -> int:
    return int(self.counts[0].sum())

  def percentiles(self, percentile: float, min_magnitude: float = 0.0) -> np.ndarray:
    """Per-frequency percentile of the |coefficients| of at least ``min_magnitude``, shape (K,), float64.

    The floor is applied at histogram-bin resolution (the bin holding it counts whole). A frequency with no
    coefficient above it gets the smallest representable value (``stats`` floors it)."""
    if not 0.0 < percentile <= 100.0:
      raise ValueError(f'percentile must be in (0, 100], got {percentile}')
    if not 0.0 <= min_magnitude < 10 ** _LOG_HI:
      raise ValueError(f'min_magnitude must be in [0, {10 ** _LOG_HI:g}), got {min_magnitude}')
    if self.counts[0].sum() == 0:
      raise ValueError('cannot fit normalisation statistics on an empty dataset')
    out = np.zeros(self.num_freqs)
    width = (_LOG_HI - _LOG_LO) / _NUM_BINS
    first = 0
    if min_magnitude > 0.0:
      first = int(np.clip(np.floor((np.log10(min_magnitude) - _LOG_LO) / width) + 1, 0, _NUM_BINS))
    for k in range(self.num_freqs):
      c = self.counts[k].copy()
      c[:first] = 0
      total = c.sum()
      if total == 0:
        out[k] = 10 ** _LOG_LO
        continue
      rank = percentile / 100.0 * total
      cum = np.cumsum(c)
      b = int(np.searchsorted(cum, rank, side='left'))
      if b == 0:
        out[k] = 10 ** _LOG_LO
        continue
      before = cum[b - 1]
      frac = (rank - before) / max(c[b], 1)
      out[k] = 10 ** (_LOG_LO + (b - 1 + frac) * width)
    return out

  def stats(self, percentile: float = 95.0, power: str = 'sqrt', min_scale: float = 1e-6,
            min_magnitude: float = 0.0) -> NormStats:
    # A frequency with no motion at all in the training set would get scale 0; floor it so that the
    # transform stays finite (such a frequency then normalises to ~0 everywhere, as it should).
    p = np.maximum(self.percentiles(percentile, min_magnitude), min_scale)
    return NormStats(scales=tuple((float(v),) * 4 for v in p), mode='adaptive', power=power,
                     percentile=float(percentile), num_values=self.num_values,
                     min_magnitude=float(min_magnitude))


def fit_stats(specs: Iterable, percentile: float = 95.0, power: str = 'sqrt',
              min_magnitude: float = 0.0) -> NormStats:
  """Fit adaptive stats on an iterable of spectral volumes (..., K, H, W, 4)."""
  acc = None
  for spec in specs:
    if acc is None:
      acc = ScaleAccumulator(np.shape(spec)[-4])
    acc.update(spec)
  if acc is None:
    raise ValueError('cannot fit normalisation statistics on an empty dataset')
  return acc.stats(percentile, power, min_magnitude=min_magnitude)


def make_stats(mode: str, acc: ScaleAccumulator | None, *, percentile: float, power: str,
               num_freqs: int, width: int, height: int, min_magnitude: float = 0.0) -> NormStats:
  """Stats for a normalisation config: fitted percentiles or the image-size ablation."""
  if mode == 'adaptive':
    if acc is None:
      raise ValueError('adaptive normalisation needs training data to fit on')
    return acc.stats(percentile, power, min_magnitude=min_magnitude)
  if mode == 'image_size':
    return image_size_stats(num_freqs, width, height, power)
  raise ValueError(f'normalisation mode must be one of {MODES}, got {mode!r}')


def percentile_error_bound() -> float:
  """Largest relative error of a histogram percentile against the exact one."""
  return 10 ** ((_LOG_HI - _LOG_LO) / _NUM_BINS) - 1.0


__all__: Sequence[str] = ('NormStats', 'normalize', 'denormalize', 'ScaleAccumulator', 'fit_stats',
                          'image_size_stats', 'make_stats', 'STATS_FILENAME',
                          'percentile_error_bound')
