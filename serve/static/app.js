// tinct's page: colorize a photo, and follow a training run.
// Plain JavaScript, no libraries; the server's API is described in serve/doc.go.
'use strict';

const $ = (id) => document.getElementById(id);

let limits = { max_upload_bytes: 20 * 1024 * 1024 };
let photo = null;      // the chosen File
let graySeq = 0;       // ignores answers to superseded /api/gray requests
let controller = null; // aborts the running colorization

// ---- messages ----------------------------------------------------------

function showError(msg) {
  const e = $('error');
  e.textContent = msg || '';
  e.hidden = !msg;
}

function setStatus(msg) {
  $('status').textContent = msg || '';
}

// errorText returns the message of a failed API answer ({"error": "…"}).
async function errorText(res) {
  try {
    const j = await res.json();
    if (j && j.error) return j.error;
  } catch (_) { /* not JSON */ }
  return `The server answered ${res.status} ${res.statusText}.`;
}

// api fetches from the server's API; a 401 (a server started with a token)
// shows the token form.
async function api(path, opts) {
  const res = await fetch(path, opts);
  if (res.status === 401) needLogin();
  return res;
}

function needLogin() {
  const box = $('login');
  if (!box.hidden) return;
  box.hidden = false;
  $('token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const note = $('login-note');
  let res;
  try {
    res = await fetch('/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: $('token').value }),
    });
  } catch (e) {
    note.textContent = 'Cannot reach the server: ' + e.message;
    return;
  }
  if (!res.ok) {
    note.textContent = await errorText(res);
    $('token').select();
    return;
  }
  $('token').value = '';
  $('login').hidden = true;
  showError('');
  loadLimits();
  loadCheckpoints();
  refreshDashboard();
  if (photo) showGray();
}

function mib(n) {
  return (n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0) + ' MiB';
}

// ---- checkpoints and limits --------------------------------------------

async function loadLimits() {
  try {
    const res = await api('/api/limits');
    if (res.ok) limits = await res.json();
  } catch (_) { /* keep the defaults */ }
}

// when formats a checkpoint's time: the day (UTC) of a bundled model, whose
// card gives a date; the local date and minute of a trained checkpoint;
// nothing for a time not recorded (year 1).
function when(c) {
  if (!c.time || c.time.startsWith('0001')) return '';
  const d = new Date(c.time);
  if (Number.isNaN(d.getTime())) return '';
  const two = (n) => String(n).padStart(2, '0');
  if (c.bundled) return `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}`;
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

let defaultCheckpoint = ''; // what "Newest" colorizes with, as the server last said

async function loadCheckpoints() {
  const sel = $('checkpoint');
  const note = $('checkpoint-note');
  let res;
  try {
    res = await api('/api/checkpoints');
  } catch (e) {
    note.textContent = 'Cannot reach the server: ' + e.message;
    return;
  }
  if (!res.ok) {
    note.textContent = await errorText(res);
    return;
  }
  const j = await res.json();
  defaultCheckpoint = j.default || '';
  const keep = sel.value;
  const options = [new Option(j.default ? `Newest (${j.default})` : 'Newest', '')];
  for (const c of j.checkpoints) {
    const date = when(c);
    let label = c.bundled
      ? `${c.name} — bundled demo model, step ${c.step}`
      : `${c.name} — epoch ${c.epoch}, step ${c.step}`;
    if (date) label += `, ${date}`;
    // A damaged checkpoint is listed, so that the page can say which, but
    // cannot be chosen.
    if (c.damaged) label = `${c.name} — damaged`;
    const o = new Option(label, c.name);
    o.disabled = Boolean(c.damaged);
    options.push(o);
  }
  sel.replaceChildren(...options);
  if (j.checkpoints.some((c) => c.name === keep && !c.damaged)) sel.value = keep;
  const trained = j.checkpoints.filter((c) => !c.bundled);
  const damaged = trained.filter((c) => c.damaged);
  const where = j.store ? ` in ${j.store}` : '';
  const parts = [];
  if (trained.length) {
    parts.push(`${trained.length} checkpoint${trained.length > 1 ? 's' : ''}${where}.`);
  } else if (j.checkpoints.length) {
    parts.push(`No trained checkpoint${where} yet: colorizing with the bundled demo model (landscapes, 64×64).`);
  } else {
    parts.push(`No checkpoints${where} yet: train a model first.`);
  }
  for (const c of damaged) parts.push(`${c.name} is damaged and cannot be used: ${c.damaged}.`);
  if (damaged.length) {
    const bundled = j.checkpoints.some((c) => c.bundled && c.name === j.default);
    parts.push(j.default
      ? `Colorizing with ${j.default}, the newest ${bundled ? 'model that works (the bundled demo model)' : 'valid checkpoint'}; choose another from the list if you like.`
      : 'No checkpoint can be used: train again, or start tinct serve with another --store.');
  }
  note.textContent = parts.join(' ');
  note.classList.toggle('warning', damaged.length > 0);
}

// ---- the photo -----------------------------------------------------------

let photoURL = null; // object URL of the chosen photo, shown as it is

function clearGray() {
  $('gray-figure').hidden = true;
  $('gray').removeAttribute('src');
}

// dropPhoto drops the chosen photo and its views.
function dropPhoto() {
  photo = null;
  graySeq++; // answers still on their way are for a photo no longer chosen
  $('photo-box').hidden = true;
  $('original').removeAttribute('src');
  if (photoURL) URL.revokeObjectURL(photoURL);
  photoURL = null;
  clearGray();
}

// forgetPhoto drops the chosen photo, in the page and in the file input.
function forgetPhoto() {
  dropPhoto();
  $('image').value = '';
}

// clearAll is the Clear button: no photo, no results, no messages.
function clearAll() {
  if (controller) return;
  forgetPhoto();
  showError('');
  setStatus('');
  $('gallery').replaceChildren();
  $('results-title').hidden = true;
  $('results-note').hidden = true;
  $('image').focus();
}

function choosePhoto(file) {
  showError('');
  setStatus('');
  if (!file || controller) return;
  if (file.size > limits.max_upload_bytes) {
    forgetPhoto();
    showError(`${file.name} is ${mib(file.size)}, more than the limit of ${mib(limits.max_upload_bytes)}. Choose a smaller photo.`);
    return;
  }
  dropPhoto();
  photo = file;
  photoURL = URL.createObjectURL(file);
  const img = $('original');
  img.onload = () => {
    $('original-caption').textContent = `${file.name || 'pasted photo'}, ${img.naturalWidth}×${img.naturalHeight}`;
  };
  img.onerror = () => { $('original-caption').textContent = file.name || 'pasted photo'; };
  img.src = photoURL;
  $('original-caption').textContent = file.name || 'pasted photo';
  $('photo-box').hidden = false;
  showGray();
}

// chooseExample loads one of the bundled sample photos as if it were chosen.
async function chooseExample(src) {
  if (controller) return;
  let res;
  try {
    res = await fetch(src);
  } catch (e) {
    showError('Cannot reach the server: ' + e.message);
    return;
  }
  if (!res.ok) {
    showError(`The example ${src} is missing (${res.status}).`);
    return;
  }
  const blob = await res.blob();
  $('image').value = '';
  choosePhoto(new File([blob], src.split('/').pop(), { type: blob.type || 'image/jpeg' }));
}

// showGray asks the server for the photo in gray at the model's size, as the
// network will see it: the whole frame, its longer side at the model's size,
// mirrored into the rest of the square.
async function showGray() {
  if (!photo) return;
  const seq = ++graySeq;
  const form = new FormData();
  form.append('image', photo);
  form.append('checkpoint', $('checkpoint').value);
  $('gray-caption').textContent = 'Reading the photo…';
  let res;
  try {
    res = await api('/api/gray', { method: 'POST', body: form });
  } catch (e) {
    if (seq === graySeq) showError('Cannot reach the server: ' + e.message);
    return;
  }
  if (seq !== graySeq) return;
  if (!res.ok) {
    const msg = await errorText(res);
    if (seq !== graySeq) return;
    clearGray();
    // A photo the server refuses (4xx) is forgotten, so that Colorize does
    // not send it again; a busy or failing server (5xx) may take it later.
    if (res.status >= 400 && res.status < 500 && res.status !== 401 && res.status !== 408) forgetPhoto();
    showError(msg);
    return;
  }
  const j = await res.json();
  if (seq !== graySeq) return;
  // "Newest" turned out to be another checkpoint than the list said (a
  // new one was saved, or the newest was found damaged): list them again.
  if ($('checkpoint').value === '' && j.checkpoint !== defaultCheckpoint) loadCheckpoints();
  $('gray').src = j.gray;
  $('gray-caption').textContent = `As the network sees it: ${j.image_size}×${j.image_size} gray, the whole photo mirrored into the square (checkpoint ${j.checkpoint})`;
  $('gray-figure').hidden = false;
}

// ---- colorizing ----------------------------------------------------------

// setBusy switches the form between idle and colorizing. The keyboard's
// focus follows the button that can be pressed: Cancel while colorizing
// (Colorize is disabled, which would drop the focus to <body>), Colorize
// after.
function setBusy(busy) {
  const a = document.activeElement;
  const follow = a === $('go') || a === $('cancel') || a === document.body || a === null;
  $('go').disabled = busy;
  $('cancel').hidden = !busy;
  $('image').disabled = busy;
  $('checkpoint').disabled = busy;
  $('clear').disabled = busy;
  for (const b of document.querySelectorAll('.example')) b.disabled = busy;
  // Without scrolling: the page may be on its way to the results.
  if (follow) (busy ? $('cancel') : $('go')).focus({ preventScroll: true });
}

// readEvents reads a text/event-stream answer and calls on[event](data).
async function readEvents(res, on) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (on[event]) on[event](data ? JSON.parse(data) : null);
    }
  }
}

// seconds formats a duration for the status line.
function seconds(ms) {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// clock formats a duration in whole seconds, for the waiting timer.
function clock(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// showResults puts the photo and its colorizations side by side: each
// result at full size (the colours on the photo's own gray) with downloads
// of the full-size and the model-size PNG; selecting one enlarges it.
function showResults(start, done) {
  const gallery = $('gallery');
  const input = document.createElement('figure');
  input.className = 'input';
  const inImg = document.createElement('img');
  inImg.src = photoURL || start.gray;
  inImg.alt = 'Your photo';
  const inCap = document.createElement('figcaption');
  inCap.textContent = `Your photo, ${done.width}×${done.height}`;
  input.append(inImg, inCap);

  const name = `tinct-${start.checkpoint}-seed${start.seed}`;
  const [x0, y0, x1, y1] = start.frame;
  const mw = x1 - x0, mh = y1 - y0; // the model-size result: the photo's frame
  // A photo no larger than the model's size comes back at (about) the
  // model's resolution: it, too, is enlarged in whole pixels.
  const atModelSize = done.width <= start.image_size && done.height <= start.image_size;
  const views = (i) => {
    const what = `Colorization ${i + 1} of ${done.images.length}`;
    return [
      { src: done.full[i], w: done.width, h: done.height, pixelated: atModelSize,
        label: `full size (${done.width}×${done.height})`,
        caption: `${what}, full size ${done.width}×${done.height} (seed ${start.seed})` },
      { src: done.images[i], w: mw, h: mh, pixelated: true,
        label: `model size (${mw}×${mh})`,
        caption: `${what}, model size ${mw}×${mh}: what the network made (seed ${start.seed})` },
    ];
  };
  const figures = done.images.map((small, i) => {
    const fig = document.createElement('figure');
    fig.className = 'result';
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'enlarge';
    const img = document.createElement('img');
    img.src = done.full[i];
    img.alt = `Colorization ${i + 1} of ${done.images.length}, full size`;
    open.append(img);
    open.setAttribute('aria-label', `Enlarge colorization ${i + 1}`);
    open.addEventListener('click', () => enlarge(views(i)));
    const cap = document.createElement('figcaption');
    const full = document.createElement('a');
    full.href = done.full[i];
    full.download = `${name}-${i + 1}.png`;
    full.className = 'download-full';
    full.textContent = `Full size ${i + 1} (${done.width}×${done.height} PNG)`;
    const model = document.createElement('a');
    model.href = small;
    model.download = `${name}-${i + 1}-model.png`;
    model.className = 'download-model';
    model.textContent = 'model size';
    cap.append(full, ' · ', model);
    fig.append(open, cap);
    return fig;
  });
  gallery.replaceChildren(input, ...figures);
  $('results-title').hidden = false;
  $('results-note').hidden = false;
  // On a phone the results are below the fold: bring them up, once the
  // page has laid them out.
  if (window.matchMedia('(max-width: 900px)').matches) {
    requestAnimationFrame(() => $('results-title').scrollIntoView({ behavior: 'smooth', block: 'start' }));
  }
}

// The enlarged view: a result at full size or at model size (views[k],
// each {src, w, h, label, caption, pixelated}), as large as the window
// allows; Escape or Close closes it.
let viewing = null;

function enlarge(views) {
  viewing = { views, k: 0 };
  $('viewer').showModal();
  showView();
}

function showView() {
  const v = viewing.views[viewing.k];
  const img = $('viewer-img');
  img.style.width = `${v.w}px`; // until it has loaded
  img.style.height = `${v.h}px`;
  img.classList.toggle('pixelated', v.pixelated);
  img.onload = fitViewer;
  img.src = v.src;
  img.alt = v.caption;
  $('viewer-caption').textContent = v.caption;
  const other = viewing.views[1 - viewing.k];
  const button = $('viewer-size');
  button.hidden = !other;
  if (other) button.textContent = `Show ${other.label}`;
  if (img.complete && img.naturalWidth) fitViewer();
}

function otherView() {
  if (!viewing || viewing.views.length < 2) return;
  viewing.k = 1 - viewing.k;
  showView();
}

// fitViewer scales the enlarged image to fill the window (keeping its
// shape): up as well as down, so that it is never smaller than its
// thumbnail; a pixelated one by a whole number when there is room for
// two or more screen pixels per pixel.
function fitViewer() {
  const dialog = $('viewer');
  if (!viewing || !dialog.open) return;
  const img = $('viewer-img');
  const v = viewing.views[viewing.k];
  const nw = img.naturalWidth || v.w, nh = img.naturalHeight || v.h;
  const cs = getComputedStyle(dialog);
  const px = (p) => parseFloat(cs[p]) || 0;
  const padX = px('paddingLeft') + px('paddingRight') + px('borderLeftWidth') + px('borderRightWidth');
  const padY = px('paddingTop') + px('paddingBottom') + px('borderTopWidth') + px('borderBottomWidth');
  const actions = dialog.querySelector('.viewer-actions');
  const below = $('viewer-caption').offsetHeight + actions.offsetHeight + 16; // and their margins
  const maxW = Math.min(innerWidth * 0.92, innerWidth * 0.96 - padX);
  const maxH = Math.min(innerHeight * 0.84, innerHeight * 0.96 - padY - below);
  let s = Math.min(maxW / nw, maxH / nh);
  if (v.pixelated && s >= 2) s = Math.floor(s);
  img.style.width = `${Math.floor(nw * s)}px`;
  img.style.height = `${Math.floor(nh * s)}px`;
}

async function colorize(ev) {
  ev.preventDefault();
  showError('');
  if (!photo) {
    showError('Choose a photo first (PNG or JPEG).');
    $('image').focus();
    return;
  }
  const form = new FormData();
  form.append('image', photo);
  form.append('steps', $('steps').value);
  form.append('samples', $('samples').value);
  form.append('checkpoint', $('checkpoint').value);

  const progress = $('progress');
  const preview = $('preview');
  controller = new AbortController();
  setBusy(true);
  setStatus('Sending…');
  const sent = performance.now();
  let start = null;
  let began = 0;     // when the colorization started to run
  let firstStep = 0; // when its first step ended
  let finished = false;
  // While waiting in the queue the status ticks every second: the time
  // waited so far and the server's estimate of the wait (from how long its
  // recent colorizations took), counted down from when it was given.
  let waiting = null; // the latest "queued" event and when it came
  const showWaiting = () => {
    if (!waiting) return;
    const now = performance.now();
    let msg = `Waiting for the server: ${waiting.ahead} ahead of you, ${clock(now - sent)} so far`;
    if (waiting.wait != null) {
      const left = waiting.wait * 1000 - (now - waiting.at);
      msg += left >= 1000 ? `; your turn in about ${clock(left)}` : '; your turn any moment now';
    }
    setStatus(msg + '…');
  };
  const ticker = setInterval(showWaiting, 1000);
  try {
    const res = await api('/api/colorize', { method: 'POST', body: form, signal: controller.signal });
    if (!res.ok) {
      setStatus('');
      showError(await errorText(res));
      return;
    }
    await readEvents(res, {
      queued: (d) => {
        waiting = { ahead: d.ahead, wait: d.wait_seconds, at: performance.now() };
        showWaiting();
      },
      start: (d) => {
        waiting = null;
        clearInterval(ticker);
        start = d;
        began = performance.now();
        progress.max = d.steps;
        progress.value = 0;
        progress.hidden = false;
        setStatus(`Colorizing with ${d.checkpoint}…`);
      },
      progress: (d) => {
        progress.value = d.step;
        const now = performance.now();
        // The time left is measured from the steps after the first: the
        // first also pays for setting up (a new sampler's memory, the
        // backend's first call), several times a step on a fresh server.
        if (d.step === 1) firstStep = now;
        let left = '';
        if (d.step < d.steps) {
          left = d.step >= 2 && firstStep
            ? ` · about ${seconds(((now - firstStep) / (d.step - 1)) * (d.steps - d.step))} left`
            : ' · estimating the time left…';
        }
        setStatus(`Step ${d.step} of ${d.steps} · ${seconds(now - began)}${left}`);
      },
      preview: (d) => {
        preview.src = d.image;
        preview.hidden = false;
      },
      done: (d) => {
        finished = true;
        // The bar and the preview go before the results are shown: hidden
        // after the scroll to the results began, they would move the
        // results up past the scroll's end (by their height, 148 px).
        progress.hidden = true;
        preview.hidden = true;
        showResults(start, d);
        const n = d.images.length;
        setStatus(`Done: ${n} colorization${n === 1 ? '' : 's'}, ${start.steps} steps in ${d.seconds.toFixed(1)} s (seed ${start.seed}).`);
      },
      error: (d) => {
        finished = true;
        setStatus('');
        showError(d.error);
      },
    });
    if (!finished) showError('The server stopped before the colorization finished. Try again.');
  } catch (e) {
    if (e.name === 'AbortError') {
      setStatus('Cancelled.');
    } else {
      setStatus('');
      showError('The connection to the server failed: ' + e.message);
    }
  } finally {
    clearInterval(ticker);
    progress.hidden = true;
    preview.hidden = true;
    controller = null;
    setBusy(false);
  }
}

// ---- the training dashboard ---------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

// niceTicks returns about n round values (1, 2, 5 × 10^k apart) within
// [lo, hi]; whole numbers only when integer is set (epochs, steps).
function niceTicks(lo, hi, n, integer) {
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const r = step0 / mag;
  let step = (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1) * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) {
    out.push(Number((i * step).toPrecision(12))); // no 0.30000000000000004
  }
  return out;
}

// logTicks returns ticks for a log axis over [10^lo, 10^hi] (lo, hi:
// log10): 1, 2, 5 × 10^k, or every m × 10^k when that gives fewer than
// three, or round values on a linear step when the range is narrower than
// that (a loss that hardly moves).
function logTicks(lo, hi) {
  const pick = (ms) => {
    const out = [];
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
      for (const m of ms) {
        const v = Number((m * 10 ** k).toPrecision(12));
        const l = Math.log10(v);
        if (l >= lo - 1e-9 && l <= hi + 1e-9) out.push(v);
      }
    }
    return out;
  };
  let out = pick([1, 2, 5]);
  if (out.length > 8) out = out.filter((v) => Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9);
  if (out.length < 3) out = pick([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  if (out.length < 3) out = niceTicks(10 ** lo, 10 ** hi, 4).filter((v) => v > 0);
  return out;
}

// plot draws [x, y] points as a line in an SVG, y on a log scale when every
// value is positive.
function plot(svg, points, xname, title) {
  // One SVG unit per CSS pixel, so that the labels keep their size.
  const W = Math.max(svg.clientWidth, 240), H = Math.max(svg.clientHeight, 150), L = 52, R = 14, T = 12, B = 34;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  if (!points.length) {
    svg.append(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No data yet'));
    svg.setAttribute('aria-label', `${title}: no data yet`);
    return;
  }
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const log = ys.every((y) => y > 0);
  const f = log ? Math.log10 : (y) => y;
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const fy = ys.map(f);
  let y0 = Math.min(...fy), y1 = Math.max(...fy);
  if (y0 === y1) { y0 -= log ? 0.1 : Math.abs(y0) * 0.1 || 1; y1 += log ? 0.1 : Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);

  const yTicks = log ? logTicks(y0, y1) : niceTicks(y0, y1, 4);
  for (const v of yTicks) {
    const y = sy(f(v));
    svg.append(svgEl('line', { class: 'gridline', x1: L, x2: W - R, y1: y, y2: y }));
    svg.append(svgEl('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  for (const v of niceTicks(x0, x1, 5, true)) { // steps and epochs are whole
    const x = sx(v);
    svg.append(svgEl('line', { class: 'axis', x1: x, x2: x, y1: H - B, y2: H - B + 4 }));
    svg.append(svgEl('text', { x, y: H - B + 16, 'text-anchor': 'middle' }, fmt(v)));
  }
  svg.append(svgEl('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(svgEl('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(svgEl('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, xname + (log ? ' (loss on a log scale)' : '')));
  if (points.length === 1) {
    svg.append(svgEl('circle', { class: 'dot', cx: sx(xs[0]), cy: sy(fy[0]), r: 3 }));
  } else {
    const d = points.map((p, i) => `${sx(p[0]).toFixed(1)},${sy(fy[i]).toFixed(1)}`).join(' ');
    svg.append(svgEl('polyline', { class: 'line', points: d }));
  }
  const last = ys[ys.length - 1];
  const label = `${title}: ${points.length} points, ${xname} ${fmt(xs[0])} to ${fmt(xs[xs.length - 1])}, last ${fmt(last)}, lowest ${fmt(Math.min(...ys))}`;
  svg.setAttribute('aria-label', label);
  svg.prepend(svgEl('title', {}, label));
}

let grids = [];
let lastRun = null;

function drawPlots() {
  const r = lastRun || { loss_step: [], loss_epoch: [] };
  plot($('plot-step'), r.loss_step, 'step', 'Loss per step');
  plot($('plot-epoch'), r.loss_epoch, 'epoch', 'Loss per epoch');
}

function showGrid() {
  const i = Number($('grid-epoch').value);
  const g = grids[i];
  if (!g) return;
  $('grid-epoch-value').textContent = String(g.epoch);
  $('grid').src = g.url;
  $('grid').alt = `Sample grid after epoch ${g.epoch}`;
}

async function loadRun() {
  const info = $('run-info');
  let res;
  try {
    res = await api('/api/run');
  } catch (e) {
    info.textContent = 'Cannot reach the server: ' + e.message;
    return;
  }
  if (!res.ok) {
    info.textContent = await errorText(res);
    if (res.status === 404) showNoRun(info.textContent);
    return;
  }
  const r = await res.json();
  if (!r.dir) { // no run yet: say how to start one, instead of empty plots
    showNoRun(r.message || 'No training run to show.');
    return;
  }
  runShown = true;
  $('run-data').hidden = false;
  $('run-info').classList.remove('no-run');
  const parts = [`Run ${r.name}`];
  const lastEpoch = r.loss_epoch.length ? r.loss_epoch[r.loss_epoch.length - 1][0] : 0;
  if (r.config) {
    parts.push(`epoch ${lastEpoch} of ${r.config.epochs}`, `${r.config.image_size}² images, batch ${r.config.batch_size}, lr ${r.config.lr}`);
  }
  if (r.images_per_sec) parts.push(`${r.images_per_sec.toFixed(1)} images/s`);
  if (r.updated && !r.updated.startsWith('0001')) parts.push(`last record ${new Date(r.updated).toLocaleString()}`);
  if (r.bucket > 1) parts.push(`loss per step averaged over ${r.bucket} steps`);
  if (r.non_finite) parts.push(`${r.non_finite} non-finite loss values not plotted`);
  info.textContent = parts.join(' · ');
  lastRun = r;
  drawPlots();

  const slider = $('grid-epoch');
  const atEnd = grids.length === 0 || Number(slider.value) === grids.length - 1;
  grids = r.samples;
  $('grids').hidden = grids.length === 0;
  $('grids-none').hidden = grids.length > 0;
  if (grids.length) {
    slider.max = String(grids.length - 1);
    if (atEnd || Number(slider.value) > grids.length - 1) slider.value = String(grids.length - 1);
    showGrid();
  }
}

// showNoRun says there is no run to show, and why, in place of the plots
// and grids; the page stops asking for the run until Refresh is pressed.
function showNoRun(msg) {
  runShown = false;
  lastRun = null;
  grids = [];
  $('run-info').textContent = msg;
  $('run-info').classList.add('no-run');
  $('run-data').hidden = true;
}

async function loadCluster() {
  const box = $('cluster');
  let res;
  try {
    res = await api('/api/cluster');
  } catch (e) {
    box.replaceChildren(Object.assign(document.createElement('p'), { className: 'hint', textContent: 'Cannot reach the server.' }));
    return;
  }
  const p = document.createElement('p');
  if (!res.ok) {
    p.textContent = await errorText(res);
    box.replaceChildren(p);
    return;
  }
  const c = await res.json();
  clusterAttached = c.attached;
  if (!c.attached) {
    p.className = 'hint';
    p.textContent = c.message[0].toUpperCase() + c.message.slice(1) + '.';
    box.replaceChildren(p);
    return;
  }
  const nworkers = c.workers.length || c.worker_count || 0;
  p.textContent = `${c.message} Coordinator ${c.coordinator}, epoch ${c.epoch}, step ${c.step}, ${nworkers} worker${nworkers === 1 ? '' : 's'}.`;
  if (!c.workers.length) {
    box.replaceChildren(p);
    return;
  }
  const table = document.createElement('table');
  const head = table.createTHead().insertRow();
  for (const h of ['Rank', 'Worker', 'Address', 'State', 'Device', 'Images/s', 'Last seen']) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = h;
    head.append(th);
  }
  const body = table.createTBody();
  for (const w of c.workers) {
    const row = body.insertRow();
    for (const v of [w.rank, w.id, w.addr, w.state, w.device || '', w.images_per_sec ? w.images_per_sec.toFixed(1) : '', new Date(w.last_seen).toLocaleTimeString()]) {
      row.insertCell().textContent = String(v);
    }
  }
  box.replaceChildren(p, table);
}

function refreshDashboard() {
  loadRun();
  loadCluster();
}

// The dashboard follows a run, and a cluster, every 15 s; with neither
// there is nothing to follow (Refresh looks again).
let runShown = false;
let clusterAttached = false;

function pollDashboard() {
  if (runShown) loadRun();
  if (clusterAttached) loadCluster();
}

// ---- wiring ----------------------------------------------------------------

function init() {
  // Each slider has a number box; both take any whole number in range, as
  // the API does.
  for (const id of ['steps', 'samples']) {
    const slider = $(id);
    const box = $(id + '-box');
    const lo = Number(slider.min), hi = Number(slider.max);
    slider.addEventListener('input', () => { box.value = slider.value; });
    box.addEventListener('input', () => {
      const v = Number(box.value);
      if (box.value !== '' && Number.isInteger(v) && v >= lo && v <= hi) slider.value = String(v);
    });
    box.addEventListener('change', () => {
      const v = Math.round(Number(box.value));
      box.value = String(Number.isFinite(v) && box.value !== '' ? Math.min(hi, Math.max(lo, v)) : slider.value);
      slider.value = box.value;
    });
    box.value = slider.value;
  }
  $('image').addEventListener('change', (e) => { if (e.target.files[0]) choosePhoto(e.target.files[0]); });
  $('clear').addEventListener('click', clearAll);
  for (const b of document.querySelectorAll('.example')) b.addEventListener('click', () => chooseExample(b.dataset.src));
  // A photo pasted anywhere on the page (Ctrl+V) is chosen.
  document.addEventListener('paste', (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files] : [];
    const file = files.find((f) => f.type === 'image/png' || f.type === 'image/jpeg') || files[0];
    if (!file) return;
    e.preventDefault();
    choosePhoto(file);
  });
  $('viewer').addEventListener('click', (e) => { if (e.target === $('viewer')) $('viewer').close(); }); // the backdrop
  $('viewer').addEventListener('close', () => { viewing = null; });
  $('viewer-size').addEventListener('click', otherView);
  $('checkpoint').addEventListener('change', showGray);
  $('colorize-form').addEventListener('submit', colorize);
  $('cancel').addEventListener('click', () => controller && controller.abort());
  $('grid-epoch').addEventListener('input', showGrid);
  $('login-form').addEventListener('submit', login);
  $('refresh').addEventListener('click', () => { loadCheckpoints(); refreshDashboard(); });

  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) return;
    choosePhoto(files[0]);
    try { $('image').files = files; } catch (_) { /* read-only in old browsers */ }
  });
  // A file dropped next to the zone must not make the browser open it.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  let resizing = false;
  window.addEventListener('resize', () => {
    if (resizing) return;
    resizing = true;
    requestAnimationFrame(() => { resizing = false; drawPlots(); fitViewer(); });
  });

  loadLimits();
  loadCheckpoints();
  refreshDashboard();
  setInterval(pollDashboard, 15000);
}

init();
