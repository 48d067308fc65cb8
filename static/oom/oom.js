// Terrarium OOM toasts: every page listens on ws/events/ and shows each kill.
// No build step, no dependencies.
(function () {
  "use strict";
  var box = document.getElementById("oom-toasts");
  if (!box || !window.WebSocket) return;

  function kb(v) { return v == null ? "?" : (v >= 1024 ? (v / 1024).toFixed(1) + " MB" : v + " kB"); }

  // One toast per container while kills keep coming: a container in an OOM
  // loop updates its toast ("12 kills in 10 s") instead of stacking one per kill.
  var toasts = {};
  function later(a) {
    clearTimeout(a._fade); clearTimeout(a._gone);
    a.classList.remove("fade");
    a._fade = setTimeout(function () { a.classList.add("fade"); }, 12000);
    a._gone = setTimeout(function () { a.remove(); delete toasts[a.dataset.oomKey]; }, 12600);
  }

  function show(ev) {
    var where = ev.scope === "host" ? "host" : (ev.container_name || (ev.container_id || "").slice(0, 12));
    var who = ev.killed_pid ? ev.killed_command + " (pid " + ev.killed_pid + ")" : "a process";
    var key = ev.scope === "host" ? "host" : (ev.container_id || where);
    var what = who + " killed" + (ev.is_init ? " — the container died" : "") + "; limit " + kb(ev.limit_kb);
    var a = toasts[key];
    if (a) {
      var n = Number(a.dataset.kills) + 1;
      var secs = Math.max(1, Math.round((Date.now() - Number(a.dataset.first)) / 1000));
      a.dataset.kills = n;
      a.href = ev.url;
      a.querySelector("strong").textContent = n + " OOM kills in " + where + " in " + secs + " s";
      a.querySelector("span").textContent = "last: " + what;
    } else {
      a = toasts[key] = document.createElement("a");
      a.className = "oom-toast";
      a.href = ev.url;
      a.dataset.oomKey = key; a.dataset.kills = 1; a.dataset.first = Date.now();
      a.setAttribute("role", "alert");
      var title = document.createElement("strong");
      title.textContent = "OOM kill in " + where;
      var body = document.createElement("span");
      body.textContent = what;
      a.appendChild(title); a.appendChild(body);
      box.appendChild(a);
    }
    later(a);
    var rows = document.querySelector("#oom-events tbody");
    if (rows && !document.querySelector('#oom-events [data-oom-id="' + ev.id + '"]')) {
      var tr = document.createElement("tr");
      tr.dataset.oomId = ev.id;
      var cells = [ev.at.replace("T", " ").slice(0, 19), where, who, ev.is_init ? "yes — the container died" : "no",
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
    var key = w.container_id + ":" + w.reason;
    warned[w.container_id] = { at: Date.now(), w: w };
    badge();
    if (box.querySelector('[data-warn="' + key + '"]')) return;
    var a = document.createElement("a");
    a.className = "oom-toast oom-warn";
    a.href = w.url;
    a.dataset.warn = key;
    a.setAttribute("role", "status");
    var title = document.createElement("strong");
    title.textContent = "Near OOM: " + (w.container_name || w.container_id.slice(0, 12));
    var body = document.createElement("span");
    body.textContent = w.text + " — " + kb(Math.round(w.usage / 1024)) + " of " + kb(Math.round(w.limit / 1024));
    a.appendChild(title); a.appendChild(body);
    box.appendChild(a);
    setTimeout(function () { a.classList.add("fade"); }, 10000);
    setTimeout(function () { a.remove(); }, 10600);
  }

  var delay = 1000;
  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/events/");
    ws.onopen = function () { delay = 1000; document.body.dataset.oomSocket = "open"; };
    ws.onmessage = function (m) {
      var data = JSON.parse(m.data);
      if (data.type === "oom.killed") show(data.event);
      else if (data.type === "oom.warning") warn(data.warning);
    };
    ws.onclose = function (e) {
      document.body.dataset.oomSocket = "closed";
      if (e.code === 4401 || e.code === 4403) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
