// Terrarium: the figures a graph does not plot, from the live feed's events
// (live.js dispatches each on #graphs as "terrarium:live"): memory anatomy,
// pressure (PSI), throttling, and every kernel figure of the last sample.
// Formatting: app.js.
(function () {
  "use strict";
  var graphs = document.getElementById("graphs");
  if (!graphs) return;
  var figs = {}, fsrc = {}, last = null;
  var PARTS = [   // [figure or function, label, css class]; the order of the bar
    ["memory_anon", "anon", "a-anon"],
    ["memory_shmem", "shmem / tmpfs", "a-shmem"],
    [function (f) { return sub(f.memory_active_file, 0); }, "file, active", "a-fact"],
    [function (f) { return sub(f.memory_inactive_file, 0); }, "file, inactive (reclaimable)", "a-finact"],
    [function (f) { return f.memory_kernel != null ? f.memory_kernel : sum(f.memory_slab, f.memory_pagetables); },
      "kernel", "a-kernel"],
    ["memory_sock", "sockets", "a-sock"]
  ];
  function sub(a, b) { return a == null ? null : Math.max(a - (b || 0), 0); }
  function sum() { var t = null; for (var i = 0; i < arguments.length; i++) if (arguments[i] != null) t = (t || 0) + arguments[i]; return t; }
  var bytes = window.Terrarium.bytes;
  var FMT = {
    bytes: bytes,
    limit: function (v) { return v == null ? "none" : bytes(v); },
    pct: function (v) { return v == null ? "—" : v.toFixed(2) + " %"; },
    us: function (v) { return v == null ? "—" : (v / 1e6).toFixed(3) + " s"; },
    ns: function (v) { return v == null ? "—" : (v / 1e9).toFixed(3) + " s"; }
  };
  function fmt(kind, v) { return (FMT[kind] || function (x) { return x == null ? "—" : String(x); })(v); }

  function anatomy(f) {
    var bar = document.getElementById("anat-bar"), legend = document.getElementById("anat-legend");
    if (!bar) return;
    var usage = f.memory_usage || 0, scale = Math.max(f.memory_limit || 0, usage, 1), shown = 0;
    var frag = document.createDocumentFragment(), lfrag = document.createDocumentFragment();
    PARTS.forEach(function (p) {
      var v = typeof p[0] === "function" ? p[0](f) : f[p[0]];
      if (v == null) return;
      shown += v;
      var seg = document.createElement("span");
      seg.className = "seg " + p[2]; seg.dataset.part = p[1];
      seg.style.width = (100 * v / scale) + "%";
      seg.title = p[1] + ": " + bytes(v) + (typeof p[0] === "string" && fsrc[p[0]] ? " (" + fsrc[p[0]] + ")" : "");
      frag.appendChild(seg);
      var li = document.createElement("li");
      li.innerHTML = '<span class="sw ' + p[2] + '"></span>';
      li.appendChild(document.createTextNode(p[1] + " " + bytes(v)));
      li.dataset.part = p[1]; li.dataset.bytes = String(v);
      lfrag.appendChild(li);
    });
    var other = usage - shown;
    if (other > 0) {
      var seg = document.createElement("span");
      seg.className = "seg a-other"; seg.style.width = (100 * other / scale) + "%";
      seg.title = "other (usage minus the parts above): " + bytes(other);
      frag.appendChild(seg);
    }
    [["memory_min", "min"], ["memory_low", "low"], ["memory_high", "high"]].forEach(function (m) {
      var v = f[m[0]];
      if (!v || v > scale) return;
      var line = document.createElement("i");
      line.className = "mark"; line.style.left = (100 * v / scale) + "%";
      line.title = m[1] + ": " + bytes(v) + (fsrc[m[0]] ? " (" + fsrc[m[0]] + ")" : "");
      frag.appendChild(line);
    });
    bar.replaceChildren(frag); legend.replaceChildren(lfrag);
    bar.title = "usage " + bytes(usage) + (f.memory_limit ? " of " + bytes(f.memory_limit) : " (no limit)");
    var ev = Object.keys(f).filter(function (k) { return k.indexOf("memory_events_") === 0; })
      .map(function (k) { return k.slice(14) + " " + f[k]; });
    var evs = document.getElementById("anat-events");
    if (evs) { evs.textContent = ev.length ? ev.join(" · ") : "—"; evs.title = fsrc.memory_events_oom_kill || ""; }
  }

  function fill(f) {
    document.querySelectorAll("[data-fig]").forEach(function (el) {
      var k = el.dataset.fig;
      el.textContent = fmt(el.dataset.fmt, f[k]);
      if (fsrc[k]) el.title = fsrc[k];
    });
    if (last) document.querySelectorAll("#anat-now [data-key]").forEach(function (el) {
      el.textContent = fmt(el.dataset.fmt, last[el.dataset.key]);
    });
    var psi = Object.keys(f).some(function (k) { return k.indexOf("psi_") === 0 && f[k] != null; });
    var none = document.getElementById("psi-none"), table = document.getElementById("psi-table");
    if (none) none.hidden = psi;
    if (table) table.hidden = !psi;
  }

  function kernelFiles(f) {
    var body = document.querySelector("#kfiles-table tbody");
    if (!body) return;
    var rows = Object.keys(f).sort(function (a, b) {
      var x = fsrc[a] || "~", y = fsrc[b] || "~";
      return x < y ? -1 : x > y ? 1 : a < b ? -1 : 1;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (k) {
      var tr = document.createElement("tr");
      tr.dataset.figure = k;
      [k, f[k] == null ? "—" : String(f[k]), fsrc[k] || ""].forEach(function (t, i) {
        var td = document.createElement("td");
        td.textContent = t;
        if (i === 0) td.className = "mono";
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
  }

  graphs.addEventListener("terrarium:live", function (e) {
    var ev = e.detail;
    if (ev.type === "container.history") {
      var pts = ev.points || [];
      last = pts.length ? pts[pts.length - 1] : null;
    } else if (ev.type === "container.sample") {
      last = ev.point;
    } else {
      return;
    }
    if (ev.figure_sources) Object.assign(fsrc, ev.figure_sources);
    if (!ev.figures || !Object.keys(ev.figures).length) return;
    figs = ev.figures;
    anatomy(figs); fill(figs); kernelFiles(figs);
    graphs.dataset.figures = String(Object.keys(figs).length);
  });
})();
