// instaseg annotate: label a folder in the browser. Every edit is a POST to /api/images/{i}/...; the
// server saves it at once and answers with the image's objects (COCO RLE), which are drawn here.
// Plain JS, no external libraries (the page must work offline).
"use strict";

const state = {
  summary: null,     // GET /api/summary
  index: null,       // current image index
  view: null,        // GET /api/images/{i}: {width, height, objects: [{id, category_id, rle, color, clicks}]}
  image: null,       // HTMLImageElement of the current image
  masks: new Map(),  // object id -> {counts, mask: Uint8Array(H*W) row-major}
  selected: null,    // selected object id, or null: the next positive click adds an object
  category: null,    // class for new objects
  busy: false,
};

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function say(text, isError = false) {
  $("message").textContent = text || "";
  $("message").classList.toggle("error", isError);
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : (data.detail[0] || {}).msg || detail;
    } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.json();
}

// One request at a time: a click while the backend works is dropped, not queued behind it.
async function busy(task) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add("busy");
  document.body.dataset.busy = "1";
  try {
    await task();
  } catch (e) {
    say(e.message, true);
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
    document.body.dataset.busy = "0";
  }
}

// COCO compressed RLE (pycocotools' rleFrString) -> run lengths, then a row-major 0/1 mask.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  let pos = 0, value = 0;
  for (const n of rleCounts(rle.counts)) {
    if (value) {
      for (let i = pos; i < pos + n; i++) mask[(i % h) * w + Math.floor(i / h)] = 1;  // column-major runs
    }
    pos += n;
    value = 1 - value;
  }
  return mask;
}

function maskOf(obj) {
  const cached = state.masks.get(obj.id);
  if (cached && cached.counts === obj.rle.counts) return cached.mask;
  const mask = decodeRle(obj.rle);
  state.masks.set(obj.id, { counts: obj.rle.counts, mask });
  return mask;
}

function categoryName(id) {
  const cat = state.summary.categories.find((c) => c.id === id);
  return cat ? cat.name : String(id);
}

function render() {
  const view = state.view;
  if (!view || !state.image) return;
  const w = view.width, h = view.height;
  ctx.drawImage(state.image, 0, 0, w, h);
  const overlay = ctx.getImageData(0, 0, w, h);
  const px = overlay.data;
  for (const obj of view.objects) {
    const mask = maskOf(obj);
    const [r, g, b] = obj.color;
    const selected = obj.id === state.selected;
    const alpha = selected ? 0.6 : 0.4;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !mask[i - 1] || !mask[i + 1] ||
          !mask[i - w] || !mask[i + w];
        const a = edge ? (selected ? 1 : 0.85) : alpha;
        const e = edge && selected ? 255 : null;
        px[4 * i] = e === null ? px[4 * i] * (1 - a) + r * a : e;
        px[4 * i + 1] = e === null ? px[4 * i + 1] * (1 - a) + g * a : e;
        px[4 * i + 2] = e === null ? px[4 * i + 2] * (1 - a) + b * a : e;
      }
    }
  }
  ctx.putImageData(overlay, 0, 0);
  const sel = view.objects.find((o) => o.id === state.selected);
  const radius = Math.max(3, Math.round(Math.min(w, h) / 120));
  for (const [x, y, positive] of sel ? sel.clicks : []) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? "#1db954" : "#e0245e";
    ctx.fill();
    ctx.strokeStyle = "white";
    ctx.stroke();
  }
}

function showSummary() {
  const s = state.summary;
  $("progress").textContent = s.progress;
  $("backend").textContent = `model: ${s.model || "none"} · clicks: ${s.backend || "none"}`;
  const list = $("images");
  list.replaceChildren();
  for (const img of s.images) {
    const li = document.createElement("li");
    li.textContent = `${img.file_name} (${img.objects})`;
    li.dataset.index = img.index;
    li.classList.toggle("done", img.done);
    li.classList.toggle("skipped", Boolean(img.error));
    li.classList.toggle("current", img.index === state.index);
    if (img.error) li.title = img.error;
    li.addEventListener("click", () => busy(() => openImage(img.index)));
    list.appendChild(li);
  }
  const select = $("class");
  if (select.options.length !== s.categories.length) {
    select.replaceChildren();
    s.categories.forEach((c, k) => {
      const opt = document.createElement("option");
      opt.value = c.id;
      opt.textContent = k < 9 ? `${k + 1}: ${c.name}` : c.name;
      select.appendChild(opt);
    });
  }
  if (state.category === null) state.category = s.categories[0].id;
}

function showObjects() {
  const view = state.view;
  const list = $("objects");
  list.replaceChildren();
  for (const obj of view.objects) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = `rgb(${obj.color.join(",")})`;
    li.appendChild(sw);
    const how = obj.source === "model" ? `model ${obj.score.toFixed(2)}` : obj.source;
    li.appendChild(document.createTextNode(`#${obj.id} ${categoryName(obj.category_id)} · ${how}`));
    li.dataset.id = obj.id;
    li.classList.toggle("selected", obj.id === state.selected);
    li.addEventListener("click", () => select(obj.id === state.selected ? null : obj.id));
    list.appendChild(li);
  }
  const sel = view.objects.find((o) => o.id === state.selected);
  $("class").value = String(sel ? sel.category_id : state.category);
  $("undo").disabled = !view.can_undo;
  $("redo").disabled = !view.can_redo;
  $("delete").disabled = !sel;
  $("reopen").disabled = !view.done;
  $("image-name").classList.toggle("done", view.done);
  $("image-name").textContent = `${view.file_name} · ${state.index + 1} of ${state.summary.images.length}`;
}

function select(id) {
  state.selected = id;
  showObjects();
  render();
}

async function refreshSummary() {
  state.summary = await api("GET", "/api/summary");
  showSummary();
}

async function applyView(view) {
  const sameImage = state.view && state.view.index === view.index;
  state.view = view;
  const ids = new Set(view.objects.map((o) => o.id));
  if (view.selected !== null && view.selected !== undefined) state.selected = view.selected;
  if (!ids.has(state.selected)) state.selected = null;
  if (!sameImage) state.masks.clear();
  say(view.message || "");
  await refreshSummary();
  showObjects();
  render();
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${src}`));
    img.src = src;
  });
}

// Open image `index`; a corrupt one is reported and skipped in direction `step`.
async function openImage(index, step = 1) {
  const total = state.summary.images.length;
  const skipped = [];
  for (let tries = 0; tries < total; tries++) {
    const view = await api("GET", `/api/images/${index}`);
    if (!view.error) {
      state.image = await loadImage(`/api/images/${index}/image.jpg`);
      state.index = index;
      state.selected = null;
      canvas.width = view.width;
      canvas.height = view.height;
      state.view = null;
      await applyView(view);
      if (skipped.length) say(skipped.join(" · "), true);
      return;
    }
    skipped.push(view.message);
    say(view.message, true);
    index = (index + step + total) % total;
  }
  await refreshSummary();
}

function imagePoint(event) {
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width);
  const y = (event.clientY - rect.top) * (canvas.height / rect.height);
  return [Math.min(Math.max(x, 0), canvas.width - 0.01), Math.min(Math.max(y, 0), canvas.height - 0.01)];
}

function objectAt(x, y) {
  const i = Math.floor(y) * state.view.width + Math.floor(x);
  const hits = state.view.objects.filter((o) => maskOf(o)[i]);
  return hits.length ? hits[hits.length - 1].id : null;
}

function onCanvasClick(event, positive) {
  event.preventDefault();
  if (!state.view) return;
  const [x, y] = imagePoint(event);
  if (event.altKey) {
    select(objectAt(x, y));
    return;
  }
  busy(async () => {
    say(positive ? "segmenting…" : "correcting…");
    const body = { x, y, positive: positive && !event.shiftKey, object_id: state.selected,
                   category_id: state.category };
    await applyView(await api("POST", `/api/images/${state.index}/click`, body));
  });
}

function edit(path, body) {
  return busy(async () => applyView(await api("POST", `/api/images/${state.index}/${path}`, body)));
}

function go(step) {
  return busy(() => openImage((state.index + step + state.summary.images.length) % state.summary.images.length,
                              step));
}

function nextTodo() {
  const imgs = state.summary.images;
  for (let k = 1; k <= imgs.length; k++) {
    const img = imgs[(state.index + k) % imgs.length];
    if (!img.done && !img.error) return img.index;
  }
  return null;
}

async function markDone() {
  await busy(async () => {
    await applyView(await api("POST", `/api/images/${state.index}/done`, { done: true }));
    const todo = nextTodo();
    if (todo !== null) await openImage(todo);
    else say(`all done: ${state.summary.progress}, saved to ${state.summary.output}`);
  });
}

function setClass(id) {
  state.category = id;
  if (state.selected !== null) edit("class", { object_id: state.selected, category_id: id });
  else showObjects();
}

canvas.addEventListener("click", (e) => onCanvasClick(e, true));
canvas.addEventListener("contextmenu", (e) => onCanvasClick(e, false));
$("prev").addEventListener("click", () => go(-1));
$("next").addEventListener("click", () => go(1));
$("done").addEventListener("click", markDone);
$("reopen").addEventListener("click", () => edit("done", { done: false }));
$("undo").addEventListener("click", () => edit("undo"));
$("redo").addEventListener("click", () => edit("redo"));
$("delete").addEventListener("click", () => state.selected !== null && edit("delete", { object_id: state.selected }));
$("new").addEventListener("click", () => select(null));
$("class").addEventListener("change", (e) => setClass(Number(e.target.value)));

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" || !state.view) return;
  const key = e.key.toLowerCase();
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && key === "z" && !e.shiftKey) edit("undo");
  else if (ctrl && (key === "y" || (key === "z" && e.shiftKey))) edit("redo");
  else if (ctrl) return;
  else if (key === "arrowright" || key === "d") go(1);
  else if (key === "arrowleft" || key === "a") go(-1);
  else if (key === "enter") markDone();
  else if (key === "u") edit("done", { done: false });
  else if (key === "delete" || key === "backspace") {
    if (state.selected !== null) edit("delete", { object_id: state.selected });
  } else if (key === "escape" || key === "n") select(null);
  else if (/^[1-9]$/.test(key)) {
    const cat = state.summary.categories[Number(key) - 1];
    if (cat) setClass(cat.id);
  } else return;
  e.preventDefault();
});

busy(async () => {
  await refreshSummary();
  const s = state.summary;
  if (s.messages.length) say(s.messages.join(" · "), true);
  await openImage(s.current);
  if (s.messages.length && !state.view.message) say(s.messages.join(" · "), true);
});
