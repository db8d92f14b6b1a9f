// The counter dashboard: one tile per kiosk, updated from the server's event stream.
// No framework and no build step: the box serves these files as they are.
"use strict";

const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
const tiles = new Map();      // device -> {el, data}
let staleSeconds = 90;
let clockOffset = 0;          // server time - this browser's time, in seconds

// Figures the browser tests read: render time per update and publish-to-page latency.
window.__fer = { updateMs: [], latencyMs: [], updates: 0, snapshot: false };

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function emotionClass(name) { return EMOTIONS.includes(name) ? `c-${name}` : "c-none"; }
function clockTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function serverNow() { return Date.now() / 1000 + clockOffset; }
function ago(seconds) {
  if (seconds < 2) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}
function isStale(d) { return d.online !== false && serverNow() - d.last_update > staleSeconds; }

function availability(d) {
  if (d.online === false) return ["offline", "offline"];
  if (isStale(d)) return ["stale", "stale"];
  if (d.online === true) return ["online", "online"];
  return ["unknown", "unknown"];
}

function renderTile(d) {
  const [state, label] = availability(d);
  const alerts = d.alerts || [];
  const camera = d.camera || {};
  const faces = (d.faces || []).map((f) => `
      <div class="face" data-face="${esc(f.face_id)}">
        <span class="emotion">${esc(f.emotion)}</span>
        <div class="bar"><span class="${emotionClass(f.emotion)}" style="width:${Math.round((f.confidence || 0) * 100)}%"></span></div>
        <span>${Math.round((f.confidence || 0) * 100)}%</span>
      </div>`).join("");
  const levels = EMOTIONS.map((e) => {
    const v = (d.levels || {})[e] || 0;
    return `<div title="${e} ${Math.round(v * 100)}%"><span class="c-${e}" style="height:${Math.max(2, Math.round(v * 100))}%"></span><small>${e.slice(0, 4)}</small></div>`;
  }).join("");
  const t = d.today || {};
  const share = Object.entries(t.emotion_share || {}).map(([e, v]) =>
    `<span class="${emotionClass(e)}" style="width:${(v * 100).toFixed(1)}%" title="${esc(e)} ${Math.round(v * 100)}%"></span>`).join("");
  const visits = (t.last_visits || []).map((v) =>
    `<li><span>${esc(clockTime(v.ended))}</span><span>${esc(v.duration_s)} s</span><span class="emo">${esc(v.dominant_emotion)}</span></li>`).join("");
  return `
    <h2>${esc(d.device)} <span class="badge ${state}" data-role="availability">${label}</span></h2>
    <div class="meta">
      <span class="${camera.ok === false ? "camera-bad" : ""}" data-role="camera">camera: ${esc(camera.text || "unknown")}</span>
      <span data-role="face-count">${d.face_count} ${d.face_count === 1 ? "person" : "people"} now</span>
      <span data-role="updated">updated ${ago(serverNow() - d.last_update)}</span>
    </div>
    ${alerts.length ? `<div class="alerts" data-role="alerts">${alerts.map((a) =>
      `<div class="alert">⚠ ${esc(a.emotion)} for a while: person ${esc(a.face_id)} since ${esc(clockTime(a.since))}</div>`).join("")}</div>` : ""}
    <div class="faces" data-role="faces">${faces || `<span class="nobody">${d.online === false ? "kiosk offline" : "nobody at the counter"}</span>`}</div>
    <div class="levels" aria-label="emotion levels">${levels}</div>
    <div class="today">
      <div class="figures">
        <span>today <b data-role="visits">${t.visits || 0}</b> visits</span>
        <span>median <b data-role="median">${t.median_seconds == null ? "–" : t.median_seconds + " s"}</b></span>
      </div>
      <div class="share" aria-label="visits by dominant emotion">${share}</div>
      <ul class="visits">${visits}</ul>
    </div>`;
}

function update(d) {
  let tile = tiles.get(d.device);
  if (!tile) {
    const el = document.createElement("section");
    el.className = "tile";
    el.dataset.device = d.device;
    tile = { el, data: d };
    tiles.set(d.device, tile);
    const ordered = [...tiles.keys()].sort();
    const next = ordered[ordered.indexOf(d.device) + 1];
    document.getElementById("devices").insertBefore(el, next ? tiles.get(next).el : null);
    document.getElementById("empty").hidden = true;
  }
  if (d.last_state_time && d.last_state_time !== tile.data.last_state_time) {
    const published = Date.parse(d.last_state_time);
    if (!isNaN(published)) window.__fer.latencyMs.push(Date.now() - published);
  }
  tile.data = d;
  paint(tile);
}

function paint(tile) {
  const d = tile.data;
  const [state] = availability(d);
  tile.el.className = `tile ${state}${(d.alerts || []).length ? " alerting" : ""}`;
  tile.el.innerHTML = renderTile(d);
}

function summarize() {
  let online = 0, people = 0, alerts = 0, visits = 0;
  for (const { data: d } of tiles.values()) {
    if (d.online !== false && !isStale(d)) online++;
    people += d.face_count || 0;
    alerts += (d.alerts || []).length;
    visits += (d.today || {}).visits || 0;
  }
  document.getElementById("summary").textContent =
    `${online}/${tiles.size} kiosks online · ${people} at the counters · ${alerts} alert${alerts === 1 ? "" : "s"} · ${visits} visits today`;
}

function applyDevices(message) {
  const started = performance.now();
  clockOffset = message.server_time - Date.now() / 1000;
  staleSeconds = message.stale_seconds;
  for (const d of message.devices) update(d);
  summarize();
  void document.body.offsetHeight;  // include the layout the update causes
  window.__fer.updateMs.push(performance.now() - started);
  window.__fer.updates++;
}

function setBroker(b) {
  const el = document.getElementById("broker");
  el.className = `broker ${b.connected ? "ok" : "bad"}`;
  el.textContent = b.connected ? `broker ${b.host}` : `broker ${b.host}: ${b.text}`;
}

function connect() {
  const stream = new EventSource("/api/stream");
  stream.addEventListener("snapshot", (e) => {
    const message = JSON.parse(e.data);
    setBroker(message.broker);
    applyDevices(message);
    window.__fer.snapshot = true;
  });
  stream.addEventListener("devices", (e) => applyDevices(JSON.parse(e.data)));
  stream.addEventListener("broker", (e) => setBroker(JSON.parse(e.data)));
  stream.onerror = () => setBroker({ connected: false, host: "dashboard", text: "reconnecting…" });
}

// Staleness and "updated … ago" move with the clock, not only with messages.
setInterval(() => { for (const tile of tiles.values()) paint(tile); summarize(); }, 1000);
connect();
