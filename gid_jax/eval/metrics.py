"""The paper's image and video metrics on uint8 frames: FID, KID, FVD, DT-FVD and their sliding versions.

Protocol (SPEC.md section 7). Every frame is first centre-cropped to **256 x 128** (width x height; the
``crop=(128, 256)`` argument is (height, width); ``crop=None`` skips it). Frames smaller than the crop are
rejected with a ``ValueError`` naming their shape: nothing is silently upscaled, so resize them yourself
(or pass ``crop=None``) if that is what you want. Odd margins are split with the extra pixel at the end.

* ``fid`` / ``kid``: per frame; crop -> bilinear resize to 299 x 299 (TF1 ``resize_bilinear``, the FID
  convention) -> ``x / 128 - 1`` -> Inception-v3 pool features (2048-d, ``inception.py``). KID is returned
  raw (Table 1 reports KID x 100).
* ``fvd``: clips of ``num_frames`` frames (16 = FVD, 32 = FVD32); crop -> bilinear resize to 224 x 224 (TF1
  ``resize_bilinear``) -> ``2 x / 255 - 1`` -> Kinetics-400 I3D logits averaged over time (400-d), as the
  reference google-research ``frechet_video_distance``.
* ``dtfvd``: the same clips through the DTDB-trained I3D (user-supplied weights, see ``i3d.py``);
  crop -> ``x / 127.5 - 1`` -> bilinear resize to 224 x 224 with ``align_corners=True`` (as Dorkenwald et
  al.'s evaluation code) -> 1024-d pooled Mixed_5c features.
* Which clips: by default the first ``num_frames`` frames of every video (one sample per video, as the
  reference code); ``windows=True`` instead cuts every video into non-overlapping ``num_frames`` windows, each
  one a sample (more samples from long videos).
* ``sliding_fid`` / ``sliding_dtfvd``: one distance per time window (30 frames for FID, 16 for DT-FVD,
  non-overlapping unless ``stride`` says otherwise), over the frames / clips of all videos in that window;
  they show how quality drifts over time.

Inputs: ``images_NxHxWx3`` / ``videos_NxTxHxWx3`` uint8 (numpy or jax). The two sets may differ in size.
Features are extracted by cached, jitted networks in fixed-size batches (``batch_size``), CPU friendly; the
``*_features`` functions are public so that features of a fixed real set can be computed once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.eval import frechet
from gid_jax.eval import i3d
from gid_jax.eval import inception

DEFAULT_CROP = (128, 256)  # (height, width): the paper's 256 x 128 evaluation crop


# ----------------------------------------------------------------------------------------------------------
# Preprocessing.


def _check_uint8(name: str, x, ndim: int, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8:
    raise ValueError(f'{name}: expected uint8 {what}, got dtype {x.dtype}')
  if x.ndim != ndim or x.shape[-1] != 3:
    raise ValueError(f'{name}: expected {what} of shape {"(N, T, H, W, 3)" if ndim == 5 else "(N, H, W, 3)"}, '
                     f'got {x.shape}')
  if x.shape[0] == 0:
    raise ValueError(f'{name}: empty set, shape {x.shape}')
  return x


def center_crop(frames_NxHxWxC, crop: tuple[int, int] | None, name: str = 'frames'):
  """Centre crop of the last-but-one two axes to ``crop = (height, width)``; None returns the input."""
  if crop is None:
    return frames_NxHxWxC
  ch, cw = crop
  h, w = frames_NxHxWxC.shape[-3], frames_NxHxWxC.shape[-2]
  if h < ch or w < cw:
    raise ValueError(f'{name}: frames of {h} x {w} (height x width, array shape {tuple(frames_NxHxWxC.shape)}) '
                     f'are smaller than the evaluation crop {ch} x {cw}; resize them first or pass crop=None')
  top, left = (h - ch) // 2, (w - cw) // 2
  return frames_NxHxWxC[..., top:top + ch, left:left + cw, :]


@functools.lru_cache(maxsize=64)
def _interp_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
  """(out, in) linear-interpolation weights: TF1 resize_bilinear (src = dst * in / out, edge clamped) or
  align_corners (src = dst * (in - 1) / (out - 1)). No antialiasing, as both references."""
  dst = np.arange(size_out, dtype=np.float64)
  if align_corners:
    src = dst * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(dst)
  else:
    src = dst * (size_in / size_out)
  i0 = np.clip(np.floor(src).astype(np.int64), 0, size_in - 1)
  i1 = np.minimum(i0 + 1, size_in - 1)
  frac = src - i0
  m = np.zeros((size_out, size_in))
  np.add.at(m, (np.arange(size_out), i0), 1.0 - frac)
  np.add.at(m, (np.arange(size_out), i1), frac)
  return m


def resize_bilinear(x_NxHxWxC: jax.Array, size: tuple[int, int], *, align_corners: bool = False) -> jax.Array:
  """Bilinear resize of axes (-3, -2) to ``size = (height, width)``, float32 (see ``_interp_matrix``)."""
  h, w = x_NxHxWxC.shape[-3], x_NxHxWxC.shape[-2]
  ry = jnp.asarray(_interp_matrix(h, size[0], align_corners), jnp.float32)
  rx = jnp.asarray(_interp_matrix(w, size[1], align_corners), jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum('oh,...hwc->...owc', ry, jnp.asarray(x_NxHxWxC, jnp.float32), precision=hi)
  return jnp.einsum('pw,...owc->...opc', rx, x, precision=hi)


@jax.jit
def _inception_input(frames_uint8):
  x = resize_bilinear(frames_uint8, (inception.INPUT_SIZE, inception.INPUT_SIZE))
  return x / 128.0 - 1.0


@jax.jit
def _fvd_input(clips_uint8):
  x = resize_bilinear(clips_uint8, (i3d.INPUT_SIZE, i3d.INPUT_SIZE))
  return 2.0 * x / 255.0 - 1.0


@jax.jit
def _dtfvd_input(clips_uint8):
  x = jnp.asarray(clips_uint8, jnp.float32) / 127.5 - 1.0
  return resize_bilinear(x, (i3d.INPUT_SIZE, i3d.INPUT_SIZE), align_corners=True)


def _clips(name: str, videos: np.ndarray, num_frames: int, windows: bool) -> np.ndarray:
  n, t = videos.shape[:2]
  if t < num_frames:
    raise ValueError(f'{name}: videos of {t} frames (shape {videos.shape}) are shorter than '
                     f'num_frames={num_frames}')
  if not windows:
    return videos[:, :num_frames]
  k = t // num_frames
  return videos[:, :k * num_frames].reshape((n * k, num_frames) + videos.shape[2:])


# ----------------------------------------------------------------------------------------------------------
# Features.


def inception_features(images_NxHxWx3, *, crop=DEFAULT_CROP, batch_size: int = 8,
                       weights: str | None = None) -> np.ndarray:
  """(N, 2048) Inception-v3 pool features of uint8 frames (crop, resize to 299, scale)."""
  images = _check_uint8('images', images_NxHxWx3, 4, 'images')
  center_crop(images, crop, 'images')  # a view: fails early, naming the shape, on small frames
  net = inception.get(weights, batch_size)
  return net(images, preprocess=lambda chunk: _inception_input(center_crop(chunk, crop)))


def fvd_features(videos_NxTxHxWx3, *, num_frames: int = 16, windows: bool = False, crop=DEFAULT_CROP,
                 batch_size: int = 2) -> np.ndarray:
  """(M, 400) Kinetics I3D time-averaged logits of the selected clips (M = N, or N * windows)."""
  videos = _check_uint8('videos', videos_NxTxHxWx3, 5, 'videos')
  center_crop(videos, crop, 'videos')
  clips = _clips('videos', videos, num_frames, windows)
  net = i3d.kinetics(batch_size)
  return net(clips, preprocess=lambda chunk: _fvd_input(center_crop(chunk, crop)))


def dtfvd_features(videos_NxTxHxWx3, *, num_frames: int = 16, weights: str | None = None,
                   windows: bool = False, crop=DEFAULT_CROP, batch_size: int = 2) -> np.ndarray:
  """(M, 1024) DTDB I3D features of the selected clips; ``weights`` as in ``i3d.dtfvd``."""
  net = i3d.dtfvd(num_frames, weights, batch_size)  # first: a missing weight file is the likeliest error
  videos = _check_uint8('videos', videos_NxTxHxWx3, 5, 'videos')
  center_crop(videos, crop, 'videos')
  clips = _clips('videos', videos, num_frames, windows)
  return net(clips, preprocess=lambda chunk: _dtfvd_input(center_crop(chunk, crop)))


# ----------------------------------------------------------------------------------------------------------
# Distances.


def fid(real_NxHxWx3, fake_MxHxWx3, *, crop=DEFAULT_CROP, batch_size: int = 8) -> float:
  """Fréchet Inception Distance between two sets of uint8 frames."""
  return frechet.frechet_distance_from_features(
      inception_features(real_NxHxWx3, crop=crop, batch_size=batch_size),
      inception_features(fake_MxHxWx3, crop=crop, batch_size=batch_size))


def kid(real_NxHxWx3, fake_MxHxWx3, *, crop=DEFAULT_CROP, subset_size: int = 1000, num_subsets: int = 100,
        seed: int = 0, batch_size: int = 8) -> float:
  """Kernel Inception Distance, raw (multiply by 100 for the paper's tables); see frechet.kid_from_features."""
  return frechet.kid_from_features(
      inception_features(real_NxHxWx3, crop=crop, batch_size=batch_size),
      inception_features(fake_MxHxWx3, crop=crop, batch_size=batch_size),
      subset_size=subset_size, num_subsets=num_subsets, seed=seed)


def fvd(real_NxTxHxWx3, fake_MxTxHxWx3, num_frames: int = 16, *, windows: bool = False, crop=DEFAULT_CROP,
        batch_size: int = 2) -> float:
  """Fréchet Video Distance over ``num_frames``-frame clips (16: FVD, 32: FVD32)."""
  kw = dict(num_frames=num_frames, windows=windows, crop=crop, batch_size=batch_size)
  return frechet.frechet_distance_from_features(fvd_features(real_NxTxHxWx3, **kw),
                                                fvd_features(fake_MxTxHxWx3, **kw))


def dtfvd(real_NxTxHxWx3, fake_MxTxHxWx3, num_frames: int = 16, weights: str | None = None, *,
          windows: bool = False, crop=DEFAULT_CROP, batch_size: int = 2) -> float:
  """DT-FVD over ``num_frames``-frame clips (16: DT-FVD, 32: DT-FVD32) with the user's DTDB I3D weights."""
  kw = dict(num_frames=num_frames, weights=weights, windows=windows, crop=crop, batch_size=batch_size)
  return frechet.frechet_distance_from_features(dtfvd_features(real_NxTxHxWx3, **kw),
                                                dtfvd_features(fake_MxTxHxWx3, **kw))


def _window_starts(name: str, real: np.ndarray, fake: np.ndarray, window: int, stride: int | None) -> list[int]:
  t = min(real.shape[1], fake.shape[1])
  stride = stride or window
  if window < 1 or stride < 1:
    raise ValueError(f'{name}: window and stride must be >= 1, got {window}, {stride}')
  if t < window:
    raise ValueError(f'{name}: videos of {real.shape[1]} and {fake.shape[1]} frames are shorter than the '
                     f'window of {window}')
  return list(range(0, t - window + 1, stride))


def sliding_fid(real_NxTxHxWx3, fake_MxTxHxWx3, window: int = 30, *, stride: int | None = None,
                crop=DEFAULT_CROP, batch_size: int = 8) -> list[float]:
  """FID of frames [s, s + window) of all videos, for s = 0, stride, ... (default stride = window)."""
  real = _check_uint8('real', real_NxTxHxWx3, 5, 'videos')
  fake = _check_uint8('fake', fake_MxTxHxWx3, 5, 'videos')
  starts = _window_starts('sliding_fid', real, fake, window, stride)
  t = starts[-1] + window
  # Every frame goes through Inception once; windows only regroup the features.
  fr = inception_features(real[:, :t].reshape((-1,) + real.shape[2:]), crop=crop, batch_size=batch_size)
  ff = inception_features(fake[:, :t].reshape((-1,) + fake.shape[2:]), crop=crop, batch_size=batch_size)
  fr = fr.reshape(real.shape[0], t, -1)
  ff = ff.reshape(fake.shape[0], t, -1)
  return [frechet.frechet_distance_from_features(fr[:, s:s + window].reshape(-1, fr.shape[-1]),
                                                 ff[:, s:s + window].reshape(-1, ff.shape[-1]))
          for s in starts]


def sliding_dtfvd(real_NxTxHxWx3, fake_MxTxHxWx3, window: int = 16, *, stride: int | None = None,
                  weights: str | None = None, crop=DEFAULT_CROP, batch_size: int = 2) -> list[float]:
  """DT-FVD of the clips [s, s + window) of all videos, for s = 0, stride, ... (default stride = window)."""
  real = _check_uint8('real', real_NxTxHxWx3, 5, 'videos')
  fake = _check_uint8('fake', fake_MxTxHxWx3, 5, 'videos')
  i3d.dtfvd(window, weights, batch_size)  # a missing weight file fails before any work
  starts = _window_starts('sliding_dtfvd', real, fake, window, stride)
  kw = dict(num_frames=window, weights=weights, crop=crop, batch_size=batch_size)
  return [frechet.frechet_distance_from_features(dtfvd_features(real[:, s:s + window], **kw),
                                                 dtfvd_features(fake[:, s:s + window], **kw))
          for s in starts]
