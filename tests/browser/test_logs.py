"""The logs page (templates/containers/logs.html, static/logs/logs.js) in
Chromium: it follows a container started from the page without a reload,
marks stderr, highlights a search, filters by stream and time, and
downloads what it shows; and under a ~5 MB/s writer a client that does not
read costs the server a bounded buffer and learns how many lines it missed."""
import json
import re
import time

import pytest
from playwright.sync_api import expect

from dashboard.containers import logsocket
from runtime import LogConfig, Spec
from tests.webstack import login_cookie

pytestmark = pytest.mark.browser


def test_page_follows_starts_searches_filters_and_downloads(login, server, rt, made, name):
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo alpha-out; echo beta-err >&2; echo gamma-out")))
    page = login("operator")
    page.goto(f"{server}/containers/{c.id}/logs/")
    page.evaluate("window.__noReload = true")
    view = page.locator("#log-view")
    expect(view).to_have_attribute("data-state", "stopped")          # created: nothing yet
    expect(page.locator("#log-state")).to_contain_text("not running (created)")

    # Start on the page: its lines come in without a reload; stderr's are marked
    page.click("#detail-head button.act-start")
    expect(view.locator(".ln")).to_have_count(3)
    expect(view.locator(".ln.stderr .tx")).to_have_text(["beta-err"])
    expect(view.locator(".ln.stdout .tx")).to_have_text(["alpha-out", "gamma-out"])
    expect(view).to_have_attribute("data-state", "stopped")
    between = time.time()
    rt.wait(c.id)
    page.click("#detail-head button.act-start")                        # a second run: its lines, once
    expect(view.locator(".ln.stdout .tx")).to_have_text(["alpha-out", "gamma-out"] * 2)   # (two pipes: no
    expect(view.locator(".ln.stderr .tx")).to_have_text(["beta-err"] * 2)                # order between them)

    # search: every match highlighted, whatever its case
    page.fill("#log-search", "GAMMA")
    expect(view.locator("mark")).to_have_text(["gamma", "gamma"])
    expect(page.locator("#log-matches")).to_have_text("2 matching lines")
    page.check("#log-only")
    expect(view.locator(".ln:visible .tx")).to_have_text(["gamma-out", "gamma-out"])
    page.uncheck("#log-only")

    # stream filter, then the download of what is shown (with times)
    page.uncheck("#log-stdout")
    expect(view.locator(".ln:visible .tx")).to_have_text(["beta-err", "beta-err"])
    with page.expect_download() as dl:
        page.click("#log-download")
    got = open(dl.value.path()).read().splitlines()
    stamps = [r.time.decode() for r in rt.log_records(c.id) if r.stream == "stderr"]
    assert got == [f"{t} beta-err" for t in stamps]
    assert dl.value.suggested_filename == f"{name}.log"
    page.check("#log-stdout")

    # since: only the second run (the socket reads the log again from there)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between)) + f"{between % 1:.6f}"[1:] + "Z"
    page.fill("#log-since", since)
    page.click("#log-apply")
    expect(view.locator(".ln.stdout .tx")).to_have_text(["alpha-out", "gamma-out"])
    expect(view.locator(".ln.stderr .tx")).to_have_text(["beta-err"])
    assert f"since={since.replace(':', '%3A')}" in page.url
    r = page.request.get(f"{server}/containers/{c.id}/logs/download/?since=soon")
    assert (r.status, r.text()) == (400, "invalid since 'soon': use a time such as 2026-11-30T20:00:00Z, "
                                         "a unix time, or a duration such as 10m\n")
    assert page.evaluate("window.__noReload") is True


def test_detail_panel_follows_and_links_to_the_logs_page(login, server, rt, made, name):
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo hello-from-$$")))
    page = login("viewer")
    page.goto(f"{server}/containers/{c.id}/")
    expect(page.locator("#log-view")).to_have_attribute("data-state", "stopped")
    rt.start(c.id)                                                     # by someone else
    expect(page.locator("#log-view .ln .tx")).to_have_text(["hello-from-1"])
    page.click("#logs-link")
    expect(page).to_have_url(f"{server}/containers/{c.id}/logs/")
    expect(page.locator("#log-view .ln .tx")).to_have_text(["hello-from-1"])


def test_a_flood_to_clients_that_do_not_read(login, server, rt, made, name):
    """~5 MB/s for 2 s: a websocket client that does not read its socket and a
    page whose script is paused.  The server holds a bounded buffer for each,
    and each learns how many lines it missed: shown + skipped = written."""
    from websockets.sync.client import connect
    line = "y" * 63
    chunk, n_chunks = 8192, 20                        # 512 KiB of 64-byte lines, 20 times
    cmd = (f"yes {line} | head -n {chunk} > /tmp/c; i=0; "
           f"while [ $i -lt {n_chunks} ]; do cat /tmp/c; usleep 100000; i=$((i+1)); done")
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", cmd), log=LogConfig(4 << 20, 3)))
    total = chunk * n_chunks

    page = login("viewer")
    page.goto(f"{server}/containers/{c.id}/logs/?tail=0")
    expect(page.locator("#log-view")).to_have_attribute("data-state", "stopped")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Debugger.enable")
    cdp.send("Debugger.pause")                        # its next message handler stops there

    port = int(server.rsplit(":", 1)[1])
    cookie = login_cookie(port, *server.users["viewer"])
    ws = connect(f"ws://127.0.0.1:{port}/ws/containers/{c.id}/logs/?tail=0", max_size=None, max_queue=1,
                 additional_headers={"Cookie": cookie, "Origin": server})
    try:
        # tail=0 follows from where the log is when the socket opens it: start the
        # container only once it has (else the first chunk is before "now", in neither count)
        m = json.loads(ws.recv(timeout=30))
        assert (m["type"], m["status"], m["following"]) == ("state", "created", False)
        rt.start(c.id)
        rt.wait(c.id, timeout=60)
        msgs = []
        while True:          # without acknowledging: the first WINDOW messages and the state
            m = json.loads(ws.recv(timeout=30))
            msgs.append(m)
            if m["type"] == "state" and not m["following"] and m["status"] == "exited":
                break
        first = [m for m in msgs if m["type"] == "log"]
        assert len(first) == logsocket.WINDOW
        for m in first:
            ws.send(json.dumps({"ack": m["seq"]}))
        while not (msgs[-1]["type"] == "log" and msgs[-1]["queued"] == 0):
            m = json.loads(ws.recv(timeout=30))
            msgs.append(m)
            if m["type"] == "log":
                ws.send(json.dumps({"ack": m["seq"]}))
    finally:
        ws.close()
        cdp.send("Debugger.resume")
        cdp.send("Debugger.disable")
    logs_ = [m for m in msgs if m["type"] == "log"]
    text = "".join(p[1] for m in logs_ for p in m["pieces"])
    received, skipped = len(text.splitlines()), sum(m["skipped"] for m in logs_)
    held_max = max(m["held_max"] for m in logs_)
    bound = logsocket.HOLD + (logsocket.WINDOW + 1) * logsocket.PIECE_MAX
    print(f"raw client: {total} lines written, {received} received ({len(text)} bytes), {skipped} skipped; "
          f"the server held at most {held_max} bytes for it (bound {bound})")
    assert received + skipped == total and skipped > 0
    assert held_max <= bound and len(text) <= bound

    # the paused page, once its script runs again: the marker, and every line accounted for
    page.wait_for_function(f"window.terrariumLogs.received + window.terrariumLogs.skipped === {total}",
                           timeout=60_000)
    expect(page.locator("#log-skipped")).to_contain_text(re.compile(r"\d+ lines skipped while this page was behind"))
    expect(page.locator("#log-view .ln")).to_have_count(5000)            # the page keeps the newest lines
    stats = page.evaluate("({r: terrariumLogs.received, s: terrariumLogs.skipped, h: terrariumLogs.held_max})")
    print(f"page: {stats['r']} lines received, {stats['s']} skipped, held at most {stats['h']} bytes")
    assert stats["h"] <= bound and stats["s"] > 0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def test_a_filtered_download_to_a_slow_reader_costs_the_server_bounded_memory(server, rt, made, name):
    """8 MiB of log, downloaded filtered through Daphne (dashboard/serve.py) by
    a client with a small receive buffer that stalls for two seconds: the
    server reads the log only as fast as the client takes it, so Daphne's
    memory stays far below the log's size (measured: its RSS)."""
    import http.client
    import socket
    line, n = "y" * 63, 131_072                                   # 64-byte lines: 8 MiB
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", f"yes {line} | head -n {n}"),
                    log=LogConfig(24 << 20, 1)))       # (records: ~104 bytes a line)
    rt.wait(c.id, timeout=60)
    port = int(server.rsplit(":", 1)[1])
    cookie = login_cookie(port, *server.users["viewer"])
    pid = server.web.daphnes[0].pid

    def get(query: str, rcvbuf: int | None = None):
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.sock = sock
        conn.request("GET", f"/containers/{c.id}/logs/download/?{query}", headers={"Cookie": cookie})
        r = conn.getresponse()
        assert r.status == 200
        return conn, r

    conn, r = get("q=YY&tail=1000")                                # warm up: threads, caches
    assert r.read() == (line + "\n").encode() * 1000
    conn.close()
    base = peak = _rss(pid)
    conn, r = get("q=YY&stream=stdout", rcvbuf=16 << 10)
    got = len(r.read(64 << 10))
    try:
        for _ in range(20):                                        # a reader that stalls for 2 s...
            time.sleep(0.1)
            peak = max(peak, _rss(pid))
        while chunk := r.read(64 << 10):                           # ...then takes the rest
            got += len(chunk)
            if got % (1 << 20) < len(chunk):
                peak = max(peak, _rss(pid))
    finally:
        conn.close()
    assert got == n * 64
    print(f"log {n * 64 >> 20} MiB downloaded slowly: Daphne RSS {base >> 20} MiB before, "
          f"at most +{(peak - base) / (1 << 20):.1f} MiB while sending")
    assert peak - base < 4 << 20
