// Terrarium: the image import form uploads with XHR so it can show progress.
(function () {
  "use strict";
  var form = document.getElementById("import-form");
  if (!form) return;
  var box = document.getElementById("import-progress");
  var bar = box.querySelector(".bar");
  var status = document.getElementById("import-status");

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var button = form.querySelector("button");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "fetch");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("input[name=csrfmiddlewaretoken]").value);
    box.hidden = false;
    box.classList.remove("failed");
    bar.style.width = "0%";
    status.textContent = "Uploading…";
    button.disabled = true;
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.round((e.loaded / e.total) * 100);
      bar.style.width = pct + "%";
      status.textContent = "Uploading… " + pct + "%";
    };
    xhr.upload.onload = function () { status.textContent = "Uploaded; checking digests and unpacking…"; };
    xhr.onload = function () {
      var data;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = { ok: false, message: "Refused (HTTP " + xhr.status + ")" }; }
      button.disabled = false;
      status.textContent = data.message;
      if (data.ok) { bar.style.width = "100%"; setTimeout(function () { window.location.reload(); }, 800); }
      else box.classList.add("failed");
    };
    xhr.onerror = function () {
      button.disabled = false; box.classList.add("failed");
      status.textContent = "Upload failed: " + window.Terrarium.failure(new TypeError("network")) + ".";
    };
    xhr.send(new FormData(form));
  });
})();

// The Pull and Push forms: a websocket each (dashboard/layers/consumers.py)
// that streams each layer's progress; the bar is the sum of the layers' bytes.
function terrariumTransfer(verb, request, done) {
  "use strict";
  var form = document.getElementById(verb + "-form");
  if (!form) return;
  var box = document.getElementById(verb + "-progress");
  var bar = box.querySelector(".bar");
  var status = document.getElementById(verb + "-status");
  var list = document.getElementById(verb + "-layers");
  var Verb = verb.charAt(0).toUpperCase() + verb.slice(1);

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var button = form.querySelector("button");
    var layers = {};
    var rows = {};
    list.textContent = "";
    box.hidden = false;
    box.classList.remove("failed");
    bar.style.width = "0%";
    status.textContent = "Connecting…";
    button.disabled = true;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + window.location.host + "/ws/images/" + verb + "/");
    var finished = false;
    ws.onopen = function () {
      status.textContent = "Resolving " + form.ref.value + "…";
      ws.send(JSON.stringify(request(form)));
    };
    ws.onmessage = function (msg) {
      var data = JSON.parse(msg.data);
      if (data.type === "progress") {
        layers[data.id] = data;
        if (!rows[data.id]) { rows[data.id] = document.createElement("li"); list.appendChild(rows[data.id]); }
        rows[data.id].textContent = data.id + ": " + data.status +
          (data.total ? " " + Math.round(100 * data.current / data.total) + "%" : "");
        var cur = 0, tot = 0;
        Object.keys(layers).forEach(function (k) { cur += layers[k].current || 0; tot += layers[k].total || 0; });
        var pct = tot ? Math.round(100 * cur / tot) : 0;
        bar.style.width = pct + "%";
        box.setAttribute("data-percent", pct);
        status.textContent = Verb + "ing… " + pct + "%";
      } else if (data.type === "done") {
        finished = true;
        bar.style.width = "100%";
        box.setAttribute("data-percent", 100);
        status.textContent = done(data);
        button.disabled = false;
        ws.close();
        if (verb === "pull") setTimeout(function () { window.location.reload(); }, 1500);
      } else if (data.type === "error") {
        finished = true;
        box.classList.add("failed");
        status.textContent = Verb + " failed: " + data.error;
        button.disabled = false;
        ws.close();
      }
    };
    ws.onclose = function () {
      button.disabled = false;
      if (!finished) { box.classList.add("failed"); status.textContent = "The connection closed before the " + verb + " ended."; }
    };
  });
}

terrariumTransfer("pull", function (form) {
  return { ref: form.ref.value, platform: form.platform.value };
}, function (data) {
  return "Pulled " + data.image + " (" + data.id.slice(0, 19) + ")" +
    (data.replaced ? "; the name moved off " + data.replaced.slice(0, 19) : "");
});

terrariumTransfer("push", function (form) {
  return { ref: form.ref.value, as: form.as.value };
}, function (data) {
  return "Pushed " + data.image + " (manifest " + data.digest.slice(0, 19) + ")";
});

// Each image's "push" button fills in the Push form and takes the eye there.
(function () {
  "use strict";
  var form = document.getElementById("push-form");
  if (!form) return;
  document.querySelectorAll("button.push-image").forEach(function (b) {
    b.addEventListener("click", function () {
      form.ref.value = b.getAttribute("data-ref");
      form.as.focus();
      form.scrollIntoView({ block: "center" });
    });
  });
})();
