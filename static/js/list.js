// The container list at scale: search as you type, filters, sort and pages
// fetched from the server (the URL keeps the query), the page refetched on
// change events (counts, membership, order), usage of the running rows on
// screen over the containers socket, and bulk stop/remove.  Shared parts:
// app.js (Terrarium); the socket is terrarium.js's (Terrarium.containers).
(function () {
  "use strict";
  var T = window.Terrarium;
  var card = document.getElementById("list-card");
  var form = document.getElementById("list-tools");
  if (!card || !form) return;
  var DEFAULTS = { sort: "-created", per: "50", page: "1" };
  var inflight = null, again = null, timer = null, loads = 0, sentWatch = "";
  var picked = new Map();                   // id → name, across page changes

  function main() { return document.getElementById("list-main"); }

  // the form's query as "/?...", without empty or default values
  function formUrl() {
    var p = new URLSearchParams();
    new FormData(form).forEach(function (v, k) {
      if (v !== "" && DEFAULTS[k] !== v) p.append(k, v);
    });
    var s = p.toString();
    return form.getAttribute("action") + (s ? "?" + s : "");
  }

  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // Fetch the list's parts for url and swap them in (the newest request wins).
  function load(url, how) {
    if (inflight) inflight.abort();
    var ctrl = inflight = new AbortController();
    var t0 = performance.now();
    return fetch(url, { credentials: "same-origin", signal: ctrl.signal, headers: { "X-Requested-With": "fetch" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status)); })
      .then(function (html) {
        if (ctrl !== inflight) return;
        inflight = null;
        Array.prototype.slice.call(fragment(html).children).forEach(function (fresh) {
          var old = fresh.id && document.getElementById(fresh.id);
          if (old) old.replaceWith(fresh);
        });
        var m = main();
        if (how === "push") history.pushState(null, "", m.dataset.url);
        else if (how !== "keep") history.replaceState(null, "", m.dataset.url);
        form.elements.sort.value = m.dataset.sort;
        form.elements.engine.value = m.dataset.engine;
        restorePicks();
        watch();
        loads += 1;
        document.body.dataset.listLoads = String(loads);
        document.body.dataset.listMs = String(Math.round(performance.now() - t0));
      })
      .catch(function (e) {
        if (e && e.name === "AbortError") return;
        T.toast({ text: "The list could not be refreshed: " + T.failure(e), kind: "error" });
      });
  }

  // A change event: refetch the page shown (once per burst, and once more after it).
  function refetchSoon() {
    if (timer) return;
    timer = setTimeout(function () {
      timer = null;
      if (inflight) { again = true; return; }
      load(main().dataset.url, "keep").then(function () { if (again) { again = false; refetchSoon(); } });
    }, 120);
  }

  // ---- the query: typing, filters, sort and page links, history
  form.addEventListener("submit", function (ev) { ev.preventDefault(); load(formUrl()); });
  form.addEventListener("input", function (ev) { if (ev.target.name === "q") load(formUrl()); });
  form.addEventListener("change", function (ev) { if (ev.target.tagName === "SELECT") load(formUrl(), "push"); });
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("#list-main th a.sort, #pager a, #engine-filter a");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    load(a.getAttribute("href").charAt(0) === "?" ? form.getAttribute("action") + a.getAttribute("href") : a.getAttribute("href"), "push");
  });
  window.addEventListener("popstate", function () {
    var p = new URLSearchParams(location.search);
    ["q", "state", "image"].forEach(function (k) { form.elements[k].value = p.get(k) || ""; });
    form.elements.per.value = p.get("per") || DEFAULTS.per;
    load(location.pathname + location.search, "keep");
  });

  // ---- usage of the running rows on this page (the sampler samples only these)
  function watch(force) {
    var ids = Array.prototype.map.call(document.querySelectorAll("#container-rows tr[data-sampled]"),
                                       function (tr) { return tr.dataset.containerId; });
    var key = ids.join(",");
    if (!force && key === sentWatch) return;
    sentWatch = key;
    if (T.containers) T.containers.send({ type: "watch", ids: ids });
  }

  function usage(msg) {
    var tr = document.querySelector('#container-rows tr[data-container-id="' + msg.id + '"]');
    if (!tr) return;
    tr.dataset.samples = String(+(tr.dataset.samples || 0) + 1);
    var mem = tr.querySelector(".usage-mem"), cpu = tr.querySelector(".usage-cpu");
    if (mem) {
      mem.querySelector(".mem-used").textContent = T.bytes(msg.mem);
      var memLimit = mem.querySelector(".mem-limit");    // another owner's row: its limit as sampled
      if (memLimit) memLimit.textContent = T.bytes(msg.mem_limit);
      mem.dataset.used = msg.mem == null ? "" : String(msg.mem);
      var lim = msg.mem_limit, cls = "";
      if (msg.mem != null && lim) cls = msg.mem / lim > 0.9 ? "hot" : msg.mem / lim > 0.7 ? "warm" : "";
      mem.classList.toggle("hot", cls === "hot");
      mem.classList.toggle("warm", cls === "warm");
    }
    if (cpu) {
      cpu.querySelector(".cpu-used").textContent = msg.cpu == null ? "…" : (msg.cpu * 100).toFixed(1) + " %";
      cpu.dataset.used = msg.cpu == null ? "" : String(msg.cpu);
      var cpuLimit = cpu.querySelector(".cpu-limit");
      if (cpuLimit) cpuLimit.textContent = msg.cpu_limit == null ? "—" : String(+msg.cpu_limit.toPrecision(6));
    }
    var pids = tr.querySelector(".usage-pids");
    if (pids) {
      pids.querySelector(".pids-used").textContent = msg.pids == null ? "…" : String(msg.pids);
      var pidsLimit = pids.querySelector(".pids-limit");  // another owner's row: pids.max as sampled
      if (pidsLimit) pidsLimit.textContent = msg.pids_max == null ? "—" : String(msg.pids_max);
    }
  }

  T.list = {
    event: function (msg) {
      if (msg.type === "usage") { usage(msg); return; }
      if (msg.type === "container.changed" || msg.type === "container.removed") refetchSoon();
    },
    resync: function () { refetchSoon(); },
    opened: function () { watch(true); }
  };

  // ---- selection and bulk actions (operators only: the bar is not there for viewers)
  var bar = document.getElementById("bulk-bar");
  function restorePicks() {
    document.querySelectorAll("#container-rows .pick-one").forEach(function (box) { box.checked = picked.has(box.value); });
    showBar();
  }
  function showBar() {
    if (!bar) return;
    bar.hidden = picked.size === 0;
    document.getElementById("bulk-count").textContent = picked.size + " selected";
    var all = document.getElementById("pick-all"), boxes = document.querySelectorAll("#container-rows .pick-one");
    if (all) all.checked = boxes.length > 0 && Array.prototype.every.call(boxes, function (b) { return b.checked; });
  }
  document.addEventListener("change", function (ev) {
    var box = ev.target;
    if (box.id === "pick-all") {
      document.querySelectorAll("#container-rows .pick-one").forEach(function (b) {
        b.checked = box.checked;
        pick(b);
      });
    } else if (box.classList && box.classList.contains("pick-one")) pick(box);
    showBar();
  });
  function pick(box) {
    if (box.checked) picked.set(box.value, box.closest("tr").dataset.name);
    else picked.delete(box.value);
  }

  function names(list) {
    var shown = list.slice(0, 20).join(", ");
    return list.length > 20 ? shown + " and " + (list.length - 20) + " more" : shown;
  }

  if (bar) {
    document.getElementById("bulk-clear").addEventListener("click", function () { picked.clear(); restorePicks(); });
    bar.addEventListener("click", function (ev) {
      var button = ev.target.closest("button[data-bulk]");
      if (!button || picked.size === 0) return;
      var action = button.dataset.bulk, ids = Array.from(picked.keys()), who = Array.from(picked.values());
      var verb = action === "stop" ? "Stop" : "Remove";
      if (!window.confirm(verb + " " + ids.length + " container" + (ids.length === 1 ? "" : "s") + ": " + names(who) + "?")) return;
      var body = new FormData();
      ids.forEach(function (id) { body.append("id", id); });
      if (action === "stop") body.append("timeout", document.getElementById("bulk-timeout").value);
      var csrf = bar.querySelector("input[name=csrfmiddlewaretoken]").value;
      button.disabled = true;
      button.classList.add("busy");
      fetch(button.dataset.url, { method: "POST", body: body, credentials: "same-origin",
                                  headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrf } })
        .then(function (r) { return r.json().catch(function () { return { ok: false, message: "Refused (HTTP " + r.status + ")", results: [] }; }); })
        .then(function (data) {
          T.toast({ text: data.message, kind: data.ok ? "success" : "error", ttl: data.ok ? 4000 : 10000 });
          report(verb, data.results || []);
          // removed ones leave the selection; stopped ones stay in it (remove may follow)
          if (action === "remove") (data.results || []).forEach(function (r) { if (r.ok) picked.delete(r.id); });
          refetchSoon();
        })
        .catch(function (e) { T.toast({ text: verb + " not sent: " + T.failure(e), kind: "error" }); })
        .finally(function () { button.disabled = false; button.classList.remove("busy"); restorePicks(); });
    });
  }

  // one line per container: what happened to it
  function report(verb, results) {
    var box = document.getElementById("bulk-results");
    if (!box) return;
    box.replaceChildren();
    var title = document.createElement("strong");
    title.textContent = verb + ": " + results.filter(function (r) { return r.ok; }).length + " of " + results.length + " done";
    box.appendChild(title);
    var ul = document.createElement("ul");
    results.forEach(function (r) {
      var li = document.createElement("li");
      li.dataset.containerId = r.id;
      li.dataset.ok = r.ok ? "yes" : "no";
      li.className = r.ok ? "result-ok" : "result-error";
      li.textContent = r.name + ": " + r.message;
      ul.appendChild(li);
    });
    box.appendChild(ul);
    box.hidden = false;
  }

  watch();
})();
