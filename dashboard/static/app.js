// The counter dashboard: one tile per kiosk, updated from the server's event stream, and a
// history view drawn here as inline SVG. No framework, no build step, no outside requests.
"use strict";

const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
const NAMES = { angry: "Angry", disgust: "Disgust", fear: "Fear", happy: "Happy", sad: "Sad", surprise: "Surprise", neutral: "Neutral", none: "None" };
const LOOKED = { angry: "angry", disgust: "disgusted", fear: "afraid", happy: "happy", sad: "sad", surprise: "surprised", neutral: "neutral" };
const REASONS = { recovered: "calmer again", left: "they left", shutdown: "kiosk stopped", reload: "kiosk restarted", offline: "kiosk went offline" };
const tiles = new Map();      // device -> {el, data}
let staleSeconds = 90, keepAlerts = 1800;
let clockOffset = 0;          // server time - this browser's time, in seconds
let broker = { connected: false, since: 0, listening_since: null };
let streamDownSince = null;   // the dashboard itself is not answering since (browser time)

// Figures the browser tests read: render time per update and publish-to-page latency.
window.__fer = { updateMs: [], latencyMs: [], updates: 0, snapshot: false };

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
const name = (e) => NAMES[e] || esc(e);
const cls = (e) => (EMOTIONS.includes(e) ? e : "none");
const plural = (n, one, many) => `${n} ${n === 1 ? one : many || one + "s"}`;
const pct = (v) => `${Math.round((v || 0) * 100)} %`;
function toDate(t) { return typeof t === "number" ? new Date(t * 1000) : new Date(t); }
function clock(t, seconds) {
  const d = toDate(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], seconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" });
}
function serverNow() { return Date.now() / 1000 + clockOffset; }
function ago(s) {
  s = Math.max(0, s);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${plural(Math.floor(s / 86400), "day")} ago`;
}
function span(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function seconds(t) { return typeof t === "number" ? t : toDate(t).getTime() / 1000; }
function bar(e, v) { return `<div class="bar"><span class="c-${cls(e)}" style="width:${Math.round((v || 0) * 100)}%"></span></div>`; }

// What is true of a kiosk now: [css class, badge text]. Broker lost or dashboard down:
// unknown, since then. Offline, stale: the kiosk's own figures are not shown as current.
function availability(d) {
  if (streamDownSince) return ["unknown", `unknown since ${clock(streamDownSince / 1000)}`];
  if (!broker.connected) return ["unknown", `unknown since ${clock(broker.since)}`];
  // A kiosk behind a bridge that is down: its box is gone from here, whatever it last said.
  if (d.bridge === false) return ["offline", "UNREACHABLE"];
  if (d.online === false) return ["offline", "OFFLINE"];
  const heard = Math.max(d.last_update || 0, broker.listening_since || 0);
  if (serverNow() - heard > staleSeconds) return ["stale", "STALE"];
  if (d.online === true) return ["online", "ONLINE"];
  return ["unknown", "not heard from yet"];
}

function alertText(a, now) {
  const looked = LOOKED[a.emotion] || esc(a.emotion);
  const since = seconds(a.since);
  if (a.cleared == null) return `A customer has looked ${looked} for ${span(now - since)}`;
  return `A customer looked ${looked} for ${span(a.cleared - since)}`;
}

function recentAlerts(d, now) {
  // Open alerts are in the tile's alert box; cleared ones stay listed here for a while.
  const shown = (d.recent_alerts || []).filter((a) => a.cleared != null && now - a.cleared <= keepAlerts);
  if (!shown.length) return "";
  return `<ul class="recent" data-role="recent-alerts" aria-label="recent alerts">${shown.map((a) =>
    `<li>${alertText(a, now)} · raised ${clock(a.raised, true)} · cleared ${clock(a.cleared, true)} (${REASONS[a.reason] || esc(a.reason)})</li>`).join("")}</ul>`;
}

function renderTile(d, state, label) {
  const now = serverNow();
  const current = state === "online" || state === "unknown" && (d.online !== false);
  const camera = current ? d.camera || {} : { ok: null, text: "unknown" };
  const alerts = current ? d.alerts || [] : [];
  const faces = current ? d.faces || [] : [];
  const people = faces.length ? faces.length : current ? d.face_count || 0 : 0;
  const nobody = d.bridge === false ? "kiosk unreachable (its box's bridge is down): nobody is shown"
    : d.online === false ? "kiosk offline: nobody is shown" : state === "stale"
    ? `no news from this kiosk${d.last_update ? ` since ${clock(d.last_update)}` : ""}: nobody is shown` : "nobody at the counter";
  const faceRows = faces.map((f) => `
      <div class="face"><span class="emotion">${name(f.emotion)}</span>${bar(f.emotion, f.confidence)}<span class="num">${pct(f.confidence)}</span></div>`).join("");
  const levels = people ? `<div class="levels" aria-label="emotion levels">${EMOTIONS.map((e) =>
    `<div class="level"><span>${NAMES[e]}</span>${bar(e, (d.levels || {})[e])}<span class="num">${pct((d.levels || {})[e])}</span></div>`).join("")}</div>` : "";
  const t = d.today || {};
  const share = Object.entries(t.emotion_share || {});
  const visits = (t.last_visits || []).map((v) => `<li><span>${esc(clock(v.ended))}</span><span>${span(v.duration_s)}</span><span class="emo">${name(v.dominant_emotion)}</span>${
    v.ended_by === "shutdown" || v.ended_by === "reload" ? `<span class="cut">cut short (${v.ended_by === "shutdown" ? "kiosk stopped" : "kiosk restarted"}), not counted</span>` : ""}</li>`).join("");
  return `
    <h2>${esc(d.device)} <span class="badge ${state}" data-role="availability">${label}</span></h2>
    <div class="meta">
      <span class="${camera.ok === false ? "camera-bad" : ""}" data-role="camera">camera: ${esc(camera.text || "unknown")}</span>
      <span data-role="face-count">${plural(people, "person", "people")} ${state === "unknown" && d.last_update ? "(last known)" : "now"}</span>
      <span data-role="updated">${d.last_update ? `updated ${ago(now - d.last_update)}` : "not heard from yet"}</span>
    </div>
    <div class="live">
      ${alerts.length ? `<div class="alerts" data-role="alerts">${alerts.map((a) =>
        `<div class="alert">⚠ ${alertText(a, now)}<small>since ${clock(a.since, true)}: a colleague may want to step in</small></div>`).join("")}</div>` : ""}
      <div class="faces" data-role="faces">${faceRows || `<span class="nobody">${nobody}</span>`}</div>
      ${levels}
    </div>
    <div class="today">
      <div class="figures">
        <span>today <b data-role="visits">${t.visits || 0}</b> ${t.visits === 1 ? "visit" : "visits"}</span>
        <span>median <b data-role="median">${t.median_seconds == null ? "–" : span(t.median_seconds)}</b></span>
      </div>
      ${share.length ? `<div class="share" aria-hidden="true">${share.map(([e, v]) => `<span class="c-${cls(e)}" style="width:${(v * 100).toFixed(1)}%"></span>`).join("")}</div>
      <div class="legend" data-role="share">${share.map(([e, v]) => `<span><i class="c-${cls(e)}"></i>${name(e)} ${pct(v)}</span>`).join("")}</div>` : ""}
      <ul class="visits">${visits}</ul>
    </div>
    ${recentAlerts(d, now)}`;
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
  const [state, label] = availability(d);
  const html = renderTile(d, state, label);
  const alerting = state === "online" && (d.alerts || []).length;
  tile.el.className = `tile ${state}${alerting ? " alerting" : ""}`;
  if (html !== tile.html) { tile.el.innerHTML = html; tile.html = html; }
}

function summarize() {
  let online = 0, people = 0, alerts = 0, visits = 0;
  for (const { data: d } of tiles.values()) {
    const [state] = availability(d);
    if (state === "online") { online++; people += d.face_count || 0; alerts += (d.alerts || []).length; }
    visits += (d.today || {}).visits || 0;
  }
  const live = broker.connected && !streamDownSince
    ? `${online}/${tiles.size} kiosks online · ${plural(people, "person", "people")} at the counters · ${plural(alerts, "alert")}`
    : `${plural(tiles.size, "kiosk")} · live state unknown`;
  document.getElementById("summary").textContent = `${live} · ${plural(visits, "visit")} today`;
}

function applyDevices(message) {
  const started = performance.now();
  clockOffset = message.server_time - Date.now() / 1000;
  staleSeconds = message.stale_seconds;
  keepAlerts = message.keep_alerts_seconds ?? keepAlerts;
  for (const d of message.devices) update(d);
  summarize();
  void document.body.offsetHeight;  // include the layout the update causes
  window.__fer.updateMs.push(performance.now() - started);
  window.__fer.updates++;
}

function showBanner() {
  const el = document.getElementById("banner");
  let text = "";
  if (streamDownSince) text = `The dashboard is not answering since ${clock(streamDownSince / 1000, true)}: what you see may be out of date. Reconnecting…`;
  else if (!broker.connected) {
    const why = ["lost", "disconnected", "connecting"].includes(broker.text) ? "" : ` (${broker.text})`;
    text = `The dashboard lost its MQTT broker ${broker.host} at ${clock(broker.since, true)}${why}: kiosks may be working and holding their visits; figures are the last known.`;
  }
  el.textContent = text;
  el.hidden = !text;
}

function setBroker(b) {
  broker = b;
  const el = document.getElementById("broker");
  el.className = `broker ${streamDownSince ? "unknown" : b.connected ? "ok" : "bad"}`;
  el.textContent = streamDownSince ? "dashboard not answering" : b.connected ? `broker ${b.host}` : `broker lost since ${clock(b.since)}`;
  showBanner();
  repaint();
}

function repaint() { for (const tile of tiles.values()) paint(tile); summarize(); }

function connect() {
  const stream = new EventSource("/api/stream");
  stream.addEventListener("snapshot", (e) => {
    const message = JSON.parse(e.data);
    streamDownSince = null;
    clockOffset = message.server_time - Date.now() / 1000;
    setBroker(message.broker);
    applyDevices(message);
    window.__fer.snapshot = true;
  });
  stream.addEventListener("devices", (e) => applyDevices(JSON.parse(e.data)));
  stream.addEventListener("broker", (e) => setBroker(JSON.parse(e.data)));
  stream.onerror = () => {
    if (!streamDownSince) streamDownSince = Date.now();
    setBroker(broker);
  };
}

// ---- history: charts drawn here, from /api/history ---------------------------------------

function chart(title, items, opts) {
  // items: [{label, total, parts: [[class, value]], text}]; bars with their number above.
  const w = opts.w, h = 190, top = 18, bottom = 22, left = 4;
  const max = Math.max(1, ...items.map((i) => i.total));
  const step = (w - left) / Math.max(1, items.length), bw = Math.max(2, step * 0.72);
  let svg = `<line class="axis" x1="0" x2="${w}" y1="${h - bottom}" y2="${h - bottom}" stroke-width="1"/>`;
  items.forEach((it, i) => {
    const x = left + i * step + (step - bw) / 2;
    let y = h - bottom;
    for (const [c, v] of it.parts) {
      const bh = (v / max) * (h - top - bottom);
      y -= bh;
      svg += `<rect class="${c}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}"/>`;
    }
    if (it.total) svg += `<text class="v" x="${(x + bw / 2).toFixed(1)}" y="${(y - 4).toFixed(1)}" text-anchor="middle">${esc(it.text ?? it.total)}</text>`;
    if (it.label) svg += `<text x="${(x + bw / 2).toFixed(1)}" y="${h - 6}" text-anchor="middle">${esc(it.label)}</text>`;
  });
  return `<section class="chart" data-chart="${opts.key}"><h3>${esc(title)}</h3><svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${svg}</svg>${opts.note ? `<div class="muted">${opts.note}</div>` : ""}</section>`;
}

const parts = (by) => EMOTIONS.filter((e) => by[e]).map((e) => [`f-${e}`, by[e]]);
const shortDay = (iso) => { const [, m, d] = iso.split("-"); return `${+d}/${+m}`; };

function drawHistory(h) {
  const select = document.getElementById("hist-device");
  const chosen = select.value;
  select.innerHTML = `<option value="">all kiosks</option>` + h.devices.map((d) => `<option${d === chosen ? " selected" : ""}>${esc(d)}</option>`).join("");
  // Drawn at the width it is shown (text stays legible); a phone shows fewer days, not smaller ones.
  const w = Math.max(280, Math.min(600, document.getElementById("charts").clientWidth - 36));
  const days = h.days.slice(-Math.max(7, Math.floor(w / 20))), n = days.length, every = n > 14 ? 7 : n > 7 ? 2 : 1;
  const label = (i) => ((n - 1 - i) % every === 0 ? shortDay(days[i].date) : "");
  const total = days.reduce((s, d) => s + d.visits, 0), todayVisits = h.hours.reduce((s, x) => s + x.visits, 0);
  document.getElementById("legend").innerHTML = EMOTIONS.map((e) => `<span><i class="c-${e}"></i>${NAMES[e]}</span>`).join("") + `<span><i style="background:var(--alert)"></i>Alerts</span>`;
  document.getElementById("hist-note").textContent = `${plural(total, "visit")} in the last ${plural(n, "day")}; visits cut short by a kiosk stopping are not counted`;
  document.getElementById("charts").innerHTML = [
    chart(`Today by hour: ${plural(todayVisits, "visit")}, by how customers mostly seemed`,
      h.hours.map((x) => ({ label: x.hour % 3 === 0 ? String(x.hour).padStart(2, "0") : "", total: x.visits, parts: parts(x.by_emotion) })), { key: "hours", w }),
    chart(`Visits per day, last ${plural(n, "day")}`,
      days.map((d, i) => ({ label: label(i), total: d.visits, parts: parts(d.by_emotion) })), { key: "days", w }),
    chart("Median visit length per day, in seconds",
      days.map((d, i) => ({ label: label(i), total: d.median_seconds || 0, text: Math.round(d.median_seconds || 0), parts: [["f-median", d.median_seconds || 0]] })), { key: "median", w }),
    chart("Alerts per day",
      days.map((d, i) => ({ label: label(i), total: d.alerts, parts: [["f-alert", d.alerts]] })),
      { key: "alerts", w, note: days.some((d) => d.alerts) ? "" : "No alerts in these days." }),
  ].join("");
  window.__fer.history = h;
  window.__fer.historyDays = n;
}

async function loadHistory() {
  const device = document.getElementById("hist-device").value;
  try {
    const r = await fetch(`/api/history${device ? `?device=${encodeURIComponent(device)}` : ""}`);
    if (r.ok) drawHistory(await r.json());
  } catch (err) { /* the banner already says the dashboard is not answering */ }
}

function route() {
  const history = location.hash === "#history";
  document.getElementById("live").hidden = history;
  document.getElementById("history").hidden = !history;
  document.getElementById("tab-live").className = history ? "" : "on";
  document.getElementById("tab-history").className = history ? "on" : "";
  if (history) loadHistory();
}

document.getElementById("hist-device").addEventListener("change", loadHistory);
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { if (location.hash === "#history" && window.__fer.history) drawHistory(window.__fer.history); });
// Staleness, "updated … ago" and alert durations move with the clock, not only with messages.
setInterval(() => { repaint(); showBanner(); }, 1000);
setInterval(() => { if (location.hash === "#history") loadHistory(); }, 60000);
route();
connect();
