// Terrarium OOM toasts: every page listens on ws/events/ and shows each kill.
// Shared parts: app.js (Terrarium).
(function () {
  "use strict";
  var T = window.Terrarium;
  var box = document.getElementById("oom-toasts");
  if (!box || !window.WebSocket) return;

  function kb(v) { return v == null ? "?" : T.bytes(v * 1024); }

  // One toast per container while kills keep coming: a container in an OOM
  // loop updates its toast ("12 kills in 10 s") instead of stacking one per kill.
  // Kills already toasted on this page (one may come live and again in a
  // catch-up), and the server's clock: the page was rendered at
  // data-server-now, about when its response began (navigation timing).
  // Not kept across pages: a toast on the page left behind is gone with it.
  var shown = {};
  function seen(id) {
    if (shown[id]) return true;
    shown[id] = true;
    return false;
  }
  var serverNow = Number(document.body.dataset.serverNow) || 0;
  var nav = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
  var respAt = nav ? nav.responseStart : performance.now();          // ms after the navigation began
  function serverClock() { return serverNow + (performance.now() - respAt) / 1000; }
  // Ask for what happened since the navigation began (the create form's POST
  // included), and after a drop since the socket closed.
  var since = serverNow ? serverNow - respAt / 1000 - 1 : 0;

  function show(ev) {
    if (ev.id != null && seen(ev.id)) return;
    var where = ev.scope === "host" ? "host" : (ev.container_name || (ev.container_id || "").slice(0, 12));
    var who = ev.killed_pid ? ev.killed_command + " (pid " + ev.killed_pid + ")" : "a process";
    var key = "oom:" + (ev.scope === "host" ? "host" : (ev.container_id || where));
    var what = who + " killed" + (ev.is_init ? " — the container died" : "") + "; limit " + kb(ev.limit_kb);
    var old = Array.prototype.find.call(box.children, function (a) { return a.dataset.toastKey === key; });
    var n = old ? Number(old.dataset.kills) + 1 : 1, first = old ? Number(old.dataset.first) : Date.now();
    var secs = Math.max(1, Math.round((Date.now() - first) / 1000));
    var a = T.toast({ box: box, key: key, cls: "oom-toast", role: "alert", href: ev.url, ttl: 12000,
                      title: n > 1 ? n + " OOM kills in " + where + " in " + secs + " s" : "OOM kill in " + where,
                      text: n > 1 ? "last: " + what : what });
    a.dataset.kills = n; a.dataset.first = first;
    var rows = document.querySelector("#oom-events tbody");
    if (rows && !document.querySelector('#oom-events [data-oom-id="' + ev.id + '"]')) {
      var tr = document.createElement("tr");
      tr.dataset.oomId = ev.id;
      var cells = [T.time(ev.at), where, who, ev.is_init ? "yes — the container died" : "no",
                   (ev.usage_kb || "?") + " / " + (ev.limit_kb || "?") + " kB", ev.detected_by];
      cells.forEach(function (t, i) {
        var td = document.createElement("td");
        if (i === 0) { var l = document.createElement("a"); l.href = ev.url; l.textContent = t; td.appendChild(l); }
        else td.textContent = t;
        tr.appendChild(td);
      });
      var empty = rows.querySelector(".empty");
      if (empty) empty.parentNode.remove();
      rows.insertBefore(tr, rows.firstChild);
    }
  }

  // Near-OOM warnings (oom.warning): an amber toast, and a badge on the
  // container's row (list) or header (detail), kept for a minute.
  var warned = {};
  function badge() {
    var now = Date.now();
    Object.keys(warned).forEach(function (id) {
      var w = warned[id];
      if (now - w.at > 60000) { delete warned[id]; }
      var sel = '#container-rows tr[data-container-id="' + id + '"] .name, #detail-head[data-container-id="' + id + '"] h1';
      document.querySelectorAll(sel).forEach(function (el) {
        var b = el.parentNode.querySelector(".oom-warn-badge");
        if (!warned[id]) { if (b) b.remove(); return; }
        if (!b) {
          b = document.createElement("span");
          b.className = "oom-warn-badge";
          el.insertAdjacentElement("afterend", b);
        }
        b.textContent = "near OOM " + Math.round(w.w.percent) + "%";
        b.title = w.w.text;
      });
    });
  }
  setInterval(badge, 1000);

  function warn(w) {
    warned[w.container_id] = { at: Date.now(), w: w };
    badge();
    var key = "warn:" + w.container_id + ":" + w.reason;
    if (Array.prototype.some.call(box.children, function (a) { return a.dataset.toastKey === key; })) return;
    T.toast({ box: box, key: key, cls: "oom-toast oom-warn", href: w.url, ttl: 10000,
              title: "Near OOM: " + (w.container_name || w.container_id.slice(0, 12)),
              text: w.text + " — " + T.bytes(w.usage) + " of " + T.bytes(w.limit) });
  }

  T.socket("/ws/events/", {
    open: function (ws) {
      document.body.dataset.oomSocket = "open";
      if (since) ws.send(JSON.stringify({ type: "catch-up", since: since }));
    },
    close: function () {
      document.body.dataset.oomSocket = "closed";
      if (serverNow) since = serverClock() - 1;
    },
    message: function (data) {
      if (data.type === "oom.killed") show(data.event);
      else if (data.type === "oom.warning") warn(data.warning);
    }
  });
})();
