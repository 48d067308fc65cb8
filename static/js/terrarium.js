// Terrarium: live list over one websocket, actions without reloads, uptime ticks.
// No build step, no dependencies.
(function () {
  "use strict";

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function toast(text, ok) {
    var box = document.getElementById("messages");
    if (!box) return;
    var el = document.createElement("div");
    el.className = "msg " + (ok ? "msg-success" : "msg-error");
    el.textContent = text;
    box.appendChild(el);
    setTimeout(function () { el.classList.add("fade"); }, 4000);
    setTimeout(function () { el.remove(); }, 4600);
  }

  // messages rendered with the page fade like the ones added later
  document.querySelectorAll("#messages .msg").forEach(function (el) {
    setTimeout(function () { el.classList.add("fade"); }, 6000);
    setTimeout(function () { el.remove(); }, 6600);
  });

  // ---- actions: POST with CSRF through fetch; the websocket brings the new state
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList.contains("action-form")) return;
    ev.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var button = form.querySelector("button");
    if (button) { button.disabled = true; button.classList.add("busy"); }
    fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrfToken() }
    }).then(function (r) {
      return r.json().catch(function () { return { ok: false, message: "Refused (HTTP " + r.status + ")" }; });
    }).then(function (data) {
      toast(data.message, data.ok);
      var id = form.closest("[data-container-id]");
      if (data.ok && form.dataset.action === "remove" && document.getElementById("detail-head")) {
        window.location.href = "/";
        return;
      }
      if (id) refresh(id.dataset.containerId);
    }).catch(function (e) { toast("Request failed: " + e, false); })
      .finally(function () { if (button) { button.disabled = false; button.classList.remove("busy"); } });
  });

  // ---- live updates: swap server-rendered fragments in place
  var rows = document.getElementById("container-rows");
  var head = document.getElementById("detail-head");
  var pending = {};

  function swap(el, html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    var fresh = t.content.firstElementChild;
    if (el) el.replaceWith(fresh);
    else if (rows) rows.insertBefore(fresh, rows.firstChild);
    tick();
  }

  function emptyNote() {
    var note = document.getElementById("no-containers");
    if (note && rows) note.hidden = rows.children.length > 0;
  }

  function refresh(id) {
    if (pending[id]) return;      // one fetch at a time per container
    pending[id] = true;
    var url, el;
    if (rows) {
      el = rows.querySelector('tr[data-container-id="' + id + '"]');
      url = "/containers/" + id + "/row/";
    } else if (head && head.dataset.containerId === id) {
      el = document.getElementById("detail-head");
      url = head.dataset.headUrl;
    } else { delete pending[id]; return; }
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 404) { if (el && rows) el.remove(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html) swap(el, html);
      if (!rows) head = document.getElementById("detail-head");
      emptyNote();
    }).finally(function () { delete pending[id]; });
  }

  function onEvent(msg) {
    if (!msg || !msg.container) return;
    var id = msg.container.id;
    if (msg.type === "container.removed") {
      if (rows) {
        var el = rows.querySelector('tr[data-container-id="' + id + '"]');
        if (el) el.remove();
        emptyNote();
      } else if (head && head.dataset.containerId === id) {
        toast("This container was removed.", false);
      }
      return;
    }
    if (msg.type === "container.changed") refresh(id);
  }

  var indicator = document.getElementById("live-indicator");
  var delay = 1000;
  function connect() {
    if (!rows && !head) return;
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + location.host + "/ws/containers/");
    ws.onopen = function () { delay = 1000; if (indicator) indicator.classList.add("on"); document.body.dataset.live = "on"; };
    ws.onmessage = function (e) { try { onEvent(JSON.parse(e.data)); } catch (err) { /* ignore */ } };
    ws.onclose = function (e) {
      if (indicator) indicator.classList.remove("on");
      document.body.dataset.live = "off";
      if (e.code === 4401) { location.reload(); return; }   // session gone: go log in
      if (e.code === 4403) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();

  // ---- uptime cells count up between events
  function fmt(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    s = Math.floor(s % 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function tick() {
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var t = Date.parse(el.dataset.since);
      if (!isNaN(t)) el.textContent = fmt(Math.max(0, (Date.now() - t) / 1000));
    });
  }
  setInterval(tick, 1000);
})();
