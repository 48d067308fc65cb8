// Terrarium's shared page code, loaded first by base.html on every page:
// formatting (one formatter for bytes, one for times), toasts (one builder),
// the reconnecting websocket (backoff, resync) with the "server unreachable"
// banner, and chart set-up over the vendored uPlot.  No build step.
// Page scripts use it as window.Terrarium.
(function () {
  "use strict";
  var T = window.Terrarium = {};

  // ---------------------------------------------------------------- formatting
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  // 1536 → "1.5 KiB", 1048576 → "1 MiB" (as the server's bytes_h filter); null → "—"
  T.bytes = function (v) {
    if (v == null || v === "" || isNaN(v)) return "—";
    v = Number(v);
    var i = 0;
    while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    return (v === Math.round(v) ? String(v) : v.toFixed(1)) + " " + UNITS[i];
  };

  T.pct = function (v) { return v == null ? "—" : (v * 100).toFixed(1) + " %"; };

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  // The one time format, in UTC as the server renders it ("when" filter):
  // "2026-11-30 23:05:09 UTC".  t: Date, ISO string or unix seconds.
  // part: "date" (2026-11-30), "clock" (23:05:09), "minute" (23:05) for chart ticks.
  T.time = function (t, part) {
    var d = t instanceof Date ? t : new Date(typeof t === "number" ? t * 1000 : t);
    if (t == null || isNaN(d.getTime())) return "—";
    var date = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    var minute = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    var clock = minute + ":" + pad(d.getUTCSeconds());
    if (part === "date") return date;
    if (part === "minute") return minute;
    if (part === "clock") return clock;
    return date + " " + clock + " UTC";
  };

  // seconds → "42s", "5m 3s", "2h 10m", "3d 4h" (as the server's duration_since)
  T.duration = function (s) {
    s = Math.max(0, Math.floor(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    s = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  };

  // ---------------------------------------------------------------- toasts
  // One builder for every toast.  o: {text, title (the container it is about),
  // box (element or id; default #messages), cls (default "msg msg-<kind>"),
  // kind ("success" | "error" | "warning"), href, key (a toast with the same
  // key is updated in place), role, ttl (ms before it fades)}.
  T.toast = function (o) {
    var box = typeof o.box === "string" ? document.getElementById(o.box) : (o.box || document.getElementById("messages"));
    if (!box) return null;
    var el = null;
    if (o.key) {
      Array.prototype.some.call(box.children, function (c) { return c.dataset.toastKey === o.key && (el = c); });
    }
    if (!el) {
      el = document.createElement(o.href ? "a" : "div");
      el.appendChild(document.createElement("strong"));
      el.appendChild(document.createElement("span"));
      if (o.key) el.dataset.toastKey = o.key;
      box.appendChild(el);
    }
    el.className = o.cls || "msg msg-" + (o.kind || "success");
    if (o.href) el.href = o.href;
    el.setAttribute("role", o.role || (o.kind === "error" ? "alert" : "status"));
    el.firstChild.textContent = o.title || "";
    el.firstChild.hidden = !o.title;
    el.lastChild.textContent = o.text || "";
    fadeLater(el, o.ttl || 4000);
    return el;
  };

  function fadeLater(el, ttl) {
    clearTimeout(el._fade); clearTimeout(el._gone);
    el.classList.remove("fade");
    el._fade = setTimeout(function () { el.classList.add("fade"); }, ttl);
    el._gone = setTimeout(function () { el.remove(); }, ttl + 600);
  }

  // messages rendered with the page fade like the ones added later
  document.querySelectorAll("#messages .msg").forEach(function (el) { fadeLater(el, 6000); });

  // ---------------------------------------------------------------- reachability
  // A socket that drops, or a fetch that fails at the network level, makes us
  // probe the server; while it does not answer, a banner says so; when it is
  // back, the banner goes and every socket reconnects at once.
  var sockets = [], banner = null, probing = false, leaving = false;
  window.addEventListener("pagehide", function () { leaving = true; });
  window.addEventListener("beforeunload", function () { leaving = true; });

  function showBanner(on) {
    if (on && !banner) {
      banner = document.createElement("div");
      banner.id = "offline-banner";
      banner.className = "offline-banner";
      banner.setAttribute("role", "alert");
      banner.textContent = "The server is unreachable. Retrying… (what changes meanwhile shows when it is back)";
      document.body.insertBefore(banner, document.body.firstChild);
    } else if (!on && banner) {
      banner.remove();
      banner = null;
    }
    document.body.dataset.reachable = on ? "no" : "yes";
  }

  function probe() {
    // any HTTP answer means reachable; only a network error does not
    fetch("/favicon.ico", { method: "HEAD", cache: "no-store", redirect: "manual", credentials: "same-origin" }).then(function () {
      probing = false;
      if (banner) { showBanner(false); sockets.forEach(function (s) { s.now(); }); }
    }, function () {
      if (leaving) { probing = false; return; }
      showBanner(true);
      setTimeout(probe, 2000);
    });
  }

  T.suspectOffline = function () {
    if (probing || leaving) return;
    probing = true;
    probe();
  };

  // A fetch() rejection as words for a person; a network error starts the probe.
  T.failure = function (e) {
    if (e instanceof TypeError) { T.suspectOffline(); return "the server is unreachable"; }
    return (e && e.message) || String(e);
  };

  // ---------------------------------------------------------------- sockets
  // T.socket(path, {message(obj), open(), close(code), resync()}): reconnects
  // with backoff (1 s doubling to 15 s).  resync() runs when the socket opens
  // again after a drop, and on a {"type": "resync"} message (the server says
  // this client fell behind): the page refetches what it shows.
  // Close codes: 4401 (logged out) reloads the page, which then asks to log in;
  // 4403 (forbidden) and 4404 (no such thing) end it.
  // path may be a function (asked on every connect: a reconnect can say where
  // it left off).  Returns {send(obj) (dropped while not open), close() (for good)}.
  T.socket = function (path, h) {
    var delay = 1000, opened = false, timer = null, ws = null, stopped = false;
    function url() {
      return (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
        (typeof path === "function" ? path() : path);
    }
    function connect() {
      timer = null;
      ws = new WebSocket(url());
      ws.onopen = function () {
        delay = 1000;
        if (h.open) h.open(ws);
        if (opened && h.resync) h.resync();
        opened = true;
      };
      ws.onmessage = function (e) {
        var msg;
        try { msg = JSON.parse(e.data); } catch (err) { return; }
        if (msg && msg.type === "resync") { if (h.resync) h.resync(); return; }
        if (h.message) h.message(msg);
      };
      ws.onclose = function (e) {
        ws = null;
        if (stopped) return;
        if (h.close) h.close(e.code);
        if (leaving) return;
        if (e.code === 4401) { location.reload(); return; }
        if (e.code === 4403 || e.code === 4404) return;
        if (e.code === 1006 || e.code === 1011 || e.code === 1012) T.suspectOffline();
        timer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    sockets.push({ now: function () {         // the server is back: do not wait the backoff out
      if (timer === null || stopped) return;
      clearTimeout(timer); delay = 1000; connect();
    } });
    connect();
    return {
      send: function (obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); },
      close: function () { stopped = true; clearTimeout(timer); timer = null; if (ws) ws.close(); }
    };
  };

  // ---------------------------------------------------------------- charts
  // Whole-second steps only: no millisecond ticks.
  var TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                    21600, 43200, 86400, 172800, 604800, 2592000, 31536000];

  // Tick labels in the one time format: clock time (seconds only when the
  // step is under a minute), the date under the first tick and where it changes.
  function timeTicks(u, splits, axisIdx, space, incr) {
    var last = null;
    return splits.map(function (t) {
      if (t == null) return null;
      var date = T.time(t, "date");
      if (incr >= 86400) return date;
      var label = T.time(t, incr < 60 ? "clock" : "minute");
      if (date !== last) { label += "\n" + date; last = date; }
      return label;
    });
  }

  // T.chart(el, spec, data) → a uPlot, sized to el (and resized with the window).
  // spec: {height, unit (y label), series: [{label, stroke, dash, width, scale,
  // bars}], scales (extra), time (default true), xLabel, span (least x span in
  // seconds, so one point does not make a span of years), window (() → [lo, hi]:
  // a fixed x range), yRange, hooks}.
  T.chart = function (el, spec, data) {
    if (!el || !window.uPlot) return null;
    var time = spec.time !== false, span = spec.span || 60;
    var series = [time ? { label: "time", value: function (u, v) { return v == null ? "--" : T.time(v); } } : { label: spec.xLabel }];
    spec.series.forEach(function (s) {
      var o = { label: s.label, stroke: s.stroke, width: s.width == null ? 1.5 : s.width, spanGaps: !!s.spanGaps };
      if (s.dash) o.dash = s.dash;
      if (s.scale) o.scale = s.scale;
      if (s.bars) { o.paths = window.uPlot.paths.bars({ size: [0.6, 6] }); o.fill = s.stroke + "66"; o.width = 0; o.points = { show: false }; }
      series.push(o);
    });
    var x = { time: time };
    if (time) {
      x.range = function (u, lo, hi) {
        if (spec.window) return spec.window();
        if (lo == null || hi == null) { var now = Date.now() / 1000; return [now - span, now]; }
        return hi - lo < span ? [hi - span, hi] : [lo, hi];
      };
    }
    var scales = Object.assign({ x: x, y: { range: spec.yRange || function (u, lo, hi) { return [0, Math.max((hi || 0) * 1.1, 1)]; } } },
                               spec.scales || {});
    // axis text and grid from the page's colours, so dark mode reads too
    var css = getComputedStyle(document.documentElement);
    var ink = css.getPropertyValue("--muted").trim() || "#66736e", line = css.getPropertyValue("--line").trim() || "#e2e8e5";
    var look = { stroke: ink, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    var xAxis = Object.assign(time ? { space: 70, incrs: TIME_INCRS, values: timeTicks, label: "UTC", labelSize: 18 } : { label: spec.xLabel }, look);
    var width = function () { return Math.max(el.clientWidth || 0, 300); };
    var opts = { width: width(), height: spec.height || 180, series: series, scales: scales,
      axes: [xAxis, Object.assign({ label: spec.unit, size: 60 }, look)], legend: { live: true } };
    if (time) opts.tzDate = function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); };
    if (spec.hooks) opts.hooks = spec.hooks;
    var chart = new window.uPlot(opts, data, el);
    window.addEventListener("resize", function () { chart.setSize({ width: width(), height: opts.height }); });
    return chart;
  };
})();
