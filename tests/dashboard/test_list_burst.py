"""A burst of state changes reaches an open list socket in full, or as a
"resync" -- never as a silently stale list (#16 "At 1,000": after a bulk
removal of 1,000, 549 removals reached the browser and the rest still showed
as running).  bench/daphne_scale.py measures the same at 1,000.

A real Daphne over N running containers (the embedded default: in-memory
layer, the reconciler in the process following the runtime's change events),
a raw ws/containers/ client, all N killed at once through the runtime: the
client sees every container exit, or a resync after which the page's fetch
shows none running."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime import Spec
from tests.webstack import WebStack, login_cookie

websockets = pytest.importorskip("websockets")
pytestmark = pytest.mark.root

N = 120                 # more than a socket's queue holds (100): one reconcile pass may overflow it


def _get(port: int, path: str, cookie: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Cookie": cookie, "X-Requested-With": "fetch"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def test_a_burst_of_kills_reaches_an_open_list_in_full_or_as_a_resync(rt, cleanup, name, tmp_path):
    with ThreadPoolExecutor(8) as ex:
        ids = set(ex.map(lambda i: rt.run(Spec(image="busybox", name=f"{name}-{i:03d}",
                                                cmd=("sleep", "300"))).id, range(N)))
    cleanup.extend(ids)
    with WebStack(tmp_path) as web:
        port = web.ports[0]
        cookie = login_cookie(port, *web.users["viewer"])
        running = f"/?engine=terrarium&state=running&q={name}"
        assert 'data-matched="%d"' % N in _get(port, running, cookie)      # the mirror has them all

        async def burst() -> tuple[dict, int, float]:
            last: dict[str, str] = {}
            resyncs = 0
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/containers/",
                                          additional_headers={"Cookie": cookie},
                                          origin=f"http://127.0.0.1:{port}", max_size=None) as ws:
                await asyncio.sleep(0.5)                # joined; the reconciler started by it
                t0 = time.monotonic()
                with ThreadPoolExecutor(8) as ex:
                    await asyncio.get_running_loop().run_in_executor(
                        None, lambda: list(ex.map(rt.kill, ids)))
                deadline = time.monotonic() + 30
                while not resyncs and not all(last.get(cid) == "exited" for cid in ids):
                    msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                    if msg["type"] == "resync":
                        resyncs += 1
                    elif msg["type"] == "container.changed" and msg["container"]["id"] in ids:
                        last[msg["container"]["id"]] = msg["container"]["status"]
                return last, resyncs, time.monotonic() - t0
        last, resyncs, took = asyncio.run(burst())
        print(f"{N} kills: {sum(s == 'exited' for s in last.values())} exits reached the socket, "
              f"{resyncs} resync, in {took:.2f} s")
        if resyncs:                 # what the page does then: fetch its rows again (and on each later event)
            deadline = time.monotonic() + 10
            while 'data-matched="0"' not in (page := _get(port, running, cookie)):
                assert time.monotonic() < deadline, re.search(r'<div id="list-main"[^>]*>', page).group(0)
                time.sleep(0.2)
        else:
            assert {cid for cid, s in last.items() if s == "exited"} == ids
