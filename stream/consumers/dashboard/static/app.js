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
  const techs = card.querySelector(".techs");
  techs.replaceChildren();
  for (const t of view.technical || []) {
    const li = document.createElement("li");
    li.className = "tech-item";
    li.dataset.alertId = t.alert_id;
    li.textContent = `${t.kind.replace(/_/g, " ")} since ${fmtTime(t.started_ns)}` +
      ((t.quality_flags || []).length ? ` (${t.quality_flags.join(", ")})` : "") + (t.acknowledged ? " — acknowledged" : "");
    if (!t.acknowledged) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Acknowledge"; b.className = "ack-tech";
      b.addEventListener("click", () => postAck(t.alert_id, b));
      li.append(" ", b);
    }
    techs.append(li);
  }
  const nTech = (view.technical || []).length;
  card.querySelector(".tech-box").classList.toggle("hidden", !nTech);
  card.classList.toggle("has-tech", nTech > 0);
  const techPill = card.querySelector(".tech-pill");
  techPill.classList.toggle("hidden", !nTech);
  techPill.textContent = nTech ? `Technical: ${view.technical.map((t) => t.kind.replace(/_/g, " ")).join(", ")}` : "";
  beds.set(view.bed_id, view);
  document.getElementById("empty").classList.toggle("hidden", beds.size > 0);
  notifyNew(view);
}

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
