// A container's log, live, over ws/containers/<id>/logs/ (dashboard/containers/logsocket.py):
// the logs page (filters, search, download) and the detail page's short panel
// (the same view without the tools).  Each message is acknowledged once shown,
// which is what lets the server hold back (and count as skipped) what a page
// that falls behind cannot take.  Shared parts: app.js (Terrarium).
(function () {
  "use strict";
  var T = window.Terrarium;
  var view = document.getElementById("log-view");
  if (!view || !view.dataset.containerId) return;
  var id = view.dataset.containerId, MAX = Number(view.dataset.maxLines) || 5000;
  function $(x) { return document.getElementById(x); }
  var tools = $("log-tools"), stateEl = $("log-state"), skippedEl = $("log-skipped"), countEl = $("log-count"), matchesEl = $("log-matches");
  var search = $("log-search"), only = $("log-only"), follow = $("log-follow"), download = $("log-download");
  var boxes = { stdout: $("log-stdout"), stderr: $("log-stderr") }, times = $("log-times-on");
  if ($("log-max")) $("log-max").textContent = String(MAX);

  var lines = [];                    // {el, tx, t, s, x}
  var carry = { stdout: "", stderr: "" };
  var last = "";                     // the time of the last line received: a reconnect goes on after it
  var sock = null, needle = "";
  // (for tests and the curious: what this page got and was told it missed)
  var stats = window.terrariumLogs = { lines: lines, received: 0, skipped: 0, messages: 0, held_max: 0 };

  function query() {
    var q = new URLSearchParams();
    if (tools) {
      ["tail", "since", "until"].forEach(function (k) { var v = tools.elements[k].value.trim(); if (v) q.set(k, v); });
    } else if (view.dataset.tail) q.set("tail", view.dataset.tail);
    return q;
  }
  function path() {
    var q = query();
    if (last) q.set("after", last);
    return "/ws/containers/" + id + "/logs/?" + q.toString();
  }

  // ---- one line
  var second = "", secondText = "";
  function when(t) {               // "2026-11-30 20:00:00.123" (the one format, to the millisecond)
    var s = t.slice(0, 19), ms = t.slice(19, 23);
    if (s !== second) { second = s; secondText = T.time(s + "Z", "date") + " " + T.time(s + "Z", "clock"); }
    return secondText + (ms.charAt(0) === "." ? ms : "");
  }
  function paint(l) {
    var hit = !needle || l.x.toLowerCase().indexOf(needle) >= 0;
    l.el.classList.toggle("nomatch", !hit);
    if (!needle || !hit) { if (l.marked || l.tx.firstChild === null) { l.tx.textContent = l.x; l.marked = false; } return hit; }
    var low = l.x.toLowerCase(), frag = document.createDocumentFragment(), i = 0, j;
    while ((j = low.indexOf(needle, i)) >= 0) {
      if (j > i) frag.appendChild(document.createTextNode(l.x.slice(i, j)));
      var m = document.createElement("mark");
      m.textContent = l.x.slice(j, j + needle.length);
      frag.appendChild(m);
      i = j + needle.length;
    }
    if (i < l.x.length) frag.appendChild(document.createTextNode(l.x.slice(i)));
    l.tx.replaceChildren(frag);
    l.marked = true;
    return hit;
  }
  var proto = {};                  // a line of each stream, cloned (cheaper than building each)
  ["stdout", "stderr"].forEach(function (s) {
    var el = document.createElement("div");
    el.className = "ln " + s;
    ["ts", "st", "tx"].forEach(function (c) { var x = document.createElement("span"); x.className = c; el.appendChild(x); });
    el.children[1].textContent = s === "stderr" ? "err" : "out";
    proto[s] = el;
  });
  function add(frag, t, s, x) {
    var el = (proto[s] || proto.stdout).cloneNode(true), ts = el.firstChild, tx = el.lastChild;
    if (t) { ts.textContent = when(t); ts.title = t; el.dataset.t = t; }
    var l = { el: el, tx: tx, t: t, s: s, x: x, marked: false };
    tx.textContent = x;
    if (needle) paint(l);
    lines.push(l);
    frag.appendChild(el);
  }
  function marker(frag, text, cls) {
    var el = document.createElement("div");
    el.className = "ln note " + cls;
    el.textContent = text;
    lines.push({ el: el, note: true });
    frag.appendChild(el);
    return el;
  }
  function split(frag, s, text) {
    var parts = (carry[s] + text).split("\n");
    carry[s] = parts.pop();
    if (carry[s].length > 1 << 20) { parts.push(carry[s]); carry[s] = ""; }
    parts.forEach(function (p) {
      var t = p.charAt(29) === "Z" && p.charAt(30) === " " && p.charAt(10) === "T" ? p.slice(0, 30) : "";
      if (t) last = t;
      stats.received++;
      add(frag, t, s, t ? p.slice(31) : p);
    });
  }
  function flushCarry(frag) {
    ["stdout", "stderr"].forEach(function (s) { if (carry[s]) { var c = carry[s]; carry[s] = ""; split(frag, s, c + "\n"); } });
  }

  function trim() {            // the oldest go (in one splice: a flood brings thousands at a time)
    if (lines.length > MAX) lines.splice(0, lines.length - MAX).forEach(function (l) { l.el.remove(); });
  }
  function counts() {
    var n = 0, hits = 0;
    lines.forEach(function (l) { if (!l.note) { n++; if (needle && !l.el.classList.contains("nomatch")) hits++; } });
    if (countEl) countEl.textContent = String(n);
    view.dataset.lines = String(n);
    if (matchesEl) matchesEl.textContent = needle ? hits + " matching line" + (hits === 1 ? "" : "s") : "";
  }
  var scrolling = false;
  function scroll() {         // once a frame, not once a message (each forces a layout)
    if (scrolling || (follow && !follow.checked)) return;
    scrolling = true;
    requestAnimationFrame(function () { scrolling = false; view.scrollTop = view.scrollHeight; });
  }

  // ---- the socket
  function state(text, cls) {
    if (stateEl) { stateEl.textContent = text; stateEl.className = cls || ""; }
    view.dataset.state = cls || "";
  }
  function onMessage(msg) {
    if (msg.type === "log") {
      var frag = document.createDocumentFragment();
      stats.messages++;
      stats.held_max = Math.max(stats.held_max, msg.held_max || 0);
      if (msg.skipped) {
        flushCarry(frag);
        stats.skipped += msg.skipped;
        if (skippedEl) skippedEl.textContent = " · " + stats.skipped + " lines skipped while this page was behind";
        var m = marker(frag, "… skipped " + msg.skipped + " line" + (msg.skipped === 1 ? "" : "s") +
                       " (this page fell behind the log; Download has them) …", "skip");
        m.dataset.skipped = String(msg.skipped);
      }
      (msg.pieces || []).forEach(function (p) { split(frag, p[0], p[1]); });
      trim();
      view.appendChild(frag);
      counts(); scroll();
      sock.send({ ack: msg.seq });
    } else if (msg.type === "state") {
      if (msg.following) state("following live", "following");
      else if (msg.status === "until") state("showing up to the until time", "ended");
      else if (msg.status === "removed") state("the container was removed", "ended");
      else state("not running (" + msg.status + "): new lines show when it starts", "stopped");
    } else if (msg.type === "error") {
      state(msg.message, "error");
    }
  }
  function open() {
    sock = T.socket(path, {
      message: onMessage,
      open: function () { state("connected", "connected"); },
      close: function (code) { state(code === 4404 ? "no such container" : "disconnected, retrying…", "off"); }
    });
  }

  // ---- filters (on the page; the socket only for tail, since and until)
  function filters() {
    ["stdout", "stderr"].forEach(function (s) { if (boxes[s]) view.classList.toggle("hide-" + s, !boxes[s].checked); });
    if (times) view.classList.toggle("no-times", !times.checked);
    if (only) view.classList.toggle("only", only.checked);
    var want = search ? search.value.trim().toLowerCase() : "";
    if (want !== needle) { needle = want; lines.forEach(function (l) { if (!l.note) paint(l); }); }
    counts();
    if (download) {
      var q = new URLSearchParams();
      ["since", "until"].forEach(function (k) { var v = tools.elements[k].value.trim(); if (v) q.set(k, v); });
      var on = ["stdout", "stderr"].filter(function (s) { return boxes[s].checked; });
      if (on.length === 1) q.set("stream", on[0]);
      if (only && only.checked && needle) q.set("q", search.value.trim());
      if (times && times.checked) q.set("timestamps", "1");
      download.href = download.href.split("?")[0] + (q.toString() ? "?" + q.toString() : "");
    }
  }
  if (tools) {
    tools.addEventListener("input", filters);
    tools.addEventListener("change", filters);
    tools.addEventListener("submit", function (ev) {     // tail, since, until: read the log again
      ev.preventDefault();
      var q = query();
      if (search && search.value.trim()) q.set("q", search.value.trim());
      history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q.toString() : ""));
      if (sock) sock.close();
      lines.splice(0).forEach(function (l) { l.el.remove(); });
      carry = { stdout: "", stderr: "" }; last = "";
      counts();
      open();
    });
    filters();
  }
  open();
})();
