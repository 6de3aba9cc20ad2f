// The console's own script: plots (uPlot), live readings (Server-Sent Events), and what to do
// when the session ends. Values from devices are shown with textContent, never as HTML.
"use strict";

function showSignedOut() {
  const banner = document.getElementById("signed-out");
  if (banner) banner.hidden = false;
  document.body.dataset.signedOut = "yes";
  document.querySelectorAll("main form, main button").forEach((el) => { el.disabled = true; });
}

async function checkSession() {
  try {
    const response = await fetch("/console/session", { credentials: "same-origin" });
    if (response.status === 401) showSignedOut();
  } catch (error) { /* the agent is down: nothing to say about the session */ }
}

document.addEventListener("htmx:responseError", (event) => {
  if (event.detail.xhr && event.detail.xhr.status === 401) showSignedOut();
});

const PALETTE = { avg: "#1d5fbf", band: "rgba(29, 95, 191, 0.15)", edge: "rgba(29, 95, 191, 0.35)" };

class Plots {
  constructor(root) {
    this.root = root;
    this.device = root.dataset.device;
    this.metrics = JSON.parse(root.dataset.metrics);
    this.range = root.dataset.range;
    this.list = document.getElementById("plot-list");
    this.plots = new Map(); // metric -> {u, data, box}
  }

  box(metric) {
    let entry = this.plots.get(metric);
    if (entry) return entry;
    const placeholder = document.getElementById("no-readings");
    if (placeholder) placeholder.remove();
    const box = document.createElement("figure");
    box.className = "plot";
    box.dataset.metric = metric;
    const caption = document.createElement("figcaption");
    caption.textContent = metric;
    box.appendChild(caption);
    this.list.appendChild(box);
    const data = [[], [], [], []];
    const opts = {
      width: Math.max(320, this.list.clientWidth - 8),
      height: 180,
      series: [
        {},
        { label: "avg", stroke: PALETTE.avg, width: 1.5 },
        { label: "min", stroke: PALETTE.edge, width: 1 },
        { label: "max", stroke: PALETTE.edge, width: 1 },
      ],
      bands: [{ series: [3, 2], fill: PALETTE.band }],
      axes: [{}, { size: 60 }],
      legend: { live: true },
    };
    const u = new uPlot(opts, data, box);
    entry = { u, data, box };
    this.plots.set(metric, entry);
    return entry;
  }

  draw(entry) {
    entry.u.setData(entry.data);
    entry.box.dataset.points = String(entry.data[0].length);
  }

  async load(metric) {
    const query = new URLSearchParams({ device: this.device, metric, range: this.range, points: "600" });
    const response = await fetch("/console/series?" + query, { credentials: "same-origin" });
    if (response.status === 401) { showSignedOut(); return; }
    if (!response.ok) return;
    const found = await response.json();
    const entry = this.box(metric);
    entry.data = [found.t, found.avg, found.min, found.max];
    entry.box.dataset.step = String(found.step_s);
    this.draw(entry);
  }

  async loadAll() {
    const started = performance.now();
    await Promise.all(this.metrics.map((m) => this.load(m)));
    // what bench/bench_console.py and the browser tests read: when every plot was drawn
    document.body.dataset.plotsDrawn = performance.now().toFixed(1);
    document.body.dataset.plotsLoadMs = (performance.now() - started).toFixed(1);
  }

  add(metric, t, value) {
    if (!this.metrics.includes(metric)) this.metrics.push(metric);
    const entry = this.box(metric);
    const [ts, avg, min, max] = entry.data;
    const step = Number(entry.box.dataset.step || "0");
    const last = ts.length - 1;
    if (last >= 0 && step > 0 && t < ts[last] + step) {
      // the reading falls in the last bucket: fold it in (the server's avg is of `count` readings)
      min[last] = Math.min(min[last], value);
      max[last] = Math.max(max[last], value);
      avg[last] = value;
    } else {
      ts.push(t); avg.push(value); min.push(value); max.push(value);
    }
    this.draw(entry);
  }
}

function showLatest(item) {
  const body = document.querySelector("#latest tbody");
  if (!body) return;
  body.replaceChildren();
  for (const v of item.values) {
    const row = document.createElement("tr");
    for (const text of [v.n, String(v.v), v.u || ""]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
  document.getElementById("latest-seq").textContent = String(item.seq);
  const hex = item.message_hex || "(partial: not every value may be shown to this token)";
  document.getElementById("latest-hex").textContent = hex.length > 48 ? hex.slice(0, 48) + "..." : hex;
}

function live(plots) {
  const state = document.getElementById("live-state");
  const source = new EventSource("/console/stream?device=" + encodeURIComponent(plots.device));
  source.addEventListener("open", () => { state.textContent = "(live)"; document.body.dataset.live = "yes"; });
  source.addEventListener("reading", (event) => {
    const item = JSON.parse(event.data);
    showLatest(item);
    const t = item.time_s || Date.now() / 1000;
    for (const v of item.values) {
      if (typeof v.v === "number" && Number.isFinite(v.v)) plots.add(v.n, t, v.v);
    }
    document.body.dataset.liveReadings = String(Number(document.body.dataset.liveReadings || "0") + 1);
  });
  source.addEventListener("signed-out", () => { source.close(); showSignedOut(); });
  source.addEventListener("error", () => {
    state.textContent = "(reconnecting)";
    checkSession();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const hop = document.querySelector("[data-hop]");
  if (hop) { window.location.replace(hop.dataset.hop); return; }
  const root = document.getElementById("plots");
  if (!root) return;
  const plots = new Plots(root);
  document.querySelectorAll("button.range").forEach((button) => {
    button.addEventListener("click", () => {
      document.querySelectorAll("button.range").forEach((b) => b.classList.remove("selected"));
      button.classList.add("selected");
      plots.range = button.dataset.range;
      delete document.body.dataset.plotsDrawn;
      plots.loadAll();
    });
  });
  plots.loadAll().then(() => live(plots));
});
