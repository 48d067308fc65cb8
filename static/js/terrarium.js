// Terrarium: the live list and the live detail page over one websocket,
// actions without reloads, uptime ticks.  Shared parts: app.js (Terrarium).
(function () {
  "use strict";
  var T = window.Terrarium;

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  // the container a form or toast is about: its list row or the detail head
  function subject(el) {
    var box = el && el.closest("[data-container-id]");
    return box ? { id: box.dataset.containerId, name: box.dataset.name } : null;
  }

  // ---- plain forms that ask first (data-confirm): remove an image, ...
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.classList.contains("action-form") || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
  });

  // ---- actions: POST with CSRF through fetch; the websocket brings the new state
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList.contains("action-form")) return;
    ev.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var button = form.querySelector("button"), who = subject(form);
    var title = who && who.name;
    if (button) { button.disabled = true; button.classList.add("busy"); }
    fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrfToken() }
    }).then(function (r) {
      return r.json().catch(function () { return { ok: false, message: "Refused (HTTP " + r.status + ")" }; });
    }).then(function (data) {
      T.toast({ title: title, text: data.message, kind: data.ok ? "success" : "error" });
      if (data.ok && form.dataset.action === "remove" && document.getElementById("detail-head")) {
        window.location.href = "/";
        return;
      }
      if (who) refresh(who.id);
    }).catch(function (e) {
      T.toast({ title: title, text: (form.dataset.action || "Request") + " not sent: " + T.failure(e), kind: "error" });
    }).finally(function () { if (button) { button.disabled = false; button.classList.remove("busy"); } });
  });

  // ---- live updates: swap server-rendered fragments in place
  var rows = document.getElementById("container-rows");
  var head = document.getElementById("detail-head");
  var pending = {};

  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  function emptyNote() {
    rows = document.getElementById("container-rows") || rows;      // the list swaps its table in
    var note = document.getElementById("no-containers");
    if (note && rows) note.hidden = rows.children.length > 0;
  }

  // The detail page: the head fragment carries the header and every card
  // showing the container's state (one render of one row): each replaces the
  // element with its id.
  function swapParts(html) {
    Array.prototype.slice.call(fragment(html).children).forEach(function (fresh) {
      var old = fresh.id && document.getElementById(fresh.id);
      if (old) old.replaceWith(fresh);
    });
    head = document.getElementById("detail-head");
  }

  function swapRow(el, html) {
    var fresh = fragment(html).firstElementChild;
    var only = rows.closest("table").dataset.engine;      // the list filtered by engine
    if (only && fresh.dataset.engine !== only) { if (el) el.remove(); return; }
    if (el) el.replaceWith(fresh);
    else rows.insertBefore(fresh, rows.firstChild);
  }

  // One fetch at a time per container; an event arriving meanwhile asks for
  // one more after it, so the last change is never missed.
  function refresh(id) {
    if (pending[id]) { pending[id] = "again"; return; }
    if (rows) rows = document.getElementById("container-rows") || rows;
    var url, el;
    if (rows) {
      el = rows.querySelector('tr[data-container-id="' + id + '"]');
      url = "/containers/" + id + "/row/";
    } else if (head && head.dataset.containerId === id) {
      url = head.dataset.headUrl;
    } else return;
    pending[id] = true;
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 404) { if (el && rows) el.remove(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html) { if (rows) swapRow(el, html); else swapParts(html); }
      emptyNote();
      tick();
    }).catch(T.failure).finally(function () {
      var again = pending[id] === "again";
      delete pending[id];
      if (again) refresh(id);
    });
  }

  // After a drop (or when the server says we fell behind): fetch it all again.
  function resync() {
    if (T.list) { T.list.resync(); return; }      // the paged list (list.js) refetches its page
    if (head) { refresh(head.dataset.containerId); return; }
    fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var fresh = html && new DOMParser().parseFromString(html, "text/html").getElementById("container-rows");
        if (fresh && rows) { rows.replaceChildren.apply(rows, Array.prototype.slice.call(fresh.children)); emptyNote(); tick(); }
      }).catch(T.failure);
  }

  function onEvent(msg) {
    if (T.list && msg) { T.list.event(msg); return; }     // the paged list: list.js
    if (!msg || !msg.container) return;
    var id = msg.container.id;
    if (msg.type === "container.removed") {
      if (rows) {
        var el = rows.querySelector('tr[data-container-id="' + id + '"]');
        if (el) el.remove();
        emptyNote();
      } else if (head && head.dataset.containerId === id) {
        T.toast({ title: msg.container.name, text: "This container was removed.", kind: "error" });
      }
      return;
    }
    if (msg.type === "container.changed") refresh(id);
  }

  var indicator = document.getElementById("live-indicator");
  function live(on) {
    if (indicator) indicator.classList.toggle("on", on);
    document.body.dataset.live = on ? "on" : "off";
  }
  if (rows || head) {
    T.containers = T.socket("/ws/containers/", { message: onEvent, resync: resync,
      open: function () {
        live(true);
        if (T.list) T.list.opened();
        // a change published between this page's data and its socket: the server says resync
        var taken = document.querySelector("[data-taken-at]");
        if (taken) T.containers.send({ type: "since", at: +taken.dataset.takenAt });
      }, close: function () { live(false); } });
  }

  // ---- uptime cells count up between events
  function tick() {
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var t = Date.parse(el.dataset.since);
      if (!isNaN(t)) el.textContent = T.duration((Date.now() - t) / 1000);
    });
  }
  setInterval(tick, 1000);
})();
