// Terrarium: a container's layer page.  Polls the writable layer's changes
// once a second (only while the tab is visible), draws the change list and
// a growth graph of the upper size; answers "which layer is this path from".
// Shared parts (bytes, chart): app.js.
(function () {
  "use strict";
  var T = window.Terrarium, bytes = T.bytes;
  var box = document.getElementById("changes");
  if (!box) return;
  var url = box.dataset.url;
  var rows = document.getElementById("change-rows");
  var counts = document.getElementById("changes-counts");
  var note = document.getElementById("changes-note");
  var growth = document.getElementById("growth"), chart = null;
  var label = document.getElementById("growth-label");
  var live = document.getElementById("changes-live");
  var points = [];             // [unix seconds, bytes]
  var MAX_POINTS = 300;
  var lastKey = "";
  var busy = false;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function drawChanges(data) {
    var key = JSON.stringify(data.changes);
    if (key === lastKey) return;
    lastKey = key;
    rows.textContent = "";
    if (!data.changes.length) {
      var tr = document.createElement("tr");
      cell(tr, "No changes: the container sees its image as it is.", "muted").colSpan = 5;
      rows.appendChild(tr);
    }
    data.changes.forEach(function (ch) {
      var tr = document.createElement("tr");
      tr.className = "kind-" + ch.kind;
      tr.dataset.path = ch.path;
      cell(tr, ch.kind, "kind mono");
      cell(tr, ch.path + (ch.dir ? "/" : ""), "mono path");
      cell(tr, ch.dir || ch.kind === "D" ? "" : bytes(ch.size), "num");
      var from = cell(tr, ch.from === null ? "" : "lower " + ch.from, "mono");
      if (ch.from_digest) from.title = ch.from_digest;
      var bits = [];
      if (ch.opaque) bits.push("opaque dir: hides the lower copies");
      if (ch.kind === "D") bits.push(ch.whiteout ? "whiteout" : "hidden by an opaque dir");
      if (ch.kind === "C" && !ch.dir) bits.push("copied up");
      cell(tr, bits.join("; "), "muted small");
      rows.appendChild(tr);
    });
  }

  function drawGraph() {
    if (points.length < 1) return;
    var data = [points.map(function (p) { return p[0]; }), points.map(function (p) { return p[1] / 1024; })];
    if (chart) chart.setData(data);
    else chart = T.chart(growth, { height: 110, unit: "KiB", series: [{ label: "writable layer", stroke: "#1f7a5a" }] }, data);
    var max = Math.max.apply(null, points.map(function (p) { return p[1]; }));
    var span = points[points.length - 1][0] - points[0][0];
    label.textContent = "writable layer: " + bytes(points[points.length - 1][1]) +
      " (max " + bytes(max) + " over " + Math.round(span) + " s)";
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.error) { note.textContent = data.error; live.textContent = "stopped"; return; }
        live.textContent = data.status === "running" ? "live" : data.status;
        drawChanges(data);
        counts.textContent = data.counts.A + " added · " + data.counts.C + " changed · " +
          data.counts.D + " deleted · " + bytes(data.upper.bytes) + " in " + data.upper.files + " entries";
        note.textContent = data.truncated ? "Showing the first " + data.changes.length + " of " + data.total + " changes." : "";
        var size = document.getElementById("upper-size");
        if (size) size.textContent = bytes(data.upper.bytes);
        var files = document.getElementById("upper-files");
        if (files) files.textContent = data.upper.files;
        points.push([data.t, data.upper.bytes]);
        if (points.length > MAX_POINTS) points.shift();
        drawGraph();
      })
      .catch(function (e) { note.textContent = "Could not read the changes: " + T.failure(e); })
      .finally(function () { busy = false; });
  }
  poll();
  setInterval(poll, 1000);

  // ---- which layer is this path from
  var form = document.getElementById("origin-form");
  var out = document.getElementById("origin-result");
  function name(o) {
    if (!o) return "nowhere";
    return o.layer === "upper" ? "the writable layer (upper)" : "lower " + o.layer + " (" + o.digest.slice(0, 19) + ")";
  }
  if (form) form.addEventListener("submit", function (ev) {     // not on another owner's container
    ev.preventDefault();
    var path = document.getElementById("origin-path").value;
    fetch(form.dataset.url + "?path=" + encodeURIComponent(path), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.error) { out.textContent = d.error; return; }
        var text = d.shown ? d.path + " comes from " + name(d.shown) + "." : d.path + " does not exist in the container's view.";
        if (d.hidden.length) text += " It hides the copies in " + d.hidden.map(name).join(", ") + ".";
        out.textContent = text;
      })
      .catch(function (e) { out.textContent = "Lookup failed: " + T.failure(e); });
  });
})();
