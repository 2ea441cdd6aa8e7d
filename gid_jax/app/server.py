"""The local web app behind ``python -m gid_jax.app``: open a photo, generate its video, poke it live.

    server = make_server(checkpoint, renderer='', host='127.0.0.1', port=0)
    server.start()           # serves in a thread; server.url is the page
    ...
    server.stop()            # running job stopped, work folder removed

The HTTP side is Starlette on uvicorn. Why: they give what a hand-written ``http.server`` had to build and
got wrong under load: h11 request parsing, keep-alive timeouts, a cap on concurrent connections answered with
503 (``MAX_CONNECTIONS``), byte-range file responses for ``<video>``, streaming responses that end when the
client goes, asynchronous I/O (an idle connection costs no thread) and graceful shutdown. Gradio (the
field's usual demo framework) was the alternative: it brings its own front end and about fifty packages, and
its event queue is made for request/response, not for a 30 fps binary stream that follows a pointer; the
page (``static/``, plain JS, nothing from the network) and this HTTP API are kept as they were.

It binds 127.0.0.1 by default; POSTs must carry an ``X-Requested-With`` header, which a page of another
origin cannot send without a CORS preflight that this server never grants, and requests naming a foreign
Host are refused (DNS rebinding), so other web pages cannot drive it. Sessions, the job queue and every
resource bound live in :mod:`gid_jax.app.state`.

Endpoints (JSON in and out unless noted; an error is ``{"error": "one line"}`` with a 4xx/5xx status):

  GET  /  and  /static/{app.js,style.css}   the page
  GET  /api/info                  {"example", "max_upload_mb", "max_pixels", "defaults", "limits", "live_fps"}
  POST /api/upload                body: the photo's bytes; header X-Filename: its name (URL-encoded)
                                  -> {"session", "name", "width", "height"}. 413: over the upload limit;
                                  400: not a readable image, too many pixels or too elongated; 408: the
                                  upload stalled; 503: busy (too many uploads at once, or every session slot
                                  is in use and none is idle and old enough to give up)
  POST /api/example               the bundled example photo as a new session
  GET  /api/photo?session=S       a preview of the photo (JPEG, longer side <= 1024)
  POST /api/generate              {"session", "seed", "steps", "motion_scale", "loop", "num_frames",
                                  "max_side"} (all optional but session) -> 202; 400: a bad value or over the
                                  work budget; 409 while S has a job; 503: the queue is full
  POST /api/cancel                {"session"}: stops its queued or running job (within a DDIM step)
  GET  /api/progress?session=S    {"state": ready|queued|sampling|rendering|encoding|live|done|error|
                                  cancelled, "position" (1 = next in the queue), "done", "total", "message",
                                  "video", "width", "height", "seconds"}
  GET  /api/video?session=S       the mp4 (byte ranges served, so <video> can seek and loop);
                                  &download=1 makes it an attachment
  GET  /api/live?session=S        live frames, an endless application/octet-stream of records
                                  [uint32 length n][uint32 simulation frame][float32 server ms][n bytes JPEG]
                                  (big-endian); a frame is sent when the picture changes, and the last one
                                  again every second while the scene is at rest (so a dead client is noticed)
  POST /api/poke                  {"session", "action": hold|release|poke|reset, "x", "y", "dx", "dy"}:
                                  x, y fractions of the width and height in [0, 1], (dx, dy) the drag in
                                  pixels of the generated video (at most 4x its longer side); hold while
                                  dragging, release on letting go
  GET  /api/stats?session=S       the live scene's server-side cost: {"rendered", "render_ms_mean",
                                  "render_ms_median", "width", "height", "fps"}

The live scene is rendered by softmax splatting (gid_jax.app.live), a few ms a frame at 256 x 160, even when
the video uses a trained renderer (~100 ms a frame on a CPU); ``live_renderer=True`` uses the renderer for both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.parse

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
import uvicorn

from gid_jax import animate
from gid_jax.app import state
from gid_jax.app.state import HttpError

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
MAX_JSON_BYTES = 64 * 1024
LIVE_KEEPALIVE_S = 1.0
LOCAL_HOSTS = ('localhost', '127.0.0.1', '::1')
MAX_CONNECTIONS = 64  # open connections and requests at once; beyond, uvicorn answers 503
MAX_POKE_SIDES = 4.0  # |dx|, |dy| of a poke in units of the picture's longer side


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({'error': message}, status)


async def _json_body(request) -> dict:
  n = request.headers.get('content-length', '0')
  if not n.isdigit():
    raise HttpError(400, 'bad Content-Length')
  if int(n) > MAX_JSON_BYTES:
    raise HttpError(413, f'request body over {MAX_JSON_BYTES} bytes')
  raw = await request.body()
  if len(raw) > MAX_JSON_BYTES:  # a chunked body has no Content-Length
    raise HttpError(413, f'request body over {MAX_JSON_BYTES} bytes')

  def no_constants(name):  # NaN and Infinity are not JSON
    raise ValueError(name)

  try:
    body = json.loads(raw or b'{}', parse_constant=no_constants)
  except ValueError:
    raise HttpError(400, 'the request body is not JSON') from None
  if not isinstance(body, dict):
    raise HttpError(400, 'the request body must be a JSON object')
  return body


class _Guard:
  """ASGI middleware: the Host check (DNS rebinding), POSTs only with X-Requested-With, no caching, nosniff."""

  def __init__(self, app, allowed_hosts, any_host: bool):
    self.app = app
    self.allowed_hosts = allowed_hosts
    self.any_host = any_host

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    headers = {k.decode('latin-1').lower(): v.decode('latin-1') for k, v in scope['headers']}
    host = headers.get('host', '')
    name = host[1:host.index(']')] if host.startswith('[') and ']' in host else host.rsplit(':', 1)[0]
    problem = None
    if not self.any_host and name.lower() not in self.allowed_hosts:
      problem = 'this server answers requests for localhost only'
    elif scope['method'] == 'POST' and not headers.get('x-requested-with'):
      problem = 'POST requests need an X-Requested-With header'
    if problem:
      return await _error(403, problem)(scope, receive, send)

    async def send_with_headers(message):
      if message['type'] == 'http.response.start':
        message.setdefault('headers', [])
        names = {k.lower() for k, _ in message['headers']}
        if b'cache-control' not in names:
          message['headers'].append((b'cache-control', b'no-store'))
        message['headers'].append((b'x-content-type-options', b'nosniff'))
      await send(message)

    return await self.app(scope, receive, send_with_headers)


def build_app(app: state.App, allowed_hosts, any_host: bool):
  """The Starlette application serving ``app`` (an :class:`state.App`)."""
  limits = app.limits

  async def info(request):
    return JSONResponse({'example': os.path.isfile(animate.EXAMPLE_PHOTO), 'max_upload_mb': limits.max_upload_mb,
                         'max_pixels': limits.max_pixels, 'defaults': app.defaults(), 'limits': state.LIMITS,
                         'live_fps': app.live_fps})

  async def photo(request):
    return Response(app.session(request.query_params.get('session')).preview_jpeg, media_type='image/jpeg')

  async def progress(request):
    return JSONResponse(app.session(request.query_params.get('session')).progress())

  async def stats(request):
    s = app.session(request.query_params.get('session'))
    if s.scene is None:
      raise HttpError(409, 'generate a video first')
    return JSONResponse(s.scene.stats())

  async def video(request):
    s = app.session(request.query_params.get('session'))
    path = s.video_path
    if not path or not os.path.isfile(path):
      raise HttpError(404, 'no video yet: generate one first')
    name = None
    if request.query_params.get('download'):
      name = (re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.splitext(s.name)[0])[:80] or 'photo') + '-gid.mp4'
    return FileResponse(path, media_type='video/mp4', filename=name)

  async def live_stream(request):
    s = app.session(request.query_params.get('session'))
    scene = s.scene
    if scene is None:
      raise HttpError(409, 'generate a video first: the live scene is built from its motion')

    async def records():
      s.update(viewers=s.viewers + 1)  # a watched session is never evicted
      try:
        period = 1.0 / scene.fps
        next_t = time.monotonic()
        sent_version, sent_at = None, 0.0
        # Ends when the client goes (Starlette cancels this), a new generation replaces the scene, or the
        # server closes.
        while not app.closing.is_set() and s.scene is scene:
          jpeg, frame_info = await run_in_threadpool(scene.frame)
          now = time.monotonic()
          if frame_info['version'] != sent_version or now - sent_at >= LIVE_KEEPALIVE_S:
            yield struct.pack('>IIf', len(jpeg), frame_info['frame'], frame_info['render_ms']) + jpeg
            sent_version, sent_at = frame_info['version'], now
          next_t += period
          delay = next_t - time.monotonic()
          if delay > 0:
            await anyio.sleep(delay)
          else:
            next_t = time.monotonic()  # late: start the schedule again rather than send a burst
      finally:
        s.update(viewers=s.viewers - 1)

    return StreamingResponse(records(), media_type='application/octet-stream',
                             headers={'X-Frame-Width': str(scene.width), 'X-Frame-Height': str(scene.height)})

  async def open_session(path: str, name: str):
    """A session from the photo file at ``path`` (moved into it, or removed if the photo is refused)."""
    try:
      photo_rgb = await run_in_threadpool(app.check_photo, path, name)
      s = await run_in_threadpool(app.new_session, path, name, photo_rgb)
    finally:
      if os.path.exists(path):
        os.remove(path)
    return JSONResponse({'session': s.id, 'name': s.name, 'width': s.width, 'height': s.height})

  async def upload(request):
    name = urllib.parse.unquote(request.headers.get('x-filename', '')) or 'photo'
    name = os.path.basename(name.replace('\\', '/'))[:200] or 'photo'
    n = request.headers.get('content-length')
    if n is None or not n.isdigit():
      raise HttpError(411, 'the upload needs a Content-Length')
    n = int(n)
    limit = int(limits.max_upload_mb * 2**20)
    too_big = HttpError(413, f'{name} is {n / 2**20:.1f} MB, over the {limits.max_upload_mb:g} MB upload limit')
    if n > limit:
      if n <= 16 * limit:  # read and drop it: a browser still sending when we close reports a network error
        await _receive(request, None, limits.upload_idle_s, n)
      raise too_big
    if n == 0:
      raise HttpError(400, f'{name} is empty')
    app.begin_upload()
    ext = os.path.splitext(name)[1].lower()
    fd, path = tempfile.mkstemp(dir=app.workdir, prefix='upload-',
                                suffix=ext if re.fullmatch(r'\.[a-z0-9]{1,5}', ext) else '')
    try:
      with os.fdopen(fd, 'wb') as f:
        if await _receive(request, f, limits.upload_idle_s, n) < n:
          raise HttpError(400, 'the upload was cut short')
      return await open_session(path, name)
    finally:
      app.end_upload()

  async def example(request):
    await _json_body(request)
    if not os.path.isfile(animate.EXAMPLE_PHOTO):
      raise HttpError(404, 'no example photo is bundled with this installation')
    name = os.path.basename(animate.EXAMPLE_PHOTO)
    fd, path = tempfile.mkstemp(dir=app.workdir, prefix='example-', suffix=os.path.splitext(name)[1])
    os.close(fd)
    await run_in_threadpool(shutil.copyfile, animate.EXAMPLE_PHOTO, path)
    return await open_session(path, name)

  async def generate(request):
    body = await _json_body(request)
    s = app.session(state.session_id(body))
    app.start_generation(s, state.GenerateRequest.parse(body))
    return JSONResponse({'session': s.id}, 202)

  async def cancel(request):
    body = await _json_body(request)
    s = app.session(state.session_id(body))
    app.cancel(s)
    return JSONResponse({'session': s.id, 'state': s.state})

  async def poke(request):
    body = await _json_body(request)
    s = app.session(state.session_id(body))
    scene = s.scene
    if scene is None:
      raise HttpError(409, 'generate a video first: poking needs its motion')
    action = body.get('action', 'poke')
    if action == 'release':
      scene.release()
    elif action == 'reset':
      scene.reset()
    elif action in ('poke', 'hold'):
      for k in ('x', 'y', 'dx', 'dy'):
        if body.get(k) is None:
          raise HttpError(400, 'a poke needs numbers x, y (fractions in [0, 1]), dx, dy (pixels)')
      side = MAX_POKE_SIDES * max(scene.width, scene.height)
      x, y = (state.number(body, k, 0.0, 1.0) for k in ('x', 'y'))
      dx, dy = (state.number(body, k, -side, side) for k in ('dx', 'dy'))
      strength = state.number(body, 'strength', 0.0, 10.0)
      fn = scene.hold if action == 'hold' else scene.poke
      fn(x * (scene.width - 1), y * (scene.height - 1), dx, dy, 1.0 if strength is None else strength)
    else:
      raise HttpError(400, f'action must be hold, release, poke or reset, got {state._short(action)}')  # pylint: disable=protected-access
    return JSONResponse({'ok': True})

  async def index(request):
    return FileResponse(os.path.join(STATIC, 'index.html'), media_type='text/html; charset=utf-8')

  async def on_http_error(request, exc: HttpError):
    return _error(exc.status, str(exc))

  async def on_starlette_error(request, exc: HTTPException):
    if exc.status_code == 404:
      return _error(404, f'no such page: {request.url.path}')
    return _error(exc.status_code, str(exc.detail))

  async def on_stalled(request, exc):
    return _error(408, f'the upload sent nothing for {limits.upload_idle_s:g} s: try again')

  async def on_internal(request, exc: Exception):
    return _error(500, f'internal error: {type(exc).__name__}: {(str(exc).splitlines() or [""])[0]}')

  routes = [
      Route('/', index), Route('/api/info', info), Route('/api/photo', photo), Route('/api/progress', progress),
      Route('/api/stats', stats), Route('/api/video', video), Route('/api/live', live_stream),
      Route('/api/upload', upload, methods=['POST']), Route('/api/example', example, methods=['POST']),
      Route('/api/generate', generate, methods=['POST']), Route('/api/cancel', cancel, methods=['POST']),
      Route('/api/poke', poke, methods=['POST']), Mount('/static', StaticFiles(directory=STATIC)),
  ]
  web = Starlette(routes=routes, exception_handlers={
      HttpError: on_http_error, HTTPException: on_starlette_error, TimeoutError: on_stalled,
      ClientDisconnect: lambda request, exc: Response(status_code=499), Exception: on_internal})
  return _Guard(web, allowed_hosts, any_host)


async def _receive(request, f, idle_s: float, limit: int) -> int:
  """Read the request body into ``f`` (or drop it), at most ``limit`` bytes; TimeoutError when the client
  sends nothing for ``idle_s``. Returns the bytes read."""
  total = 0
  chunks = request.stream().__aiter__()
  while True:
    with anyio.fail_after(idle_s):
      try:
        chunk = await chunks.__anext__()
      except StopAsyncIteration:
        return total
    total += len(chunk)
    if total > limit:
      raise HttpError(413, 'the upload is longer than its Content-Length')
    if f is not None and chunk:
      f.write(chunk)


class AppServer:
  """A bound socket, the Starlette app on uvicorn, and the :class:`state.App`; ``url`` is the page."""

  def __init__(self, app: state.App, host: str, port: int):
    self.app = app
    any_host = host in ('', '0.0.0.0', '::')
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    self.sock = socket.socket(family, socket.SOCK_STREAM)
    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self.sock.bind((host, port))
    self.sock.set_inheritable(True)
    port = self.sock.getsockname()[1]
    url_host = f'[{host}]' if ':' in host else ('127.0.0.1' if any_host else host)
    self.url = f'http://{url_host}:{port}/'
    web = build_app(app, set(LOCAL_HOSTS) | {host.lower()}, any_host)
    config = uvicorn.Config(web, log_level='warning', access_log=False, lifespan='off',
                            limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5, timeout_graceful_shutdown=3)
    self.server = uvicorn.Server(config)
    self._thread: threading.Thread | None = None

  def start(self, timeout: float = 30.0) -> None:
    """Serve in a background thread (returns once it accepts connections)."""
    self._thread = threading.Thread(target=self.server.run, kwargs={'sockets': [self.sock]}, name='gid-app-http')
    self._thread.start()
    deadline = time.monotonic() + timeout
    while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
      time.sleep(0.02)
    if not self.server.started:
      raise RuntimeError('the web server did not start')

  def request_stop(self, *unused) -> None:
    """From a signal handler: stop jobs and streams, then the server (``stop`` finishes the job)."""
    self.app.closing.set()
    self.server.should_exit = True

  def stop(self) -> None:
    self.request_stop()
    if self._thread is not None:
      self._thread.join(15)
    self.app.close()
    self.sock.close()


def make_server(checkpoint: str | None = None, renderer: str | None = None, host: str = '127.0.0.1',
                port: int = 8000, limits: state.Limits | None = None, live_fps: float = 30.0,
                live_renderer: bool = False) -> AppServer:
  """Load the models and bind (not yet serve). InputError (one line) for a missing or bad checkpoint.

  Args:
    checkpoint: a motion LDM run or export; None = the bundled model (animate.DEFAULT_CHECKPOINT).
    renderer: a renderer run or export; None = the bundled one if present, '' or 'none' = softmax splatting.
    host, port: where to listen; port 0 = any free port (see the returned server's ``url``).
    limits: resource bounds (uploads, pixels, sessions, queue, work budget): state.Limits.
    live_fps: frame rate (and simulation step) of the live scene.
    live_renderer: render the live scene with the trained renderer too (else softmax splatting: the
      renderer is ~10-20x slower, too slow for a live scene on a CPU).
  """
  limits = limits or state.Limits()
  if not limits.max_upload_mb > 0:
    raise animate.InputError(f'--max-upload-mb must be positive, got {limits.max_upload_mb}')
  sampler, model = animate.load_models(checkpoint, renderer)
  app = state.App(sampler, model, limits=limits, live_fps=live_fps, live_renderer=live_renderer)
  try:
    return AppServer(app, host, port)
  except OSError as e:
    app.close()
    raise animate.InputError(f'cannot listen on {host}:{port}: {e.strerror or e}') from e


def serve(server: AppServer) -> None:
  """Serve until SIGINT (Ctrl-C), SIGTERM or SIGHUP; then stop the running job, remove the work folder and
  return (exit status 0)."""
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, server.request_stop)
  server.start()
  print(f'gid_jax app: {server.url}  (Ctrl-C to stop)', flush=True)
  try:
    while server._thread.is_alive():  # pylint: disable=protected-access
      server._thread.join(0.2)  # pylint: disable=protected-access
  finally:
    print('stopping: cancelling jobs, removing the work folder', file=sys.stderr, flush=True)
    server.stop()
