"""Video I/O: decode any common format with PyAV, resample to a target fps and size, write mp4/gif/webm/PNGs.

Frames are ``uint8`` RGB arrays ``frames_TxHxWx3``. Decoding streams: :func:`iter_frames` yields frames
already resized and resampled, so memory does not grow with the length of the video.

Resampling in time follows ffmpeg's ``fps`` filter: output frame i shows the source frame whose timestamp is
nearest to ``i / fps`` (frames are duplicated or dropped, never blended, so motion stays a real observation).
Resizing in space keeps the aspect ratio: the frame is centre-cropped to the target aspect, then resized
(area interpolation when shrinking, bicubic when enlarging).
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterator

import av
import cv2
import numpy as np
from PIL import Image

from gid_jax.fileio import atomic_path

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.gif')
WRITE_FORMATS = ('.mp4', '.webm', '.gif', '')  # '' = a folder of PNGs


class VideoError(ValueError):
  """A video that cannot be read: missing, corrupt, empty or too short."""


def center_crop_resize(image_HxWxC: np.ndarray, width: int, height: int) -> np.ndarray:
  """Centre-crop to the aspect ratio width:height, then resize to (height, width)."""
  h, w = image_HxWxC.shape[:2]
  target = width / height
  if w / h > target:  # too wide: crop columns
    cw = max(1, int(round(h * target)))
    x0 = (w - cw) // 2
    image_HxWxC = image_HxWxC[:, x0:x0 + cw]
  else:
    ch = max(1, int(round(w / target)))
    y0 = (h - ch) // 2
    image_HxWxC = image_HxWxC[y0:y0 + ch]
  if image_HxWxC.shape[:2] == (height, width):
    return np.ascontiguousarray(image_HxWxC)
  shrinking = image_HxWxC.shape[1] > width
  interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
  return cv2.resize(np.ascontiguousarray(image_HxWxC), (width, height), interpolation=interp)


def center_crop_resize_all(images_NxHxWxC: np.ndarray, width: int, height: int) -> np.ndarray:
  """:func:`center_crop_resize` of every image; the images themselves when they already have that size."""
  if tuple(images_NxHxWxC.shape[1:3]) == (height, width):
    return np.asarray(images_NxHxWxC)
  return np.stack([center_crop_resize(np.asarray(im), width, height) for im in images_NxHxWxC])


def _open(path: str):
  if not os.path.isfile(path):
    raise VideoError(f'{path}: no such video file')
  try:
    container = av.open(path)
  except Exception as e:  # av raises many error types for bad files
    raise VideoError(f'{path}: cannot open video ({type(e).__name__}: {e})') from e
  if not container.streams.video:
    container.close()
    raise VideoError(f'{path}: has no video stream')
  return container


def probe(path: str) -> dict:
  """Size, frame rate and (estimated) frame count of a video, without decoding it."""
  container = _open(path)
  try:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    frames = stream.frames or 0
    if not frames and stream.duration and stream.time_base and fps:
      frames = int(round(float(stream.duration * stream.time_base) * fps))
    return {'width': stream.codec_context.width, 'height': stream.codec_context.height, 'fps': fps,
            'num_frames': int(frames)}
  finally:
    container.close()


def _decoded(path: str) -> Iterator[tuple[float, np.ndarray]]:
  """(time in seconds, RGB frame) for every decodable frame; raises VideoError on corrupt data."""
  container = _open(path)
  try:
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    rate = stream.average_rate or stream.guessed_rate
    fallback_dt = 1.0 / float(rate) if rate else 1.0 / 30.0
    n = 0
    last_t = None
    try:
      for frame in container.decode(stream):
        t = float(frame.time) if frame.time is not None else n * fallback_dt
        if last_t is not None and t <= last_t:  # broken or missing timestamps: fall back to the rate
          t = last_t + fallback_dt
        last_t = t
        n += 1
        yield t, frame.to_ndarray(format='rgb24')
    except Exception as e:  # corrupt packets surface as av.error.* or ValueError
      raise VideoError(f'{path}: corrupt video data after {n} frames ({type(e).__name__}: {e})') from e
    if n == 0:
      raise VideoError(f'{path}: contains no decodable frames')
  finally:
    container.close()


def iter_frames(path: str, fps: float | None = None, size: tuple[int, int] | None = None
                ) -> Iterator[np.ndarray]:
  """Stream uint8 RGB frames (H x W x 3), resampled to ``fps`` and resized to ``size=(width, height)``."""
  if fps is not None and fps <= 0:
    raise ValueError(f'fps must be positive, got {fps}')
  prep = (lambda f: center_crop_resize(f, *size)) if size else (lambda f: f)
  if fps is None:
    for _, frame in _decoded(path):
      yield prep(frame)
    return
  # Output frame i (time i/fps) takes the source frame nearest in time: emit it once the next source
  # frame is farther away than the current one.
  i = 0
  prev = None  # (time, prepared frame)
  dt = 1.0 / fps  # last source frame interval; a one-frame video shows its frame for one output
  for t, frame in _decoded(path):
    if prev is None:
      t0 = t  # the first frame defines time zero (some streams start at a nonzero pts)
      prev = (0.0, prep(frame))
      continue
    t -= t0
    while i / fps <= (prev[0] + t) / 2:
      yield prev[1]
      i += 1
    dt = t - prev[0]
    prev = (t, prep(frame))
  if prev is None:
    return
  # The last source frame is shown for one source interval: cover the outputs nearest to it.
  end = prev[0] + 0.5 * dt
  while True:
    yield prev[1]
    i += 1
    if i / fps >= end:
      break


def read_video(path: str, fps: float | None = None, size: tuple[int, int] | None = None,
               max_frames: int | None = None) -> np.ndarray:
  """Decode a whole video into frames_TxHxWx3 uint8 (see :func:`iter_frames`)."""
  frames = []
  for frame in iter_frames(path, fps, size):
    frames.append(frame)
    if max_frames is not None and len(frames) >= max_frames:
      break
  return np.stack(frames)


def _even(frames: np.ndarray) -> np.ndarray:
  """H.264/VP9 with yuv420p need even sizes: repeat the last row/column where one is odd."""
  h, w = frames.shape[1:3]
  return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='edge')


def write_video(path: str, frames_TxHxWx3: np.ndarray, fps: float = 30.0, quality: int = 18,
                progress=None) -> str:
  """Write frames by the extension of ``path``: .mp4 (H.264), .webm (VP9), .gif, or no extension = PNGs.

  ``quality`` is the CRF for mp4/webm (lower is better; 18 is visually lossless for H.264). The write is
  atomic: a reader never sees a half-written file (or folder), and a folder of PNGs written into an
  existing folder replaces only the frames we wrote there before (gid_jax.fileio). ``progress(done,
  total)`` after every frame encoded. Returns ``path``. Whether replacing what exists at ``path`` is
  allowed is the caller's decision (gid_jax.fileio.check_output).
  """
  tick = progress or (lambda done, total: None)
  frames = np.asarray(frames_TxHxWx3)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}')
  if len(frames) == 0:
    raise ValueError('cannot write a video with no frames')
  ext = os.path.splitext(path)[1].lower()
  if ext not in WRITE_FORMATS:
    raise ValueError(f'{path}: unsupported output format {ext!r}; use .mp4, .webm, .gif or a folder name')
  if ext == '':
    with atomic_path(path, is_dir=True) as tmp:
      for i, frame in enumerate(frames):
        cv2.imwrite(os.path.join(tmp, f'{i:05d}.png'), frame[..., ::-1])
        tick(i + 1, len(frames))
    return path
  with atomic_path(path) as tmp:
    if ext == '.gif':
      images = [Image.fromarray(f) for f in frames]
      images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                     loop=0, optimize=False)
      tick(len(frames), len(frames))
    else:
      _write_av(tmp, _even(frames), fps, ext, quality, tick)
  return path


def _write_av(path: str, frames: np.ndarray, fps: float, ext: str, quality: int, tick) -> None:
  codec = {'.mp4': 'libx264', '.webm': 'libvpx-vp9'}[ext]
  with av.open(path, mode='w') as container:
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = 'yuv420p'
    if codec == 'libx264':
      stream.options = {'crf': str(quality), 'preset': 'medium'}
    else:
      stream.options = {'crf': str(quality), 'b': '0', 'deadline': 'good', 'cpu-used': '4'}
    for i, f in enumerate(frames):
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format='rgb24')):
        container.mux(packet)
      tick(i + 1, len(frames))
    for packet in stream.encode():
      container.mux(packet)


def list_videos(folder: str) -> list[str]:
  """All video files under ``folder`` (recursive), sorted, by extension."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'video folder not found: {folder}')
  out = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    out.extend(os.path.join(root, f) for f in files
               if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS and not f.startswith('.'))
  return sorted(out)
