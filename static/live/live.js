// Terrarium live feed of one container: history on connect, then one point
// per sampler tick over ws/containers/<id>/live/.  Charts by uPlot (vendored).
(function () {
  "use strict";
  var root = document.getElementById("graphs");
  if (!root || !root.dataset.containerId) return;
  var id = root.dataset.containerId;
  var KEEP = 15 * 60;                       // seconds kept on the page, as the sampler keeps
  var points = [], sources = {}, charts = {}, seen = {};
  var state = document.getElementById("live-state");
  window.terrariumLive = { points: points, tree: null, sources: sources };

  // ---- formatting
  function bytes(v) {
    if (v == null) return "—";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v) + " " + u[i];
  }
  function pct(v) { return v == null ? "—" : (v * 100).toFixed(1) + " %"; }
  var FORMAT = {
    mem: bytes, ws: bytes, cache: bytes, swap: bytes,
    mem_limit: function (v) { return v == null ? "unlimited" : bytes(v); },
    cpu: pct, cpu_limit: function (v) { return v == null ? "unlimited" : v.toFixed(2) + " cores"; },
    pids_max: function (v) { return v == null ? "unlimited" : String(v); },
    io_r: function (v) { return v == null ? "—" : bytes(v) + "/s"; },
    io_w: function (v) { return v == null ? "—" : bytes(v) + "/s"; },
    throttled: function (v) { return v == null ? "—" : v + " periods"; },
    throttled_s: function (v) { return v == null ? "—" : v.toFixed(3) + " s"; }
  };
  function fmt(key, v) { return (FORMAT[key] || function (x) { return x == null ? "—" : String(x); })(v); }

  // ---- charts
  function col(key, scale) {
    return points.map(function (p) { var v = p[key]; return v == null ? null : v * (scale || 1); });
  }
  var SPECS = {
    mem: { el: "chart-mem", series: [["mem", "usage", "#2b6cb0", 1 / 1048576], ["ws", "working set", "#38a169", 1 / 1048576],
      ["mem_limit", "limit", "#e53e3e", 1 / 1048576, [6, 4]]], unit: "MiB" },
    cpu: { el: "chart-cpu", series: [["cpu", "CPU", "#805ad5", 100], ["cpu_limit", "limit", "#e53e3e", 100, [6, 4]],
      ["throttled", "throttled periods", "#dd6b20", 1, null, true]], unit: "%" },
    pids: { el: "chart-pids", series: [["pids", "pids", "#2c7a7b", 1], ["pids_max", "limit", "#e53e3e", 1, [6, 4]]], unit: "" },
    io: { el: "chart-io", series: [["io_r", "read", "#3182ce", 1 / 1024], ["io_w", "write", "#d69e2e", 1 / 1024]], unit: "KiB/s" }
  };
  function makeChart(name) {
    var spec = SPECS[name], el = document.getElementById(spec.el);
    if (!el || !window.uPlot) return null;
    var series = [{}];
    var scales = { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max * 1.1, 1)]; } } };
    spec.series.forEach(function (s) {
      var opt = { label: s[1], stroke: s[2], width: 1.5, spanGaps: false };
      if (s[4]) opt.dash = s[4];
      if (s[5]) { opt.scale = "n"; opt.paths = window.uPlot.paths.bars({ size: [0.6, 6] }); opt.fill = s[2] + "66"; opt.width = 0; }
      series.push(opt);
    });
    if (name === "cpu") scales.n = { range: function (u, min, max) { return [0, Math.max(max * 4, 1)]; } };
    var width = Math.max(el.clientWidth || 0, 300);
    return new window.uPlot({ width: width, height: 180, series: series, scales: scales,
      axes: [{}, { label: spec.unit, size: 60 }], legend: { live: true } }, data(name), el);
  }
  function data(name) {
    var d = [points.map(function (p) { return p.t; })];
    SPECS[name].series.forEach(function (s) { d.push(col(s[0], s[3])); });
    return d;
  }
  function redraw() {
    Object.keys(SPECS).forEach(function (name) {
      if (!charts[name]) charts[name] = makeChart(name);
      if (charts[name]) charts[name].setData(data(name));
    });
    root.dataset.points = String(points.length);
  }
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (n) {
      var el = document.getElementById(SPECS[n].el);
      if (charts[n] && el) charts[n].setSize({ width: Math.max(el.clientWidth, 300), height: 180 });
    });
  });

  // ---- current figures, each titled with its kernel file
  function showNow(p) {
    document.querySelectorAll("#live-now dd[data-key]").forEach(function (dd) {
      var k = dd.dataset.key;
      dd.textContent = fmt(k, p[k]);
      if (sources[k]) dd.title = sources[k];
    });
  }

  // ---- the process tree
  var ptree = document.getElementById("ptree");
  function cell(cls, text, title) {
    var s = document.createElement("span");
    s.className = cls; s.textContent = text;
    if (title) s.title = title;
    return s;
  }
  function renderTree(tree) {
    window.terrariumLive.tree = tree;
    if (!ptree) return;
    var frag = document.createDocumentFragment(), now = {};
    function add(list, nodes, depth) {
      nodes.forEach(function (n) {
        var li = document.createElement("li"), row = document.createElement("div"), src = n.sources || {};
        li.dataset.pid = n.pid; li.dataset.nsPid = n.ns_pid;
        row.className = "prow" + (seen[n.pid] || !Object.keys(seen).length ? "" : " new");
        now[n.pid] = true;
        row.appendChild(cell("c-ns", n.ns_pid, src.ns_pid));
        row.appendChild(cell("c-pid", n.pid, src.pid));
        row.appendChild(cell("c-user", n.user || n.uid, src.uid));
        row.appendChild(cell("c-state", n.state, src.state));
        row.appendChild(cell("c-rss", bytes(n.rss), src.rss));
        row.appendChild(cell("c-cpu", pct(n.cpu), src.cpu_ticks));
        var cmd = cell("c-cmd", "", src.cmdline);
        if (depth) cmd.appendChild(cell("branch", "\u00a0".repeat((depth - 1) * 3) + "└─ "));
        cmd.appendChild(document.createTextNode(n.cmdline));
        row.appendChild(cmd);
        li.appendChild(row);
        if (n.children && n.children.length) {
          var ul = document.createElement("ul");
          add(ul, n.children, depth + 1);
          li.appendChild(ul);
        }
        list.appendChild(li);
      });
    }
    add(frag, tree || [], 0);
    if (!tree || !tree.length) {
      var li = document.createElement("li"); li.className = "muted"; li.textContent = "No processes (not running).";
      frag.appendChild(li);
    }
    seen = now;
    ptree.replaceChildren(frag);
  }

  // ---- the socket
  function trim() {
    var cut = Date.now() / 1000 - KEEP;
    while (points.length && points[0].t < cut) points.shift();
  }
  function onEvent(ev) {
    root.dispatchEvent(new CustomEvent("terrarium:live", { detail: ev }));   // static/live/figures.js
    if (ev.type === "container.history") {
      points.length = 0;
      Array.prototype.push.apply(points, ev.points || []);
      Object.assign(sources, ev.sources || {});
      if (ev.tree) renderTree(ev.tree);
      root.dataset.history = String(points.length);
      if (points.length) showNow(points[points.length - 1]);
      redraw();
    } else if (ev.type === "container.sample") {
      Object.assign(sources, ev.sources || {});
      points.push(ev.point); trim();
      showNow(ev.point); redraw();
    } else if (ev.type === "container.procs") {
      renderTree(ev.tree);
    } else if (ev.type === "container.gone") {
      renderTree([]);
      if (state) state.textContent = "not sampled: " + ev.error;
    }
  }
  var delay = 1000;
  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                           "/ws/containers/" + id + "/live/");
    ws.onopen = function () { delay = 1000; if (state) { state.textContent = "live"; state.classList.add("on"); } root.dataset.live = "on"; };
    ws.onmessage = function (m) { onEvent(JSON.parse(m.data)); };
    ws.onclose = function (e) {
      root.dataset.live = "off";
      if (state) { state.textContent = "disconnected"; state.classList.remove("on"); }
      if (e.code === 4404 && state) state.textContent = "not sampled: no such container";
      if (e.code === 4401 || e.code === 4403 || e.code === 4404) return;
      setTimeout(connect, delay); delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
})();
