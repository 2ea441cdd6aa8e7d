"""What the web app holds between requests: sessions, the generation queue, and the bounds on both.

No HTTP here (``gid_jax.app.server`` maps these to routes); every refusal is an :class:`HttpError` with a
status and one line for the user, raised before any work starts.

* **Sessions** (one photo each: its file, its latest video, its live scene, in one temporary folder). At
  most ``Limits.max_sessions``. A new photo evicts the least recently used session only if that one is idle
  (no job queued or running, no live viewer) *and* unused for ``Limits.session_min_age_s``; otherwise the
  upload is refused with 503 "busy, try again". Nobody loses a session to someone else's upload.
* **Jobs**: one worker thread runs generations one at a time (two at once only halve each other's speed on
  a CPU); others wait in a queue of at most ``Limits.max_queue`` and see their position. ``cancel`` stops a
  queued job at once and a running one at its next DDIM step or rendered chunk (a fraction of a second):
  the sampler's progress callback raises :class:`Cancelled` inside the compiled loop, which aborts it.
* **Bounds before work**: photo pixels and aspect ratio (``animate.check_photo_file``), upload bytes,
  concurrent uploads (and photos decoded at once: the others wait), and a work budget: sampling steps plus
  rendered pixels, in units of the default job.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback

import cv2
import numpy as np

from gid_jax import animate
from gid_jax.app import live
from gid_jax.data import video as video_lib
from gid_jax.motion import modal

PREVIEW_SIDE = 1024  # longer side of the photo preview shown before generation
# Bounds of each generate option (the work budget below bounds their product).
LIMITS = {'steps': (1, 1000), 'num_frames': (2, 600), 'max_side': (16, 512), 'motion_scale': (0.0, 20.0),
          'seed': (0, 2**31 - 1)}
BUSY = ('queued', 'sampling', 'rendering', 'encoding', 'live')  # states of a generation in progress


class HttpError(Exception):
  """An error answered to the client as {"error": message} with ``status``."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class Cancelled(Exception):
  """Raised by the progress callbacks of a job whose cancel was asked for (or when the server closes)."""


@dataclasses.dataclass
class Limits:
  """The server's resource bounds (``gid-app --help`` sets the main ones)."""
  max_upload_mb: float = 20.0
  max_pixels: int = 24_000_000  # a 6000 x 4000 camera photo; 16-bit PNGs decode to 6 bytes a pixel
  max_uploads: int = 8  # photos being received at once; more get 503
  max_decodes: int = 2  # photos decoded at once (the memory peak: 16-bit PNGs decode to 6 bytes a pixel)
  max_sessions: int = 16
  session_min_age_s: float = 600.0  # an idle session unused for less than this is never evicted
  max_queue: int = 8  # generations waiting behind the running one
  work_budget: float = 3.0  # the largest job, in units of the default job (250 steps, 150 frames at 256 x 160)
  upload_idle_s: float = 20.0  # an upload that sends nothing for this long is dropped


def _short(v) -> str:
  s = repr(v)
  return s if len(s) <= 24 else f'{s[:12]}...({len(s)} characters)'


def number(body: dict, name: str, lo: float, hi: float, integer: bool = False):
  """body[name] as a finite number in [lo, hi] (None when absent or null); HttpError 400 otherwise."""
  v = body.get(name)
  if v is None:
    return None
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise HttpError(400, f'{name} must be a number, got {_short(v)}')
  if isinstance(v, float) and not math.isfinite(v):
    raise HttpError(400, f'{name} must be a finite number, got {v}')
  if integer and isinstance(v, float):
    if not v.is_integer():
      raise HttpError(400, f'{name} must be a whole number, got {v}')
    v = int(v)
  if not lo <= v <= hi:
    raise HttpError(400, f'{name} must be in [{lo}, {hi}], got {_short(v)}')
  return v


def session_id(body: dict) -> str:
  sid = body.get('session')
  if not isinstance(sid, str):
    raise HttpError(400, f'session must be a string, got {_short(sid)}')
  return sid


@dataclasses.dataclass
class GenerateRequest:
  """What the page may choose; everything else comes from the checkpoint's sampling config."""
  seed: int = 0
  steps: int | None = None
  motion_scale: float = 1.0
  loop: bool = False
  num_frames: int = 150
  max_side: int = 256  # the training size: the live scene is then 256 x 160 for a 16:10 photo

  @classmethod
  def parse(cls, body: dict) -> GenerateRequest:
    req = cls()
    for f in dataclasses.fields(cls):
      if f.name == 'loop':
        v = body.get('loop')
        if v is not None and not isinstance(v, bool):
          raise HttpError(400, f'loop must be true or false, got {_short(v)}')
      else:
        lo, hi = LIMITS[f.name]
        v = number(body, f.name, lo, hi, integer=f.name != 'motion_scale')
      if v is not None:
        setattr(req, f.name, v)
    return req


@dataclasses.dataclass
class Session:
  """One photo in the app: its file, the latest generation's progress and results, its live scene."""
  id: str
  name: str
  folder: str
  photo_path: str
  width: int
  height: int
  preview_jpeg: bytes
  state: str = 'ready'  # ready | queued | sampling | rendering | encoding | live | done | error | cancelled
  done: int = 0
  total: int = 0
  message: str = ''
  video_path: str | None = None
  video_version: int = 0
  out_size: tuple[int, int] | None = None  # (W, H) of the video and the live scene
  scene: object | None = None  # live.LiveScene of the latest generation
  started: float = 0.0
  seconds: float = 0.0
  viewers: int = 0  # open live streams
  position: int = 0  # 1 = next in the queue; 0 = not waiting
  last_used: float = dataclasses.field(default_factory=time.monotonic)
  cancel: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

  @property
  def busy(self) -> bool:
    return self.state in BUSY

  def update(self, **kw) -> None:
    with self.lock:
      for k, v in kw.items():
        setattr(self, k, v)

  def progress(self) -> dict:
    with self.lock:
      out = {'state': self.state, 'done': self.done, 'total': self.total, 'message': self.message,
             'position': self.position, 'video': None, 'width': None, 'height': None,
             'seconds': round(time.monotonic() - self.started if self.busy else self.seconds, 2)}
      if self.video_path and self.state == 'done':
        out['video'] = f'/api/video?session={self.id}&v={self.video_version}'
        out['width'], out['height'] = self.out_size
      return out


def _encode_jpeg(image_HxWx3: np.ndarray, quality: int) -> bytes:
  ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(image_HxWx3[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError('JPEG encoding failed')
  return buf.tobytes()


class App:
  """The loaded models, the sessions and the generation worker. Thread-safe; ``close()`` stops it all."""

  def __init__(self, sampler, renderer=None, limits: Limits | None = None, live_fps: float = 30.0,
               live_renderer: bool = False, workdir: str | None = None, clock=time.monotonic):
    self.sampler = sampler
    self.renderer = renderer
    # A trained renderer costs ~100 ms a frame at 256 x 160 on a 2-core CPU (splatting: ~5-10 ms), far from
    # live: by default the live scene is splatted and only the video uses the renderer.
    self.live_renderer = renderer if live_renderer else None
    self.limits = limits or Limits()
    self.live_fps = float(live_fps)
    self._clock = clock
    self._own_workdir = workdir is None
    self.workdir = tempfile.mkdtemp(prefix='gid_app-') if workdir is None else workdir
    self.sessions: dict[str, Session] = {}
    self._lock = threading.Lock()  # sessions, queue, upload count
    self._work = threading.Condition(self._lock)
    self._queue: collections.deque[tuple[Session, animate.Options]] = collections.deque()
    self._uploads = 0
    self._decodes = threading.BoundedSemaphore(self.limits.max_decodes)
    self._current: Session | None = None  # the running job's session (the progress callback reports to it)
    self.closing = threading.Event()
    self._worker = threading.Thread(target=self._run_jobs, name='gid-app-jobs')
    self._worker.start()

  # -- uploads and sessions --

  def begin_upload(self) -> None:
    """Reserve one of ``max_uploads`` upload slots (503 when none is free); pair with ``end_upload``."""
    with self._lock:
      if self.closing.is_set():
        raise HttpError(503, 'the server is shutting down')
      if self._uploads >= self.limits.max_uploads:
        raise HttpError(503, 'busy receiving other photos: try again in a few seconds')
      self._uploads += 1

  def end_upload(self) -> None:
    with self._lock:
      self._uploads -= 1

  def check_photo(self, path: str, name: str) -> np.ndarray:
    """The photo at ``path`` decoded, after the size, pixel and aspect checks; 400 naming ``name``."""
    try:
      with self._decodes:  # others wait their turn
        return animate.load_photo(path, max_pixels=self.limits.max_pixels)  # checks the header first
    except animate.InputError as e:
      raise HttpError(400, str(e).splitlines()[0].replace(path, name)) from None

  def new_session(self, path: str, name: str, photo: np.ndarray) -> Session:
    """A session for a checked photo (its file at ``path`` is moved into the session's folder)."""
    h, w = photo.shape[:2]
    pw, ph = animate.output_size(w, h, PREVIEW_SIDE)
    preview = _encode_jpeg(animate.resize(photo, pw, ph), 90)
    sid = secrets.token_urlsafe(12)
    folder = os.path.join(self.workdir, sid)
    with self._lock:
      if len(self.sessions) >= self.limits.max_sessions and not self._evict_one():
        raise HttpError(503, f'busy: {len(self.sessions)} photos are in use (the most this server keeps); '
                             'try again in a few minutes')
      os.makedirs(folder)
      photo_path = os.path.join(folder, 'photo' + os.path.splitext(path)[1].lower())
      shutil.move(path, photo_path)
      session = Session(id=sid, name=name, folder=folder, photo_path=photo_path, width=w, height=h,
                        preview_jpeg=preview, last_used=self._clock())
      self.sessions[sid] = session
    return session

  def _evict_one(self) -> bool:
    """Remove the least recently used session that is idle and old enough (under the lock)."""
    now = self._clock()
    idle = [s for s in self.sessions.values()
            if not s.busy and s.viewers == 0 and now - s.last_used >= self.limits.session_min_age_s]
    if not idle:
      return False
    old = min(idle, key=lambda s: s.last_used)
    del self.sessions[old.id]
    old.update(scene=None)
    shutil.rmtree(old.folder, ignore_errors=True)
    return True

  def session(self, sid: str | None) -> Session:
    with self._lock:
      s = self.sessions.get(sid or '')
    if s is None:
      raise HttpError(404, 'unknown or expired session: open the photo again')
    s.last_used = self._clock()
    return s

  # -- generation --

  def defaults(self) -> dict:
    d = dataclasses.asdict(GenerateRequest())
    d['steps'] = self._default_steps()
    return d

  def _default_steps(self) -> int:
    return min(int(self.sampler.config.sampling.num_steps), int(self.sampler.sched.num_timesteps))

  def options(self, session: Session, req: GenerateRequest) -> animate.Options:
    s = self.sampler.config.sampling
    opts = animate.Options(num_frames=req.num_frames, fps=self.sampler.fps,
                           steps=self._default_steps() if req.steps is None else req.steps, eta=float(s.eta),
                           guidance=float(s.guidance), seed=req.seed, loop=req.loop,
                           motion_scale=req.motion_scale, max_side=req.max_side)
    try:
      opts.check()
    except animate.InputError as e:
      raise HttpError(400, str(e)) from None
    most = int(self.sampler.sched.num_timesteps)
    if opts.steps > most:
      raise HttpError(400, f'steps must be at most {most} for this model (its diffusion has {most} timesteps), '
                           f'got {opts.steps}')
    work = self.work(session, opts)
    if work > self.limits.work_budget:
      raise HttpError(400, f'this job is {work:.1f}x the work of the default one (250 steps, 150 frames at '
                           f'256 x 160); the limit is {self.limits.work_budget:g}x: use fewer steps or frames '
                           'or a smaller size')
    return opts

  @staticmethod
  def work(session: Session, opts: animate.Options) -> float:
    """Sampling steps plus rendered pixels, in units of the default job (half each)."""
    w, h = animate.output_size(session.width, session.height, opts.max_side)
    return 0.5 * opts.steps / 250 + 0.5 * opts.num_frames * w * h / (150 * 256 * 160)

  def start_generation(self, session: Session, req: GenerateRequest) -> None:
    opts = self.options(session, req)
    with self._lock:
      if self.closing.is_set():
        raise HttpError(503, 'the server is shutting down')
      if session.busy:
        raise HttpError(409, 'this photo is already being generated: wait for it to finish or cancel it')
      if len(self._queue) >= self.limits.max_queue:
        raise HttpError(503, f'busy: {len(self._queue)} generations are waiting; try again in a few minutes')
      session.cancel.clear()
      session.update(state='queued', done=0, total=opts.steps, message='', started=self._clock(),
                     position=len(self._queue) + 1)
      self._queue.append((session, opts))
      self._work.notify()

  def cancel(self, session: Session) -> None:
    """Stop the session's queued or running generation (a no-op when there is none)."""
    with self._lock:
      queued = [i for i, (s, _) in enumerate(self._queue) if s is session]
      if queued:
        del self._queue[queued[0]]
        self._renumber()
        session.update(state='cancelled', message='cancelled', position=0,
                       seconds=self._clock() - session.started)
        return
    session.cancel.set()  # the running job stops at its next step

  def _renumber(self) -> None:
    for i, (s, _) in enumerate(self._queue):
      s.update(position=i + 1)

  def _check_cancel(self, session: Session) -> None:
    if session.cancel.is_set() or self.closing.is_set():
      raise Cancelled()

  def _on_progress(self, done, total) -> None:
    # One bound method for the server's life: the sampler is compiled with it as a static argument.
    s = self._current
    if s is not None:
      self._check_cancel(s)
      s.update(done=int(done), total=int(total), state='rendering' if done >= total else 'sampling')

  def _on_render(self, done, total) -> None:
    s = self._current
    if s is not None:
      self._check_cancel(s)

  def _run_jobs(self) -> None:
    while True:
      with self._lock:
        while not self._queue and not self.closing.is_set():
          self._work.wait()
        if self.closing.is_set():
          for s, _ in self._queue:
            s.update(state='cancelled', message='the server is shutting down', position=0)
          self._queue.clear()
          return
        session, opts = self._queue.popleft()
        self._renumber()
        session.update(position=0, state='sampling')
        self._current = session
      try:
        self._generate(session, opts)
      finally:
        self._current = None

  def _generate(self, session: Session, opts: animate.Options) -> None:
    try:
      photo = animate.load_photo(session.photo_path, max_pixels=self.limits.max_pixels)
      frames, spec, t = animate.animate(photo, opts, sampler=self.sampler, renderer=self.renderer,
                                        progress=self._on_progress, render_progress=self._on_render)
      self._check_cancel(session)
      session.update(state='encoding', done=opts.steps)
      version = session.video_version + 1
      path = os.path.join(session.folder, f'video-{version}.mp4')
      video_lib.write_video(path, frames, fps=opts.fps)
      session.update(state='live')
      scene = live.LiveScene(frames[0], spec, t, self.sampler.fps, renderer=self.live_renderer,
                             params=modal.ModalParams(fps=self.live_fps))
      scene.warm_up()
      old = session.video_path
      session.update(state='done', video_path=path, video_version=version, scene=scene,
                     out_size=(frames.shape[2], frames.shape[1]), seconds=self._clock() - session.started)
      if old and os.path.exists(old):
        os.remove(old)
    except Exception as e:  # pylint: disable=broad-except
      elapsed = self._clock() - session.started
      if session.cancel.is_set() or self.closing.is_set():  # Cancelled, possibly wrapped by JAX's callback error
        session.update(state='cancelled', message='cancelled', seconds=elapsed)
      elif isinstance(e, animate.InputError):
        session.update(state='error', message=str(e).splitlines()[0], seconds=elapsed)
      else:
        traceback.print_exc()
        session.update(state='error', message=f'generation failed: {type(e).__name__}: '
                                              f'{(str(e).splitlines() or [""])[0]}', seconds=elapsed)

  def close(self, timeout: float = 10.0) -> None:
    """Stop the running job (within a DDIM step), drop the queue, wait for the worker, remove the work folder."""
    with self._lock:
      self.closing.set()
      self._work.notify_all()
    self._worker.join(timeout)
    with self._lock:
      for s in self.sessions.values():
        s.update(scene=None)  # ends live streams
    if self._own_workdir:
      shutil.rmtree(self.workdir, ignore_errors=True)
