"""The web app (python -m gid_jax.app): the live scene, the HTTP API, and the page end to end in a browser.

The browser test drives Debian's chromium through the playwright package (``executable_path``; playwright's
own browser downloads are not used) and is skipped, with the reason, where either is missing. It serves a
tiny trained motion model (the ``ldm_runs`` fixture) on a free port in a thread.
"""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from gid_jax.app import live
from gid_jax.app import server
from gid_jax.app import state
from gid_jax.motion import modal

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
W, H = 256, 160  # the live scene's size in the browser test: the size the frame rate is measured at


def _smooth_volume(rng, k=8, h=40, w=64, amp=3.0):
  """A smooth random spectral volume (pixels): every bin moves every pixel a little."""
  import cv2  # pylint: disable=g-import-not-at-top
  noise = rng.normal(size=(h, w, k * 4)).astype(np.float32)
  return cv2.GaussianBlur(noise, (0, 0), 6).reshape(h, w, k, 4).transpose(2, 0, 1, 3) * amp * 10


class _Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


# -- the live scene (no model, no server) ------------------------------------------------------------------


def test_live_scene_rests_leans_and_follows_the_clock():
  import skimage.data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  photo = np.asarray(Image.fromarray(skimage.data.coffee()).resize((64, 40), Image.LANCZOS))
  clock = _Clock()
  # Strong damping (0.3: a 0.75 Hz mode decays in ~0.7 s) so that it settles within a few simulated seconds.
  scene = live.LiveScene(photo, _smooth_volume(rng), 40, 30.0, params=modal.ModalParams(damping=0.3), clock=clock)
  jpeg, info = scene.frame()
  rest = np.asarray(Image.open(io.BytesIO(jpeg)))
  assert rest.shape == (40, 64, 3) and info['at_rest']
  assert np.abs(rest.astype(int) - photo).mean() < 8  # the photo itself, up to JPEG loss
  clock.t = 1.0  # a second passes at rest: nothing is rendered again
  assert scene.frame()[1]['version'] == info['version'] and scene.stats()['rendered'] == 1

  scene.hold(32, 20, 15.0, 0.0)
  clock.t = 2.0  # the clock, not the number of calls, sets the simulation time: 30 frames later
  jpeg2, info2 = scene.frame()
  assert info2['frame'] == 60  # caught up with the clock (skipping what is over MAX_CATCH_UP behind)
  assert not info2['at_rest'] and info2['version'] != info['version']
  leaned = np.asarray(Image.open(io.BytesIO(jpeg2)))
  assert np.abs(leaned.astype(int) - rest).mean() > 1.0
  assert scene.frame()[1]['version'] == info2['version']  # same instant: the cached frame, not a new render

  scene.release()
  for i in range(1, 300):
    clock.t = 2.0 + i / 30
    if scene.frame()[1]['at_rest']:
      break
  assert scene.at_rest() and i < 250, i
  scene.reset()
  stats = scene.stats()
  assert stats['rendered'] >= 3 and stats['render_ms_median'] > 0


def test_period_importance_is_the_splat_weight_of_one_period():
  from gid_jax.motion import edit  # pylint: disable=g-import-not-at-top
  from gid_jax.ops import splat  # pylint: disable=g-import-not-at-top
  spec = np.random.default_rng(0).normal(size=(8, 20, 30, 4)).astype(np.float32)
  disp = edit.displacements_at(spec, np.arange(40), 40)
  np.testing.assert_allclose(live.period_importance(spec, 40, chunk=16), splat.splat_weight(disp - disp[:1]),
                             rtol=1e-5, atol=1e-5)


def test_live_scene_checks_sizes():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match='64x40 but the photo is 32x20'):
    live.LiveScene(np.zeros((20, 32, 3), np.uint8), _smooth_volume(rng), 40, 30.0)


# -- the HTTP API ------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def app_server(ldm_runs):
  srv = server.make_server(ldm_runs['s1'], 'none', port=0, limits=state.Limits(max_upload_mb=1, upload_idle_s=1))
  srv.start()
  yield srv
  srv.stop()
  assert not os.path.exists(srv.app.workdir)


@pytest.fixture(scope='module')
def photo_png():
  """A real photo (scikit-image's coffee) at 256 x 160, as PNG bytes."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(skimage.data.coffee()).resize((W, H), Image.LANCZOS).save(buf, 'PNG')
  return buf.getvalue()


def _request(srv, path, body=None, headers=None, method=None):
  """(status, headers, body bytes) of one request, errors included."""
  h = {'X-Requested-With': 'test'} if body is not None else {}
  h.update(headers or {})
  data = json.dumps(body).encode() if isinstance(body, dict) else body
  if isinstance(body, dict):
    h['Content-Type'] = 'application/json'
  req = urllib.request.Request(srv.url.rstrip('/') + path, data=data, headers=h, method=method)
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, r.headers, r.read()
  except urllib.error.HTTPError as e:
    return e.code, e.headers, e.read()


def _error(srv, path, body=None, headers=None):
  status, _, data = _request(srv, path, body, headers)
  return status, json.loads(data)['error']


def test_api_refuses_bad_uploads_and_requests(app_server, photo_png):
  srv = app_server
  status, message = _error(srv, '/api/upload', os.urandom(int(1.5 * 2**20)), {'X-Filename': 'big%20one.png'})
  assert status == 413 and message == 'big one.png is 1.5 MB, over the 1 MB upload limit'
  status, message = _error(srv, '/api/upload', b'not an image at all', {'X-Filename': 'notes.png'})
  assert status == 400 and message.startswith('notes.png is not a readable image'), message
  srv.app.limits.max_pixels = 40_000
  try:
    status, message = _error(srv, '/api/upload', photo_png, {'X-Filename': 'wide.png'})
  finally:
    srv.app.limits.max_pixels = state.Limits().max_pixels
  assert status == 400 and message == 'wide.png is 256x160 = 40,960 pixels, over the limit of 40,000 pixels'
  assert _error(srv, '/api/upload', photo_png, {'X-Requested-With': ''})[0] == 403  # no cross-site POSTs
  assert _error(srv, '/api/info', headers={'Host': 'evil.example:80'})[0] == 403  # DNS rebinding
  assert _error(srv, '/api/progress?session=nope') == (404, 'unknown or expired session: open the photo again')
  assert _error(srv, '/../setup.cfg')[0] == 404

  status, _, data = _request(srv, '/api/upload', photo_png, {'X-Filename': 'coffee.png'})
  assert status == 200
  sid = json.loads(data)['session']
  assert _error(srv, '/api/generate', {'session': sid, 'steps': 0})[0] == 400
  assert _error(srv, '/api/generate', {'session': sid, 'num_frames': 'many'}) == (
      400, "num_frames must be a number, got 'many'")
  assert _error(srv, '/api/poke', {'session': sid, 'x': 0.5, 'y': 0.5, 'dx': 1, 'dy': 0})[0] == 409
  assert _error(srv, f'/api/live?session={sid}')[0] == 409
  status, headers, body = _request(srv, f'/api/photo?session={sid}')
  assert status == 200 and headers['Content-Type'] == 'image/jpeg'
  assert Image.open(io.BytesIO(body)).size == (W, H)


def _png(w, h, seed=0):
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, 'PNG')
  return buf.getvalue()


def _raw(srv, path, raw: bytes):
  """A POST with a raw (possibly invalid JSON) body: (status, error line)."""
  status, _, data = _request(srv, path, raw, {'Content-Type': 'application/json'})
  return status, json.loads(data)['error']


def _wait_state(srv, sid, states, timeout=120):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    p = json.loads(_request(srv, f'/api/progress?session={sid}')[2])
    if p['state'] in states:
      return p
    time.sleep(0.05)
  raise AssertionError(f'{sid} never reached {states}: {p}')


def test_every_bad_field_is_a_4xx_with_one_line(app_server, photo_png):
  """Wrong JSON types, NaN / Infinity, 1e999, 10**400 and huge finite pokes: 400 and one line, never 500."""
  srv = app_server
  sid = json.loads(_request(srv, '/api/upload', photo_png, {'X-Filename': 'c.png'})[2])['session']
  status, message = _error(srv, '/api/generate', {'session': [sid]})
  assert status == 400 and message.startswith('session must be a string, got [')
  big = str(10**400)
  for raw, text in (('"seed": Infinity', 'not JSON'), ('"steps": NaN', 'not JSON'),
                    ('"steps": 1e999', 'steps must be a finite number, got inf'),
                    ('"seed": 1e999', 'seed must be a finite number, got inf'),
                    (f'"seed": {big}', 'seed must be in [0, 2147483647], got 100000000000...(401 characters)'),
                    ('"steps": 2.5', 'steps must be a whole number, got 2.5'),
                    ('"loop": "yes"', "loop must be true or false, got 'yes'")):
    status, message = _raw(srv, '/api/generate', ('{"session": "%s", %s}' % (sid, raw)).encode())
    assert status == 400 and text in message and '\n' not in message, (raw, status, message)
  assert _raw(srv, '/api/generate', b'[1, 2]') == (400, 'the request body must be a JSON object')
  # Over the work budget: refused before any work, with what to change.
  big_sid = json.loads(_request(srv, '/api/upload', _png(512, 320), {'X-Filename': 'big.png'})[2])['session']
  status, message = _error(srv, '/api/generate', {'session': big_sid, 'num_frames': 600, 'max_side': 512})
  assert status == 400 and 'x the work of the default one' in message and 'fewer steps or frames' in message
  # An elongated photo would make an elongated model input: refused at upload.
  status, message = _error(srv, '/api/upload', _png(400, 32), {'X-Filename': 'strip.png'})
  assert status == 400 and message == 'strip.png is 400x32 pixels; its longer side may be at most 4x its shorter (crop it)'
  # Pokes: a generated scene first (tiny), then bad numbers.
  assert _request(srv, '/api/generate', {'session': sid, 'steps': 2, 'num_frames': 4, 'max_side': 64})[0] == 202
  _wait_state(srv, sid, ('done',))
  for body, text in (({'x': 0.5, 'y': 0.5, 'dx': 1e308, 'dy': 0}, 'dx must be in [-256.0, 256.0], got 1e+308'),
                     ({'x': 10**400, 'y': 0.5, 'dx': 1, 'dy': 0}, 'x must be in [0.0, 1.0]'),
                     ({'x': 0.5, 'y': 0.5, 'dx': [1], 'dy': 0}, 'dx must be a number'),
                     ({'x': 0.5, 'y': 0.5, 'dx': 1, 'dy': 0, 'strength': 1e9}, 'strength must be in [0.0, 10.0]'),
                     ({'action': {'a': 1}}, 'action must be hold, release, poke or reset')):
    status, message = _error(srv, '/api/poke', {'session': sid, 'action': 'hold', **body})
    assert status == 400 and text in message, (body, message)
  assert _request(srv, '/api/poke', {'session': sid, 'action': 'hold', 'x': 0.5, 'y': 0.5, 'dx': 255, 'dy': 0})[0] == 200


def test_queue_positions_and_cancel_within_a_chunk(app_server, photo_png):
  srv = app_server
  # Record every render-progress call: a cancel must stop the running job at its next chunk of frames.
  app, calls, rendered = srv.app, [], threading.Event()
  on_render = app._on_render  # pylint: disable=protected-access

  def recording(done, total):
    s = app._current  # pylint: disable=protected-access
    calls.append((s.id, done, total, s.cancel.is_set()))
    if done > 0:
      rendered.set()
    on_render(done, total)

  app._on_render = recording  # pylint: disable=protected-access  (looked up when each job starts)
  a, b = (json.loads(_request(srv, '/api/upload', photo_png, {'X-Filename': f'{n}.png'})[2])['session'] for n in 'ab')
  assert _error(srv, '/api/generate', {'session': a, 'steps': 101}) == (
      400, 'steps must be at most 100 for this model (its diffusion has 100 timesteps), got 101')
  long_job = {'steps': 100, 'num_frames': 600, 'max_side': 256}  # seconds of sampling and rendering
  assert _request(srv, '/api/generate', {'session': a, **long_job})[0] == 202
  assert _request(srv, '/api/generate', {'session': b, 'steps': 3, 'num_frames': 4, 'max_side': 64})[0] == 202
  assert _error(srv, '/api/generate', {'session': a})[0] == 409  # one job per photo
  # b waits behind a: second while the worker has not yet taken a, first once it has.
  assert json.loads(_request(srv, f'/api/progress?session={b}')[2])['position'] in (1, 2)
  _wait_state(srv, a, ('sampling', 'rendering', 'done', 'error'))
  assert json.loads(_request(srv, f'/api/progress?session={b}')[2])['position'] == 1
  assert rendered.wait(120), calls  # a chunk of frames rendered: mid-job
  assert json.loads(_request(srv, f'/api/progress?session={a}')[2])['state'] == 'rendering'
  t0 = time.monotonic()
  assert json.loads(_request(srv, '/api/cancel', {'session': a})[2])['session'] == a
  p = _wait_state(srv, a, ('cancelled', 'done', 'error'), timeout=60)
  cancel_s = time.monotonic() - t0
  assert p['state'] == 'cancelled', p
  # Not a wall-clock bound (that measures the machine's load): the job stopped at the first chunk after the
  # cancel, mid-video, and chunks are small, so the wait is one chunk of rendering (about 1 s idle).
  of_a = [c[1:] for c in calls if c[0] == a]
  after = [c for c in of_a if c[2]]
  assert len(after) == 1 and after[0][0] < after[0][1] == 600, of_a
  assert np.diff([c[0] for c in of_a]).max() <= 16, of_a
  assert _wait_state(srv, b, ('done', 'error'))['state'] == 'done'  # the next job ran
  # A queued job is cancelled at once.
  assert _request(srv, '/api/generate', {'session': a, **long_job})[0] == 202
  assert _request(srv, '/api/generate', {'session': b, 'steps': 3, 'num_frames': 4, 'max_side': 64})[0] == 202
  _request(srv, '/api/cancel', {'session': b})
  assert json.loads(_request(srv, f'/api/progress?session={b}')[2])['state'] == 'cancelled'
  _request(srv, '/api/cancel', {'session': a})
  assert _wait_state(srv, a, ('cancelled', 'done', 'error'), timeout=10)['state'] == 'cancelled'
  app._on_render = on_render  # pylint: disable=protected-access
  print(f'cancel of a running generation took {cancel_s:.2f} s')


def test_sessions_are_never_evicted_while_in_use_and_a_full_server_says_busy(ldm_runs, photo_png, tmp_path):
  clock = _Clock()
  app = state.App(None, limits=state.Limits(max_sessions=2, session_min_age_s=60), clock=clock)
  try:
    path = tmp_path / 'p.png'
    photo = np.zeros((40, 64, 3), np.uint8)

    def new():
      path.write_bytes(photo_png)
      return app.new_session(str(path), 'p.png', photo)

    s1, s2 = new(), new()
    with pytest.raises(state.HttpError) as e:
      new()  # both younger than session_min_age_s
    assert e.value.status == 503 and str(e.value).startswith('busy: 2 photos are in use')
    clock.t = 100.0
    s1.update(viewers=1)  # watched live: kept
    s2.update(state='sampling')  # generating: kept
    with pytest.raises(state.HttpError):
      new()
    s1.update(viewers=0)
    s3 = new()  # s1 is idle and old: it goes, s2 stays
    assert set(app.sessions) == {s2.id, s3.id} and not os.path.exists(s1.folder)
  finally:
    app.close()
  assert not os.path.exists(app.workdir)


def test_stalled_uploads_idle_connections_and_a_bounded_load(app_server, photo_png):
  """An upload that stops sending gets 408; 100 idle connections cost no threads; 6 clients at once
  uploading, generating, polling and poking: no 5xx, no lost session, bounded memory."""
  srv = app_server
  host, port = srv.sock.getsockname()[:2]
  stalled = socket.create_connection((host, port))
  stalled.sendall(b'POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Requested-With: t\r\n'
                  b'Content-Length: 1000\r\n\r\n' + photo_png[:100])
  stalled.settimeout(10)
  reply = stalled.recv(4096)
  assert reply.startswith(b'HTTP/1.1 408') and b'sent nothing for 1 s' in reply, reply[:200]
  stalled.close()

  threads_before = threading.active_count()
  idle = [socket.create_connection((host, port)) for _ in range(40)]
  try:
    assert _request(srv, '/api/info')[0] == 200
    assert threading.active_count() <= threads_before + 2
  finally:
    for c in idle:
      c.close()

  def rss_mb():
    with open('/proc/self/status') as f:
      return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1024

  statuses, lost = [], []
  rss0 = rss_mb()

  def client(i):
    st, _, data = _request(srv, '/api/upload', _png(96, 64, seed=i), {'X-Filename': f'{i}.png'})
    statuses.append(st)
    if st != 200:
      return
    sid = json.loads(data)['session']
    for _ in range(2):
      st = _request(srv, '/api/generate', {'session': sid, 'steps': 2, 'num_frames': 4, 'max_side': 64})[0]
      statuses.append(st)
      p = _wait_state(srv, sid, ('done', 'error', 'cancelled'), timeout=300)
      if p['state'] != 'done':
        lost.append((i, p))
      for _ in range(5):
        statuses.append(_request(srv, '/api/poke', {'session': sid, 'action': 'poke', 'x': 0.5, 'y': 0.5,
                                                    'dx': 3, 'dy': 0})[0])
      st, _, video = _request(srv, p['video'] or '/api/video?session=' + sid)
      statuses.append(st)
      if st == 404:
        lost.append((i, 'video'))

  workers = [threading.Thread(target=client, args=(i,)) for i in range(6)]
  for w in workers:
    w.start()
  for w in workers:
    w.join(600)
  assert not any(w.is_alive() for w in workers)
  assert not lost, lost
  assert all(st < 500 for st in statuses) and statuses.count(200) >= 6 + 6 * 2 * 6, statuses
  growth = rss_mb() - rss0
  print(f'load: {len(statuses)} requests from 6 clients, RSS growth {growth:.0f} MB')
  assert growth < 1500


def test_signals_stop_the_server_cleanly(ldm_runs, photo_png, tmp_path):
  """SIGTERM, SIGINT and SIGHUP during a generation: exit 0, the work folder (photos, videos) removed, no
  fatal error."""
  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    tmp = tmp_path / sig.name
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, '-m', 'gid_jax.app', '--port', '0', '--checkpoint', ldm_runs['s1'],
                             '--renderer', 'none'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'TMPDIR': str(tmp)})
    try:
      line = proc.stdout.readline()
      assert line.startswith('gid_jax app: http://'), (line, proc.stderr.read() if proc.poll() is not None else '')

      class _Srv:
        url = line.split()[2]

      sid = json.loads(_request(_Srv, '/api/upload', photo_png, {'X-Filename': 'c.png'})[2])['session']
      job = {'session': sid, 'steps': 100, 'num_frames': 600, 'max_side': 256}
      assert _request(_Srv, '/api/generate', job)[0] == 202
      assert _wait_state(_Srv, sid, ('rendering', 'done', 'error'))['state'] == 'rendering'
      assert os.listdir(tmp)  # the work folder, with the photo
      proc.send_signal(sig)
      rc = proc.wait(30)
      err = proc.stderr.read()
    finally:
      proc.kill()
    assert rc == 0 and 'Fatal Python error' not in err and 'Traceback' not in err, (sig, rc, err)
    assert os.listdir(tmp) == [], (sig, os.listdir(tmp))


def test_cli_bad_options_are_one_line_exit_2(tmp_path, capsys):
  from gid_jax.app import __main__ as cli  # pylint: disable=g-import-not-at-top
  assert cli.main(['--checkpoint', str(tmp_path)]) == 2
  assert capsys.readouterr().err == (f'error: --checkpoint {tmp_path}: no checkpoint in it (expected a training '
                                     'run or an export)\n')
  assert cli.main(['--max-upload-mb', '0']) == 2
  assert capsys.readouterr().err == 'error: --max-upload-mb must be positive, got 0.0\n'
  assert cli.main(['--max-sessions', '0']) == 2
  assert capsys.readouterr().err == 'error: --max-sessions must be >= 1 and --max-queue >= 0\n'
  assert cli.main(['--session-min-age', 'inf']) == 2
  assert capsys.readouterr().err == 'error: --session-min-age must be a finite number >= 0, got inf\n'
  with pytest.raises(SystemExit) as e:
    cli.main(['--port', 'eighty'])
  assert e.value.code == 2 and capsys.readouterr().err.startswith('error: argument --port')


# -- the page, in a browser --------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def browser():
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no chromium at {CHROMIUM} (Debian: apt-get install -y chromium)')
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip('the playwright package is not installed (pip install playwright; no browser download needed)')
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


def _canvas_pixels(page) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(page.locator('#live').screenshot())).convert('RGB')).astype(int)


def test_page_end_to_end(app_server, browser, photo_png):
  srv = app_server
  page = browser.new_page(viewport={'width': 1200, 'height': 1000})
  console_errors = []
  expected = ('status of 413', 'status of 400')  # the browser logs the refused uploads below
  page.on('console', lambda m: console_errors.append(m.text)
          if m.type == 'error' and not any(e in m.text for e in expected) else None)
  page.goto(srv.url)
  page.wait_for_function('window.gidApp.info !== null')

  # Bad uploads: the server's messages appear on the page.
  page.set_input_files('#file', {'name': 'huge.png', 'mimeType': 'image/png', 'buffer': os.urandom(int(1.2 * 2**20))})
  page.wait_for_selector('#error:not([hidden])')
  assert 'huge.png is 1.2 MB, over the 1 MB upload limit' in page.inner_text('#error')
  # A dropped file takes the same road as an opened one.
  page.evaluate("""() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['plain text, not pixels'], 'notes.png', {type: 'image/png'}));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, cancelable: true}));
  }""")
  page.wait_for_function("document.getElementById('error').textContent.includes('notes.png is not a readable')")
  assert page.is_disabled('#generate')
  if page.evaluate('window.gidApp.info.example'):  # once the example photo is bundled
    page.click('#example')
    page.wait_for_function("document.getElementById('photo-name').textContent.startsWith('example')")

  # A real photo, then a tiny generation.
  page.set_input_files('#file', {'name': 'coffee.png', 'mimeType': 'image/png', 'buffer': photo_png})
  page.wait_for_function("document.getElementById('photo-name').textContent.startsWith('coffee')")
  assert page.is_enabled('#generate')
  assert page.is_hidden('#error')
  assert page.inner_text('#photo-name') == f'coffee.png ({W} x {H})'
  # A long job, stopped by the Cancel button.
  page.fill('#steps', '100')
  page.fill('#num-frames', '600')
  page.fill('#max-side', str(W))
  page.click('#generate')
  page.wait_for_function("['rendering', 'done'].includes(document.getElementById('progress-box').dataset.state)",
                         timeout=120_000)
  page.click('#cancel')
  page.wait_for_function("document.getElementById('progress-box').dataset.state === 'cancelled'", timeout=10_000)
  assert page.is_enabled('#generate') and page.is_hidden('#cancel')
  page.fill('#steps', '3')
  page.fill('#num-frames', '8')
  page.fill('#max-side', str(W))
  page.fill('#motion-scale', '3')
  page.click('#generate')
  page.wait_for_selector('#progress-box:not([hidden])')
  page.wait_for_function("document.getElementById('progress-box').dataset.state === 'done'", timeout=180_000)
  assert page.is_hidden('#error'), page.inner_text('#error')

  # The video plays in the page (H.264 in Debian's chromium) and downloads as an attachment.
  page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=30_000)
  video = page.evaluate("(() => { const v = document.getElementById('video');"
                        " return [v.videoWidth, v.videoHeight, v.duration, v.loop, v.error]; })()")
  assert video[:2] == [W, H] and video[2] > 0 and video[3] and video[4] is None, video
  href = page.get_attribute('#download', 'href')
  resp = page.request.get(srv.url.rstrip('/') + href)
  assert resp.ok and resp.headers['content-type'] == 'video/mp4'
  assert resp.headers['content-disposition'].startswith('attachment; filename="coffee-gid.mp4"')
  status, headers, part = _request(srv, href.replace('&download=1', ''), headers={'Range': 'bytes=4-11'})
  assert status == 206 and part == b'ftypisom' and headers['Content-Range'].endswith(f'/{len(resp.body())}')

  # The live scene: one frame at rest, then it follows a drag and springs back after letting go.
  page.wait_for_function('window.gidLive.frames >= 1')
  page.wait_for_timeout(300)
  before = _canvas_pixels(page)
  frames_at_rest = page.evaluate('window.gidLive.frames')
  box = page.locator('#live').bounding_box()
  x, y = box['x'] + box['width'] * 0.5, box['y'] + box['height'] * 0.5
  page.mouse.move(x, y)
  page.mouse.down()
  page.mouse.move(x + box['width'] * 0.25, y + box['height'] * 0.1, steps=5)
  page.wait_for_timeout(600)
  leaning = _canvas_pixels(page)
  assert np.abs(leaning - before).mean() > 0.5, np.abs(leaning - before).mean()
  page.mouse.up()
  # Measure while it rings: frames received per second in the page, and the server's cost per frame.
  start = page.evaluate('[window.gidLive.frames, performance.now()]')
  page.wait_for_timeout(2000)
  end = page.evaluate('[window.gidLive.frames, performance.now()]')
  fps = (end[0] - start[0]) / (end[1] - start[1]) * 1e3
  server_ms = float(np.median(page.evaluate('window.gidLive.serverMs')))
  status, _, stats = _request(srv, f'/api/stats?session={page.evaluate("window.gidApp.session")}')
  stats = json.loads(stats)
  print(f'live {W}x{H}: {fps:.1f} frames/s received in the browser; server {server_ms:.1f} ms/frame '
        f'(median over the scene {stats["render_ms_median"]:.1f} ms, {stats["rendered"]} frames rendered)')
  assert end[0] - start[0] >= 10 and page.evaluate('window.gidLive.distinct.size') > frames_at_rest + 10
  assert stats['width'] == W and stats['height'] == H
  assert not console_errors, console_errors
  page.close()
