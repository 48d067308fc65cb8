// Host pages (namespaces, cgroups): re-fetch the page's live part every few
// seconds while the tab is visible, and swap it in.  The server shares one
// read of /proc and /sys per second among all viewers.
(function () {
  "use strict";
  var root = document.getElementById("host-live");
  if (!root) return;
  var T = window.Terrarium;
  var every = +root.dataset.refreshMs || 2000, state = document.getElementById("host-state");
  var url = location.pathname + "?fragment=1", busy = false;
  function say(text, ok) { if (state) { state.textContent = text; state.classList.toggle("on", !!ok); } }
  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 403) { say("signed out"); return null; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html == null) return;
        root.innerHTML = html;
        root.dataset.refreshed = String((+root.dataset.refreshed || 0) + 1);
        say("live · " + T.time(new Date()), true);
      })
      .catch(function (e) { say("refresh failed: " + T.failure(e)); })
      .then(function () { busy = false; });
  }
  say("live", true);
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
