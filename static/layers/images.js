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
