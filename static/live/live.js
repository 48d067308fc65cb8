// Terrarium live feed of one container: history on connect (and again on
// every reconnect), then one point per sampler tick over
// ws/containers/<id>/live/.  Shared parts (charts, socket): app.js.
(function () {
  "use strict";
  var root = document.getElementById("graphs");
  if (!root || !root.dataset.containerId) return;
  var id = root.dataset.containerId;
  var KEEP = 15 * 60;                       // seconds kept on the page, as the sampler keeps
  var points = [], sources = {}, charts = {}, seen = {};
  var state = document.getElementById("live-state");
  window.terrariumLive = { points: points, tree: null, sources: sources, charts: charts };

  var T = window.Terrarium, bytes = T.bytes, pct = T.pct;
  function rate(v) { return v == null ? "—" : bytes(v) + "/s"; }
  function perSec(v) { return v == null ? "—" : (Math.round(v * 10) / 10) + "/s"; }
  var FORMAT = {
    mem: bytes, ws: bytes, cache: bytes, swap: bytes,
    mem_limit: function (v) { return v == null ? "unlimited" : bytes(v); },
    cpu: pct, cpu_limit: function (v) { return v == null ? "unlimited" : v.toFixed(2) + " cores"; },
    pids_max: function (v) { return v == null ? "unlimited" : String(v); },
    io_r: rate, io_w: rate, net_rx: rate, net_tx: rate,
    net_rx_p: perSec, net_tx_p: perSec, net_rx_drop: perSec, net_tx_drop: perSec,
    throttled: function (v) { return v == null ? "—" : v + " periods"; },
    throttled_s: function (v) { return v == null ? "—" : v.toFixed(3) + " s"; }
  };
  function fmt(key, v) { return (FORMAT[key] || function (x) { return x == null ? "—" : String(x); })(v); }

  // ---- charts: [key, label, colour, scale factor, dash, bars]
  var MIB = 1 / 1048576;
  var SPECS = {
    mem: { el: "chart-mem", series: [["mem", "usage", "#2b6cb0", MIB], ["ws", "working set", "#38a169", MIB],
      ["mem_limit", "limit", "#e53e3e", MIB, [6, 4]]], unit: "MiB" },
    cpu: { el: "chart-cpu", series: [["cpu", "CPU", "#805ad5", 100], ["cpu_limit", "limit", "#e53e3e", 100, [6, 4]],
      ["throttled", "throttled periods", "#dd6b20", 1, null, true]], unit: "%",
      // throttled periods hang from the top quarter, away from the CPU line near 0
      scales: { n: { range: function (u, min, max) { var m = Math.max(max || 0, 1); return [-3 * m, m]; } } } },
    pids: { el: "chart-pids", series: [["pids", "pids", "#2c7a7b", 1], ["pids_max", "limit", "#e53e3e", 1, [6, 4]]], unit: "" },
    io: { el: "chart-io", series: [["io_r", "read", "#3182ce", 1 / 1024], ["io_w", "write", "#d69e2e", 1 / 1024]], unit: "KiB/s" },
    // on the network panel (templates/containers/_network.html), when it has them
    net: { el: "chart-net", series: [["net_rx", "rx", "#3182ce", 1 / 1024], ["net_tx", "tx", "#d69e2e", 1 / 1024]], unit: "KiB/s" },
    netp: { el: "chart-netp", series: [["net_rx_p", "rx packets", "#3182ce", 1], ["net_tx_p", "tx packets", "#d69e2e", 1],
      ["net_rx_drop", "rx drops", "#e53e3e", 1, null, true], ["net_tx_drop", "tx drops", "#c05621", 1, null, true]], unit: "/s",
      scales: { n: { range: function (u, min, max) { var m = Math.max(max || 0, 1); return [-3 * m, m]; } } } }
  };
  Object.keys(SPECS).forEach(function (name) { if (!document.getElementById(SPECS[name].el)) delete SPECS[name]; });
  // a bar series marks only the ticks where something happened: no bar at 0
  function col(s) {
    return points.map(function (p) { var v = p[s[0]]; return v == null || (s[5] && !v) ? null : v * s[3]; });
  }
  function makeChart(name) {
    var spec = SPECS[name];
    return T.chart(document.getElementById(spec.el), {
      unit: spec.unit, scales: spec.scales, span: 60,
      series: spec.series.map(function (s) { return { label: s[1], stroke: s[2], dash: s[4], bars: s[5], scale: s[5] ? "n" : null }; })
    }, data(name));
  }
  function data(name) {
    var d = [points.map(function (p) { return p.t; })];
    SPECS[name].series.forEach(function (s) { d.push(col(s)); });
    return d;
  }
  function redraw() {
    Object.keys(SPECS).forEach(function (name) {
      if (!charts[name]) charts[name] = makeChart(name);
      if (charts[name]) charts[name].setData(data(name));
    });
    root.dataset.points = String(points.length);
  }

  // ---- current figures, each titled with its kernel file
  function showNow(p) {
    document.querySelectorAll("#live-now dd[data-key], #net-now dd[data-key]").forEach(function (dd) {
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
  T.socket("/ws/containers/" + id + "/live/", {
    message: onEvent,
    open: function () { if (state) { state.textContent = "live"; state.classList.add("on"); } root.dataset.live = "on"; },
    close: function (code) {
      root.dataset.live = "off";
      if (state) { state.textContent = code === 4404 ? "not sampled: no such container" : "disconnected"; state.classList.remove("on"); }
    }
  });
})();
