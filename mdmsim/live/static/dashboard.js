// The live load dashboard: reads server-sent events from ./events and draws its charts on canvases.
// Our own code, no library: a line chart is a few dozen lines. Text goes in with textContent, never as HTML.
"use strict";
(function () {
  const KEEP = 600;  // points per series: ten minutes at two events a second
  const COLORS = ["#2f6fdb", "#d9534f", "#2e9e5b", "#e69a1c", "#8a4fd1", "#1aa3a3", "#7a7a7a", "#c2185b"];
  const history = { t: [], series: {} };

  function push(name, t, value) {
    const points = history.series[name] || (history.series[name] = []);
    points.push([t, value]);
    if (points.length > KEEP) points.shift();
  }

  function draw(id, names) {
    const canvas = document.getElementById(id);
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const series = names.map((name) => [name, history.series[name] || []]).filter(([, p]) => p.length);
    let t0 = Infinity, t1 = -Infinity, top = 0;
    for (const [, points] of series) for (const [t, v] of points) {
      t0 = Math.min(t0, t); t1 = Math.max(t1, t); top = Math.max(top, v);
    }
    const left = 48, bottom = height - 18;
    g.strokeStyle = "#c9d1dd"; g.fillStyle = "#566"; g.font = "11px system-ui";
    g.beginPath(); g.moveTo(left, 4); g.lineTo(left, bottom); g.lineTo(width - 4, bottom); g.stroke();
    if (!series.length) return legend(canvas, []);
    top = top > 0 ? top * 1.1 : 1;
    const span = Math.max(t1 - t0, 1);
    const x = (t) => left + (width - left - 8) * (t - t0) / span;
    const y = (v) => bottom - (bottom - 8) * v / top;
    g.fillText(top.toPrecision(3), 2, 12); g.fillText("0", 2, bottom);
    g.fillText(t0.toFixed(0) + " s", left, height - 4);
    g.fillText(t1.toFixed(0) + " s", width - 40, height - 4);
    series.forEach(([, points], i) => {
      g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 1.6; g.beginPath();
      points.forEach(([t, v], j) => (j ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
      g.stroke();
    });
    legend(canvas, series.map(([name]) => name));
  }

  function legend(canvas, names) {
    const box = canvas.parentElement.querySelector(".legend");
    box.replaceChildren(...names.map((name, i) => {
      const item = document.createElement("span"), swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      item.append(swatch, document.createTextNode(name));
      return item;
    }));
  }

  function text(id, value) { document.getElementById(id).textContent = value; }

  function table(rows) {
    const body = document.querySelector("#messages tbody");
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement("tr");
      [row.name, row.count, row.errors, row.p50, row.p95, row.p99, row.max].forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = i > 2 ? Number(value).toFixed(1) : String(value);
        if (i) td.className = "num";
        tr.append(td);
      });
      return tr;
    }));
  }

  const kinds = new Set(), types = new Set();

  function update(e) {
    const t = e.elapsed;
    text("elapsed", t.toFixed(1) + " s"); text("rate", e.rate.toFixed(0)); text("requests", e.requests);
    text("enrolled", e.enrolled + "/" + e.devices); text("errors", e.errors);
    text("rollout", e.rollout ? e.rollout.acked + "/" + e.rollout.devices :
      (e.installs_acknowledged == null ? "–" : e.installs_acknowledged + " installs"));
    push("requests/s", t, e.rate); push("enrolled", t, e.enrolled); push("enroll failed", t, e.enroll_failed);
    if (e.latency) for (const key of ["p50", "p95", "p99"]) push(key, t, e.latency[key]);
    if (e.rollout) push("acknowledged %", t, e.rollout.percent);
    if (e.installs_acknowledged != null) push("installs acknowledged", t, e.installs_acknowledged);
    for (const [kind, n] of Object.entries(e.errors_by_kind)) { kinds.add(kind); push(kind, t, n); }
    for (const row of e.messages) { types.add(row.name); push("type " + row.name, t, row.p95); }
    draw("chart-rate", ["requests/s"]); draw("chart-latency", ["p50", "p95", "p99"]);
    draw("chart-enrolled", ["enrolled", "enroll failed"]);
    draw("chart-rollout", ["acknowledged %", "installs acknowledged"]);
    draw("chart-errors", [...kinds]); draw("chart-types", [...types].map((name) => "type " + name));
    table(e.messages);
    text("server", e.server ? "server: CPU " + e.server.cpu + "% of one core, RSS " + e.server.rss_mb + " MB" : "");
    const state = document.getElementById("state");
    state.dataset.seq = e.seq; state.dataset.sentAt = e.sent_at;
    state.textContent = e.finished ? "run finished: " + e.finished : "live · event " + e.seq;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const source = new EventSource("events");
    source.addEventListener("status", (message) => {
      const event = JSON.parse(message.data);
      update(event);
      if (event.finished) source.close();  // the run is over: no reconnecting to a server that has stopped
    });
    source.addEventListener("error", () => {
      const state = document.getElementById("state");
      if (!state.textContent.startsWith("run finished")) state.textContent = "reconnecting…";
    });
  });
})();
