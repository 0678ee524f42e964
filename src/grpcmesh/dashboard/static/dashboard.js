// grpcmesh dashboard: renders the state pushed over Server-Sent Events (/api/events).
// Plain DOM and inline SVG, no framework and nothing fetched from elsewhere, so it works offline.
// All text goes in through textContent, never innerHTML: registry data is not trusted markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_EVENTS = 200;
const NODE_W = 200, NODE_H = 54, COL_GAP = 170, ROW_GAP = 40, PAD = 16, BACK_EDGE_DROP = 48;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

// -- formatting ---------------------------------------------------------------------

function fmtRate(rates) {
  if (!rates) return "–";
  const v = rates.calls_per_second;
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function fmtLatency(rates) {
  if (!rates || rates.p99_seconds === null) return "–";
  const ms = rates.p99_seconds * 1000;
  if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
  return (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1)) + " ms";
}

function fmtErrors(rates) {
  if (!rates) return "–";
  return (rates.error_ratio * 100).toFixed(1) + " %";
}

function fmtSpan(seconds) {
  return seconds >= 90 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`;
}

function fmtTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function nodeClass(service) {
  if (service.external) return "external";
  if (!service.registered) return "missing";
  return { SERVING: "serving", DEGRADED: "degraded" }[service.health] || "down";
}

// -- dependency graph ---------------------------------------------------------------

// An observed edge is coloured by its error ratio; a declared dependency never called is dashed.
function edgeClass(e) {
  if (!e.observed) return "declared-only";
  const r = e.rates;
  if (!r || r.calls_per_second <= 0) return "idle";
  return r.error_ratio >= 0.05 ? "bad" : r.error_ratio >= 0.01 ? "warn" : "ok";
}

// Columns by longest path from a caller: callers left, what they depend on to the right.
// Calls that close a cycle (user -> order -> user) are found by a depth-first walk that starts
// from the services fewest others call, and are left out of the layering (drawn as back edges).
function layout(services, edges) {
  const names = services.map((s) => s.name);
  const callees = new Map(names.map((n) => [n, []]));
  const callerCount = new Map(names.map((n) => [n, 0]));
  for (const e of edges) {
    if (!callees.has(e.from) || !callees.has(e.to) || e.from === e.to) continue;
    callees.get(e.from).push(e.to);
    callerCount.set(e.to, callerCount.get(e.to) + 1);
  }
  const order = [...names].sort((a, b) => callerCount.get(a) - callerCount.get(b)
    || callees.get(a).length - callees.get(b).length || a.localeCompare(b));
  const back = new Set();
  const state = new Map(); // 1: on the walk's stack, 2: done
  const walk = (name) => {
    state.set(name, 1);
    for (const next of callees.get(name)) {
      if (state.get(next) === 1) back.add(`${name}->${next}`);
      else if (!state.has(next)) walk(next);
    }
    state.set(name, 2);
  };
  for (const name of order) if (!state.has(name)) walk(name);
  const level = new Map();
  const depth = (name) => {
    if (level.has(name)) return level.get(name);
    level.set(name, 0);
    let d = 0;
    for (const e of edges) {
      if (e.to === name && e.from !== name && callees.has(e.from) && !back.has(`${e.from}->${e.to}`)) {
        d = Math.max(d, depth(e.from) + 1);
      }
    }
    level.set(name, d);
    return d;
  };
  const columns = [];
  for (const name of order) {
    const d = depth(name);
    (columns[d] = columns[d] || []).push(name);
  }
  const pos = new Map();
  columns.filter(Boolean).forEach((column, col) => column.forEach((name, row) => {
    pos.set(name, { x: PAD + col * (NODE_W + COL_GAP), y: PAD + row * (NODE_H + ROW_GAP) });
  }));
  const used = columns.filter(Boolean).length;
  const width = PAD * 2 + Math.max(1, used) * (NODE_W + COL_GAP) - COL_GAP;
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + rows * (NODE_H + ROW_GAP) - ROW_GAP + (back.size ? BACK_EDGE_DROP : 0);
  return { pos, width, height, back };
}

function renderGraph(state) {
  const graph = document.getElementById("graph");
  const { pos, width, height, back } = layout(state.services, state.edges);
  graph.replaceChildren();
  graph.setAttribute("viewBox", `0 0 ${width} ${height}`);
  graph.style.maxWidth = `${width}px`; // scale down to fit the panel, never up
  graph.append(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  for (const e of state.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    let d, mx, my;
    if (back.has(`${e.from}->${e.to}`)) { // closes a cycle: loop underneath, right to left
      const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y + NODE_H;
      const low = Math.max(y1, y2) + BACK_EDGE_DROP;
      d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
      mx = (x1 + x2) / 2; my = low - 8;
    } else {
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const bend = Math.max(40, Math.abs(x2 - x1) / 2);
      d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
      mx = (x1 + x2) / 2; my = (y1 + y2) / 2 - 4;
    }
    const r = e.rates;
    const title = svg("title");
    title.textContent = e.observed
      ? `${e.from} → ${e.to}: ${fmtRate(r)} calls/s, ${fmtErrors(r)} errors, p99 ${fmtLatency(r)}`
      : `${e.from} → ${e.to}: declared dependency, no calls seen`;
    const group = svg("g", {
      class: `edge-group ${edgeClass(e)}`,
      "data-edge": `${e.from}->${e.to}`,
      "data-observed": String(e.observed),
      "data-calls": r ? String(r.calls_per_second) : "",
      "data-error-ratio": r ? String(r.error_ratio) : "",
    }, title, svg("path", { class: "edge", "marker-end": "url(#arrow)", d }));
    if (e.observed && r) {
      const label = svg("text", { x: mx, y: my, class: "edge-label", "text-anchor": "middle" });
      label.textContent = `${fmtRate(r)}/s · ${fmtErrors(r)}` + (r.p99_seconds === null ? "" : ` · ${fmtLatency(r)}`);
      group.append(label);
    }
    graph.append(group);
  }
  for (const s of state.services) {
    const p = pos.get(s.name);
    const count = `${s.instances.length} inst`;
    const stats = s.external ? "callers outside the mesh"
      : !s.registered ? "no instances registered"
      : s.rates ? `${count} · ${fmtRate(s.rates)}/s · p99 ${fmtLatency(s.rates)}`
        : `${count} · no metrics`;
    const title = svg("title");
    title.textContent = `${s.name}: ${stats}`;
    const name = svg("text", { x: 12, y: 22, class: "name" });
    name.textContent = s.name;
    const line = svg("text", { x: 12, y: 40, class: "stats" });
    line.textContent = stats;
    graph.append(svg("g", {
      class: `node ${nodeClass(s)}`, "data-service": s.name, transform: `translate(${p.x},${p.y})`,
    }, title, svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }), name, line));
  }
}

// -- services and instances ----------------------------------------------------------

function metricsCell(inst) {
  const m = inst.metrics;
  if (m.status === "none") return el("td", { class: "muted" }, "no metrics_url");
  if (m.status === "refused") return el("td", { class: "bad-rate", title: m.detail || "" }, "refused");
  if (m.status === "pending") return el("td", { class: "muted" }, "first scrape…");
  if (m.status === "error") return el("td", { class: "bad-rate", title: m.detail || "" }, "unreachable");
  return el("td", {}, "scraped");
}

function instanceRow(inst) {
  const rates = inst.rates;
  const errorsCell = el("td", { class: "num errors" }, fmtErrors(rates));
  if (rates && rates.error_ratio > 0) errorsCell.classList.add("bad-rate");
  const key = `${inst.service}/${inst.id}`;
  const row = el("tr", {
    class: key === selected ? "instance selected" : "instance",
    "data-instance": key,
    "data-calls": rates ? String(rates.calls_per_second) : "",
    "data-error-ratio": rates ? String(rates.error_ratio) : "",
    "data-p99": rates && rates.p99_seconds !== null ? String(rates.p99_seconds) : "",
  },
  el("td", {}, el("code", {}, inst.id)),
  el("td", {}, inst.version || "–"),
  el("td", {}, el("code", {}, inst.address)),
  el("td", {}, el("span", { class: `health ${inst.health}` }, inst.health)),
  el("td", { class: "num calls" }, fmtRate(rates)),
  el("td", { class: "num p99" }, fmtLatency(rates)),
  errorsCell,
  metricsCell(inst));
  row.addEventListener("click", () => { selected = key; renderDetail(); markSelected(); });
  return row;
}

function serviceCard(s) {
  const head = el("tr", {}, ...["instance", "version", "address", "health"].map((h) => el("th", {}, h)),
    ...["calls/s", "p99", "errors"].map((h) => el("th", { class: "num" }, h)), el("th", {}, "metrics"));
  const totals = s.rates
    ? `${fmtRate(s.rates)} calls/s · p99 ${fmtLatency(s.rates)} · ${fmtErrors(s.rates)} errors`
    : "no rates";
  const card = el("section", { class: "service", "data-service": s.name },
    el("h3", {}, s.name, el("span", { class: `health ${s.health}` }, s.health), el("span", { class: "totals" }, totals)));
  if (s.dependencies.length) card.append(el("div", { class: "deps" }, "depends on: " + s.dependencies.join(", ")));
  if (s.history) card.append(charts(s, latestState.generated_at, latestState.history_seconds || 600));
  card.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...s.instances.map(instanceRow))));
  return card;
}

function renderServices(state) {
  const registered = state.services.filter((s) => s.registered);
  instancesByKey = new Map();
  for (const s of registered) for (const inst of s.instances) instancesByKey.set(`${inst.service}/${inst.id}`, inst);
  const container = document.getElementById("services");
  container.replaceChildren(...(registered.length
    ? registered.map(serviceCard)
    : [el("p", { class: "muted" }, "no services registered")]));
  const instances = registered.reduce((n, s) => n + s.instances.length, 0);
  const calls = registered.reduce((n, s) => n + (s.rates ? s.rates.calls_per_second : 0), 0);
  document.getElementById("summary").textContent =
    `${registered.length} services · ${instances} instances · ${fmtRate({ calls_per_second: calls })} calls/s · updated ${fmtTime(state.generated_at)}`;
}

// -- history charts ------------------------------------------------------------------

const CHART_W = 260, CHART_H = 64, CHART_PAD = 4;
const CHARTS = [
  { key: "calls", title: "calls/s", index: 1, fmt: (v) => fmtRate({ calls_per_second: v }) },
  { key: "errors", title: "errors", index: 2, fmt: (v) => (v * 100).toFixed(1) + " %" },
  { key: "p99", title: "p99", index: 3, fmt: (v) => fmtLatency({ p99_seconds: v }) },
];

// Small time-series charts of the last minutes, with the registry events marked on the time axis.
// The time axis spans the history kept (at most the window, at least 30 s).
function charts(s, now, window) {
  const first = Math.min(...s.history.points.map((p) => p[0]), ...s.history.markers.map((m) => m.at), now);
  const seconds = Math.min(window, Math.max(30, now - first));
  const start = now - seconds;
  const x = (t) => CHART_PAD + ((t - start) / seconds) * (CHART_W - 2 * CHART_PAD);
  const row = el("div", { class: "charts" });
  for (const spec of CHARTS) {
    const values = s.history.points.filter((p) => p[spec.index] !== null && p[0] >= start);
    const top = Math.max(...values.map((p) => p[spec.index]), spec.key === "errors" ? 0.01 : 1e-9);
    const y = (v) => CHART_H - CHART_PAD - (v / top) * (CHART_H - 2 * CHART_PAD);
    const chart = svg("svg", {
      class: "chart", "data-chart": spec.key, viewBox: `0 0 ${CHART_W} ${CHART_H}`, width: CHART_W, height: CHART_H,
    });
    chart.append(svg("rect", { class: "frame", x: 0, y: 0, width: CHART_W, height: CHART_H }));
    for (const m of s.history.markers) {
      if (m.at < start) continue;
      const title = svg("title");
      title.textContent = `${fmtTime(m.at)} ${m.kind} ${m.instance} (${m.health})`;
      chart.append(svg("line", {
        class: `marker ${m.kind}`, "data-marker": `${m.kind}:${s.name}/${m.instance}`,
        x1: x(m.at), x2: x(m.at), y1: 0, y2: CHART_H,
      }, title));
    }
    if (values.length) {
      const line = values.map((p) => `${x(p[0]).toFixed(1)},${y(p[spec.index]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { class: "series", points: line }));
    }
    const last = values.length ? spec.fmt(values[values.length - 1][spec.index]) : "–";
    const label = el("div", { class: "chart-label" }, `${spec.title} `, el("b", {}, last),
      el("span", { class: "muted" }, ` · max ${values.length ? spec.fmt(top) : "–"} · last ${fmtSpan(seconds)}`));
    row.append(el("figure", {}, label, chart));
  }
  return row;
}

// -- instance detail -----------------------------------------------------------------

let selected = null;
let instancesByKey = new Map();
let latestState = { generated_at: 0, history_seconds: 600 };
const pointsByService = new Map();

// The stream sends each service's whole history when the page connects, then only its newest
// point every second ("history_latest_only"): the page keeps the points, trimmed to the window.
function mergeHistory(state) {
  const horizon = state.generated_at - (state.history_seconds || 600);
  const seen = new Set();
  for (const s of state.services) {
    if (!s.history) continue;
    seen.add(s.name);
    let points = state.history_latest_only ? (pointsByService.get(s.name) || []) : [];
    const last = points.length ? points[points.length - 1][0] : -Infinity;
    for (const p of s.history.points) if (p[0] > last) points.push(p);
    let old = 0;
    while (old < points.length && points[old][0] < horizon) old++;
    if (old) points = points.slice(old);
    pointsByService.set(s.name, points);
    s.history.points = points;
  }
  for (const name of [...pointsByService.keys()]) if (!seen.has(name)) pointsByService.delete(name);
}

function markSelected() {
  for (const tr of document.querySelectorAll("tr.instance")) {
    tr.classList.toggle("selected", tr.dataset.instance === selected);
  }
}

function definitions(pairs) {
  const dl = el("dl");
  for (const [term, value] of pairs) dl.append(el("dt", {}, term), el("dd", {}, value));
  return dl;
}

function renderDetail() {
  const panel = document.getElementById("detail");
  if (selected === null) { panel.hidden = true; return; }
  panel.hidden = false;
  const inst = instancesByKey.get(selected);
  const body = document.getElementById("detail-body");
  if (!inst) {
    body.replaceChildren(el("p", { class: "muted" }, `${selected} is no longer registered`));
    return;
  }
  const m = inst.metrics;
  const scraped = m.last_scrape_at ? `${fmtTime(m.last_scrape_at)}` : "never";
  const metadata = Object.entries(inst.metadata);
  body.replaceChildren(
    el("h3", {}, el("code", {}, inst.id), " ", el("span", { class: `health ${inst.health}` }, inst.health)),
    definitions([
      ["service", inst.service],
      ["version", inst.version || "–"],
      ["address", inst.address],
      ["weight", String(inst.weight)],
      ["endpoints", inst.endpoints.length ? inst.endpoints.join(", ") : "–"],
      ["dependencies", inst.dependencies.length ? inst.dependencies.join(", ") : "–"],
      ["last scrape", `${m.status}${m.detail ? ": " + m.detail : ""} (at ${scraped})`],
      ["metrics_url", m.url || "–"],
    ]),
    el("h4", {}, "metadata"),
    metadata.length ? definitions(metadata) : el("p", { class: "muted" }, "none"),
    el("h4", {}, "health history"),
    el("ol", { class: "health-history" }, ...inst.health_history.map((h) =>
      el("li", {}, el("span", { class: "time" }, fmtTime(h.at)), " ", el("span", { class: `health ${h.health}` }, h.health)))),
  );
  body.dataset.instance = selected;
}

// -- registry events -----------------------------------------------------------------

function eventItem(ev) {
  return el("li", { class: ev.kind, "data-event": `${ev.kind}:${ev.service}/${ev.id}` },
    el("span", { class: "time" }, fmtTime(ev.at)),
    el("span", { class: "kind" }, ev.kind),
    el("span", { class: "what" }, `${ev.service} ${ev.id} @ ${ev.address}${ev.version ? " " + ev.version : ""} (${ev.health})`));
}

function addEvents(events, replace) {
  const list = document.getElementById("events");
  const items = events.slice().reverse().map(eventItem); // newest first
  if (replace) list.replaceChildren(...items); else list.prepend(...items);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

// -- live connection -----------------------------------------------------------------

function setConnection(state, text) {
  const node = document.getElementById("connection");
  node.dataset.state = state;
  document.getElementById("connection-text").textContent = text;
}

function connect() {
  const source = new EventSource("/api/events");
  source.onopen = () => setConnection("live", "live");
  source.onerror = () => setConnection("reconnecting", "reconnecting…"); // EventSource retries by itself
  source.addEventListener("history", (msg) => addEvents(JSON.parse(msg.data), true));
  source.addEventListener("registry", (msg) => addEvents([JSON.parse(msg.data)], false));
  source.addEventListener("state", (msg) => {
    const state = JSON.parse(msg.data);
    mergeHistory(state);
    latestState = state;
    renderGraph(state);
    renderServices(state);
    renderDetail();
  });
}

document.getElementById("detail-close").addEventListener("click", () => {
  selected = null; renderDetail(); markSelected();
});
connect();
