// avrec dashboard: polls the worker's JSON (streams/web/dashboard.py) and the read API.
// Plain DOM and canvas, no libraries: the page works offline. Data from the server is
// always set as text (textContent), never parsed as HTML.
"use strict";

const POLL_SERIES_MS = 2000;
const POLL_SUMMARY_MS = 5000;
const POLL_DEAD_MS = 5000;
const COLOURS = { c0: "#2f6fdf", c1: "#e0792b", c2: "#7a4fd0", c3: "#d23c5a" };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// fetch + JSON, with the server's reason on failure: {ok, status, body, error}.
async function getJSON(url) {
  let resp;
  try {
    resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch (exc) {
    return { ok: false, status: 0, error: `cannot reach the worker (${exc.message})` };
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (resp.ok && body !== null) return { ok: true, status: resp.status, body };
  const reason = (body && (body.error || body.reason)) || text.trim() || resp.statusText;
  return { ok: false, status: resp.status, body, error: `HTTP ${resp.status}: ${reason}` };
}

function setStatus(state, text) {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

function fmt(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en");
  let s = Number(v).toFixed(digits);
  if (s.includes(".")) s = s.replace(/0+$/, "").replace(/\.$/, "");
  return s;
}
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);

// ---------------------------------------------------------------- charts
// A line chart on a canvas: series [{values, colour}], x from the sample times.
// The canvas records what it drew (data-points, data-max, data-last) for tests and tools.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Freshness spans milliseconds (caught up) to minutes (a backlog): its chart is logarithmic,
// from LOG_FLOOR_S up, so both stay readable.
const LOG_FLOOR_S = 0.001;
function secondsLabel(v) { return v < 1 ? `${fmt(v * 1000, 0)}ms` : `${fmt(v, 0)}s`; }

function drawChart(canvas, times, series, unit, log = false) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 46, right = 8, top = 8, bottom = 20;
  const pw = w - left - right, ph = h - top - bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const n = times.length;
  const t0 = n ? times[0] : 0, t1 = n ? times[n - 1] : 1;
  const span = Math.max(t1 - t0, 1e-9);
  let ticks, yOf, label;
  if (log) {
    const decades = Math.max(1, Math.ceil(Math.log10(Math.max(max, LOG_FLOOR_S * 10) / LOG_FLOOR_S)));
    ticks = Array.from({ length: decades + 1 }, (_, i) => LOG_FLOOR_S * 10 ** i);
    yOf = (v) => top + ph - (Math.log10(Math.max(v, LOG_FLOOR_S) / LOG_FLOOR_S) / decades) * ph;
    label = secondsLabel;
  } else {
    const ymax = niceMax(max);
    ticks = [0, 1, 2, 3, 4].map((i) => (ymax * i) / 4);
    yOf = (v) => top + ph - (Math.min(v, ymax) / ymax) * ph;
    label = (v) => fmt(v) + unit;
  }

  // grid and y labels
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7385";
  ctx.strokeStyle = "#eceff4";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks) {
    const y = yOf(v);
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + pw, y + 0.5); ctx.stroke();
    ctx.fillText(label(v), left - 4, y);
  }
  // x labels: seconds before the newest sample
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  if (n > 1) {
    ctx.fillText(`-${Math.round(span)}s`, left + 12, top + ph + 4);
    ctx.fillText("now", left + pw - 12, top + ph + 4);
  } else {
    ctx.fillText("waiting for samples…", left + pw / 2, top + ph / 2);
  }
  // lines (a null breaks the line: no list published in that interval)
  const gap = (v) => v === null || v === undefined;
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = s.colour;
    ctx.lineWidth = 1.8;
    ctx.beginPath();
    s.values.forEach((v, i) => {
      if (gap(v)) return;
      const x = left + (n > 1 ? ((times[i] - t0) / span) * pw : pw);
      const y = yOf(v);
      if (i > 0 && !gap(s.values[i - 1])) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      // A value alone between gaps (one interval with lists) would draw nothing as a line: a dot.
      if ((i === 0 || gap(s.values[i - 1])) && (i === n - 1 || gap(s.values[i + 1]))) ctx.fillRect(x - 2, y - 2, 4, 4);
    });
    ctx.stroke();
  }
  const last = series.map((s) => s.values[s.values.length - 1]);
  canvas.dataset.points = String(n);
  canvas.dataset.max = String(max);
  canvas.dataset.last = last.map((v) => (v === null || v === undefined ? "" : String(v))).join(",");
}

let lastSeries = null;
function drawAll() {
  const d = lastSeries;
  if (!d) return;
  drawChart($("chart-throughput"), d.t, [
    { values: d.events_per_s, colour: COLOURS.c0 }, { values: d.lists_per_s, colour: COLOURS.c1 }], "/s");
  drawChart($("chart-lag"), d.t, [{ values: d.lag, colour: COLOURS.c2 }], "");
  drawChart($("chart-freshness"), d.t, [
    { values: d.freshness_p50_s, colour: COLOURS.c0 }, { values: d.freshness_p99_s, colour: COLOURS.c3 }], "s", true);
}

async function pollSeries() {
  const r = await getJSON("/dashboard/series");
  if (r.ok) {
    lastSeries = r.body;
    drawAll();
    setStatus("ok", `live · ${new Date().toLocaleTimeString()}`);
  } else {
    setStatus("error", `series: ${r.error}`);
  }
}

// ---------------------------------------------------------------- summary
async function pollSummary() {
  const r = await getJSON("/dashboard/summary");
  if (!r.ok) { setStatus("error", `summary: ${r.error}`); return; }
  const s = r.body;
  $("model-version").textContent = s.model_version || "–";
  $("events-in").textContent = fmt(s.events_in, 0);
  $("lists-out").textContent = fmt(s.lists_out, 0);
  $("coverage").textContent = pct(s.coverage);
  $("cold-start").textContent = pct(s.cold_start_share);
  const breakers = $("breakers");
  breakers.replaceChildren();
  const names = Object.keys(s.breakers || {}).sort();
  if (!names.length) breakers.textContent = "–";
  for (const name of names) {
    const state = s.breakers[name];
    breakers.append(el("span", { class: state === "closed" ? "ok" : "bad", "data-service": name }, `${name}: ${state} `));
  }
  const tbody = $("online-table").querySelector("tbody");
  tbody.replaceChildren(...(s.online || []).map((m) => el("tr", { "data-model-version": m.model_version },
    el("td", {}, m.model_version), el("td", { class: "num" }, fmt(m.impressions, 0)),
    el("td", { class: "num" }, fmt(m.impressed_items, 0)), el("td", { class: "num" }, fmt(m.clicks, 0)),
    el("td", { class: "num" }, fmt(m.hits, 0)), el("td", { class: "num ctr" }, pct(m.ctr)),
    el("td", { class: "num hit-rate" }, pct(m.hit_rate)))));
  $("online-empty").hidden = (s.online || []).length > 0;
}

// ---------------------------------------------------------------- dead letters
async function pollDeadLetters() {
  const r = await getJSON("/dashboard/dead-letters");
  const err = $("dead-letters-error");
  if (!r.ok) { err.textContent = `Cannot list dead letters: ${r.error}`; err.hidden = false; return; }
  err.hidden = true;
  const rows = r.body.dead_letters || [];
  $("dead-letters-topics").textContent = `(newest ${r.body.limit} of ${(r.body.topics || []).join(", ")})`;
  const table = $("dead-letters");
  table.querySelector("tbody").replaceChildren(...rows.map((d) => el("tr",
    { "data-stage": d.stage, "data-key": d.key, "data-topic": d.dlq_topic, "data-offset": d.dlq_offset },
    el("td", {}, d.failed_at ? new Date(d.failed_at * 1000).toLocaleString() : "–"),
    el("td", {}, d.dlq_topic), el("td", {}, d.stage), el("td", { class: "reason" }, d.error),
    el("td", {}, d.key === null || d.key === undefined ? "–" : d.key),
    el("td", {}, d.topic ? `${d.topic}[${d.partition}]@${d.offset}` : "–"),
    el("td", { class: "original" }, d.original_preview || ""))));
  table.dataset.rows = String(rows.length);
  $("dead-letters-empty").hidden = rows.length > 0;
}

// ---------------------------------------------------------------- inspectors
function showError(prefix, message) {
  const e = $(`${prefix}-error`);
  e.textContent = message;
  e.hidden = !message;
}

// The fresh source scores an item by its upload time (unix seconds): shown as an age.
function scoreText(v) {
  if (v > 1e9 && v < 1e11) {
    const age = Math.max(0, Date.now() / 1000 - v);
    return age < 3600 ? `${Math.round(age / 60)} min old` : age < 172800 ? `${Math.round(age / 3600)} h old`
      : `${Math.round(age / 86400)} d old`;
  }
  return fmt(v, 3);
}

// Lists from the read API hold objects ({item_id, ...}); a bare id string is taken as one too.
const asItems = (v) => (Array.isArray(v) ? v : []).map((x) => (typeof x === "string" ? { item_id: x } : x || {}));

function itemLine(it, withReasons) {
  const id = it.item_id ?? "?";
  const li = el("li", { "data-item-id": id },
    el("span", { class: "id", title: "inspect this item", onclick: () => inspectItem(id) }, id),
    it.title ? el("span", { class: "title" }, it.title) : null,
    typeof it.score === "number" ? el("span", { class: "score" }, it.score.toFixed(3)) : null);
  // What each source contributed to the score (the sources that gave nothing are left out).
  for (const [src, c] of Object.entries(it.sources || {})) {
    if (c) li.append(el("span", { class: "src", "data-source": src }, `${src} ${fmt(c)}`));
  }
  if (withReasons) {
    const reasons = Array.isArray(it.reasons) ? it.reasons : [];
    li.append(el("span", { class: "reasons" }, reasons.length ? reasons.join("; ") : "(no reason given)"));
  }
  return li;
}

async function inspectUser(userId) {
  userId = (userId || "").trim();
  $("user-id").value = userId;
  if (!userId) { showError("user", "Type a user id."); return; }
  const r = await getJSON(`/users/${encodeURIComponent(userId)}`);
  const box = $("user-result");
  if (!r.ok) {
    box.hidden = true;
    showError("user", r.status === 404 && !r.body
      ? `${r.error} (this worker has no /users endpoint: is the read API enabled?)` : r.error);
    return;
  }
  showError("user", "");
  const u = r.body || {};
  $("user-name").textContent = u.user_id ?? userId;
  $("user-known").textContent = u.known_user === false ? "unknown user: cold-start list" : "";
  $("user-model").textContent = u.model_version || "–";
  const list = asItems(Array.isArray(u.list) ? u.list : u.list && u.list.items);
  const ol = $("user-list");
  ol.replaceChildren(...list.map((it) => itemLine(it, true)));
  ol.dataset.items = list.map((it) => it.item_id).join(",");
  if (!list.length) ol.append(el("li", { class: "hint" }, "no list yet"));
  const history = asItems(u.history);
  $("user-history").replaceChildren(...(history.length ? history.map((h) => el("li", { "data-item-id": h.item_id },
    `${h.item_id ?? "?"}${h.title ? ` · ${h.title}` : ""}${h.type ? ` (${h.type})` : ""}`))
    : [el("li", { class: "hint" }, "no history")]));
  const cands = u.candidates && typeof u.candidates === "object" ? u.candidates : {};
  $("user-candidates").replaceChildren(...Object.entries(cands).map(([src, items]) => el("div", { "data-source": src },
    el("h4", {}, `${src} (${asItems(items).length})`),
    el("ol", {}, ...asItems(items).slice(0, 10).map((c) =>
      el("li", { "data-item-id": c.item_id, title: c.title || "" },
        `${c.item_id ?? "?"}${typeof c.score === "number" ? ` ${scoreText(c.score)}` : ""}`))))));
  box.hidden = false;
}

async function inspectItem(itemId) {
  itemId = (itemId || "").trim();
  $("item-id").value = itemId;
  if (!itemId) { showError("item", "Type an item id."); return; }
  const r = await getJSON(`/items/${encodeURIComponent(itemId)}`);
  const box = $("item-result");
  if (!r.ok) {
    box.hidden = true;
    showError("item", r.status === 404 && r.body && r.body.error ? `HTTP 404: ${r.body.error}` : r.error);
    return;
  }
  showError("item", "");
  const it = r.body || {};
  const when = typeof it.created_at === "number" ? new Date(it.created_at * 1000).toLocaleString() : it.created_at;
  const rows = [["item", it.item_id ?? itemId], ["title", it.title], ["creator", it.creator_id], ["created", when],
    ["state", it.taken_down ? "taken down" : (it.available === false ? "not available" : "available")]];
  $("item-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
  const mods = it.modalities && typeof it.modalities === "object" ? it.modalities : {};
  $("item-modalities").replaceChildren(el("span", {}, "vectors:"), ...["text", "audio", "video"].map((m) =>
    el("span", { class: "modality", "data-modality": m, "data-available": Boolean(mods[m]) }, m)));
  const nb = asItems(it.neighbours);
  $("item-neighbours").replaceChildren(...(nb.length ? nb.map((n) => itemLine(n, false))
    : [el("li", { class: "hint" }, "no neighbours")]));
  box.hidden = false;
}

// ---------------------------------------------------------------- start
$("user-form").addEventListener("submit", (ev) => { ev.preventDefault(); inspectUser($("user-id").value); });
$("item-form").addEventListener("submit", (ev) => { ev.preventDefault(); inspectItem($("item-id").value); });
window.addEventListener("resize", drawAll);

function every(fn, ms) { fn(); setInterval(fn, ms); }
every(pollSeries, POLL_SERIES_MS);
every(pollSummary, POLL_SUMMARY_MS);
every(pollDeadLetters, POLL_DEAD_MS);

// ?user=U&item=I opens the inspectors on them (links from logs, the demo, the docs' screenshot).
const params = new URLSearchParams(window.location.search);
if (params.get("user")) inspectUser(params.get("user"));
if (params.get("item")) inspectItem(params.get("item"));
