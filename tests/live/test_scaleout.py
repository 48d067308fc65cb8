"""Scale-out for real: Debian's redis-server on a unix socket with an ACL
user and a password (tests/webstack.py, as README "Scale-out" sets it up), two Daphne
workers and one `manage.py sampler` on the Redis channel layer, a websocket
client on each worker.  Both receive the same samples (same seq, time and
values) while the container is sampled once per tick; when nobody watches,
nothing is sampled.  Without the password, or without the socket's group,
nobody else gets in.

Every process here is started by this module and stopped by its pid."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import time

import pytest

from tests.unprivileged import as_user, throwaway_user
from tests.webstack import REDIS, WebStack, login_cookie

websockets = pytest.importorskip("websockets")
pytestmark = [pytest.mark.root, pytest.mark.slow]

TICK = 0.3


@pytest.fixture(scope="module")
def cluster(rt, tmp_path_factory):
    if not os.path.exists(REDIS):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with WebStack(tmp_path_factory.mktemp("scaleout"), daphnes=2, redis=True,
                  env={"TERRARIUM_LIVE_TICK": str(TICK)}) as web:
        yield {"ports": web.ports, "user": web.users["viewer"], "tmp": web.tmp, "sampler": web.sampler,
               "redis_socket": web.redis_socket, "redis_password": web.redis_password}


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
    cookies = [login_cookie(p0, user, pw), login_cookie(p1, user, pw)]

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


def _redis(path: str, *commands: list[bytes]) -> list[bytes]:
    """Each command in RESP over a raw connection to the unix socket, no AUTH
    unless a command is one; the first line of each reply, or the errno's name
    if the socket cannot be reached."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
    except OSError as e:
        return [errno.errorcode[e.errno].encode()]
    replies = []
    with s, s.makefile("rb") as f:
        for argv in commands:
            s.sendall(b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv))
            replies.append(f.readline().rstrip(b"\r\n"))
    return replies


def test_redis_lets_in_only_the_dashboard(cluster):
    sock, password = cluster["redis_socket"], cluster["redis_password"].encode()
    run_dir = os.path.dirname(sock)
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o2750 and stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    publish, subscribe = [b"PUBLISH", b"specific.x", b"{}"], [b"SUBSCRIBE", b"specific.x"]
    with throwaway_user() as outsider, throwaway_user() as member:
        # member stands for the web tier's group: the socket directory and the socket are its group's
        for path in (run_dir, sock):
            os.chown(path, -1, member.pw_gid)
        try:
            assert as_user(outsider, _redis, sock, publish) == [b"EACCES"]
            assert as_user(member, _redis, sock, publish, subscribe) == [b"-NOAUTH Authentication required."] * 2
            assert as_user(member, _redis, sock, [b"AUTH", b"terrarium", b"guess"], publish) == [
                b"-WRONGPASS invalid username-password pair or user is disabled.",
                b"-NOAUTH Authentication required."]
            assert as_user(member, _redis, sock, [b"AUTH", b"default", b""], publish)[0].startswith(b"-WRONGPASS")
            # the password is what lets the dashboard in
            assert as_user(member, _redis, sock, [b"AUTH", b"terrarium", password], publish) == [b"+OK", b":0"]
        finally:
            for path in (run_dir, sock):
                os.chown(path, -1, 0)
