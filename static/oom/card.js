// The OOM card's memory graph: usage and working set around the kill, the
// limit dashed, a red marker line at the kill (x = 0 s).  Charts: app.js.
(function () {
  "use strict";
  var T = window.Terrarium;
  function draw() {
    var el = document.getElementById("oom-graph");
    var dataEl = document.getElementById("oom-graph-data");
    if (!el || !dataEl || !window.uPlot) return;
    var g = JSON.parse(dataEl.textContent);
    var k = g.kill_t, MB = 1048576, lim = g.limit ? g.limit / MB : null;
    var xs = [], usage = [], ws = [], limit = [];
    g.points.forEach(function (p) {
      xs.push(+(p[0] - k).toFixed(3)); usage.push(p[1] / MB); ws.push(p[2] / MB); limit.push(lim);
    });
    if (xs.length === 0 || xs[xs.length - 1] < 0.5) { xs.push(0.5); usage.push(null); ws.push(null); limit.push(lim); }
    if (xs[0] > -0.5) { xs.unshift(-0.5); usage.unshift(null); ws.unshift(null); limit.unshift(lim); }
    var marker = document.createElement("div");
    marker.className = "oom-kill-marker";
    marker.textContent = "kill";
    el.style.position = "relative";
    T.chart(el, {
      time: false, xLabel: "seconds from the kill", unit: "MiB", height: 260,
      yRange: function (u, lo, hi) { return [0, Math.max(hi, lim ? lim * 1.1 : hi)]; },
      series: [{ label: "usage", stroke: "#2563eb", width: 2, spanGaps: true },
               { label: "working set", stroke: "#059669", spanGaps: true },
               { label: "limit", stroke: "#6b7280", dash: [6, 4], width: 1 }],
      hooks: {
        draw: [function (u) {
          var x = u.valToPos(0, "x", true), ctx = u.ctx;
          ctx.save(); ctx.strokeStyle = "#dc2626"; ctx.lineWidth = 2 * devicePixelRatio;
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.restore();
          marker.style.left = (u.over.offsetLeft + u.valToPos(0, "x")) + "px";
          marker.style.top = u.over.offsetTop + "px";
          el.dataset.marker = "drawn";
        }]
      }
    }, [xs, usage, ws, limit]);
    el.appendChild(marker);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
