// The web terminal: xterm.js (static/vendor/xterm) over ws/containers/<id>/terminal/
// (dashboard/containers/terminal.py).  Output arrives as binary frames and is
// acknowledged once xterm.js has drawn it (the server sends at most a window
// ahead of the acks); typed input, window size (the fit addon's) and acks go
// as JSON.  One session per page load: no reconnect (a new shell would not be
// the one that was lost).
(function () {
  "use strict";
  var box = document.getElementById("terminal");
  if (!box || !window.Terminal || !window.FitAddon) return;
  var status = document.getElementById("term-status");
  var term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
  var fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.terrariumTerminal = term;

  function mark() { box.dataset.cols = term.cols; box.dataset.rows = term.rows; }
  function say(text, state) { status.textContent = text; status.dataset.state = state; box.dataset.state = state; }
  mark();

  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + box.dataset.socket +
    "?rows=" + term.rows + "&cols=" + term.cols;
  var ws = new WebSocket(url), ready = false, ended = false;
  ws.binaryType = "arraybuffer";
  function send(obj) { if (ready && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); }

  ws.onmessage = function (e) {
    if (typeof e.data !== "string") {
      var bytes = new Uint8Array(e.data);
      term.write(bytes, function () { send({ ack: bytes.length }); });
      return;
    }
    var msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    if (msg.type === "terminal.ready") {
      ready = true;
      say("Connected to " + msg.container + ".", "open");
      send({ resize: [term.cols, term.rows] });      // the box may have changed meanwhile
      term.focus();
    } else if (msg.type === "terminal.exit") {
      ended = true;
      say("Session ended (exit " + msg.code + ").", "ended");
    } else if (msg.type === "terminal.error") {
      say(msg.message, "error");
    }
  };
  var CLOSED = { 4401: "Logged out: the session is closed.", 4403: "Terminals are for operators.",
    4404: "No such container.", 4409: null, 4429: null };
  ws.onclose = function (e) {
    ready = false;
    term.options.disableStdin = true;
    box.dataset.closeCode = e.code;
    if (ended || (e.code in CLOSED && CLOSED[e.code] === null)) { if (!ended) box.dataset.state = "error"; return; }
    say(CLOSED[e.code] || "Disconnected (" + e.code + ").", "closed");
  };

  term.onData(function (d) { send({ input: d }); });
  term.onResize(function (s) { mark(); send({ resize: [s.cols, s.rows] }); });
  var pending = null;
  function refit() { pending = null; fit.fit(); }
  window.addEventListener("resize", function () { if (pending === null) pending = requestAnimationFrame(refit); });
})();
