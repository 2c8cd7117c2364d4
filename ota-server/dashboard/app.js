// edgefleet dashboard: a small single-page app over the same /v1 API as edgectl. No framework,
// no external requests (the server sends a Content-Security-Policy of 'self'). The API token
// lives in sessionStorage; pages poll every 2 s while shown, so a moving rollout updates live.
"use strict";
const TOKEN_KEY = "edgefleet.token";
const POLL_MS = 2000;
const state = { who: null, timer: null, route: "", confirm: null, gen: 0 };
// set once per page load: the browser tests check that live updates never reload the page
window.edgefleetLoadedAt = Date.now();

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v) ? "–" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : esc(v));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + " %");
const ago = (t) => { if (!t) return "never"; const s = Math.max(0, Math.round(Date.now() / 1000 - t)); return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago"; };
const time = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");
const pill = (s) => `<span class="pill ${esc(s)}">${esc(String(s).replace("_", " "))}</span>`;

async function api(method, path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, { method, headers: { authorization: "Bearer " + token } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) { logout(); throw new Error("not logged in"); }
  if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
  return body;
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.who = null;
  route();
}

function loginPage(message) {
  $("who").textContent = "";
  $("logout").hidden = true;
  $("main").innerHTML = `<div class="login card"><h1>Sign in</h1>
    <p class="muted">Paste an API token (<code>ota-server token create</code>, or <code>admin.token</code> in the server's data directory). It is kept for this tab only.</p>
    <form id="login-form"><input id="token" type="password" autocomplete="off" placeholder="eft_…">
    <p><button class="primary" id="login" type="submit">Sign in</button></p>
    <p class="error" id="login-error">${esc(message || "")}</p></form></div>`;
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    try { state.who = await api("GET", "/v1/whoami"); location.hash = location.hash || "#/"; route(); }
    catch (err) { sessionStorage.removeItem(TOKEN_KEY); loginPage("That token was refused: " + err.message); }
  };
}

// ---- charts: a line per series over time, the gate threshold as a dashed line -------------
function chart(title, series, threshold, opts = {}) {
  const W = 300, H = 150, L = 36, R = 8, T = 10, B = 20;
  const pts = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  if (!pts.length) return `<div class="card"><b>${esc(title)}</b><p class="muted">no telemetry yet</p></div>`;
  const t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t), t0 + 60);
  const vals = pts.map((p) => p.v).concat(threshold ?? []);
  let lo = Math.min(0, ...vals), hi = Math.max(...vals);
  if (hi <= lo) hi = lo + 1;
  hi += (hi - lo) * 0.1;
  if (opts.max !== undefined) hi = Math.min(hi, Math.max(opts.max, ...vals));
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R), y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const lines = series.map((s) => {
    const p = s.points.filter((q) => q.v !== null && q.v !== undefined);
    if (!p.length) return "";
    const d = p.map((q, i) => (i ? "L" : "M") + x(q.t).toFixed(1) + "," + y(q.v).toFixed(1)).join(" ");
    const dots = p.length === 1 ? `<circle cx="${x(p[0].t)}" cy="${y(p[0].v)}" r="3" class="${s.cls}"/>` : "";
    return `<path d="${d}" class="${s.cls}"/>${dots}`;
  }).join("");
  const gate = threshold === null || threshold === undefined ? "" : `<line class="gate" x1="${L}" x2="${W - R}" y1="${y(threshold)}" y2="${y(threshold)}"/><text x="${W - R - 2}" y="${y(threshold) - 3}" text-anchor="end">gate ${fmt(threshold, 3)}</text>`;
  const f = opts.format || ((v) => fmt(v, 3));
  return `<div class="card" data-chart="${esc(title)}"><b>${esc(title)}</b>
    <svg class="chart" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}">
      <line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>
      <text x="${L - 3}" y="${T + 8}" text-anchor="end">${f(hi)}</text><text x="${L - 3}" y="${H - B}" text-anchor="end">${f(lo)}</text>
      <text x="${L}" y="${H - 5}">${time(t0)}</text><text x="${W - R}" y="${H - 5}" text-anchor="end">${time(t1)}</text>
      ${lines}${gate}</svg></div>`;
}

function metricSeries(points, key) { return points.map((p) => ({ t: p.t, v: p[key] })); }

// ---- pages ---------------------------------------------------------------------------------
const DEVICE_ROWS = 200;
// a large fleet: the devices that need a look first, and not all of them
function shownDevices(devices) {
  const trouble = (d) => (!d.online ? 2 : 0) + ((d.reported?.models || []).some((m) => (m.bad_versions || []).length) ? 1 : 0);
  return devices.slice().sort((a, b) => trouble(b) - trouble(a) || a.id.localeCompare(b.id)).slice(0, DEVICE_ROWS);
}
async function overview() {
  const [{ devices }, { rollouts }] = await Promise.all([api("GET", "/v1/devices"), api("GET", "/v1/rollouts")]);
  // the device list is the heavy call: poll it less often in a large fleet
  state.pollMs = devices.length > 2000 ? 10000 : POLL_MS;
  const online = devices.filter((d) => d.online).length;
  const versions = {}, cohorts = {};
  for (const d of devices) {
    for (const m of d.reported?.models || []) { const k = m.name + " " + (m.active || "none"); versions[k] = (versions[k] || 0) + 1; }
    for (const [k, v] of Object.entries(d.tags || {})) { const key = k + "=" + v; cohorts[key] = cohorts[key] || { n: 0, online: 0 }; cohorts[key].n++; cohorts[key].online += d.online ? 1 : 0; }
  }
  const active = rollouts.filter((r) => r.status === "running" || r.status === "paused");
  const alerts = [];
  // gates failing right now in the current phase of a running rollout
  const details = await Promise.all(active.filter((r) => r.status === "running").map((r) => api("GET", "/v1/rollouts/" + encodeURIComponent(r.id))));
  for (const r of details) {
    for (const f of failingGates(r.health || {}, r.spec.gates || {})) alerts.push({ bad: true, text: `Rollout <a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a> phase ${r.phase + 1}: ${esc(f)}` });
  }
  for (const r of rollouts) {
    const last = r.transitions[r.transitions.length - 1];
    if (r.status === "paused") alerts.push({ bad: false, text: `Rollout <a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a> (${esc(r.model)} ${esc(r.version)}) is paused: ${esc(last?.reason || "")}` });
    if (r.status === "rolled_back") alerts.push({ bad: true, text: `Rollout <a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a> (${esc(r.model)} ${esc(r.version)}) was rolled back: ${esc(last?.reason || "")}` });
  }
  for (const d of devices) {
    const bad = (d.reported?.models || []).flatMap((m) => m.bad_versions || []);
    if (bad.length >= 2) alerts.push({ bad: true, text: `Device <a href="#/devices/${esc(d.id)}">${esc(d.id)}</a> rolled back ${bad.length} versions (${esc(bad.join(", "))})` });
    else if (bad.length) alerts.push({ bad: false, text: `Device <a href="#/devices/${esc(d.id)}">${esc(d.id)}</a> rolled back ${esc(bad[0])}` });
    if (d.reported?.dropped_telemetry > 0) alerts.push({ bad: false, text: `Device <a href="#/devices/${esc(d.id)}">${esc(d.id)}</a>'s outbox dropped ${d.reported.dropped_telemetry} telemetry windows` });
  }
  return `<h1>Fleet</h1>
  <div class="grid">
    <div class="card"><div class="muted">Devices online</div><div class="stat" id="online">${online} / ${devices.length}</div><div class="muted">${devices.length - online} offline</div></div>
    <div class="card"><div class="muted">Devices per model version</div><table>${Object.entries(versions).sort().map(([k, n]) => `<tr><td>${esc(k)}</td><td>${n}</td></tr>`).join("") || "<tr><td class=muted>none reported</td></tr>"}</table></div>
    <div class="card"><div class="muted">Cohorts (tags)</div><table>${Object.entries(cohorts).sort().map(([k, c]) => `<tr><td>${esc(k)}</td><td>${c.n}</td><td class="muted">${c.online} online</td></tr>`).join("") || "<tr><td class=muted>no tags</td></tr>"}</table></div>
  </div>
  <h2>Active rollouts</h2>
  ${active.length ? `<div class="scroll"><table id="active-rollouts"><tr><th>id</th><th>model</th><th>status</th><th>phase</th><th class="hide-narrow">selector</th></tr>${active.map((r) => `<tr><td><a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a></td><td>${esc(r.model)} ${esc(r.version)}</td><td>${pill(r.status)}</td><td>${r.phase + 1} of ${r.spec.phases.length} (${r.spec.phases[r.phase].percent} %)</td><td class="hide-narrow"><code>${esc(r.spec.selector)}</code></td></tr>`).join("")}</table></div>` : `<p class="muted">none</p>`}
  <h2>Alerts</h2>
  ${alerts.length ? alerts.map((a) => `<div class="card alert ${a.bad ? "bad" : ""}">${a.text}</div>`).join("") : `<p class="muted" id="no-alerts">no alerts</p>`}
  <h2>All rollouts</h2>
  <div class="scroll"><table><tr><th>id</th><th>model</th><th>status</th><th>phases</th></tr>${rollouts.slice().reverse().map((r) => `<tr><td><a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a></td><td>${esc(r.model)} ${esc(r.version)}</td><td>${pill(r.status)}</td><td>${r.spec.phases.map((p) => p.percent + "%").join(" → ")}</td></tr>`).join("")}</table></div>
  <h2>Devices</h2>
  ${devices.length > DEVICE_ROWS ? `<p class="muted">${DEVICE_ROWS} of ${devices.length} shown: offline devices and devices with rollbacks first; open any device at <code>#/devices/ID</code></p>` : ""}
  <div class="scroll"><table><tr><th>device</th><th>state</th><th>versions</th><th class="hide-narrow">tags</th><th>last seen</th></tr>${shownDevices(devices).map((d) => `<tr><td><a href="#/devices/${esc(d.id)}">${esc(d.id)}</a></td><td>${pill(d.online ? "online" : "offline")}</td><td>${(d.reported?.models || []).map((m) => esc(m.name + " " + (m.active || "–"))).join(", ")}</td><td class="hide-narrow">${Object.entries(d.tags || {}).map(([k, v]) => esc(k + "=" + v)).join(" ")}</td><td>${ago(d.last_seen)}</td></tr>`).join("")}</table></div>`;
}

// the gates a phase's health fails now (the engine decides at the end of the soak; this warns early)
// a shadow or experiment phase says so on its card
function phaseKind(spec) {
  if (spec?.shadow) return ` · <span class="kind">shadow ${pct(spec.shadow.sample)} of requests, ${fmt(spec.shadow.cpu_budget)} cores</span>`;
  if (spec?.experiment) return ` · <span class="kind">A/B on ${esc(spec.experiment.metric)}, α ${fmt(spec.experiment.alpha)}</span>`;
  return "";
}

function failingGates(h, g) {
  const out = [];
  const set = (v) => v !== null && v !== undefined;
  if (set(g.max_error_rate) && h.requests && h.errors / h.requests > g.max_error_rate) out.push(`error rate ${pct(h.errors / h.requests)} over the gate ${pct(g.max_error_rate)}`);
  if (set(g.max_p99_latency_ms) && set(h.p99_ms) && h.p99_ms > g.max_p99_latency_ms) out.push(`p99 ${fmt(h.p99_ms)} ms over the gate ${g.max_p99_latency_ms} ms`);
  if (set(g.max_psi) && set(h.psi) && h.psi > g.max_psi) out.push(`prediction drift PSI ${fmt(h.psi, 3)} over the gate ${g.max_psi}`);
  if (set(g.min_mean_confidence) && set(h.mean_confidence) && h.mean_confidence < g.min_mean_confidence) out.push(`mean confidence ${fmt(h.mean_confidence, 3)} under the gate ${g.min_mean_confidence}`);
  if (set(g.max_install_failure_rate) && h.installs && h.install_failures / h.installs > g.max_install_failure_rate) out.push(`install failures ${h.install_failures} of ${h.installs} over the gate ${pct(g.max_install_failure_rate)}`);
  return out;
}

const GATES = [
  { key: "error_rate", title: "Error rate", gate: "max_error_rate", max: 1, format: (v) => (100 * v).toFixed(1) + "%" },
  { key: "p99_ms", title: "p99 latency (ms)", gate: "max_p99_latency_ms" },
  { key: "psi", title: "Prediction drift (PSI)", gate: "max_psi" },
  { key: "mean_confidence", title: "Mean confidence", gate: "min_mean_confidence" },
];

async function rolloutPage(id) {
  const [r, s] = await Promise.all([api("GET", "/v1/rollouts/" + encodeURIComponent(id)), api("GET", "/v1/rollouts/" + encodeURIComponent(id) + "/series")]);
  const h = r.health || {};
  const phases = (r.phases_detail || []).map((p) => {
    const w = (n) => (p.targeted ? (100 * n) / p.targeted : 0);
    return `<div class="phase ${p.phase === r.phase && !["completed", "rolled_back", "aborted"].includes(r.status) ? "current" : ""}" data-phase="${p.phase}">
      <b>Phase ${p.phase + 1}</b> · ${p.percent} %${p.soak_seconds ? ` · soak ${p.soak_seconds} s` : ""}${phaseKind(r.spec.phases[p.phase])}
      <div class="bar"><span class="healthy" data-w="${w(p.healthy)}"></span><span class="updated" data-w="${w(p.updated - p.healthy)}"></span><span class="back" data-w="${w(p.rolled_back)}"></span></div>
      <span class="muted">${p.targeted} targeted · ${p.updated} updated · ${p.healthy} healthy · ${p.rolled_back} rolled back</span></div>`;
  }).join("");
  const may = state.who?.may?.operate;
  const buttons = [];
  if (may && r.status === "running") buttons.push(["pause", "Pause"]);
  if (may && r.status === "paused") buttons.push(["resume", "Resume"]);
  if (may && (r.status === "running" || r.status === "paused")) buttons.push(["abort", "Abort"], ["rollback", "Roll back"]);
  const confirm = state.confirm && state.confirm.id === id ? `<div class="confirm" id="confirm">${esc(state.confirm.label)} rollout ${esc(id)}? <button class="danger" id="confirm-yes" data-action="${esc(state.confirm.action)}">Yes, ${esc(state.confirm.label.toLowerCase())}</button> <button id="confirm-no">Cancel</button></div>` : "";
  const gates = r.spec.gates || {};
  const newPts = s.new.points, oldPts = s.previous.points;
  const charts = GATES.map((g) => chart(g.title, [{ cls: "new", points: metricSeries(newPts, g.key) }, { cls: "old", points: metricSeries(oldPts, g.key) }], gates[g.gate], g)).join("")
    // installs happen only in the rollout's phases: one line over all of them
    + chart("Install failure rate", [{ cls: "new", points: s.phases.flatMap((p) => metricSeries(p.points, "install_failure_rate")).sort((a, b) => a.t - b.t) }], gates.max_install_failure_rate, { max: 1, format: (v) => (100 * v).toFixed(0) + "%" });
  const installRate = h.installs ? h.install_failures / h.installs : null;
  return rolloutHtml(r, s, h, gates, phases, buttons, confirm, charts, installRate) + judgedHtml(r, s, h, gates);
}

// shadow agreement, accuracy on app labels, and an experiment's arms with its confidence
// sequence narrowing look by look (issue 27); nothing when the rollout has none of them
function judgedHtml(r, s, h, gates) {
  const phasePts = (key) => s.phases.flatMap((p) => metricSeries(p.points, key)).filter((p) => p.v !== null && p.v !== undefined).sort((a, b) => a.t - b.t);
  const shadowPts = phasePts("shadow_agreement");
  const accNew = metricSeries(s.new.points, "accuracy"), accOld = metricSeries(s.previous.points, "accuracy");
  const charts = [];
  if (shadowPts.length) charts.push(chart("Shadow agreement", [{ cls: "new", points: shadowPts }], gates.min_shadow_agreement, { max: 1 }));
  if (accNew.concat(accOld).some((p) => p.v !== null && p.v !== undefined)) charts.push(chart("Accuracy (app labels)", [{ cls: "new", points: accNew }, { cls: "old", points: accOld }], gates.min_accuracy, { max: 1 }));
  const looks = (r.looks || []).concat(h.experiment ? [h.experiment] : []);
  let out = "";
  if (h.shadow) {
    const sh = h.shadow;
    out += `<h2>Shadow</h2><div class="scroll"><table id="shadow"><tr><th>devices</th><th>mirrored requests</th><th>errors</th><th>compared</th><th>agreement</th><th>top-k overlap</th><th>mean |Δ|</th><th>shadow p99</th><th>skipped</th></tr>
    <tr><td>${fmt(sh.reporting_devices)}</td><td>${fmt(sh.requests)}${gates.min_shadow_requests ? ` <span class="muted">(≥ ${gates.min_shadow_requests})</span>` : ""}</td><td>${fmt(sh.errors)}</td><td>${fmt(sh.compared)}</td>
    <td>${pct(sh.agreement)}${gates.min_shadow_agreement ? ` <span class="muted">(≥ ${pct(gates.min_shadow_agreement)})</span>` : ""}</td><td>${pct(sh.topk_overlap)}</td><td>${fmt(sh.mean_abs_delta, 3)}</td><td>${fmt(sh.p99_ms)} ms</td><td>${fmt(sh.skipped)}</td></tr></table></div>`;
  }
  if (h.feedback) {
    const f = h.feedback;
    out += `<h2>Ground truth from apps</h2><p id="feedback">${fmt(f.labelled)} labels, accuracy ${pct(f.accuracy)}${gates.min_accuracy ? ` <span class="muted">(≥ ${pct(gates.min_accuracy)})</span>` : ""} · ${fmt(f.values)} true values, MAE ${fmt(f.mae, 3)} · ${fmt(f.rewards)} rewards, mean ${fmt(f.mean_reward, 3)}</p>`;
  }
  if (looks.length) {
    const last = looks[looks.length - 1];
    const est = looks.map((l) => ({ t: l.at, v: l.estimate }));
    const lo = looks.map((l) => ({ t: l.at, v: l.interval ? l.interval[0] : null }));
    const hi = looks.map((l) => ({ t: l.at, v: l.interval ? l.interval[1] : null }));
    charts.push(chart(`Experiment: ${last.metric} B − A`, [{ cls: "band", points: lo }, { cls: "band", points: hi }, { cls: "new", points: est }], 0, { format: (v) => fmt(v, 3) }));
    const arm = (name, a) => `<tr><td>${name}</td><td>${fmt(a.devices)}</td><td>${fmt(a.samples)}</td><td>${fmt(a.mean, 4)}</td></tr>`;
    out += `<h2>Experiment</h2><p id="experiment">${esc(last.metric)}: B − A ${fmt(last.estimate, 4)}, confidence sequence ${last.interval ? `[${fmt(last.interval[0], 4)}, ${fmt(last.interval[1], 4)}]` : "(each arm needs its minimum samples)"}, always-valid p ${fmt(last.p_value, 4)} → <b>${esc(String(last.verdict).replace("_", " "))}</b></p>
    <div class="scroll"><table id="arms"><tr><th>arm</th><th>devices</th><th>samples</th><th>mean</th></tr>${arm("A (incumbent)", last.incumbent)}${arm("B (candidate)", last.candidate)}</table></div>`;
  }
  if (charts.length) out += `<h2>The model's own signals</h2><div class="charts">${charts.join("")}</div>`;
  return out;
}

function rolloutHtml(r, s, h, gates, phases, buttons, confirm, charts, installRate) {
  return `<h1>Rollout ${esc(r.id)}: ${esc(r.model)} ${esc(r.version)} ${pill(r.status)}</h1>
  <p class="muted">selector <code>${esc(r.spec.selector)}</code> · ${r.selected_devices} devices selected · on gate failure: ${esc(r.spec.on_gate_failure)} · phase <span id="phase-number">${r.phase + 1}</span> of ${r.spec.phases.length}, started ${ago(r.phase_started)}</p>
  <div class="actions" id="actions">${buttons.map(([a, l]) => `<button class="${a === "pause" || a === "resume" ? "" : "danger"}" data-action="${a}" data-label="${l}">${l}</button>`).join("")}</div>${confirm}
  <div class="phases" id="phases">${phases}</div>
  <h2>Current phase health</h2>
  <div class="scroll"><table id="health"><tr><th>reporting devices</th><th>requests</th><th>error rate</th><th>p99</th><th>PSI</th><th>mean confidence</th><th>install failures</th></tr>
  <tr><td>${fmt(h.reporting_devices)} / ${fmt(h.devices)}${gates.min_reporting_devices ? ` <span class="muted">(gate ≥ ${gates.min_reporting_devices})</span>` : ""}</td><td>${fmt(h.requests)}</td>
  <td>${h.requests ? pct(h.errors / h.requests) : "–"}${gates.max_error_rate !== undefined && gates.max_error_rate !== null ? ` <span class="muted">(≤ ${pct(gates.max_error_rate)})</span>` : ""}</td>
  <td>${fmt(h.p99_ms)} ms${gates.max_p99_latency_ms ? ` <span class="muted">(≤ ${gates.max_p99_latency_ms})</span>` : ""}</td><td>${fmt(h.psi, 3)}</td><td>${fmt(h.mean_confidence, 3)}</td>
  <td>${fmt(h.install_failures)} / ${fmt(h.installs)}${installRate !== null ? " (" + pct(installRate) + ")" : ""}${gates.max_install_failure_rate !== undefined && gates.max_install_failure_rate !== null ? ` <span class="muted">(≤ ${pct(gates.max_install_failure_rate)})</span>` : ""}</td></tr></table></div>
  <h2>Gate metrics over time</h2>
  <div class="legend"><span class="n">━ ${esc(s.new.version)} (new)</span><span class="o">┅ ${esc(s.previous.version || "no previous version")}</span><span class="g">┅ gate</span></div>
  <div class="charts">${charts}</div>
  <h2>Decision log</h2>
  <div class="scroll"><table id="decisions"><tr><th>time</th><th>transition</th><th>reason</th><th class="hide-narrow">values</th></tr>
  ${r.transitions.slice().reverse().map((t) => `<tr><td>${time(t.at)}</td><td>phase ${t.from_phase + 1} ${esc(t.from_status)} → phase ${t.to_phase + 1} ${esc(t.to_status)}</td><td>${esc(t.reason)}</td><td class="hide-narrow muted">${t.health ? `devices ${t.health.reporting_devices}/${t.health.devices}, requests ${t.health.requests}, errors ${t.health.errors}, p99 ${fmt(t.health.p99_ms)} ms, PSI ${fmt(t.health.psi, 3)}, confidence ${fmt(t.health.mean_confidence, 3)}, installs ${t.health.installs} (${t.health.install_failures} failed)` : ""}</td></tr>`).join("") || `<tr><td colspan="4" class="muted">no decisions yet</td></tr>`}</table></div>`;
}

async function devicePage(id) {
  const [d, ev] = await Promise.all([api("GET", "/v1/devices/" + encodeURIComponent(id)), api("GET", "/v1/devices/" + encodeURIComponent(id) + "/events")]);
  const models = d.reported?.models || [];
  const events = (ev.events || []).flatMap((m) => m.events.map((e) => ({ ...e, received_at: m.received_at }))).reverse();
  const history = events.filter((e) => e.step === "committed" || e.step === "rolled_back" || e.step === "failed");
  // its own telemetry per minute (the last 30 minutes it reported), one line per version
  const recent = d.recent || [];
  const versions = [...new Set(recent.map((m) => m.model + " " + m.version))];
  const perVersion = (key) => versions.map((v, i) => ({ cls: i === versions.length - 1 ? "new" : "old",
    points: recent.filter((m) => m.model + " " + m.version === v).map((m) => ({ t: m.t, v: key(m) })) }));
  const charts = recent.length ? `<h2>Its telemetry, per minute</h2><div class="legend">${versions.map((v, i) => `<span class="${i === versions.length - 1 ? "n" : "o"}">${i === versions.length - 1 ? "━" : "┅"} ${esc(v)}</span>`).join("")}</div><div class="charts" id="device-charts">
    ${chart("Predictions", perVersion((m) => m.requests))}
    ${chart("Error rate", perVersion((m) => (m.requests ? m.errors / m.requests : null)), null, { max: 1, format: (v) => (100 * v).toFixed(1) + "%" })}
    ${chart("p99 latency (ms)", perVersion((m) => m.p99_ms))}
    ${chart("Mean confidence", perVersion((m) => m.mean_confidence))}</div>` : `<h2>Its telemetry</h2><p class="muted">none reported in the last 30 minutes</p>`;
  return `<h1>Device ${esc(d.id)} ${pill(d.online ? "online" : "offline")}</h1>
  <div class="grid">
    <div class="card"><div class="muted">Tags</div>${Object.entries(d.tags || {}).map(([k, v]) => `<div><code>${esc(k)}=${esc(v)}</code></div>`).join("") || "none"}</div>
    <div class="card"><div class="muted">Agent</div><div>${esc(d.agent_version)}</div><div class="muted">last seen ${ago(d.last_seen)} · enrolled ${time(d.enrolled_at)}</div></div>
    <div class="card"><div class="muted">Uplink</div><div>${fmt(d.uplink?.messages)} messages, ${fmt(d.uplink?.duplicates)} redeliveries refused</div><div>${fmt(d.uplink?.requests)} predictions reported</div><div class="muted">dropped telemetry: ${fmt(d.reported?.dropped_telemetry ?? 0)}</div></div>
  </div>
  <h2>Reported state and slots</h2>
  <div class="scroll"><table id="slots"><tr><th>model</th><th>active</th><th>previous</th><th>on trial</th><th>rolled back</th></tr>${models.map((m) => `<tr><td>${esc(m.name)}</td><td>${esc(m.active || "–")}</td><td>${esc(m.previous || "–")}</td><td>${esc(m.trial || "–")}</td><td>${esc((m.bad_versions || []).join(", ") || "–")}</td></tr>`).join("") || `<tr><td colspan="5" class="muted">not reported yet</td></tr>`}</table></div>
  <p class="muted">applied generation ${fmt(d.reported?.applied_generation)} · reported ${ago(d.reported?.at)}</p>
  <h2>Version history</h2>
  <div class="scroll"><table><tr><th>time</th><th>model</th><th>version</th><th>outcome</th></tr>${history.map((e) => `<tr><td>${time(e.at)}</td><td>${esc(e.model)}</td><td>${esc(e.version)}</td><td>${esc(e.step)}${e.detail ? " — " + esc(e.detail) : ""}</td></tr>`).join("") || `<tr><td colspan="4" class="muted">none</td></tr>`}</table></div>
  ${charts}
  <h2>Recent events</h2>
  <div class="scroll"><table><tr><th>time</th><th>generation</th><th>model</th><th>version</th><th>step</th><th class="hide-narrow">detail</th></tr>${events.slice(0, 30).map((e) => `<tr><td>${time(e.at)}</td><td>${e.generation}</td><td>${esc(e.model)}</td><td>${esc(e.version)}</td><td>${esc(e.step)}</td><td class="hide-narrow">${esc(e.detail || "")}</td></tr>`).join("") || `<tr><td colspan="6" class="muted">none</td></tr>`}</table></div>`;
}

async function bundlesPage(selected) {
  const { bundles } = await api("GET", "/v1/bundles");
  let detail = "";
  if (selected) {
    const b = await api("GET", "/v1/bundles/" + encodeURIComponent(selected));
    const m = b.manifest || {};
    detail = `<h2>${esc(b.name)} ${esc(b.version)}</h2><div class="grid">
      <div class="card" id="bundle-detail"><div>sha256 <code>${esc(b.sha256)}</code></div><div>${b.size} bytes · task ${esc(b.task)} · quantization ${esc(m.quantization || "none (float)")}</div>
      <div>signed by ${b.signers.map((s) => `<code>${esc(s)}</code>`).join(", ")}</div><div class="muted">uploaded ${time(b.uploaded_at)} by ${esc(b.uploaded_by)}${b.min_version ? " · min version " + esc(b.min_version) : ""}</div>
      <div class="muted">${esc(m.description || "")}</div></div>
      <div class="card"><div class="muted">Inputs</div>${(m.inputs || []).map((i) => `<div><code>${esc(i.name)}</code> ${esc(JSON.stringify(i.shape ?? i.dims ?? ""))} ${esc(i.dtype || "")}</div>`).join("")}
      <div class="muted">Output</div><div><code>${esc(JSON.stringify(m.output || {}).slice(0, 300))}</code></div>
      <div class="muted">Self-test</div><div><code>${esc(JSON.stringify(m.self_test || {}).slice(0, 200))}</code></div></div>
      <div class="card"><div class="muted">Rollouts that used it</div>${(b.rollouts || []).map((r) => `<div><a href="#/rollouts/${esc(r.id)}">${esc(r.id)}</a> ${pill(r.status)} <code>${esc(r.selector)}</code></div>`).join("") || "none"}</div></div>`;
  }
  return `<h1>Models</h1><div class="scroll"><table id="bundles"><tr><th>model</th><th>version</th><th>size</th><th>task</th><th class="hide-narrow">signers</th><th>uploaded</th></tr>
  ${bundles.map((b) => `<tr><td><a href="#/bundles/${esc(b.sha256)}">${esc(b.name)}</a></td><td>${esc(b.version)}</td><td>${(b.size / 1024).toFixed(0)} KiB</td><td>${esc(b.task)}</td><td class="hide-narrow">${b.signers.map((s) => `<code>${esc(s)}</code>`).join(" ")}</td><td>${time(b.uploaded_at)}</td></tr>`).join("")}</table></div>${detail}`;
}

// ---- routing and polling -------------------------------------------------------------------
async function render() {
  const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").map(decodeURIComponent);
  let html;
  try {
    if (parts[0] === "rollouts" && parts[1]) html = await rolloutPage(parts[1]);
    else if (parts[0] === "devices" && parts[1]) html = await devicePage(parts[1]);
    else if (parts[0] === "bundles") html = await bundlesPage(parts[1]);
    else html = await overview();
  } catch (err) {
    if (!state.who) return;
    html = `<p class="error">${esc(err.message)}</p>`;
  }
  if (!state.who) return;
  $("main").innerHTML = html;
  // widths through the CSSOM: the Content-Security-Policy refuses inline style attributes
  for (const e of document.querySelectorAll("[data-w]")) e.style.width = Number(e.dataset.w) + "%";
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  for (const b of document.querySelectorAll("#actions button")) b.onclick = () => { state.confirm = { id: parts[1], action: b.dataset.action, label: b.dataset.label }; render(); };
  const yes = $("confirm-yes"), no = $("confirm-no");
  if (no) no.onclick = () => { state.confirm = null; render(); };
  if (yes) yes.onclick = async () => {
    const action = yes.dataset.action;
    state.confirm = null;
    try { await api("POST", "/v1/rollouts/" + encodeURIComponent(parts[1]) + "/" + action); }
    catch (err) { alert(err.message); }
    render();
  };
}

async function route() {
  clearTimeout(state.timer);
  if (!sessionStorage.getItem(TOKEN_KEY)) return loginPage();
  if (!state.who) {
    try { state.who = await api("GET", "/v1/whoami"); }
    catch (err) { return loginPage(err.message); }
  }
  $("who").textContent = `${state.who.name} (${state.who.role})`;
  $("logout").hidden = false;
  if (state.route !== location.hash) { state.confirm = null; state.route = location.hash; state.pollMs = POLL_MS; }
  const gen = ++state.gen; // a newer route() ends this polling loop
  const tick = async () => {
    if (gen !== state.gen) return;
    await render();
    if (gen === state.gen) state.timer = setTimeout(tick, state.pollMs || POLL_MS);
  };
  tick();
}

$("logout").onclick = logout;
window.addEventListener("hashchange", route);
route();
