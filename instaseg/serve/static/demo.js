// instaseg browser demo: upload -> POST /segment (polygons), clicks -> POST /segment_interactive.
// Plain JS, no external libraries (the page must work offline).
"use strict";

const state = {
  file: null,        // the uploaded File, re-sent with each request
  image: null,       // HTMLImageElement
  scale: 1,          // canvas pixels per image pixel
  instances: [],     // from /segment
  clicks: [],        // {x, y, fg} in image pixels
  clickMask: null,   // {polygons, score, area} from /segment_interactive
  busy: 0,
};

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function color(i, alpha) {
  const hue = (i * 137.508) % 360;  // golden-angle hues: neighbours get distinct colours
  return `hsla(${hue}, 85%, 55%, ${alpha})`;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return response.statusText;
  }
}

function fillPolygons(polygons, fill, stroke) {
  ctx.beginPath();
  for (const poly of polygons) {
    for (let k = 0; k + 1 < poly.length; k += 2) {
      const x = poly[k] * state.scale, y = poly[k + 1] * state.scale;
      if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.closePath();
  }
  ctx.fillStyle = fill;
  ctx.fill("evenodd");
  ctx.strokeStyle = stroke;
  ctx.lineWidth = 2;
  ctx.stroke();
}

function redraw() {
  if (!state.image) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  if ($("show-auto").checked) {
    state.instances.forEach((inst, i) => {
      fillPolygons(inst.polygons, color(i, 0.4), color(i, 1));
      const [x1, y1] = inst.box;
      const text = `${inst.class_name} ${inst.score.toFixed(2)}`;
      const tx = x1 * state.scale + 2, ty = y1 * state.scale + 13;
      ctx.font = "bold 13px sans-serif";
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";  // dark outline keeps labels readable on any colour
      ctx.strokeText(text, tx, ty);
      ctx.fillStyle = "white";
      ctx.fillText(text, tx, ty);
    });
  }
  if (state.clickMask) {
    fillPolygons(state.clickMask.polygons, "rgba(0, 200, 255, 0.45)", "rgba(0, 120, 255, 1)");
  }
  for (const c of state.clicks) {
    ctx.beginPath();
    ctx.arc(c.x * state.scale, c.y * state.scale, 6, 0, 2 * Math.PI);
    ctx.fillStyle = c.fg ? "#10c040" : "#e02020";
    ctx.fill();
    ctx.strokeStyle = "white";
    ctx.lineWidth = 2;
    ctx.stroke();
  }
}

function listInstances() {
  const list = $("instances");
  list.innerHTML = "";
  state.instances.forEach((inst, i) => {
    const li = document.createElement("li");
    li.className = "instance";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = color(i, 1);
    li.appendChild(sw);
    li.appendChild(document.createTextNode(`${inst.class_name} ${inst.score.toFixed(2)}`));
    list.appendChild(li);
  });
}

async function runSegment() {
  if (!state.file) return;
  const form = new FormData();
  form.append("file", state.file);
  const thr = encodeURIComponent($("score").value || "0.5");
  state.busy++;
  setStatus("Segmenting…");
  try {
    const response = await fetch(`/segment?format=polygon&score_thresh=${thr}`, { method: "POST", body: form });
    if (!response.ok) {
      setStatus(`Error ${response.status}: ${await errorText(response)}`, true);
      return;
    }
    const body = await response.json();
    state.instances = body.instances;
    listInstances();
    redraw();
    setStatus(`${body.num_instances} instances (${body.time_ms} ms). Click an object to segment it.`);
  } catch (e) {
    setStatus(`Request failed: ${e}`, true);
  } finally {
    state.busy--;
  }
}

async function runInteractive() {
  const result = $("interactive-result");
  if (!state.file || !state.clicks.some((c) => c.fg)) {
    state.clickMask = null;
    result.textContent = state.clicks.length ? "Add a foreground (left) click." : "No clicks yet.";
    result.dataset.area = "0";
    redraw();
    return;
  }
  const form = new FormData();
  form.append("file", state.file);
  form.append("foreground", JSON.stringify(state.clicks.filter((c) => c.fg).map((c) => [c.x, c.y])));
  form.append("background", JSON.stringify(state.clicks.filter((c) => !c.fg).map((c) => [c.x, c.y])));
  state.busy++;
  result.textContent = "Segmenting the clicked object…";
  try {
    const response = await fetch("/segment_interactive?format=polygon", { method: "POST", body: form });
    if (!response.ok) {
      result.textContent = `Error ${response.status}: ${await errorText(response)}`;
      return;
    }
    const body = await response.json();
    state.clickMask = body.masks.length ? body.masks[0] : null;
    const area = state.clickMask ? state.clickMask.area : 0;
    result.dataset.area = String(area);
    result.textContent = state.clickMask
      ? `Mask: ${area} px, score ${state.clickMask.score.toFixed(2)} (${body.backend}, ${body.time_ms} ms)`
      : "No mask found.";
    redraw();
  } catch (e) {
    result.textContent = `Request failed: ${e}`;
  } finally {
    state.busy--;
  }
}

function loadFile(file) {
  state.file = file;
  state.instances = [];
  state.clicks = [];
  state.clickMask = null;
  $("interactive-result").textContent = "No clicks yet.";
  $("interactive-result").dataset.area = "0";
  listInstances();
  const img = new Image();
  img.onload = () => {
    state.image = img;
    const maxW = 960;
    state.scale = Math.min(1, maxW / img.naturalWidth);
    canvas.width = Math.round(img.naturalWidth * state.scale);
    canvas.height = Math.round(img.naturalHeight * state.scale);
    redraw();
    runSegment();
  };
  img.onerror = () => setStatus("The browser cannot display this file as an image.", true);
  img.src = URL.createObjectURL(file);
}

$("file").addEventListener("change", (ev) => {
  if (ev.target.files.length) loadFile(ev.target.files[0]);
});
$("score").addEventListener("change", runSegment);
$("show-auto").addEventListener("change", redraw);
$("clear").addEventListener("click", () => {
  state.clicks = [];
  runInteractive();
});
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!state.image) return;
  const rect = canvas.getBoundingClientRect();
  // The canvas may be shown smaller than its pixel size (CSS max-width): map back to image pixels.
  const cx = (ev.clientX - rect.left) * (canvas.width / rect.width);
  const cy = (ev.clientY - rect.top) * (canvas.height / rect.height);
  const x = Math.min(Math.max(cx / state.scale, 0), state.image.naturalWidth - 1);
  const y = Math.min(Math.max(cy / state.scale, 0), state.image.naturalHeight - 1);
  const fg = ev.button === 0 && !ev.shiftKey;
  state.clicks.push({ x, y, fg });
  redraw();
  runInteractive();
});

fetch("/models").then((r) => r.json()).then((info) => {
  const m = info.model;
  $("model-info").textContent = m
    ? `model ${m.name}: ${m.class_names.slice(1).join(", ")} · clicks: ${info.interactive}`
    : `no detection model · clicks: ${info.interactive}`;
}).catch(() => { $("model-info").textContent = ""; });
