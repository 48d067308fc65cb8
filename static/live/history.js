// The detail page's 24-hour history: per-minute rows from the database,
// fetched once on load and every minute after, drawn over the last 24 hours
// (one point or none is still a day wide).  Charts: app.js.
(function () {
  "use strict";
  var T = window.Terrarium;
  var root = document.getElementById("history");
  if (!root) return;
  var state = document.getElementById("history-state"), charts = {};
  window.terrariumHistory = { charts: charts };
  var MIB = 1 / 1048576, DAY = 86400;
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
  function lastDay() { var now = Date.now() / 1000; return [now - DAY, now]; }
  function draw(d) {
    root.dataset.points = String(d.t.length);
    if (state) state.textContent = d.t.length ? d.t.length + (d.t.length === 1 ? " minute" : " minutes") : "no minutes recorded yet";
    Object.keys(SPECS).forEach(function (name) {
      var spec = SPECS[name];
      if (charts[name]) { charts[name].setData(cols(d, spec)); return; }
      charts[name] = T.chart(document.getElementById(spec.el), {
        height: 160, unit: spec.unit, window: lastDay,
        series: spec.series.map(function (s) { return { label: s[1], stroke: s[2], dash: s[4] }; })
      }, cols(d, spec));
    });
  }
  function load() {
    fetch(root.dataset.url, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(draw)
      .catch(function (e) { if (state) state.textContent = "could not load: " + T.failure(e); });
  }
  load();
  setInterval(load, 60000);
})();
