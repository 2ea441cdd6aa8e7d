// The page of `python -m gid_jax.app`: upload, generate (with progress), play, and the live pokeable scene.
// Plain JS, no libraries: the page must work with no network beyond this local server.
'use strict';

const $ = (id) => document.getElementById(id);
const HEADERS = {'X-Requested-With': 'gid_jax'};  // the server refuses POSTs without it (no cross-site POSTs)
const RECORD_HEADER = 12;  // live stream: uint32 length, uint32 simulation frame, float32 server ms

const app = {info: null, session: null, polling: null};
// Live-stream counters, read by the stats line and by the browser test.
const live = {ctrl: null, received: 0, frames: 0, lastFrame: -1, times: [], serverMs: [], fps: 0,
              distinct: new Set()};
window.gidApp = app;
window.gidLive = live;

// -- helpers -------------------------------------------------------------------------------------------

async function api(path, {method = 'GET', json, body, headers = {}} = {}) {
  const opts = {method, headers: {...headers}};
  if (method !== 'GET') Object.assign(opts.headers, HEADERS);
  if (json !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(json);
  } else if (body !== undefined) {
    opts.body = body;
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
    throw new Error(msg);
  }
  return data;
}

function showError(msg) {
  const el = $('error');
  el.textContent = msg;
  el.hidden = !msg;
}

// -- photo ---------------------------------------------------------------------------------------------

async function upload(file) {
  showError('');
  const limit = app.info ? app.info.max_upload_mb : 20;
  // Far over the limit: say so without sending it (the server would refuse it anyway, with the same words).
  if (file.size > 16 * limit * 1048576) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB, over the ${limit} MB upload limit`);
    return;
  }
  try {
    const data = await api('/api/upload', {method: 'POST', body: file, headers: {
      'X-Filename': encodeURIComponent(file.name), 'Content-Type': file.type || 'application/octet-stream'}});
    setSession(data);
  } catch (e) {
    showError(e instanceof TypeError ? `uploading ${file.name} failed (${e.message})` : e.message);
  }
}

async function useExample() {
  showError('');
  try {
    setSession(await api('/api/example', {method: 'POST', json: {}}));
  } catch (e) {
    showError(e.message);
  }
}

function setSession(data) {
  stopLive();
  app.session = data.session;
  const img = $('photo');
  img.src = `/api/photo?session=${data.session}`;
  img.hidden = false;
  $('drop-hint').textContent = 'Drop another photo here, or';
  $('photo-name').textContent = `${data.name} (${data.width} x ${data.height})`;
  $('generate').disabled = false;
  $('result').hidden = true;
  $('interactive').hidden = true;
  $('progress-box').hidden = true;
}

// -- generation ----------------------------------------------------------------------------------------

function numberField(id) {
  const v = $(id).value.trim();
  return v === '' ? null : Number(v);
}

async function generate(event) {
  event.preventDefault();
  if (!app.session) return;
  showError('');
  const body = {
    session: app.session, seed: numberField('seed'), steps: numberField('steps'),
    motion_scale: numberField('motion-scale'), num_frames: numberField('num-frames'),
    max_side: numberField('max-side'), loop: $('loop').checked,
  };
  $('generate').disabled = true;
  try {
    await api('/api/generate', {method: 'POST', json: body});
  } catch (e) {
    showError(e.message);
    $('generate').disabled = false;
    return;
  }
  stopLive();
  $('progress-box').hidden = false;
  setProgress({state: 'queued', done: 0, total: body.steps || 1});
  poll(app.session);
}

function setProgress(p) {
  const frac = p.total ? p.done / p.total : 0;
  const text = {
    queued: p.position > 1 ? `waiting: ${p.position - 1} other generations before yours`
                           : 'waiting for another generation to finish',
    sampling: p.done ? `sampling motion: step ${p.done} / ${p.total}` : 'loading the model (the first run compiles it)',
    rendering: 'rendering frames',
    encoding: 'encoding the video',
    live: 'preparing the live scene',
    done: `done in ${p.seconds} s`,
    error: 'failed',
    cancelled: 'cancelled',
  }[p.state] || p.state;
  $('cancel').hidden = ['done', 'error', 'cancelled', 'ready'].includes(p.state);
  const value = {sampling: 0.85 * frac, rendering: 0.9, encoding: 0.93, live: 0.97, done: 1}[p.state];
  $('progress').value = value === undefined ? 0 : value;
  $('progress-text').textContent = text;
  $('progress-box').dataset.state = p.state;
}

async function poll(session) {
  clearTimeout(app.polling);
  if (session !== app.session) return;  // a new photo replaced this one
  let p;
  try {
    p = await api(`/api/progress?session=${session}`);
  } catch (e) {
    showError(e.message);
    $('generate').disabled = false;
    return;
  }
  setProgress(p);
  if (p.state === 'done') {
    $('generate').disabled = false;
    showResult(session, p);
  } else if (p.state === 'error') {
    $('generate').disabled = false;
    showError(p.message);
  } else if (p.state === 'cancelled' || p.state === 'ready') {
    $('generate').disabled = false;
  } else {
    app.polling = setTimeout(() => poll(session), 300);
  }
}

function showResult(session, p) {
  const video = $('video');
  video.src = p.video;
  video.play().catch(() => {});  // autoplay of a muted video is allowed; ignore a refusal
  $('download').href = `${p.video}&download=1`;
  $('result').hidden = false;
  $('interactive').hidden = false;
  startLive(session, p.width, p.height);
}

// -- live scene ----------------------------------------------------------------------------------------

function stopLive() {
  if (live.ctrl) live.ctrl.abort();
  live.ctrl = null;
}

async function startLive(session, width, height) {
  stopLive();
  const ctrl = new AbortController();
  live.ctrl = ctrl;
  const canvas = $('live');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  let buf = new Uint8Array(0);
  try {
    const resp = await fetch(`/api/live?session=${session}`, {signal: ctrl.signal});
    if (!resp.ok) throw new Error((await resp.json()).error);
    const reader = resp.body.getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      while (buf.length >= RECORD_HEADER) {
        const head = new DataView(buf.buffer, buf.byteOffset, RECORD_HEADER);
        const n = head.getUint32(0);
        if (buf.length < RECORD_HEADER + n) break;
        const frame = head.getUint32(4);
        const ms = head.getFloat32(8);
        const jpeg = buf.subarray(RECORD_HEADER, RECORD_HEADER + n);
        buf = buf.slice(RECORD_HEADER + n);
        const bitmap = await createImageBitmap(new Blob([jpeg], {type: 'image/jpeg'}));
        if (ctrl.signal.aborted) return;
        ctx.drawImage(bitmap, 0, 0, width, height);
        bitmap.close();
        countFrame(frame, ms);
      }
    }
  } catch (e) {
    if (!ctrl.signal.aborted) $('live-stats').textContent = `live stream stopped: ${e.message}`;
  }
}

function countFrame(frame, ms) {
  live.received += 1;
  if (frame === live.lastFrame) return;  // a keep-alive repeat of an idle scene
  live.lastFrame = frame;
  live.frames += 1;
  live.distinct.add(frame);
  const now = performance.now();
  live.times.push(now);
  while (live.times.length && live.times[0] < now - 1000) live.times.shift();
  live.serverMs.push(ms);
  if (live.serverMs.length > 30) live.serverMs.shift();
  live.fps = live.times.length;
}

function updateStats() {
  if (!live.ctrl) return;
  const now = performance.now();
  const recent = live.times.filter((t) => t > now - 1000).length;
  const sorted = [...live.serverMs].sort((a, b) => a - b);
  const ms = sorted.length ? sorted[sorted.length >> 1] : 0;  // median: robust to one slow frame
  $('live-stats').textContent = recent
    ? `${recent} frames/s received, server ${ms.toFixed(1)} ms/frame`
    : 'at rest (frames are sent when it moves)';
}

// Drag = a steady pull at the point where the drag started, along the drag; letting go springs it back.
const drag = {active: false, x0: 0, y0: 0, inflight: false, pending: null};

function sendPoke(body) {
  if (drag.inflight) {  // keep only the newest: a slow server should not replay a backlog of moves
    drag.pending = body;
    return;
  }
  drag.inflight = true;
  api('/api/poke', {method: 'POST', json: {session: app.session, ...body}})
    .catch((e) => showError(e.message))
    .finally(() => {
      drag.inflight = false;
      const next = drag.pending;
      drag.pending = null;
      if (next) sendPoke(next);
    });
}

function pointerAt(event) {
  const canvas = $('live');
  const r = canvas.getBoundingClientRect();
  return {x: (event.clientX - r.left) / r.width, y: (event.clientY - r.top) / r.height,
          sx: canvas.width / r.width, sy: canvas.height / r.height};
}

function onPointerDown(event) {
  const p = pointerAt(event);
  Object.assign(drag, {active: true, x0: Math.min(Math.max(p.x, 0), 1), y0: Math.min(Math.max(p.y, 0), 1)});
  $('live').setPointerCapture(event.pointerId);
  $('live').classList.add('dragging');
  event.preventDefault();
}

function onPointerMove(event) {
  if (!drag.active) return;
  const p = pointerAt(event);
  const canvas = $('live');
  sendPoke({action: 'hold', x: drag.x0, y: drag.y0,
            dx: (p.x - drag.x0) * canvas.width, dy: (p.y - drag.y0) * canvas.height});
}

function onPointerUp() {
  if (!drag.active) return;
  drag.active = false;
  $('live').classList.remove('dragging');
  sendPoke({action: 'release'});
}

// -- wiring --------------------------------------------------------------------------------------------

async function init() {
  try {
    app.info = await api('/api/info');
  } catch (e) {
    showError(`cannot reach the server: ${e.message}`);
    return;
  }
  const d = app.info.defaults;
  $('seed').value = d.seed;
  $('steps').value = d.steps;
  $('motion-scale').value = d.motion_scale;
  $('num-frames').value = d.num_frames;
  $('max-side').value = d.max_side;
  $('loop').checked = d.loop;
  const fields = {seed: 'seed', steps: 'steps', motion_scale: 'motion-scale', num_frames: 'num-frames',
                  max_side: 'max-side'};
  for (const [name, [lo, hi]] of Object.entries(app.info.limits)) {
    if (fields[name]) Object.assign($(fields[name]), {min: lo, max: hi});
  }
  if (app.info.example) {
    $('example').disabled = false;
    $('example').title = '';
  }
}

$('file').addEventListener('change', (e) => {
  if (e.target.files.length) upload(e.target.files[0]);
  e.target.value = '';  // choosing the same file again must fire change again
});
$('example').addEventListener('click', useExample);
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});
$('form').addEventListener('submit', generate);
$('cancel').addEventListener('click', () => {
  if (app.session) api('/api/cancel', {method: 'POST', json: {session: app.session}}).catch((e) => showError(e.message));
});
const canvas = $('live');
canvas.addEventListener('pointerdown', onPointerDown);
canvas.addEventListener('pointermove', onPointerMove);
canvas.addEventListener('pointerup', onPointerUp);
canvas.addEventListener('pointercancel', onPointerUp);
$('reset').addEventListener('click', () => sendPoke({action: 'reset'}));
setInterval(updateStats, 500);
init();
