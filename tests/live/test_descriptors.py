"""The web process's descriptors with a container of 1,000 processes watched
(security-confirm section 4: at a 1024 limit one watched `spawn 600` took
Daphne down, and its descriptors were never released).

A real Daphne under `prlimit --nofile=1024:1024` (the hard limit too, so the
raise at start cannot help: the sampler's budget must), a real `lab` container
running `spawn 1000`, a live socket on it: logins and pages keep working,
and after the viewer leaves Daphne's descriptor count is back where it was."""
from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import pytest

from runtime.stats import KEEP_OPEN
from tests.webstack import WebStack, login_cookie

websockets = pytest.importorskip("websockets")
pytestmark = [pytest.mark.root, pytest.mark.slow]

SPAWN = 1000


def _fds(pid: int) -> list[str]:
    """What the process has open, less its SQLite connections: each thread that
    touches the DB (the sampler's executor threads record history) keeps one,
    which is a pool filling up, not a leak."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if ".sqlite3" not in target:
            out.append(target)
    return out


def _proc_fds(pid: int) -> int:
    return sum(1 for t in _fds(pid) if t.startswith("/proc/"))


def _get(port: int, path: str, cookie: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=20) as r:
        r.read()
        return r.status


def _nofile(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line for line in f if line.startswith("Max open files"))


def _wait(cond, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


async def _watch_until_tree(port, cookie, cid, n, then):
    """Open the live socket, wait for a tree of >= n processes, run then() while open."""
    url = f"ws://127.0.0.1:{port}/ws/containers/{cid}/live/"
    async with websockets.connect(url, additional_headers={"Cookie": cookie},
                                  origin=f"http://127.0.0.1:{port}", max_size=None) as ws:
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            if ev["type"] == "container.procs" and _count(ev["tree"]) >= n:
                break
        return await asyncio.to_thread(then)


def _count(tree) -> int:
    return sum(1 + _count(n["children"]) for n in tree)


def test_1000_processes_watched_at_a_1024_descriptor_limit(rt, cleanup, name, tmp_path):
    from runtime import Spec
    c = rt.run(Spec(image="lab", name=name, cmd=("spawn", str(SPAWN), "600")))
    cleanup.append(c.id)
    _wait(lambda: len(rt.cgroups.procs(c.id)) > SPAWN, f"{SPAWN} processes in {name}")
    with WebStack(tmp_path, env={"TERRARIUM_LIVE_TICK": "0.5"},
                  daphne_prefix=["prlimit", "--nofile=1024:1024", "--"]) as web:
        port, (user, pw) = web.ports[0], web.users["viewer"]
        daphne = web.procs[-1].pid
        assert _nofile(daphne).split()[3:5] == ["1024", "1024"]
        cookie = login_cookie(port, user, pw)
        for _ in range(2):                             # warm: threads, DB connections, templates
            assert _get(port, "/", cookie) == 200
            assert _get(port, f"/containers/{c.id}/", cookie) == 200
        before = _fds(daphne)
        baseline = len(before)

        def while_watched():
            held = len(_fds(daphne)), _proc_fds(daphne)
            fresh = login_cookie(port, user, pw)        # a login (the session write, PBKDF2) works
            pages = [_get(port, p, fresh) for p in ("/", f"/containers/{c.id}/", "/host/namespaces/")]
            return held, pages
        (held, proc_held), pages = asyncio.run(_watch_until_tree(port, cookie, c.id, SPAWN, while_watched))
        assert pages == [200, 200, 200]
        assert proc_held <= KEEP_OPEN + 20                # stat of KEEP_OPEN processes + cgroup files
        assert held < 1024 - 200

        # the viewer left: everything the sampler held is closed (the count is back)
        try:
            _wait(lambda: len(_fds(daphne)) <= baseline and _proc_fds(daphne) == 0,
                  f"daphne's descriptors back to {baseline}", timeout=20)
        except AssertionError:
            now = _fds(daphne)
            raise AssertionError(f"still open: {sorted(set(now) - set(before))} of {sorted(now)}") from None
        print(f"daphne fds: baseline {baseline}, watching {held} ({proc_held} under /proc), "
              f"after {len(_fds(daphne))}")
