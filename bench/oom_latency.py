"""OOM kill → event delivered: delay from the kernel's timestamp of the kill to
the `oom.killed` message reaching a websocket client, over N kills.

    sudo .venv/bin/python bench/oom_latency.py [N]

Runs the dashboard's OomWatcher in this process on the in-memory channel
layer, with a temp SQLite DB and a temp runtime root, and a real
WebsocketCommunicator on ws/events/ (logged in).  Each kill: a busybox
container with a 20 MB limit runs `head -c 100m /dev/zero | tail; sleep 30`.
The kill's time is the kmsg timestamp of its "Killed process" record,
corrected by kmsg_clock_offset() to CLOCK_MONOTONIC (writes a few debug
lines to the kernel log).  Target: p99 < 100 ms.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TMP = tempfile.mkdtemp(prefix="terrarium-bench-")
os.environ.update(TERRARIUM_ROOT=TMP, TERRARIUM_CGROUP_PARENT=f"terrarium-bench-{secrets.token_hex(3)}",
                  TERRARIUM_DB=os.path.join(TMP, "db.sqlite3"), DJANGO_SETTINGS_MODULE="dashboard.settings",
                  TERRARIUM_RECONCILE_INTERVAL="0")

import django  # noqa: E402

django.setup()
from django.conf import settings  # noqa: E402

settings.TERRARIUM_OOM_WATCH = False          # the bench runs its own watcher
from bench.common import percentile  # noqa: E402


def main(n: int) -> int:
    import shutil

    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from dashboard.asgi import application
    from dashboard.containers.runtime_client import get_runtime
    from dashboard.oom.watcher import OomWatcher
    from runtime import Limits, Spec
    from runtime.oom import kmsg_clock_offset, monotonic_usec

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", password="bench-" + secrets.token_hex(8))
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"),
               (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]
    rt = get_runtime()
    rt.images.ensure_builtin()
    offset = kmsg_clock_offset()
    delays, seen_by = [], {}

    async def run():
        w = OomWatcher(refresh=0.2)
        task = asyncio.create_task(w.run())
        comm = WebsocketCommunicator(application, "/ws/events/", headers=headers)
        assert (await comm.connect())[0]
        await asyncio.wait_for(w.ready.wait(), 15)
        try:
            for i in range(n):
                c = await asyncio.to_thread(rt.run, Spec(
                    image="busybox", name=f"oom-bench-{i}", limits=Limits(memory=20 << 20),
                    cmd=("sh", "-c", "head -c 100m /dev/zero | tail; sleep 30")))
                msg = await comm.receive_json_from(timeout=20)
                if os.environ.get("BENCH_DEBUG"):
                    print(i, c.id[:8], {k: msg["event"][k] for k in ("container_id", "killed_pid", "kernel_usec", "detected_by")})
                got = monotonic_usec()
                ev = msg["event"]
                if ev["kernel_usec"] is not None:
                    delays.append((got - (ev["kernel_usec"] - offset)) / 1000)
                seen_by[ev["detected_by"]] = seen_by.get(ev["detected_by"], 0) + 1
                await asyncio.to_thread(rt.remove, c.id, force=True)
        finally:
            await comm.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await database_sync_to_async(lambda: None)()

    try:
        asyncio.run(run())
    finally:
        for c in rt.list(all=True):
            rt.remove(c.id, force=True)
        rt.shutdown_forkserver()
        rt.cgroups.remove_parent()
        shutil.rmtree(TMP, ignore_errors=True)
    print(f"OOM kill -> websocket message, {len(delays)} kills (kmsg clock offset {offset / 1000:.2f} ms)")
    print(f"  p50 {percentile(delays, 50):.2f} ms   p99 {percentile(delays, 99):.2f} ms   "
          f"max {max(delays):.2f} ms   (target p99 < 100 ms)")
    print(f"  detected by: {seen_by}")
    return 0 if percentile(delays, 99) < 100 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
