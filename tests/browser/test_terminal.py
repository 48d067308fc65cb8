"""The web terminal in Chromium: a shell in the container through xterm.js and
its socket (dashboard/containers/terminal.py), typed into, resized, exited,
audited with its duration; refused to viewers; ended by a container stop and
by logout."""
import json
import os
import sqlite3
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def box(rt):
    """One running container for the module's sessions (the stop test stops it last)."""
    r = cli("run", "-d", "--name", "term-box", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    yield cid
    rt.remove(cid, force=True)


def _audit_rows(server, cid) -> list[dict]:
    """The terminal rows of the audit log, oldest first, read from the server's database."""
    with sqlite3.connect(f"file:{server.env['TERRARIUM_DB']}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT username, result, message, details FROM containers_auditentry "
                          "WHERE action = 'terminal' AND container_id = ? ORDER BY id", (cid,)).fetchall()
    return [{"username": u, "result": r, "message": m, "details": json.loads(d)} for u, r, m, d in rows]


def _open(page, server, cid, direct=False):
    """The terminal page, by the detail page's button (or straight), connected."""
    if direct:
        page.goto(f"{server}/containers/{cid}/terminal/")
    else:
        page.goto(f"{server}/containers/{cid}/")
        page.click("#open-terminal")
    expect(page.locator("#term-status")).to_have_attribute("data-state", "open")
    return page.locator("#terminal .xterm-rows")


def _type(page, text: str) -> None:
    page.locator("#terminal .xterm-helper-textarea").press_sequentially(text)
    page.keyboard.press("Enter")


def _size(page) -> str:
    box = page.locator("#terminal")
    return f"{box.get_attribute('data-rows')} {box.get_attribute('data-cols')}"


def test_a_viewer_gets_no_terminal(login, server, box):
    page = login("viewer")
    page.goto(f"{server}/containers/{box}/")
    expect(page.locator("#detail-head")).to_be_visible()
    expect(page.locator("#open-terminal")).to_have_count(0)
    assert page.goto(f"{server}/containers/{box}/terminal/").status == 403
    code = page.evaluate("""id => new Promise(done => {
        const ws = new WebSocket(`ws://${location.host}/ws/containers/${id}/terminal/`);
        ws.onclose = e => done(e.code);
    })""", box)
    assert code == 4403


def test_logout_ends_the_session(login, server, box):
    page = login("operator")
    closed = []
    page.on("websocket", lambda ws: "/terminal/" in ws.url and ws.on("close", lambda w: closed.append(w)))
    _open(page, server, box)
    other = page.context.new_page()                         # another tab of the same session logs out
    other.goto(server + "/")
    other.click("text=Log out")
    page.wait_for_function("document.getElementById('terminal') === null"
                           " || document.getElementById('terminal').dataset.closeCode === '4401'")
    deadline = time.monotonic() + 10                        # the end is written as the socket closes
    while _audit_rows(server, box)[-1]["details"]["ended"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    row = _audit_rows(server, box)[-1]
    assert (row["details"]["reason"], row["details"]["exit_code"]) == ("logged out", None)
    assert len(closed) == 1


def test_typing_resizing_exit_and_a_stop_in_the_browser(login, server, box, rt, shots):
    """Last in the module: it stops the container."""
    page = login("operator")
    screen = _open(page, server, box)
    _type(page, "echo hello-$((6*7))")
    expect(screen).to_contain_text("hello-42")              # the shell's arithmetic, not our echo
    _type(page, "stty size; tty")
    first = _size(page)
    expect(screen).to_contain_text(first)
    expect(screen).to_contain_text("/dev/pts/0")            # the container's own devpts
    page.screenshot(path=os.path.join(shots, "terminal.png"))

    page.set_viewport_size({"width": 900, "height": 560})   # the fit addon re-measures the box
    page.wait_for_function(f"(() => {{ const d = document.getElementById('terminal').dataset;"
                           f" return d.rows + ' ' + d.cols !== {first!r}; }})()")
    second = _size(page)
    page.keyboard.press("Control+l")                        # a clear screen: the next size alone
    _type(page, "stty size")
    expect(screen).to_contain_text(second)
    assert second != first

    _type(page, "exit")
    expect(page.locator("#term-status")).to_have_text("Session ended (exit 0).")
    row = _audit_rows(server, box)[-1]
    d = row["details"]
    assert (row["username"], row["result"], d["reason"], d["exit_code"]) == ("otto", "ok", "exited", 0)
    assert d["ended"] > d["started"] and 0 < d["duration_seconds"] < 120
    assert row["message"].startswith(f"auto shell: {d['duration_seconds']:.1f} s, exited, exit 0")

    screen = _open(page, server, box, direct=True)          # a new session on the same page
    _type(page, "echo ready-$((1+1))")
    expect(screen).to_contain_text("ready-2")
    rt.stop(box, timeout=1)
    expect(page.locator("#term-status")).to_have_text("Session ended (exit 137).")   # killed with its PID namespace
    row = _audit_rows(server, box)[-1]
    assert (row["details"]["reason"], row["details"]["exit_code"]) == ("exited", 137)
