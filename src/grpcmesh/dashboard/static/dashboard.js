// grpcmesh dashboard: renders the state pushed over Server-Sent Events (/api/events).
// Plain DOM and inline SVG, no framework and nothing fetched from elsewhere, so it works offline.
// All text goes in through textContent, never innerHTML: registry data is not trusted markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_EVENTS = 200;
const NODE_W = 210, NODE_H = 54, COL_GAP = 90, ROW_GAP = 26, PAD = 16;

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

function fmtTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function nodeClass(service) {
  if (!service.registered) return "missing";
  return { SERVING: "serving", DEGRADED: "degraded" }[service.health] || "down";
}

// -- dependency graph ---------------------------------------------------------------

// Columns by longest path from a caller: callers left, what they depend on to the right.
function layout(services, edges) {
  const callers = new Map(services.map((s) => [s.name, []]));
  for (const e of edges) callers.get(e.to)?.push(e.from);
  const level = new Map();
  const depth = (name, visiting) => {
    if (level.has(name)) return level.get(name);
    if (visiting.has(name)) return 0; // a cycle: break it here
    visiting.add(name);
    let d = 0;
    for (const caller of callers.get(name) || []) d = Math.max(d, depth(caller, visiting) + 1);
    visiting.delete(name);
    level.set(name, d);
    return d;
  };
  const columns = [];
  for (const s of services) {
    const d = depth(s.name, new Set());
    (columns[d] = columns[d] || []).push(s.name);
  }
  const pos = new Map();
  columns.forEach((names, col) => names.forEach((name, row) => {
    pos.set(name, { x: PAD + col * (NODE_W + COL_GAP), y: PAD + row * (NODE_H + ROW_GAP) });
  }));
  const width = PAD * 2 + Math.max(1, columns.length) * (NODE_W + COL_GAP) - COL_GAP;
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + rows * (NODE_H + ROW_GAP) - ROW_GAP;
  return { pos, width, height };
}

function renderGraph(state) {
  const graph = document.getElementById("graph");
  const { pos, width, height } = layout(state.services, state.edges);
  graph.replaceChildren();
  graph.setAttribute("viewBox", `0 0 ${width} ${height}`);
  graph.setAttribute("width", width);
  graph.setAttribute("height", height);
  graph.append(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  for (const e of state.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const bend = Math.max(40, Math.abs(x2 - x1) / 2);
    graph.append(svg("path", {
      class: "edge", "data-edge": `${e.from}->${e.to}`, "marker-end": "url(#arrow)",
      d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
    }));
  }
  for (const s of state.services) {
    const p = pos.get(s.name);
    const count = `${s.instances.length} inst`;
    const stats = !s.registered ? "no instances registered"
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
  if (m.status === "pending") return el("td", { class: "muted" }, "first scrape…");
  if (m.status === "error") return el("td", { class: "bad-rate", title: m.detail || "" }, "unreachable");
  return el("td", {}, "scraped");
}

function instanceRow(inst) {
  const rates = inst.rates;
  const errorsCell = el("td", { class: "num errors" }, fmtErrors(rates));
  if (rates && rates.error_ratio > 0) errorsCell.classList.add("bad-rate");
  return el("tr", {
    class: "instance",
    "data-instance": `${inst.service}/${inst.id}`,
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
  card.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...s.instances.map(instanceRow))));
  return card;
}

function renderServices(state) {
  const registered = state.services.filter((s) => s.registered);
  const container = document.getElementById("services");
  container.replaceChildren(...(registered.length
    ? registered.map(serviceCard)
    : [el("p", { class: "muted" }, "no services registered")]));
  const instances = registered.reduce((n, s) => n + s.instances.length, 0);
  const calls = registered.reduce((n, s) => n + (s.rates ? s.rates.calls_per_second : 0), 0);
  document.getElementById("summary").textContent =
    `${registered.length} services · ${instances} instances · ${fmtRate({ calls_per_second: calls })} calls/s · updated ${fmtTime(state.generated_at)}`;
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
    renderGraph(state);
    renderServices(state);
  });
}

connect();
