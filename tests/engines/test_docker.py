"""Docker's and Podman's containers in the dashboard, for real: a private
dockerd (tests/dockerd.py) and a private Podman service (tests/podman.py),
the session's root agent started with their sockets (TERRARIUM_DOCKER_HOST,
TERRARIUM_PODMAN_HOST), and a Daphne of our own in agent mode, so every read
and act goes the way it goes in production: browser -> Daphne -> agent ->
Engine API / cgroup files.  One dockerd, one Podman and one Daphne for the
module (Podman's tests skip where it is not installed; Docker's still run)."""
from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from runtime import Spec
from runtime.pidinfo import parse_cgroup

from tests import podman as podman_fixture
from tests.dockerd import load_image, private_dockerd
from tests.fixtures_web import CHROMIUM_ARGS, bulk
from tests.webstack import WebStack, login_cookie

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def docker(rt, session_root):
    """The private dockerd (our busybox loaded as `busybox`), its socket the agent's."""
    from runtime.agent import stop_agent
    with private_dockerd(storage_driver="overlay2") as d:      # overlay roots: the layer view
        load_image(d, rt)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TERRARIUM_DOCKER_HOST", d.env["DOCKER_HOST"])
            stop_agent(session_root)            # the next one inherits the socket
            try:
                yield d
            finally:
                stop_agent(session_root)        # and the one after, whatever it is, not
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if d.base in line], "dockerd left a mount behind"


@pytest.fixture(scope="module")
def podman(rt, session_root, docker):
    """The private Podman service (our busybox loaded as `busybox`), its socket
    the agent's; None where podman is not installed (its tests skip)."""
    from runtime.agent import stop_agent
    if not podman_fixture.available():
        yield None
        return
    with podman_fixture.private_podman() as p:
        load_image(p, rt)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TERRARIUM_PODMAN_HOST", p.url)
            stop_agent(session_root)            # the next one inherits the socket
            try:
                yield p
            finally:
                stop_agent(session_root)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if p.base in line], "podman left a mount behind"


@pytest.fixture(scope="module")
def web(docker, podman, tmp_path_factory):
    stack = WebStack(tmp_path_factory.mktemp("dkweb"), users=(("otto", "operator"), ("vera", "viewer")),
                     env={"TERRARIUM_AGENT": "1", "TERRARIUM_LIVE_TICK": "0.5"})
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def page(web):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        ctx = b.new_context(viewport={"width": 1360, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)          # the first page starts the agent and asks dockerd
        base = web.urls[0]
        pg.goto(base + "/login/")
        pg.fill("#id_username", web.users["operator"][0])
        pg.fill("#id_password", web.users["operator"][1])
        pg.click("button[type=submit]")
        pg.wait_for_url(base + "/")
        pg.set_default_timeout(10_000)
        pg.base = base
        yield pg
        b.close()


def _run(docker, *args) -> tuple[str, str]:
    name = f"dk-{secrets.token_hex(3)}"
    cid = docker("run", "-d", "--name", name, "--network", "none", *args).stdout.strip()
    return name, cid


def test_a_docker_run_shows_in_the_list_at_once_beside_ours(docker, web, page, rt, name):
    ours = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    try:
        page.goto(page.base + "/")
        page.wait_for_function("document.body.dataset.live === 'on'")
        dname, cid = _run(docker, "busybox", "sleep", "300")
        ran = time.monotonic()
        row = page.locator(f'tr[data-container-id="docker-{cid}"]')
        row.wait_for(timeout=2_000)                             # the event, not a reload
        assert time.monotonic() - ran < 2.5
        assert row.get_attribute("data-name") == dname
        assert row.locator(".engine").inner_text().lower() == "docker"
        assert page.locator(f'tr[data-container-id="{ours.id}"] .engine').inner_text().lower() == "terrarium"
        assert page.locator('#engine-filter [data-engine="docker"]').get_attribute("data-availability") == "up"
        page.goto(page.base + "/?engine=docker")
        assert page.locator(f'tr[data-container-id="docker-{cid}"]').count() == 1
        assert page.locator(f'tr[data-container-id="{ours.id}"]').count() == 0
        page.goto(page.base + "/?engine=nonsense")
        assert "No engine 'nonsense'" in page.content()
    finally:
        rt.remove(ours.id, force=True)


def test_the_list_shows_a_docker_containers_usage_and_limits_from_its_cgroup(docker, web, page):
    dname, cid = _run(docker, "-m", "64m", "--cpus", "0.5", "--pids-limit", "50", "busybox", "sh", "-c",
                      "while :; do :; done")
    key = f"docker-{cid}"
    try:
        page.goto(page.base + "/?engine=docker")
        page.wait_for_function("document.body.dataset.live === 'on'")
        row = page.locator(f'tr[data-container-id="{key}"]')
        expect(row).to_have_attribute("data-sampled", "1")     # once the list has it running (its events)
        page.wait_for_function(f"""() => {{
            const tr = document.querySelector('tr[data-container-id="{key}"]');
            return tr && +(tr.dataset.samples || 0) >= 2 && +tr.querySelector('.usage-cpu').dataset.used > 0.1; }}""",
                               timeout=15_000)
        assert re.fullmatch(r"[\d.]+ (B|KiB|MiB)", row.locator(".mem-used").inner_text())
        assert row.locator(".mem-limit").inner_text() == "64 MiB"             # docker run -m, as its cgroup has it
        assert row.locator(".cpu-limit").inner_text() == "0.5"                # --cpus: its CFS quota / period
        assert row.locator(".pids-used").inner_text() == "1"                  # sh alone: pids.current
        assert row.locator(".pids-limit").inner_text() == "50"                # --pids-limit: pids.max
        docker("stop", "-t", "0", dname)
        expect(row.locator("[data-state]")).to_have_text("exited", timeout=10_000)
        expect(row.locator(".usage-mem")).to_have_text("—")                   # not running: not sampled
        assert row.locator(".col-pids").inner_text() == "—"
        assert row.get_attribute("data-sampled") is None
    finally:
        docker("rm", "-f", cid)


def test_docker_detail_graphs_tree_and_stop_through_the_engine(docker, web, page):
    dname, cid = _run(docker, "busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do :; done")
    key = f"docker-{cid}"
    page.goto(f"{page.base}/containers/{key}/")
    assert "Docker owns this container" in page.locator("#owner-note").inner_text()
    page.wait_for_function("(document.getElementById('graphs') || {dataset: {}}).dataset.live === 'on'")
    page.wait_for_function("+(document.getElementById('graphs').dataset.points || 0) >= 3")
    # its network namespace's figures (#13), read as for ours: --network none has lo alone, so zero
    page.wait_for_function("() => window.terrariumLive.points.some(function (p) { return p.net_rx === 0 "
                           "&& p.net_tx === 0 && p.net_rx_p === 0; })")
    expect(page.locator("#net-now dd[data-key=net_rx]")).to_have_attribute(
        "title", re.compile(r"^/proc/\d+/net/dev Receive bytes \(every interface but lo\)$"))
    docker("exec", "-d", dname, "sleep", "4321")
    page.locator("#ptree", has_text="sleep 4321").wait_for()
    pid = json.loads(docker("inspect", cid).stdout)[0]["State"]["Pid"]
    assert page.locator(f'#ptree li[data-pid="{pid}"]').count() == 1      # host pid of its init
    assert page.locator("#card-namespaces td", has_text="pid").count() >= 1
    page.once("dialog", lambda d: d.accept())
    page.click('#detail-head button[data-action="stop"]')
    page.locator('#detail-head [data-state="exited"]').wait_for(timeout=20_000)
    assert json.loads(docker("inspect", cid).stdout)[0]["State"]["Running"] is False
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select username, action, container_id, container_name, result, details "
                          "from containers_auditentry where action='stop' and container_id=?", (cid,)).fetchall()
    assert len(rows) == 1
    username, _, _, cname, result, details = rows[0]
    assert (username, result, cname) == ("otto", "ok", f"{dname} (docker)")
    assert json.loads(details) == {"engine": "docker", "key": key}


def test_a_docker_detail_page_drawn_before_a_stop_its_socket_missed_catches_up(docker, web, page):
    """Drawn running; before its socket joins, `docker stop` and the server
    publishes it (the list, open in another tab, shows it).  The detail page
    missed that event, but its head says when its data was taken and its
    socket is told to resync."""
    dname, cid = _run(docker, "busybox", "sleep", "300")
    key = f"docker-{cid}"
    page.goto(page.base + "/?engine=docker")
    page.wait_for_function("document.body.dataset.live === 'on'")
    listed = page.locator(f'tr[data-container-id="{key}"] [data-state]')
    expect(listed).to_have_text("running")
    detail = page.context.new_page()

    def late(ws):                                # joins only once the stop is published
        docker("stop", "-t", "0", dname)
        expect(listed).to_have_text("exited", timeout=10_000)
        ws.connect_to_server()
    try:
        detail.route_web_socket(re.compile(r"/ws/containers/$"), late)
        detail.goto(f"{page.base}/containers/{key}/")
        assert detail.locator("#detail-head").get_attribute("data-taken-at")
        expect(detail.locator("#detail-head [data-state]")).to_have_text("exited", timeout=10_000)
    finally:
        detail.close()
        docker("rm", "-f", cid)


def test_bulk_stop_and_remove_of_docker_containers_go_through_the_engine(docker, web, page):
    """The list's bulk bar takes Docker containers as it takes ours: one
    confirmation, each container stopped and then removed through the Engine
    API (docker inspect agrees), one audit row per container and action."""
    made = [_run(docker, "busybox", "sleep", "300") for _ in range(2)]
    page.goto(page.base + "/?engine=docker")
    page.wait_for_function("document.body.dataset.live === 'on'")
    asked = bulk(page, "stop", [f'tr[data-container-id="docker-{cid}"]' for _, cid in made])
    expect(page.locator("#bulk-results")).to_contain_text("Stop: 2 of 2 done", timeout=20_000)
    assert asked == [f"Stop 2 containers: {', '.join(n for n, _ in made)}?"]
    for _, cid in made:
        assert json.loads(docker("inspect", cid).stdout)[0]["State"]["Running"] is False
    bulk(page, "remove")
    expect(page.locator("#bulk-results")).to_contain_text("Remove: 2 of 2 done", timeout=20_000)
    for _, cid in made:
        expect(page.locator(f'tr[data-container-id="docker-{cid}"]')).to_have_count(0)
        assert docker("inspect", cid, check=False).returncode != 0
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select action, container_id, result from containers_auditentry "
                          "where container_id in (?, ?)", tuple(cid for _, cid in made)).fetchall()
    assert sorted(rows) == sorted((a, cid, "ok") for a in ("stop", "remove") for _, cid in made)


def test_a_viewer_sees_who_owns_it_and_no_buttons(docker, web):
    dname, cid = _run(docker, "busybox", "sleep", "300")
    cookie = login_cookie(web.ports[0], *web.users["viewer"])
    req = urllib.request.Request(f"{web.urls[0]}/containers/docker-{cid}/", headers={"Cookie": cookie})
    html = urllib.request.urlopen(req, timeout=10).read().decode()
    assert dname in html and "Docker owns this container" in html and "Your role may only view" in html
    assert "/stop/" not in html
    terminal = urllib.request.Request(f"{web.urls[0]}/containers/docker-{cid}/terminal/", headers={"Cookie": cookie})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(terminal, timeout=10)
    assert e.value.code == 403                                          # operators only
    gone = urllib.request.Request(f"{web.urls[0]}/containers/docker-{'0' * 64}/", headers={"Cookie": cookie})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(gone, timeout=10)
    assert e.value.code == 404


def test_an_oom_kill_in_a_docker_container_names_it_and_the_victim(docker, web, page):
    page.goto(page.base + "/")
    page.wait_for_function("document.body.dataset.live === 'on'")
    # tail buffers /dev/zero's one endless line until the 20 MB limit kills it; sh lives on
    dname, cid = _run(docker, "-m", "20m", "--memory-swap", "20m", "busybox", "sh", "-c",
                      "tail /dev/zero; sleep 300")
    toast = page.locator(".oom-toast", has_text=f"{dname} (docker)")
    toast.wait_for(timeout=20_000)
    assert "tail" in toast.inner_text()
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select scope, container_name, killed_command, oom_memcg from containers_oomevent "
                          "where container_name=?", (f"{dname} (docker)",)).fetchall()
    assert len(rows) == 1
    scope, _, killed, memcg = rows[0]
    assert (scope, killed) == ("container", "tail") and memcg.endswith(cid)


def test_the_layer_view_shows_overlay2_and_the_live_writable_layer(docker, web, page):
    dname, cid = _run(docker, "busybox", "sleep", "300")
    docker("exec", dname, "sh", "-c", "echo one > /tmp/written-before")
    page.goto(f"{page.base}/containers/docker-{cid}/layers/")
    graph = json.loads(docker("inspect", cid).stdout)[0]["GraphDriver"]["Data"]
    assert graph["UpperDir"] in page.locator("#upper-layer").inner_text()
    assert page.locator("#layer-stack li.layer:not(.upper)").count() == len(graph["LowerDir"].split(":"))
    assert "overlay" in page.locator("#mount").inner_text()
    page.locator('#change-rows tr[data-path="/tmp/written-before"]').wait_for()
    docker("exec", dname, "sh", "-c", "echo two > /tmp/written-after; rm /etc/motd 2>/dev/null; true")
    row = page.locator('#change-rows tr[data-path="/tmp/written-after"]')
    row.wait_for()                                      # the page polls: no reload
    assert row.get_attribute("class") == "kind-A"


def test_limits_change_live_through_the_engine(docker, web, page):
    dname, cid = _run(docker, "busybox", "sleep", "300")
    page.goto(f"{page.base}/containers/docker-{cid}/")
    page.fill("#engine-limits input[name=memory]", "48m")
    page.fill("#engine-limits input[name=pids]", "77")
    page.click("#engine-limits button")
    page.locator("#messages", has_text="Limits updated.").wait_for()
    host = json.loads(docker("inspect", cid).stdout)[0]["HostConfig"]
    assert (host["Memory"], host["PidsLimit"]) == (48 << 20, 77)
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        (details,) = db.execute("select details from containers_auditentry where action='update' "
                                "and container_id=? and result='ok'", (cid,)).fetchone()
    assert json.loads(details)["limits"] == {"memory": 48 << 20, "pids": 77}


def test_a_podman_container_in_the_list_its_page_and_its_controls(podman, web, page):
    """Podman through its Docker-compatible API (the same EngineSource as
    dockerd's): the row and badge, the live page's processes and cgroup
    figures, its log (Podman's times, which drop trailing zeros, made whole),
    Stop and Start through the API (podman inspect agrees), a web terminal
    through its exec, and a viewer's page without buttons."""
    if podman is None:
        pytest.skip("needs Debian's podman (scripts/setup.sh installs it)")
    page.goto(page.base + "/")
    page.wait_for_function("document.body.dataset.live === 'on'")
    pname = f"pm-{secrets.token_hex(3)}"
    cid = podman("run", "-d", "--name", pname, "--network", "none", "busybox",
                 "sh", "-c", "echo podman-says-hi; trap 'exit 0' TERM; while :; do sleep 1; done").stdout.strip()
    key = f"podman-{cid}"
    row = page.locator(f'tr[data-container-id="{key}"]')
    row.wait_for(timeout=2_000)                             # within 2 s of `podman run`: its event stream
    assert row.get_attribute("data-name") == pname
    assert row.locator(".engine").inner_text().lower() == "podman"
    page.goto(f"{page.base}/containers/{key}/")
    assert "Podman owns this container" in page.locator("#owner-note").inner_text()
    podman("exec", "-d", pname, "sleep", "4321")
    page.locator("#ptree", has_text="sleep 4321").wait_for()
    pid = json.loads(podman("inspect", cid).stdout)[0]["State"]["Pid"]
    assert page.locator(f'#ptree li[data-pid="{pid}"]').count() == 1
    page.wait_for_function("+(document.getElementById('graphs').dataset.points || 0) >= 2")
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/{podman.cgroup_parent}/libpod-{cid}" in f.read()     # its figures' cgroup
    page.click("#logs-link")                                # its log through the compatible API
    line = page.locator("#log-view .ln")
    line.filter(has_text="podman-says-hi").wait_for()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", line.first.get_attribute("data-t"))
    page.goto(f"{page.base}/containers/{key}/")
    page.once("dialog", lambda d: d.accept())
    page.click('#detail-head button[data-action="stop"]')
    page.locator('#detail-head [data-state="exited"]').wait_for(timeout=20_000)
    assert json.loads(podman("inspect", cid).stdout)[0]["State"]["Running"] is False
    page.click('#detail-head button[data-action="start"]')
    page.locator('#detail-head [data-state="running"]').wait_for(timeout=20_000)
    assert json.loads(podman("inspect", cid).stdout)[0]["State"]["Running"] is True
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select action, result from containers_auditentry where container_id=? "
                          "order by id", (cid,)).fetchall()
    assert rows == [("stop", "ok"), ("start", "ok")]
    # the web terminal through Podman's exec (the same code as Docker's)
    from playwright.sync_api import expect
    page.click("#terminal-link")
    expect(page.locator("#term-status")).to_have_attribute("data-state", "open")
    page.locator("#terminal .xterm-helper-textarea").press_sequentially("echo $((6*7)) > /tmp/answer; exit 3")
    page.keyboard.press("Enter")
    expect(page.locator("#term-status")).to_have_text("Session ended (exit 3).")
    assert podman("exec", pname, "cat", "/tmp/answer").stdout == "42\n"
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select result, details from containers_auditentry where action='terminal' "
                          "and container_id=?", (cid,)).fetchall()
    assert len(rows) == 1 and rows[0][0] == "ok" and json.loads(rows[0][1])["engine"] == "podman"
    cookie = login_cookie(web.ports[0], *web.users["viewer"])
    req = urllib.request.Request(f"{web.urls[0]}/containers/{key}/", headers={"Cookie": cookie})
    html = urllib.request.urlopen(req, timeout=10).read().decode()
    assert pname in html and "Podman owns this container" in html and "Your role may only view" in html
    assert "/stop/" not in html and 'data-action="stop"' not in html


def test_docker_logs_live_with_streams_and_tail_then_a_terminal(docker, web, page):
    """Its logs page through the engine's logs API (a line that comes while it
    is open, stderr marked, since, the download's stream filter), then the web
    terminal through its exec: typed into, exited with its code, audited."""
    from playwright.sync_api import expect
    dname, cid = _run(docker, "busybox", "sh", "-c",
                      "echo first-out; until [ -e /tmp/go ]; do sleep 0.1; done; echo oops-err >&2; "
                      "exec sleep 300")
    key = f"docker-{cid}"
    page.goto(f"{page.base}/containers/{key}/")
    page.click("#logs-link")
    view = page.locator("#log-view")
    expect(view.locator(".ln .tx")).to_have_text(["first-out"])
    between = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".%06dZ" % (time.time() % 1 * 1e6)
    docker("exec", dname, "touch", "/tmp/go")
    expect(view.locator(".ln .tx")).to_have_text(["first-out", "oops-err"])       # followed live
    expect(view.locator(".ln.stderr .tx")).to_have_text(["oops-err"])
    cookie = login_cookie(web.ports[0], *web.users["viewer"])
    req = urllib.request.Request(f"{web.urls[0]}/containers/{key}/logs/download/?stream=stderr",
                                 headers={"Cookie": cookie})
    assert urllib.request.urlopen(req, timeout=10).read().decode() == "oops-err\n"
    page.goto(f"{page.base}/containers/{key}/logs/?since={between}")       # the API's since
    expect(view.locator(".ln .tx")).to_have_text(["oops-err"])
    # the terminal: a shell by exec, on the engine's pty
    page.goto(f"{page.base}/containers/{key}/")
    page.click("#terminal-link")
    expect(page.locator("#term-status")).to_have_attribute("data-state", "open")
    area = page.locator("#terminal .xterm-helper-textarea")
    area.press_sequentially("echo $((6*7)) > /tmp/answer; tty; exit 3")
    page.keyboard.press("Enter")
    expect(page.locator("#term-status")).to_have_text("Session ended (exit 3).")
    assert docker("exec", dname, "cat", "/tmp/answer").stdout == "42\n"
    assert "/dev/pts/" in page.locator("#terminal .xterm-rows").inner_text()
    with sqlite3.connect(web.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select username, result, details from containers_auditentry where "
                          "action='terminal' and container_id=?", (cid,)).fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("otto", "ok")
    details = json.loads(rows[0][2])
    assert (details["engine"], details["key"], details["exit_code"], details["reason"]) == \
        ("docker", key, 3, "exited")


def test_a_bare_namespace_page_says_why_it_has_no_buttons_and_shows_its_tree(web, page):
    """A source with no API (the seed's `unshare --pid --fork --mount-proc`
    demo, found from the kernel alone): its page renders for an operator with
    no control, logs or terminal, says why, and shows its PID namespace's
    process tree (it has no cgroup of its own to sample); its logs page says
    it has none, and its logs socket is refused rather than retried."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                             "sh", "-c", "sleep 4321 & exec sleep 600"])
    try:
        inner = _ns_init(proc.pid, "sleep 600")
        ino = os.readlink(f"/proc/{inner}/ns/pid")[5:-1]
        page.goto(f"{page.base}/containers/bare-pidns-{ino}/")
        note = page.locator("#owner-note").inner_text()
        assert "there is no API here to act through, so there are no buttons" in note
        assert page.locator("#detail-head button, #detail-head form, #terminal-link, #logs-link").count() == 0
        init = page.locator(f'#ptree li[data-pid="{inner}"]')
        assert init.get_attribute("data-ns-pid") == "1" and "sleep 600" in init.inner_text()
        child = page.locator("#ptree li", has_text="sleep 4321")
        assert child.get_attribute("data-ns-pid") == "2"
        # its logs page (by URL: no page links it) says there are none and why, and opens
        # no socket; a socket asked for anyway is closed for good (4404), not retried
        res = page.goto(f"{page.base}/containers/bare-pidns-{ino}/logs/")
        assert res.status == 200 and page.locator("#log-view").count() == 0
        assert "No engine owns this PID namespace" in page.locator("#no-logs-owner").inner_text()
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect
        cookie = login_cookie(web.ports[0], *web.users["viewer"])
        with connect(f"ws://127.0.0.1:{web.ports[0]}/ws/containers/bare-pidns-{ino}/logs/",
                     additional_headers={"Cookie": cookie, "Origin": web.urls[0]}, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    finally:
        proc.kill()                     # --kill-child takes the namespace with it
        proc.wait(10)


def _ns_init(outer: int, command: str, timeout: float = 10.0) -> int:
    """The host pid of the namespace's PID 1 once it runs command (unshare forks, then it execs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{outer}/task/{outer}/children") as f:
                kids = [int(k) for k in f.read().split()]
            if kids:
                with open(f"/proc/{kids[0]}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip().decode() == command:
                        return kids[0]
        except OSError:
            pass
        time.sleep(0.01)                # no event for another process's exec
    raise AssertionError(f"unshare's child did not run {command!r}")


def test_an_engine_terminal_resizes_and_is_hung_up_when_its_holder_goes(docker):
    """Discovery.terminal in-process (the agent's side): the window size goes
    through the engine (stty sees it), and closing the Terminal without `exit`
    (the page went) ends the exec's shell rather than leaving it running."""
    import select

    from runtime.discovery.docker import EngineSource
    from runtime.discovery.registry import Discovery
    source = EngineSource(docker.env["DOCKER_HOST"])
    dname, cid = _run(docker, "busybox", "sleep", "300")
    term = Discovery([source]).terminal(f"docker-{cid}", shell="sh", rows=24, cols=80)
    try:
        term.resize(33, 101)
        term.write(b"stty size\n")
        seen, deadline = b"", time.monotonic() + 10
        while b"33 101" not in seen and time.monotonic() < deadline:
            select.select([term.master], [], [], 0.5)
            seen += term.read() or b""
        assert b"33 101" in seen, seen
        pid = source.exec_state(term.info["exec"])["pid"]
        assert pid and os.path.exists(f"/proc/{pid}")
    finally:
        term.close()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)                                # hung up by the watcher thread: no event here
    assert not os.path.exists(f"/proc/{pid}")
    assert source.exec_state(term.info["exec"])["running"] is False
    source.close()


def test_an_engine_log_follow_ends_when_its_reader_goes_though_the_container_is_quiet(docker):
    """Discovery.logs in-process (the agent's side of a logs page): lines with
    our record times, and a follow of a container that writes nothing more
    ends once stop() says so (the page went), not at its next line."""
    import threading

    from runtime.discovery.docker import EngineSource
    from runtime.discovery.registry import Discovery
    from runtime.logfilter import stamp_of
    source = EngineSource(docker.env["DOCKER_HOST"])
    dname, cid = _run(docker, "busybox", "sh", "-c", "echo only-line; exec sleep 300")
    gone = threading.Event()
    pieces = Discovery([source]).logs(f"docker-{cid}", follow=True, stop=gone.is_set)
    stream, data = next(pieces)
    assert stream == "stdout" and stamp_of(data) and data.endswith(b" only-line\n")
    ended = threading.Event()
    threading.Thread(target=lambda: (list(pieces), ended.set()), daemon=True).start()
    assert not ended.wait(0.5)                          # following: nothing more comes
    gone.set()
    assert ended.wait(5.0)                              # the closer shuts the stream within half a second
    source.close()


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_cold_pass_takes_inits_from_the_cgroup_tree_and_inspects_only_what_it_must(engine, docker, podman):
    """A discovery pass from nothing (a new source) is one containers/json
    call: each running or paused container's init is the process of its
    cgroup that is PID 1 of its namespace -- the pid `inspect` gives -- and
    the only container inspected is one whose cgroup has no such process
    (--pid host).  The next pass asks nothing but the list; a restart (a new
    init) and a rename are seen without an inspect either
    (bench/docker_bench.py's cold and warm passes)."""
    from runtime.discovery.docker import EngineSource
    eng = docker if engine == "docker" else podman
    if eng is None:
        pytest.skip("podman is not installed")
    tag = secrets.token_hex(3)

    def run(name, *args):
        return eng("run", "-d", "--name", f"{name}-{tag}", "--network", "none", *args).stdout.strip()

    def inspected(ident):
        return json.loads(eng("inspect", ident).stdout)[0]

    ids = {"a": run("a", "busybox", "sleep", "300"), "b": run("b", "busybox", "sleep", "300"),
           "paused": run("paused", "busybox", "sleep", "300"),
           "hostpid": run("hostpid", "--pid", "host", "busybox", "sleep", "300"),
           "exited": run("exited", "busybox", "true")}
    eng("pause", ids["paused"])
    eng("wait", ids["exited"])
    src = EngineSource(eng.env["DOCKER_HOST"] if engine == "docker" else eng.url, engine=engine)
    api, urls = src._client(), []
    get = api.get                       # every GET of the SDK (_get) goes through the session's get
    api.get = lambda url, **kw: urls.append(url) or get(url, **kw)
    inspects = lambda: [u for u in urls if re.search(r"/containers/[0-9a-f]{64}/json", u)]  # noqa: E731
    try:
        found = {f.id: f for f in src.list() if f.id in ids.values()}
        assert [u for u in urls if u.endswith("/containers/json")] and len(found) == len(ids), urls
        assert inspects() == [u for u in urls if ids["hostpid"] in u] and len(inspects()) == 1, urls
        for what in ("a", "b", "paused", "hostpid"):
            f, attrs = found[ids[what]], inspected(ids[what])
            assert f.pid == attrs["State"]["Pid"] and f.pid, (what, f, attrs["State"])
            assert f.namespaces["pid"] == os.stat(f"/proc/{f.pid}/ns/pid").st_ino
            assert f.name == f"{what}-{tag}" and f.image == attrs["Config"]["Image"] and f.cgroup
            with open(f"/proc/{f.pid}/cgroup") as cg:    # every hierarchy's, for the reader
                assert dict(f.cgroups) == parse_cgroup(cg.read()) and f.cgroup in f.cgroups.values()
        assert ids["a"] in found[ids["a"]].cgroup and found[ids["paused"]].state == "paused"
        assert found[ids["exited"]].state == "exited" and found[ids["exited"]].pid is None
        urls.clear()
        again = {f.id: f for f in src.list()}
        assert all(again[i] is found[i] for i in ids.values()) and not inspects(), urls
        eng("restart", "-t", "0", ids["a"])
        eng("rename", f"b-{tag}", f"b2-{tag}")
        urls.clear()
        after = {f.id: f for f in src.list()}
        assert after[ids["a"]].pid == inspected(ids["a"])["State"]["Pid"] != found[ids["a"]].pid
        assert after[ids["a"]].state == "running" and after[ids["b"]].name == f"b2-{tag}"
        assert not inspects(), urls
    finally:
        src.close()
        for ident in ids.values():
            eng("rm", "-f", ident, check=False)


def test_an_engine_terminal_counts_toward_the_agents_terminal_cap(docker, monkeypatch):
    """The agent's engine-terminal verb holds one of MAX_TERMINALS, as a
    terminal in our own containers does, until its watcher is done: at the
    cap the next is refused (Conflict), and the place comes back once the
    client closes its descriptors (the shell hung up)."""
    import threading
    import types

    from runtime import Conflict, agent
    from runtime.discovery.docker import EngineSource
    from runtime.discovery.registry import Discovery
    source = EngineSource(docker.env["DOCKER_HOST"])
    fake_rt = types.SimpleNamespace(discovery=lambda: Discovery([source]))
    monkeypatch.setattr(agent, "_terminals", threading.BoundedSemaphore(1))
    _, cid = _run(docker, "busybox", "sleep", "300")
    key = f"docker-{cid}"
    first = agent._engine_terminal(fake_rt, key, shell="sh")
    try:
        with pytest.raises(Conflict, match="terminals are open already"):
            agent._engine_terminal(fake_rt, key, shell="sh")
    finally:
        for fd in first.fds:
            os.close(fd)
    deadline, again = time.monotonic() + 10, None
    while again is None:
        try:
            again = agent._engine_terminal(fake_rt, key, shell="sh")
        except Conflict:
            assert time.monotonic() < deadline, "the closed terminal's place did not come back"
            time.sleep(0.1)
    for fd in again.fds:
        os.close(fd)
    places, deadline = agent._terminals, time.monotonic() + 10
    while not places.acquire(blocking=False):           # its watcher gives it back, then the test ends
        assert time.monotonic() < deadline
        time.sleep(0.1)
    places.release()
    source.close()
    docker("rm", "-f", cid)
