"""The live, pokeable scene of the web app: a modal simulation rendered to JPEG frames in real time.

    scene = LiveScene(photo_HxWx3, spec_KxHxWx4, num_frames_t, spectral_fps)
    scene.hold(x_px, y_px, dx, dy)        # while the mouse drags; release() when it lets go
    jpeg, info = scene.frame()           # the frame for "now" (simulation time follows the wall clock)

The spectral volume (pixels, at the photo's size) is the modal basis of
:class:`gid_jax.motion.modal.ModalSimulator`. Each frame is rendered by softmax splatting (or a trained
renderer) with one *fixed* splat importance, the mean motion magnitude over one period of the volume's own
trajectories: the same foreground-wins-over-background ordering as the generated video, computed once
instead of from every single frame's displacement (one frame says nothing about which pixels move most).

Simulation time follows the wall clock, not the number of frames sent: every call advances the simulator to
``floor(elapsed * fps)`` frames, so several viewers of one scene see the same motion at the right speed, and a
slow client gets fewer frames rather than slow motion. A scene at rest (no motion, no held force) renders
nothing new: :meth:`frame` returns the cached frame, so an idle page costs no CPU.
"""

from __future__ import annotations

import collections
import threading
import time

import cv2
import jax.numpy as jnp
import numpy as np

from gid_jax.motion import edit
from gid_jax.motion import modal
from gid_jax.ops import splat
from gid_jax.render import video as render_video

# Further behind the wall clock than this many frames (a stalled machine), the simulation skips ahead rather
# than integrating every missed frame in a burst.
MAX_CATCH_UP = 4
# Below this (pixels) the motion is invisible in 8-bit frames: the scene is at rest. It bounds every pixel's
# displacement while each mode rings down when the mode shapes are normalised 'global'ly (the default):
# then sum_j |Phi_j(p)|^2 <= 1, so |D(p)| <= ||amplitude||_2 by Cauchy-Schwarz.
REST_PX = 0.05


def period_importance(spec_KxHxWx4: np.ndarray, num_frames_t: int, chunk: int = 16) -> jnp.ndarray:
  """(H, W, 1) mean over one period of ||F_t - F_0||: splat.splat_weight of the whole T-frame trajectory,
  accumulated ``chunk`` frames at a time (T x H x W x 2 at once would be 0.8 GB at 1024 x 640)."""
  d0 = edit.displacements_at(spec_KxHxWx4, [0.0], num_frames_t)
  total = 0.0
  for start in range(0, num_frames_t, chunk):
    times = np.arange(start, min(start + chunk, num_frames_t))
    disp = edit.displacements_at(spec_KxHxWx4, times, num_frames_t) - d0
    total = total + splat.splat_weight(disp) * len(times)
  return total / num_frames_t


class LiveScene:
  """A ModalSimulator and a fixed-importance renderer behind one lock; safe to share between threads."""

  def __init__(self, photo_HxWx3: np.ndarray, spec_KxHxWx4: np.ndarray, num_frames_t: int, spectral_fps: float,
               renderer=None, params: modal.ModalParams = modal.ModalParams(), jpeg_quality: int = 85,
               clock=time.monotonic):
    """Args:
      photo_HxWx3: uint8 RGB, the same H x W as the volume.
      spec_KxHxWx4: spectral volume in pixels of the photo.
      num_frames_t, spectral_fps: T and fps of the clip the volume's bins refer to.
      renderer: a trained gid_jax.models.renderer.Renderer, or None for softmax splatting + hole filling.
      params: modal simulation knobs; ``params.fps`` is the live frame rate.
      jpeg_quality: 0-100 for the streamed frames.
      clock: seconds, monotonic (a fake one in tests).
    """
    h, w = photo_HxWx3.shape[:2]
    if spec_KxHxWx4.shape[1:3] != (h, w):
      raise ValueError(f'the spectral volume is {spec_KxHxWx4.shape[2]}x{spec_KxHxWx4.shape[1]} but the photo '
                       f'is {w}x{h}')
    self.sim = modal.ModalSimulator(spec_KxHxWx4, params, num_frames_t, spectral_fps)
    self.photo = np.ascontiguousarray(photo_HxWx3)
    self.width, self.height = w, h
    self.fps = params.fps
    self.renderer = renderer
    self._image_1xHxWx3 = render_video.to_float(self.photo)[None]
    self.importance_HxWx1 = period_importance(spec_KxHxWx4, num_frames_t)
    self._jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    self._clock = clock
    self._lock = threading.Lock()
    self._t0 = clock()
    self._sim_frame = 0  # simulator frames advanced since _t0
    self._version = 0  # bumped whenever the displacement may have changed
    self._cache = None  # (version, jpeg bytes, info) of the last rendered frame
    self._rendered = 0
    self._render_ms = collections.deque(maxlen=100)  # the latest frames' costs, for stats()

  # -- input (pixels of the photo; dx, dy a drag vector in pixels) ---------------------------------------

  def poke(self, x_px: float, y_px: float, dx: float, dy: float, strength: float = 1.0) -> None:
    """An impulse: the scene flicks along (dx, dy) and rings down."""
    with self._lock:
      self._sync()
      self.sim.poke(*self._clip(x_px, y_px), dx, dy, strength)

  def hold(self, x_px: float, y_px: float, dx: float, dy: float, strength: float = 1.0) -> None:
    """A steady pull (a drag in progress): the scene leans by about the drag and stays until release()."""
    with self._lock:
      self._sync()
      self.sim.hold(*self._clip(x_px, y_px), dx, dy, strength)

  def release(self) -> None:
    """Let go of a hold: the scene springs back and oscillates."""
    with self._lock:
      self._sync()
      self.sim.release()

  def reset(self) -> None:
    with self._lock:
      self._sync()
      self.sim.reset()
      self._version += 1

  def _clip(self, x_px: float, y_px: float) -> tuple[float, float]:
    # A drag that starts on the image edge can report a point a rounding error outside it.
    return min(max(float(x_px), 0.0), self.width - 1.0), min(max(float(y_px), 0.0), self.height - 1.0)

  # -- output -----------------------------------------------------------------------------------------

  def at_rest(self) -> bool:
    """No held force, and the modes' amplitudes (position and velocity / omega) under REST_PX."""
    s = self.sim
    amplitude = np.sqrt(np.abs(s.q) ** 2 + (np.abs(s.v) / s.omega) ** 2)
    return not np.any(s.force) and float(np.sqrt(np.sum(amplitude ** 2))) < REST_PX

  def _sync(self) -> int:
    """Advance the simulator to the wall clock (under the lock); returns how many frames it moved."""
    target = int((self._clock() - self._t0) * self.fps)
    behind = target - self._sim_frame
    if behind > MAX_CATCH_UP:  # skip the rest: a stall should not replay as a fast-forward
      self._sim_frame = target - MAX_CATCH_UP
      behind = MAX_CATCH_UP
    behind = max(behind, 0)
    for _ in range(behind):
      self.sim.step()
    self._sim_frame += behind
    self._version += behind > 0
    return behind

  def render(self, disp_HxWx2) -> np.ndarray:
    """uint8 (H, W, 3) of the photo moved by one displacement field."""
    disp = jnp.asarray(disp_HxWx2)[None]
    if self.renderer is None:
      out = render_video.splat_frames(self._image_1xHxWx3, disp, self.importance_HxWx1[None])
      return render_video.to_uint8(out[0])
    return render_video.render_frames(self.photo, disp, self.renderer, importance_HxWx1=self.importance_HxWx1)[0]

  def warm_up(self) -> None:
    """Compile the renderer for this size now (seconds), so that the first live frame is not the slow one."""
    self.encode(self.render(np.zeros((self.height, self.width, 2), np.float32)))

  def encode(self, frame_HxWx3: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(frame_HxWx3[..., ::-1]), self._jpeg_params)
    if not ok:
      raise RuntimeError('JPEG encoding failed')
    return buf.tobytes()

  def frame(self) -> tuple[bytes, dict]:
    """(JPEG, info) for now.

    info: ``version`` (changes exactly when the picture may have: a stream sends a frame only then),
    ``frame`` (simulation frame), ``render_ms`` (render + JPEG time), ``rendered`` (frames rendered so far)
    and ``at_rest``. A scene unchanged since the last call returns the cached frame and its info.
    """
    with self._lock:
      self._sync()
      rest = self.at_rest()
      if self._cache is not None:
        version, jpeg, info = self._cache
        # Same state as the last render (a second viewer), or still at rest: nothing new to draw.
        if version == self._version or (rest and info['at_rest']):
          return jpeg, info
      disp = self.sim.displacement()
      version, frame_no = self._version, self._sim_frame
    # Render outside the lock: pokes from the page must not wait for a frame.
    start = time.perf_counter()
    jpeg = self.encode(self.render(disp))
    info = {'version': version, 'frame': frame_no, 'render_ms': (time.perf_counter() - start) * 1e3, 'at_rest': rest}
    with self._lock:
      self._rendered += 1
      self._render_ms.append(info['render_ms'])
      info['rendered'] = self._rendered
      if self._cache is None or self._cache[0] <= version:
        self._cache = (version, jpeg, info)
      return jpeg, info

  def stats(self) -> dict:
    """Server-side cost: frames rendered so far and the mean / median render + JPEG ms of the latest 100."""
    with self._lock:
      ms = np.asarray(self._render_ms, np.float64)
      return {'rendered': self._rendered, 'render_ms_mean': float(ms.mean()) if ms.size else None,
              'render_ms_median': float(np.median(ms)) if ms.size else None,
              'width': self.width, 'height': self.height, 'fps': self.fps}
