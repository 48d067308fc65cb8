"""Scale-out for real: Debian's redis-server on a loopback port, two Daphne
workers and one `manage.py sampler` on the Redis channel layer, a websocket
client on each worker.  Both receive the same samples (same seq, time and
values) while the container is sampled once per tick; when nobody watches,
nothing is sampled.

Every process here is started by this module and stopped by its pid."""
from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import REPO
from tests.fixtures_web import BIN, _free_port, _manage

websockets = pytest.importorskip("websockets")
pytestmark = [pytest.mark.root, pytest.mark.slow]

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
TICK = 0.3


def _wait_port(port: int, proc: subprocess.Popen, what: str, log_path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {open(log_path, errors='replace').read()[-3000:]}")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(rt, tmp_path_factory):
    if not os.path.exists(REDIS):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    tmp = tmp_path_factory.mktemp("scaleout")
    procs: list[subprocess.Popen] = []
    logs = []

    def spawn(argv, name, env=None):
        log = open(tmp / f"{name}.log", "wb")
        logs.append(log)
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        rport = _free_port()
        redis = spawn([REDIS, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", str(tmp), "--protected-mode", "yes"], "redis")
        _wait_port(rport, redis, "redis-server", tmp / "redis.log")
        env = dict(os.environ, TERRARIUM_DB=str(tmp / "db.sqlite3"),
                   DJANGO_SECRET_KEY=secrets.token_urlsafe(50), TERRARIUM_DEBUG="0",
                   DJANGO_SETTINGS_MODULE="dashboard.settings", PYTHONUNBUFFERED="1",
                   TERRARIUM_REDIS_URL=f"redis://127.0.0.1:{rport}/0", TERRARIUM_SAMPLER="external",
                   TERRARIUM_LIVE_TICK=str(TICK))
        _manage(env, "migrate", "--noinput")
        password = f"pw-{secrets.token_hex(8)}"
        _manage(env, "terrarium_user", "vera", "--role", "viewer", "--password", password)
        sampler = spawn([sys.executable, os.path.join(REPO, "manage.py"), "sampler"], "sampler", env)
        ports = []
        for i in range(2):
            port = _free_port()
            p = spawn([os.path.join(BIN, "daphne"), "-b", "127.0.0.1", "-p", str(port),
                       "dashboard.asgi:application"], f"daphne{i}", env)
            ports.append((port, p))
        for i, (port, p) in enumerate(ports):
            _wait_port(port, p, f"daphne {i}", tmp / f"daphne{i}.log")
        deadline = time.monotonic() + 20
        while b"ready" not in (tmp / "sampler.log").read_bytes():
            assert sampler.poll() is None and time.monotonic() < deadline, \
                (tmp / "sampler.log").read_text(errors="replace")
            time.sleep(0.05)
        yield {"ports": [p for p, _ in ports], "user": ("vera", password), "tmp": tmp,
               "sampler": sampler}
    finally:
        for p in reversed(procs):
            _stop(p)
        for log in logs:
            log.close()


def _login(port: int, username: str, password: str) -> str:
    """Log in by the form (CSRF token and all); → the session cookie header."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(base + "/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(base + "/login/", data=data, headers={"Referer": base + "/login/"}),
                timeout=10).read()
    cookies = {c.name: c.value for c in jar}
    assert "sessionid" in cookies, "login failed"
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def _watch(port, cookie, cid, n_samples):
    """history + the next n samples (by seq) from one worker."""
    url = f"ws://127.0.0.1:{port}/ws/containers/{cid}/live/"
    async with websockets.connect(url, additional_headers={"Cookie": cookie},
                                  origin=f"http://127.0.0.1:{port}") as ws:
        history, samples, trees = None, {}, 0
        while len(samples) < n_samples:
            ev = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            if ev["type"] == "container.history":
                history = ev
            elif ev["type"] == "container.sample":
                samples[ev["point"]["seq"]] = ev["point"]
            elif ev["type"] == "container.procs":
                trees += 1
            elif ev["type"] == "container.gone":
                raise AssertionError(ev)
        return history, samples, trees


def test_two_workers_share_one_sampler(cluster, rt, cleanup, name):
    from runtime import Spec
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait")))
    cleanup.append(c.id)
    (p0, p1), (user, pw) = cluster["ports"], cluster["user"]
    cookies = [_login(p0, user, pw), _login(p1, user, pw)]

    async def both():
        return await asyncio.gather(_watch(p0, cookies[0], c.id, 8), _watch(p1, cookies[1], c.id, 8))
    (h0, s0, t0), (h1, s1, t1) = asyncio.run(both())

    common = sorted(set(s0) & set(s1))
    assert len(common) >= 5, (sorted(s0), sorted(s1))
    for seq in common:
        assert s0[seq] == s1[seq]                  # one sample, the same figures on both workers
    # sampled once per tick: seq counts the sampler's reads of this container,
    # consecutive on each socket, and a tick apart in time
    for s in (s0, s1):
        seqs = sorted(s)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        gaps = [s[b]["t"] - s[a]["t"] for a, b in zip(seqs, seqs[1:])]
        assert min(gaps) > TICK * 0.5 and sorted(gaps)[len(gaps) // 2] < TICK * 2, gaps
    assert s0[common[-1]]["mem"] > 0 and s0[common[-1]]["pids"] == 3
    assert t0 >= 1 and t1 >= 1                     # the tree came (once, then when it changes)

    # nobody watches now: the leases are dropped and sampling stops.  A new
    # socket's history ends where the last one left, and the next sample
    # continues the count after the idle gap.
    time.sleep(4 * TICK)
    last = max(common[-1], max(s0), max(s1))

    async def again():
        return await _watch(p1, cookies[1], c.id, 1)
    h2, s2, _ = asyncio.run(again())
    hist_seqs = [p["seq"] for p in h2["points"]]
    assert hist_seqs and hist_seqs[-1] <= last + 1, (hist_seqs[-3:], last)
    assert len(hist_seqs) >= len(common)           # the history lives in the sampler process
    nxt = min(s2)
    assert nxt == hist_seqs[-1] + 1
    assert s2[nxt]["t"] - h2["points"][-1]["t"] > 3 * TICK    # the idle gap: no samples meanwhile
