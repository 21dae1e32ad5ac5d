// MIRAGE ward dashboard: plain JS, no build step.
// Live updates by Server-Sent Events (/api/events): a "snapshot" on every (re)connect, then one
// "bed" event per changed bed. EventSource reconnects by itself; the snapshot catches the page up.
"use strict";

const STATE_TEXT = { quiet: "Quiet", mi_suspected: "MI suspected", acknowledged: "Acknowledged", ended: "Ended" };
const beds = new Map();      // bed_id -> latest view
const heard = new Set();     // alert ids (with level) already announced / beeped
let audio = null;
let firstSnapshot = true;

function fmtTime(ns) { return ns ? new Date(ns / 1e6).toLocaleTimeString() : "—"; }
function fmtAge(ns) {
  if (!ns) return "—";
  const s = Math.max(0, Math.round(Date.now() - ns / 1e6) / 1000 | 0);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function fmtLabAge(s) {
  if (s == null) return "";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function announce(text) {
  const live = document.getElementById("live");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

function beep() {
  if (!audio) return;
  document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);  // for tests and audits
  const t0 = audio.currentTime;
  for (let i = 0; i < 3; i++) {  // three short tones: a high-priority pattern
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, t0 + i * 0.25);
    gain.gain.exponentialRampToValueAtTime(0.4, t0 + i * 0.25 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.25 + 0.18);
    osc.connect(gain).connect(audio.destination);
    osc.start(t0 + i * 0.25);
    osc.stop(t0 + i * 0.25 + 0.2);
  }
}

function notifyNew(view) {
  const mi = view.mi;
  if (view.state !== "mi_suspected" || !mi) return;
  const key = `${mi.alert_id}:${mi.level}`;
  if (heard.has(key)) return;
  heard.add(key);
  if (firstSnapshot) return;  // do not beep for alerts that were open before the page loaded
  announce(`Bed ${view.bed_id}: MI suspected, level ${mi.level}, probability ${Math.round((mi.probability || 0) * 100)} percent`);
  if (mi.level >= 2) beep();
}

function setText(root, sel, text) { root.querySelector(sel).textContent = text; }

// One list item of an open non-MI episode (technical, ST change), with its own Acknowledge button.
function alertItem(e, cls, btnCls, text) {
  const li = document.createElement("li");
  li.className = cls;
  li.dataset.alertId = e.alert_id;
  li.textContent = text + (e.acknowledged ? " — acknowledged" : "");
  if (!e.acknowledged) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = "Acknowledge"; b.className = btnCls;
    b.addEventListener("click", () => postAck(e.alert_id, b));
    li.append(" ", b);
  }
  return li;
}

function render(view) {
  const grid = document.getElementById("grid");
  let card = grid.querySelector(`section[data-bed="${CSS.escape(view.bed_id)}"]`);
  if (!card) {
    card = document.getElementById("bed-tpl").content.firstElementChild.cloneNode(true);
    card.dataset.bed = view.bed_id;
    card.querySelector(".ack").addEventListener("click", () => acknowledge(card));
    const all = [...grid.children, card].sort((a, b) => a.dataset.bed.localeCompare(b.dataset.bed, undefined, { numeric: true }));
    grid.append(...all);
  }
  card.dataset.state = view.state;
  card.className = `bed state-${view.state}`;
  card.setAttribute("aria-label", `Bed ${view.bed_id}: ${STATE_TEXT[view.state]}`);
  setText(card, ".bed-id", `Bed ${view.bed_id}`);
  const label = card.querySelector(".state-label");
  label.textContent = STATE_TEXT[view.state] || view.state;
  label.className = `state-label pill st-${view.state}`;
  setText(card, ".patient", view.patient_id ? `Patient ${view.patient_id}` : "");
  const mi = view.mi;
  card.querySelector(".mi").classList.toggle("hidden", !mi);
  if (mi) {
    card.dataset.alertId = mi.alert_id;
    card.dataset.startedNs = mi.started_ns;
    setText(card, ".since", fmtTime(mi.started_ns));
    setText(card, ".age", fmtAge(mi.started_ns));
    setText(card, ".prob", mi.probability == null ? "—" : `${(mi.probability * 100).toFixed(0)} %`);
    const lvl = card.querySelector(".level");
    lvl.textContent = mi.level >= 2 ? "Level 2 (high)" : "Level 1 (medium)";
    lvl.className = `level level-${mi.level}`;
    setText(card, ".leads", (mi.top_leads || []).join(", ") || "—");
    setText(card, ".st-leads", (mi.st_leads || []).map((x) => `${x.lead} ${fmtUv(x.delta_uv)}`).join(", ") || "—");
    setText(card, ".quality", (mi.quality_flags || []).join(", ") || "good");
    setText(card, ".advisories", (mi.advisories || []).join(", ") || "none");
    const labs = card.querySelector(".labs");
    labs.replaceChildren();
    if (!mi.labs_available) {
      const li = document.createElement("li"); li.textContent = "Lab service unavailable: scored without labs"; labs.append(li);
    } else if (!mi.labs || mi.labs.length === 0) {
      const li = document.createElement("li"); li.textContent = "No labs on record"; labs.append(li);
    }
    for (const lab of mi.labs || []) {
      const li = document.createElement("li");
      li.textContent = `${lab.name || lab.loinc}: ${lab.value} ${lab.unit || ""} (${fmtLabAge(lab.age_s)})`;
      labs.append(li);
    }
    setText(card, ".acked", mi.acknowledged ? `Acknowledged ${fmtTime(mi.acked_ns)}${mi.acked_by ? " by " + mi.acked_by : ""}` :
      (mi.ended_ns ? `Ended ${fmtTime(mi.ended_ns)}` : ""));
    const btn = card.querySelector(".ack");
    btn.dataset.alertId = mi.alert_id;
    btn.classList.toggle("hidden", !!mi.acknowledged);
    btn.disabled = false;
    btn.setAttribute("aria-label", `Acknowledge MI alert on bed ${view.bed_id}`);
    const img = card.querySelector(".snap img");
    const src = `/api/snapshot/${encodeURIComponent(mi.alert_id)}.png`;
    if (img.getAttribute("src") !== src) {
      card.querySelector(".snap").classList.remove("hidden");
      img.onerror = () => card.querySelector(".snap").classList.add("hidden");
      img.alt = `ECG of bed ${view.bed_id} at the alert`;
      img.src = src;
      card.querySelector(".snap a").href = src;
    }
  }
  const stcs = card.querySelector(".stcs");
  stcs.replaceChildren(...(view.st_change || []).map((e) => {
    const top = (e.st_leads || []).map((x) => `${x.lead} ${fmtUv(x.delta_uv)}`).join(", ");
    return alertItem(e, "stc-item", "ack-st", `ST change in ${(e.top_leads || []).join(", ")} since ${fmtTime(e.started_ns)}, ` +
      `level ${e.level}` + (top ? ` (${top})` : ""));
  }));
  card.querySelector(".stc-box").classList.toggle("hidden", !(view.st_change || []).length);
  card.querySelector(".techs").replaceChildren(...(view.technical || []).map((t) => alertItem(t, "tech-item", "ack-tech",
    `${t.kind.replace(/_/g, " ")} since ${fmtTime(t.started_ns)}` + ((t.quality_flags || []).length ? ` (${t.quality_flags.join(", ")})` : ""))));
  const nTech = (view.technical || []).length;
  card.querySelector(".tech-box").classList.toggle("hidden", !nTech);
  card.classList.toggle("has-tech", nTech > 0);
  const techPill = card.querySelector(".tech-pill");
  techPill.classList.toggle("hidden", !nTech);
  techPill.textContent = nTech ? `Technical: ${view.technical.map((t) => t.kind.replace(/_/g, " ")).join(", ")}` : "";
  beds.set(view.bed_id, view);
  if (!card.dataset.stLoaded) { card.dataset.stLoaded = "1"; loadSt(card); }
  document.getElementById("empty").classList.toggle("hidden", beds.size > 0);
  notifyNew(view);
}

// ---- ST (issue #19): current ST per lead (uV and mm) and the last hour per lead group ----------
const SVG = "http://www.w3.org/2000/svg";
const LEAD_COLOURS = ["#4fc3f7", "#ffb74d", "#aed581", "#f06292"];
function fmtUv(v) { return v == null ? "—" : `${v > 0 ? "+" : ""}${Math.round(v)} µV`; }
function fmtMm(v) { return v == null ? "—" : `${v > 0 ? "+" : ""}${(v / 100).toFixed(1)} mm`; }
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function trendSvg(group, leads, st) {
  const W = 320, H = 70, L = 56, span = 3600e9, t1 = st.updated_ns, t0 = t1 - span;
  const idx = leads.map((l) => st.leads.indexOf(l));
  const vals = [0];
  for (const row of st.trend.j60_uv) for (const i of idx) if (row[i] != null) vals.push(row[i]);
  for (const i of idx) if (st.baseline_uv[i] != null) vals.push(st.baseline_uv[i]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < 200) { const m = (hi + lo) / 2; lo = m - 100; hi = m + 100; }
  const x = (t) => L + (W - L - 4) * Math.max(0, (t - t0) / span);
  const y = (v) => 4 + (H - 8) * (hi - v) / (hi - lo);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "st-trend", role: "img", "data-group": group,
    "aria-label": `${group} ST trend, last hour, leads ${leads.join(", ")}; dashed lines: baseline` });
  svg.append(svgEl("line", { x1: L, x2: W - 4, y1: y(0), y2: y(0), class: "zero" }));
  for (const [text, ty] of [[group, 11], [`${Math.round(hi)} µV`, 24], [`${Math.round(lo)} µV`, H - 3], ["1 h", H / 2 + 6]]) {
    const label = svgEl("text", { x: 2, y: ty }); label.textContent = text; svg.append(label);
  }
  leads.forEach((lead, k) => {
    const i = idx[k], colour = LEAD_COLOURS[k % LEAD_COLOURS.length];
    const base = st.baseline_uv[i];
    if (base != null) {
      svg.append(svgEl("line", { x1: L, x2: W - 4, y1: y(base), y2: y(base), stroke: colour, class: "baseline", "data-lead": lead }));
    }
    const pts = [];
    st.trend.t_ns.forEach((t, j) => { const v = st.trend.j60_uv[j][i]; if (v != null && t >= t0) pts.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`); });
    if (pts.length) svg.append(svgEl("polyline", { points: pts.join(" "), stroke: colour, "data-lead": lead }));
    const key = svgEl("text", { x: W - 4 - 34 * (leads.length - k), y: 11, fill: colour }); key.textContent = lead; svg.append(key);
  });
  return svg;
}

function renderSt(card, st) {
  card.querySelector(".st-box").classList.remove("hidden");
  const cur = st.current || {};
  const j60 = cur.j60_uv || [], delta = cur.delta_uv || [];
  card.dataset.stUpdatedNs = st.updated_ns;
  setText(card, ".st-meta", `${cur.hr_bpm != null ? Math.round(cur.hr_bpm) + " bpm · " : ""}` +
    `${st.baseline_uv.some((v) => v != null) ? "Δ from baseline" : "baseline learning"} · ${fmtTime(st.updated_ns)}`);
  const grid = card.querySelector(".st-grid");
  grid.replaceChildren();
  st.leads.forEach((lead, i) => {
    const cell = document.createElement("span");
    cell.className = "st-lead"; cell.dataset.lead = lead; cell.setAttribute("role", "listitem");
    const d = delta[i];
    if (d != null && Math.abs(d) >= 100) cell.classList.add(d > 0 ? "st-up" : "st-down");
    const name = document.createElement("b"); name.textContent = lead;
    cell.append(name, `${fmtUv(j60[i])} ${fmtMm(j60[i])}` + (d != null ? ` Δ${fmtUv(d)}` : ""));
    grid.append(cell);
  });
  const trends = card.querySelector(".st-trends");
  trends.replaceChildren(...Object.entries(st.groups).map(([g, leads]) => trendSvg(g, leads, st)));
}

async function loadSt(card) {
  try {
    const r = await fetch(`/api/st/${encodeURIComponent(card.dataset.bed)}`, { credentials: "same-origin" });
    if (r.ok) renderSt(card, await r.json());
  } catch (e) { /* ST is shown when available; alarms do not depend on it */ }
}

setInterval(() => { for (const card of document.querySelectorAll("section.bed")) loadSt(card); }, 10000);

async function postAck(alertId, btn) {
  btn.disabled = true;
  const by = document.getElementById("by").value.trim();
  try {
    const r = await fetch("/api/ack", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ alert_id: alertId, by }), credentials: "same-origin" });
    if (!r.ok) throw new Error((await r.json()).error || r.status);
    announce("Acknowledged");
  } catch (e) {
    btn.disabled = false;
    announce(`Acknowledge failed: ${e.message}. Try again.`);
  }
}

function acknowledge(card) { postAck(card.querySelector(".ack").dataset.alertId, card.querySelector(".ack")); }

function setConn(cls, text) {
  const c = document.getElementById("conn");
  c.className = `conn ${cls}`;
  c.textContent = text;
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    for (const v of snap.beds) render(v);
    firstSnapshot = false;
    setConn("conn-ok", snap.caught_up ? "Live" : "Live (catching up)");
    document.body.dataset.connected = "true";
  });
  es.addEventListener("bed", (ev) => render(JSON.parse(ev.data)));
  es.addEventListener("status", (ev) => { if (JSON.parse(ev.data).caught_up) setConn("conn-ok", "Live"); });
  es.onerror = () => {
    document.body.dataset.connected = "false";
    setConn("conn-down", "Connection lost — reconnecting…");
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);  // e.g. 401 after token change
  };
}

document.getElementById("sound").addEventListener("click", (ev) => {
  // Browsers only allow audio after a user gesture: this button is that gesture.
  if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
  audio.resume();
  ev.target.setAttribute("aria-pressed", "true");
  ev.target.textContent = "Sound on";
  beep();
});

setInterval(() => {  // alert ages tick without server traffic
  for (const card of document.querySelectorAll("section.bed")) {
    if (card.dataset.startedNs) card.querySelector(".age").textContent = fmtAge(Number(card.dataset.startedNs));
  }
}, 1000);

connect();
