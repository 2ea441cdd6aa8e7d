"""The local web app behind ``python -m gid_jax.app``: open a photo, generate its video, poke it live.

    server = make_server(checkpoint, renderer='', host='127.0.0.1', port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()   # server.url is the page
    ...
    server.shutdown(); server.server_close()

Standard library HTTP (``ThreadingHTTPServer``: a thread per request, so a live stream or a long upload
never blocks the page's other requests) and one static page of plain JS (``static/``, nothing from the
network). It binds 127.0.0.1 by default; POSTs must carry an ``X-Requested-With`` header, which a page of
another origin cannot send without a CORS preflight that this server never grants, and requests naming a
foreign Host are refused (DNS rebinding), so other web pages cannot drive it.

Endpoints (JSON in and out unless noted; an error is ``{"error": "one line"}`` with a 4xx/5xx status):

  GET  /  and  /static/{app.js,style.css}   the page
  GET  /api/info                  {"example", "max_upload_mb", "max_pixels", "defaults", "limits"}
  POST /api/upload                body: the photo's bytes; header X-Filename: its name (URL-encoded)
                                  -> {"session", "name", "width", "height"}. 413: over --max-upload-mb;
                                  400: not a readable image, or over animate.MAX_PIXELS pixels
  POST /api/example               the bundled example photo as a new session (404 while none is bundled)
  GET  /api/photo?session=S       a preview of the photo (JPEG, longer side <= 1024)
  POST /api/generate              {"session", "seed", "steps", "motion_scale", "loop", "num_frames",
                                  "max_side"} (all optional but session) -> 202; 409 while S is busy
  GET  /api/progress?session=S    {"state": ready|queued|sampling|rendering|encoding|live|done|error, "done",
                                  "total", "message", "video", "width", "height", "seconds"}
  GET  /api/video?session=S       the mp4 (byte ranges served, so <video> can seek and loop);
                                  &download=1 makes it an attachment
  GET  /api/live?session=S        live frames, an endless application/octet-stream of records
                                  [uint32 length n][uint32 simulation frame][float32 server ms][n bytes JPEG]
                                  (big-endian); a frame is sent when the picture changes, and the last one
                                  again every second while the scene is at rest (so a dead client is noticed)
  POST /api/poke                  {"session", "action": hold|release|poke|reset, "x", "y", "dx", "dy"}:
                                  x, y fractions of the width and height in [0, 1], (dx, dy) the drag in
                                  pixels of the generated video; hold while dragging, release on letting go
  GET  /api/stats?session=S       the live scene's server-side cost: {"rendered", "render_ms_mean",
                                  "render_ms_median", "width", "height", "fps"}

The live scene is rendered by softmax splatting (gid_jax.app.live), a few ms a frame at 256 x 160, even when
the video uses a trained renderer (~100 ms a frame on a CPU); ``live_renderer=True`` uses the renderer for both.

Sessions. An upload starts a session (a random id): its photo file, its generated video, its live scene, in
one temporary folder. The newest ``max_sessions`` are kept; older ones are deleted. Generations run one at a
time in a background thread (two at once would only halve each other's speed on a CPU); progress comes from
the sampler's ``progress(done, total)`` callback. That callback is one bound method for the server's whole
life: the sampler is compiled with it as a static argument, so a fresh closure per request would recompile
the DDIM loop on every generation.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import mimetypes
import os
import re
import secrets
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

import numpy as np

from gid_jax import animate

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
STATIC_FILES = {'/': 'index.html', '/static/index.html': 'index.html', '/static/app.js': 'app.js',
                '/static/style.css': 'style.css'}
PREVIEW_SIDE = 1024  # longer side of the photo preview shown before generation
MAX_JSON_BYTES = 64 * 1024
LIVE_KEEPALIVE_S = 1.0
# Bounds of the generate options: beyond these a CPU machine would be busy for hours or run out of memory
# (animate() holds all N x H x W x 2 trajectories at once: 150 frames at 512 x 320 are already 0.2 GB).
LIMITS = {'steps': (1, 1000), 'num_frames': (2, 600), 'max_side': (16, 512), 'motion_scale': (0.0, 20.0),
          'seed': (0, 2**31 - 1)}
LOCAL_HOSTS = ('localhost', '127.0.0.1', '::1')
BUSY = ('queued', 'sampling', 'rendering', 'encoding', 'live')  # states of a generation in progress


class HttpError(Exception):
  """An error answered to the client as {"error": message} with ``status``."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


# -- sessions ----------------------------------------------------------------------------------------------


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
  state: str = 'ready'  # ready | queued | sampling | rendering | encoding | live | done | error
  done: int = 0
  total: int = 0
  message: str = ''
  video_path: str | None = None
  video_version: int = 0
  out_size: tuple[int, int] | None = None  # (W, H) of the video and the live scene
  scene: object | None = None  # live.LiveScene of the latest generation
  started: float = 0.0
  seconds: float = 0.0
  last_used: float = dataclasses.field(default_factory=time.monotonic)
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
             'video': None, 'width': None, 'height': None,
             'seconds': round(time.monotonic() - self.started if self.busy else self.seconds, 2)}
      if self.state == 'done':
        out['video'] = f'/api/video?session={self.id}&v={self.video_version}'
        out['width'], out['height'] = self.out_size
      return out


@dataclasses.dataclass
class GenerateRequest:
  """What the page may choose; everything else comes from the checkpoint's sampling config."""
  seed: int = 0
  steps: int | None = None
  motion_scale: float = 1.0
  loop: bool = False
  num_frames: int = 150
  max_side: int = 256  # the training size: the live scene is then 256 x 160 for a 16:10 photo


class App:
  """The state behind the HTTP handlers: the loaded models, the sessions, the generation worker."""

  def __init__(self, sampler, renderer=None, max_upload_mb: float = 20, max_pixels: int = animate.MAX_PIXELS,
               max_sessions: int = 4, live_fps: float = 30.0, live_renderer: bool = False,
               workdir: str | None = None):
    self.sampler = sampler
    self.renderer = renderer
    # A trained renderer costs ~100 ms a frame at 256 x 160 on a 2-core CPU (splatting: ~5-10 ms), far from
    # live: by default the live scene is splatted and only the video uses the renderer.
    self.live_renderer = renderer if live_renderer else None
    self.max_upload_bytes = int(max_upload_mb * 2**20)
    self.max_upload_mb = max_upload_mb
    self.max_pixels = int(max_pixels)
    self.max_sessions = int(max_sessions)
    self.live_fps = float(live_fps)
    self._own_workdir = workdir is None
    self.workdir = tempfile.mkdtemp(prefix='gid_app-') if workdir is None else workdir
    self.sessions: dict[str, Session] = {}
    self._sessions_lock = threading.Lock()
    self._generate_lock = threading.Lock()  # one generation at a time
    self._current: Session | None = None  # the session the sampler's progress callback reports to
    self.closing = threading.Event()

  # -- sessions --

  def new_session(self, path: str, name: str) -> Session:
    """A session for the photo file at ``path`` (moved into the session's folder); InputError if bad."""
    try:
      photo = animate.load_photo(path, max_pixels=self.max_pixels)
    except animate.InputError as e:
      raise animate.InputError(str(e).replace(path, name)) from None
    sid = secrets.token_urlsafe(12)
    folder = os.path.join(self.workdir, sid)
    os.makedirs(folder)
    photo_path = os.path.join(folder, 'photo' + os.path.splitext(path)[1].lower())
    shutil.move(path, photo_path)
    h, w = photo.shape[:2]
    pw, ph = animate.output_size(w, h, PREVIEW_SIDE)
    preview = _encode_jpeg(animate.resize(photo, pw, ph), 90)
    session = Session(id=sid, name=name, folder=folder, photo_path=photo_path, width=w, height=h,
                      preview_jpeg=preview)
    with self._sessions_lock:
      self.sessions[sid] = session
      self._evict()
    return session

  def _evict(self) -> None:
    idle = sorted((s for s in self.sessions.values() if not s.busy), key=lambda s: s.last_used)
    while len(self.sessions) > self.max_sessions and idle:
      old = idle.pop(0)
      del self.sessions[old.id]
      old.update(scene=None)  # ends its live streams
      shutil.rmtree(old.folder, ignore_errors=True)

  def session(self, sid: str | None) -> Session:
    with self._sessions_lock:
      s = self.sessions.get(sid or '')
    if s is None:
      raise HttpError(404, 'unknown or expired session: open the photo again')
    s.last_used = time.monotonic()
    return s

  # -- generation --

  def defaults(self) -> dict:
    d = dataclasses.asdict(GenerateRequest())
    d['steps'] = int(self.sampler.config.sampling.num_steps)
    return d

  def parse_generate(self, body: dict) -> GenerateRequest:
    req = GenerateRequest()
    for f in dataclasses.fields(GenerateRequest):
      if body.get(f.name) is None:
        continue
      v = body[f.name]
      try:
        if f.name == 'loop':
          if not isinstance(v, bool):
            raise ValueError
        elif f.name == 'motion_scale':
          v = float(v)
        else:
          if isinstance(v, bool) or float(v) != int(float(v)):
            raise ValueError
          v = int(float(v))
      except (TypeError, ValueError):
        raise HttpError(400, f'{f.name} must be {"true or false" if f.name == "loop" else "a number"}, '
                             f'got {v!r}') from None
      if f.name in LIMITS:
        lo, hi = LIMITS[f.name]
        if not lo <= v <= hi:
          raise HttpError(400, f'{f.name} must be in [{lo}, {hi}], got {v}')
      setattr(req, f.name, v)
    return req

  def options(self, req: GenerateRequest) -> animate.Options:
    s = self.sampler.config.sampling
    opts = animate.Options(num_frames=req.num_frames, fps=self.sampler.fps,
                           steps=int(s.num_steps) if req.steps is None else req.steps, eta=float(s.eta),
                           guidance=float(s.guidance), seed=req.seed, loop=req.loop,
                           motion_scale=req.motion_scale, max_side=req.max_side)
    opts.check()
    return opts

  def start_generation(self, session: Session, req: GenerateRequest) -> None:
    try:
      opts = self.options(req)
    except animate.InputError as e:
      raise HttpError(400, str(e)) from None
    with session.lock:
      if session.state in BUSY:
        raise HttpError(409, 'this photo is already being generated: wait for it to finish')
      session.state, session.done, session.total, session.message = 'queued', 0, opts.steps, ''
      session.started = time.monotonic()
    threading.Thread(target=self._generate, args=(session, opts), name=f'generate-{session.id}',
                     daemon=True).start()

  def _on_progress(self, done, total) -> None:
    s = self._current
    if s is not None:
      s.update(done=int(done), total=int(total), state='rendering' if done >= total else 'sampling')

  def _generate(self, session: Session, opts: animate.Options) -> None:
    from gid_jax.app import live  # pylint: disable=g-import-not-at-top
    from gid_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
    from gid_jax.motion import modal  # pylint: disable=g-import-not-at-top
    with self._generate_lock:
      if self.closing.is_set():
        return
      self._current = session
      session.update(state='sampling')
      try:
        photo = animate.load_photo(session.photo_path, max_pixels=self.max_pixels)
        frames, spec, t = animate.animate(photo, opts, sampler=self.sampler, renderer=self.renderer,
                                          progress=self._on_progress)
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
                       out_size=(frames.shape[2], frames.shape[1]),
                       seconds=time.monotonic() - session.started)
        if old and os.path.exists(old):
          os.remove(old)
      except animate.InputError as e:
        session.update(state='error', message=str(e).splitlines()[0], seconds=time.monotonic() - session.started)
      except Exception as e:  # pylint: disable=broad-except
        traceback.print_exc()
        session.update(state='error', message=f'generation failed: {type(e).__name__}: {str(e).splitlines()[0]}',
                       seconds=time.monotonic() - session.started)
      finally:
        self._current = None

  def close(self) -> None:
    self.closing.set()
    if self._own_workdir:
      shutil.rmtree(self.workdir, ignore_errors=True)


def _encode_jpeg(image_HxWx3: np.ndarray, quality: int) -> bytes:
  import cv2  # pylint: disable=g-import-not-at-top
  ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(image_HxWx3[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError('JPEG encoding failed')
  return buf.tobytes()


# -- HTTP ------------------------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes requests to the server's App. HTTP/1.0: one request per connection, streams end by closing."""
  server_version = 'gid_jax'
  server: 'AppServer'

  @property
  def app(self) -> App:
    return self.server.app

  def log_request(self, code='-', size='-'):
    # Polling and live frames would flood the terminal: log what went wrong only.
    if isinstance(code, int) and code >= 400:  # HTTPStatus is an int too
      super().log_request(code, size)

  # -- replies --

  def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _json(self, obj, status: int = 200) -> None:
    self._send(status, json.dumps(obj).encode(), 'application/json')

  def _error(self, status: int, message: str) -> None:
    self._json({'error': message}, status)

  # -- request parts --

  def _query(self) -> dict:
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
    return {k: v[-1] for k, v in q.items()}

  def _length(self) -> int:
    try:
      n = int(self.headers.get('Content-Length', ''))
    except ValueError:
      raise HttpError(411, 'the request needs a Content-Length') from None
    if n < 0:
      raise HttpError(400, 'bad Content-Length')
    return n

  def _body_json(self) -> dict:
    if 'Content-Length' not in self.headers:
      return {}
    n = self._length()
    if n > MAX_JSON_BYTES:
      raise HttpError(413, f'request body over {MAX_JSON_BYTES} bytes')
    try:
      body = json.loads(self.rfile.read(n) or b'{}')
    except ValueError:
      raise HttpError(400, 'the request body is not JSON') from None
    if not isinstance(body, dict):
      raise HttpError(400, 'the request body must be a JSON object')
    return body

  def _host_ok(self) -> bool:
    if self.server.any_host:
      return True
    host = self.headers.get('Host', '')
    name = host[1:host.index(']')] if host.startswith('[') and ']' in host else host.rsplit(':', 1)[0]
    return name.lower() in self.server.allowed_hosts

  # -- dispatch --

  def do_GET(self):  # pylint: disable=invalid-name
    self._dispatch({'/api/info': self._info, '/api/photo': self._photo, '/api/progress': self._progress,
                    '/api/video': self._video, '/api/live': self._live, '/api/stats': self._stats})

  def do_HEAD(self):  # pylint: disable=invalid-name
    self.do_GET()

  def do_POST(self):  # pylint: disable=invalid-name
    self._dispatch({'/api/upload': self._upload, '/api/example': self._example, '/api/generate': self._generate,
                    '/api/poke': self._poke}, post=True)

  def _dispatch(self, routes: dict, post: bool = False) -> None:
    path = urllib.parse.urlsplit(self.path).path
    try:
      if not self._host_ok():
        raise HttpError(403, 'this server answers requests for localhost only')
      if post and not self.headers.get('X-Requested-With'):
        raise HttpError(403, 'POST requests need an X-Requested-With header')
      if path in routes:
        routes[path]()
      elif not post and path in STATIC_FILES:
        self._static(STATIC_FILES[path])
      else:
        raise HttpError(404, f'no such page: {path}')
    except HttpError as e:
      self.close_connection = True
      self._error(e.status, str(e))
    except (BrokenPipeError, ConnectionResetError):
      self.close_connection = True
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      self.close_connection = True
      self._error(500, f'internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')

  # -- GET --

  def _static(self, name: str) -> None:
    with open(os.path.join(STATIC, name), 'rb') as f:
      body = f.read()
    ctype = mimetypes.guess_type(name)[0] or 'application/octet-stream'
    if ctype.startswith('text/') or ctype.endswith('javascript'):
      ctype += '; charset=utf-8'
    self._send(200, body, ctype)

  def _info(self) -> None:
    self._json({'example': os.path.isfile(animate.EXAMPLE_PHOTO), 'max_upload_mb': self.app.max_upload_mb,
                'max_pixels': self.app.max_pixels, 'defaults': self.app.defaults(),
                'limits': LIMITS, 'live_fps': self.app.live_fps})

  def _photo(self) -> None:
    s = self.app.session(self._query().get('session'))
    self._send(200, s.preview_jpeg, 'image/jpeg')

  def _progress(self) -> None:
    self._json(self.app.session(self._query().get('session')).progress())

  def _stats(self) -> None:
    s = self.app.session(self._query().get('session'))
    scene = s.scene
    if scene is None:
      raise HttpError(409, 'generate a video first')
    self._json(scene.stats())

  def _video(self) -> None:
    q = self._query()
    s = self.app.session(q.get('session'))
    path = s.video_path
    if not path or not os.path.isfile(path):
      raise HttpError(404, 'no video yet: generate one first')
    size = os.path.getsize(path)
    start, end = 0, size - 1
    status = 200
    rng = self.headers.get('Range')
    m = re.fullmatch(r'bytes=(\d*)-(\d*)', rng.strip()) if rng else None
    if m and (m.group(1) or m.group(2)):
      if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
      else:  # a suffix range: the last n bytes
        start = max(0, size - int(m.group(2)))
      if start > end or start >= size:
        self.send_response(416)
        self.send_header('Content-Range', f'bytes */{size}')
        self.send_header('Content-Length', '0')
        self.end_headers()
        return
      status = 206
    self.send_response(status)
    self.send_header('Content-Type', 'video/mp4')
    self.send_header('Accept-Ranges', 'bytes')
    self.send_header('Content-Length', str(end - start + 1))
    self.send_header('Cache-Control', 'no-store')
    if status == 206:
      self.send_header('Content-Range', f'bytes {start}-{end}/{size}')
    if q.get('download'):
      stem = re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.splitext(s.name)[0])[:80] or 'photo'
      self.send_header('Content-Disposition', f'attachment; filename="{stem}-gid.mp4"')
    self.end_headers()
    if self.command == 'HEAD':
      return
    with open(path, 'rb') as f:
      f.seek(start)
      left = end - start + 1
      while left > 0:
        chunk = f.read(min(left, 1 << 16))
        if not chunk:
          break
        self.wfile.write(chunk)
        left -= len(chunk)

  def _live(self) -> None:
    s = self.app.session(self._query().get('session'))
    scene = s.scene
    if scene is None:
      raise HttpError(409, 'generate a video first: the live scene is built from its motion')
    self.close_connection = True
    self.send_response(200)
    self.send_header('Content-Type', 'application/octet-stream')
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Frame-Width', str(scene.width))
    self.send_header('X-Frame-Height', str(scene.height))
    self.end_headers()
    if self.command == 'HEAD':
      return
    # Small writes of a live stream must leave at once, not wait for more data (Nagle).
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    period = 1.0 / scene.fps
    next_t = time.monotonic()
    sent_version, sent_at = None, 0.0
    # Ends when the client goes (the write fails), a new generation replaces the scene, or the server closes.
    while not self.app.closing.is_set() and s.scene is scene:
      jpeg, info = scene.frame()
      now = time.monotonic()
      if info['version'] != sent_version or now - sent_at >= LIVE_KEEPALIVE_S:
        self.wfile.write(struct.pack('>IIf', len(jpeg), info['frame'], info['render_ms']) + jpeg)
        self.wfile.flush()
        sent_version, sent_at = info['version'], now
      next_t += period
      delay = next_t - time.monotonic()
      if delay > 0:
        time.sleep(delay)
      else:
        next_t = time.monotonic()  # late: start the schedule again rather than send a burst

  # -- POST --

  def _upload(self) -> None:
    name = urllib.parse.unquote(self.headers.get('X-Filename', '')) or 'photo'
    name = os.path.basename(name.replace('\\', '/'))[:200] or 'photo'
    n = self._length()
    limit = self.app.max_upload_bytes
    if n > limit:
      # Read (and drop) a moderately large body first: a browser that is still sending when the
      # connection closes reports a network error instead of this message.
      if n <= 16 * limit:
        self._discard(n)
      raise HttpError(413, f'{name} is {n / 2**20:.1f} MB, over the {self.app.max_upload_mb:g} MB upload '
                           'limit')
    if n == 0:
      raise HttpError(400, f'{name} is empty')
    ext = os.path.splitext(name)[1].lower()
    fd, path = tempfile.mkstemp(dir=self.app.workdir, prefix='upload-',
                                suffix=ext if re.fullmatch(r'\.[a-z0-9]{1,5}', ext) else '')
    try:
      with os.fdopen(fd, 'wb') as f:
        left = n
        while left > 0:
          chunk = self.rfile.read(min(left, 1 << 16))
          if not chunk:
            raise HttpError(400, 'the upload was cut short')
          f.write(chunk)
          left -= len(chunk)
    except BaseException:
      if os.path.exists(path):
        os.remove(path)
      raise
    self._open_session(path, name, 400)

  def _open_session(self, path: str, name: str, status: int) -> None:
    """A session from the photo at ``path`` (removed afterwards); InputErrors answer ``status``."""
    try:
      s = self.app.new_session(path, name)
    except animate.InputError as e:
      raise HttpError(status, str(e).splitlines()[0]) from None
    finally:
      if os.path.exists(path):
        os.remove(path)
    self._json({'session': s.id, 'name': s.name, 'width': s.width, 'height': s.height})

  def _discard(self, n: int) -> None:
    while n > 0:
      chunk = self.rfile.read(min(n, 1 << 16))
      if not chunk:
        return
      n -= len(chunk)

  def _example(self) -> None:
    self._body_json()
    if not os.path.isfile(animate.EXAMPLE_PHOTO):
      raise HttpError(404, 'no example photo is bundled with this installation')
    fd, path = tempfile.mkstemp(dir=self.app.workdir, prefix='example-',
                                suffix=os.path.splitext(animate.EXAMPLE_PHOTO)[1])
    os.close(fd)
    shutil.copyfile(animate.EXAMPLE_PHOTO, path)
    self._open_session(path, os.path.basename(animate.EXAMPLE_PHOTO), 500)

  def _generate(self) -> None:
    body = self._body_json()
    s = self.app.session(body.get('session'))
    self.app.start_generation(s, self.app.parse_generate(body))
    self._json({'session': s.id}, 202)

  def _poke(self) -> None:
    body = self._body_json()
    s = self.app.session(body.get('session'))
    scene = s.scene
    if scene is None:
      raise HttpError(409, 'generate a video first: poking needs its motion')
    action = body.get('action', 'poke')
    if action == 'release':
      scene.release()
    elif action == 'reset':
      scene.reset()
    elif action in ('poke', 'hold'):
      try:
        x, y, dx, dy = (float(body[k]) for k in ('x', 'y', 'dx', 'dy'))
        strength = float(body.get('strength', 1.0))
      except (KeyError, TypeError, ValueError):
        raise HttpError(400, 'a poke needs numbers x, y (fractions in [0, 1]), dx, dy (pixels)') from None
      if not all(np.isfinite(v) for v in (x, y, dx, dy, strength)) or not (0 <= x <= 1 and 0 <= y <= 1):
        raise HttpError(400, f'a poke needs x, y in [0, 1] and finite dx, dy; got {x}, {y}, {dx}, {dy}')
      fn = scene.hold if action == 'hold' else scene.poke
      fn(x * (scene.width - 1), y * (scene.height - 1), dx, dy, strength)
    else:
      raise HttpError(400, f'action must be hold, release, poke or reset, got {action!r}')
    self._json({'ok': True})


class AppServer(http.server.ThreadingHTTPServer):
  """ThreadingHTTPServer with the App attached; ``url`` is the page's address."""
  daemon_threads = True  # live streams end with the process
  allow_reuse_address = True

  def __init__(self, app: App, host: str, port: int):
    self.app = app
    self.any_host = host in ('', '0.0.0.0', '::')
    self.allowed_hosts = set(LOCAL_HOSTS) | {host.lower()}
    if ':' in host:
      self.address_family = socket.AF_INET6
    super().__init__((host, port), Handler)
    url_host = f'[{host}]' if ':' in host else ('127.0.0.1' if self.any_host else host)
    self.url = f'http://{url_host}:{self.server_address[1]}/'

  def server_close(self) -> None:
    self.app.close()
    super().server_close()


def make_server(checkpoint: str | None = None, renderer: str | None = None, host: str = '127.0.0.1',
                port: int = 8000, max_upload_mb: float = 20, max_pixels: int = animate.MAX_PIXELS,
                live_fps: float = 30.0, live_renderer: bool = False) -> AppServer:
  """Load the models and bind (not yet serve). InputError (one line) for a missing or bad checkpoint.

  Args:
    checkpoint: a motion LDM run or export; None = the bundled model (animate.DEFAULT_CHECKPOINT).
    renderer: a renderer run or export; None = the bundled one if present, '' or 'none' = softmax splatting.
    host, port: where to listen; port 0 = any free port (see the returned server's ``url``).
    max_upload_mb: larger uploads are refused with 413.
    max_pixels: larger photos are refused (decompression bombs, memory).
    live_fps: frame rate (and simulation step) of the live scene.
    live_renderer: render the live scene with the trained renderer too (else softmax splatting: the
      renderer is ~10-20x slower, too slow for a live scene on a CPU).
  """
  if not max_upload_mb > 0:
    raise animate.InputError(f'--max-upload-mb must be positive, got {max_upload_mb}')
  sampler, model = animate.load_models(checkpoint, renderer)
  app = App(sampler, model, max_upload_mb=max_upload_mb, max_pixels=max_pixels, live_fps=live_fps,
            live_renderer=live_renderer)
  try:
    return AppServer(app, host, port)
  except OSError as e:
    app.close()
    raise animate.InputError(f'cannot listen on {host}:{port}: {e.strerror or e}') from e


def serve(server: AppServer) -> None:
  """Serve until Ctrl-C."""
  try:
    print(f'gid_jax app: {server.url}  (Ctrl-C to stop)', flush=True)
    server.serve_forever()
  except KeyboardInterrupt:
    print('stopping', file=sys.stderr)
  finally:
    server.server_close()
