// The detail page's 24-hour history: per-minute rows from the database,
// fetched once on load and every minute after, drawn with uPlot.
(function () {
  "use strict";
  var root = document.getElementById("history");
  if (!root || !window.uPlot) return;
  var state = document.getElementById("history-state"), charts = {};
  var MIB = 1 / 1048576;
  var SPECS = {
    mem: { el: "chart-hist-mem", unit: "MiB", series: [["mem_avg", "average", "#2b6cb0", MIB],
      ["mem_max", "peak", "#38a169", MIB], ["mem_limit", "limit", "#e53e3e", MIB, [6, 4]]] },
    cpu: { el: "chart-hist-cpu", unit: "%", series: [["cpu_avg", "CPU", "#805ad5", 100]] }
  };
  function cols(d, spec) {
    var out = [d.t];
    spec.series.forEach(function (s) {
      out.push(d[s[0]].map(function (v) { return v == null ? null : v * s[3]; }));
    });
    return out;
  }
  function draw(d) {
    root.dataset.points = String(d.t.length);
    if (state) state.textContent = d.t.length ? d.t.length + " minutes" : "no minutes recorded yet";
    Object.keys(SPECS).forEach(function (name) {
      var spec = SPECS[name], el = document.getElementById(spec.el);
      if (!el) return;
      if (charts[name]) { charts[name].setData(cols(d, spec)); return; }
      var series = [{}];
      spec.series.forEach(function (s) {
        var o = { label: s[1], stroke: s[2], width: 1.5 };
        if (s[4]) o.dash = s[4];
        series.push(o);
      });
      charts[name] = new window.uPlot({ width: Math.max(el.clientWidth || 0, 300), height: 160, series: series,
        scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max * 1.1, 1)]; } } },
        axes: [{}, { label: spec.unit, size: 60 }] }, cols(d, spec), el);
    });
  }
  function load() {
    fetch(root.dataset.url, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(draw)
      .catch(function (e) { if (state) state.textContent = "could not load: " + e.message; });
  }
  load();
  setInterval(load, 60000);
})();
