"""OOM detection at N limited containers under a 1,024-descriptor limit.

    sudo .venv/bin/python bench/oom_fd_bench.py [N] [--limit FDS]     # default: 1000, 1024

Starts N idle busybox containers with a 32 MiB memory limit (under a
throwaway root and cgroup parent, with the descriptor limit raised), then
lowers this process's soft RLIMIT_NOFILE to FDS and runs the
dashboard's OomWatcher in it (in-process reader: kmsg, the counter watches,
the memory record of every limited container), twice:

- budget off: runtime/fdbudget.py's shares made unlimited, as before the
  budget: every counter watch keeps its eventfd and memory.oom_control open,
  the memory record every container's ~19 cgroup files;
- budget on (the default shares: kept-open readers 1/2 of the limit, counter
  watches 1/4; beyond them, per-read opening and polled counters).

Each run: does the watcher get ready (or die, and with what), how many
descriptors does the process hold once it has run a few memory-record ticks,
how many watches are polled, and one real kill -- a container running
`sleep 1; head -c 100m /dev/zero | tail; sleep 30` with a 20 MiB limit --
is it recorded, how (kmsg, kmsg+counter, counter), and how long after the
container started.  Set TERRARIUM_BENCH_JSON=path to also write the figures.
"""
from __future__ import annotations

import asyncio
import os
import resource
import secrets
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_if_asked, teardown_runtime  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TMP = tempfile.mkdtemp(prefix="terrarium-bench-")
os.environ.update(TERRARIUM_ROOT=TMP, TERRARIUM_CGROUP_PARENT=f"terrarium-bench-{secrets.token_hex(3)}",
                  TERRARIUM_DB=os.path.join(TMP, "db.sqlite3"), DJANGO_SETTINGS_MODULE="dashboard.settings",
                  TERRARIUM_RECONCILE_INTERVAL="0", TERRARIUM_WEB_DIR=os.path.join(TMP, "web"))

import django  # noqa: E402

django.setup()
from django.conf import settings  # noqa: E402

from tests.fds import count as _fds  # noqa: E402

settings.TERRARIUM_OOM_WATCH = False          # the bench runs its own watcher

HOG = "sleep 1; head -c 100m /dev/zero | tail; sleep 30"


async def _run(rt, budget: bool, tag: str, n: int) -> dict:
    from channels.layers import get_channel_layer

    from dashboard.containers.models import OomEvent
    from dashboard.oom import events
    from dashboard.oom.watcher import OomWatcher
    from runtime import Limits, Spec, fdbudget

    saved = (fdbudget.STATS.limit, fdbudget.OOM.limit)
    if not budget:
        fdbudget.STATS.limit = fdbudget.OOM.limit = 1 << 30
    out: dict = {"budget": budget}
    w = OomWatcher(refresh=0.5)
    task = asyncio.create_task(w.run())
    layer = get_channel_layer()
    ch = await layer.new_channel()
    await layer.group_add(events.GROUP, ch)
    t0 = time.monotonic()
    try:
        ready = asyncio.create_task(w.ready.wait())
        await asyncio.wait({ready, task}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            exc = task.exception()
            out.update(ready=False, died=f"{type(exc).__name__}: {exc}", after_s=time.monotonic() - t0)
            ready.cancel()
            return out
        out.update(ready=w.ready.is_set(), ready_s=time.monotonic() - t0)
        while time.monotonic() - t0 < 60 and not (w.recorder and len(w.recorder.tracked()) >= n):
            await asyncio.sleep(0.25)                # the memory record's first ticks (trees first)
        out["recorded_s"] = time.monotonic() - t0
        watches = list(w.source.counters._watches.values()) if hasattr(w.source, "counters") else []
        out.update(fds=_fds(), watches=len(watches), polled=sum(x.polled for x in watches),
                   recorded=len(w.recorder.tracked()) if w.recorder else 0,
                   stats_kept=fdbudget.STATS.held, oom_kept=fdbudget.OOM.held)
        name = f"hog-{tag}"
        t1 = time.monotonic()
        c = await asyncio.to_thread(rt.run, Spec(image="busybox", name=name, cmd=("sh", "-c", HOG),
                                                 limits=Limits(memory=20 << 20)))
        out["hog"] = c.id
        msg = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not task.done():
            try:
                m = await asyncio.wait_for(layer.receive(ch), 1)
            except asyncio.TimeoutError:
                continue
            if m.get("type") == "oom.killed" and m["event"].get("container_id") == c.id:
                msg = m
                break
        if msg is None:
            out.update(detected=False, watcher_alive=not task.done())
            return out
        out.update(detected=True, detected_s=time.monotonic() - t1 - 1.0)
        await asyncio.sleep(1.5)                     # a counter confirmation
        ev = await asyncio.to_thread(OomEvent.objects.get, pk=msg["event"]["id"])
        out.update(detected_by=ev.detected_by, card_points=len(ev.memory_window.get("points") or []),
                   watcher_alive=not task.done())
        return out
    finally:
        await layer.group_discard(events.GROUP, ch)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fdbudget.STATS.limit, fdbudget.OOM.limit = saved
        if out.get("hog"):
            await asyncio.to_thread(rt.remove, out["hog"], force=True)


def main(n: int = 1000, limit: int = 1024) -> dict:
    from django.core.management import call_command

    from dashboard.containers.runtime_client import get_runtime
    from runtime import Limits, Spec

    from dashboard.rlimits import raise_nofile
    soft, hard = raise_nofile()
    call_command("migrate", verbosity=0)
    rt = get_runtime()
    rt.images.ensure_builtin()
    ids: list[str] = []
    results = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            ids.append(rt.run(Spec(image="busybox", name=f"oomfd-{i}", cmd=("sleep", "100000"),
                                   limits=Limits(memory=32 << 20))).id)
        started = time.monotonic() - t0
        print(f"{n} limited containers started in {started:.0f} s; descriptor limit now {limit}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))     # the soft limit is the one enforced
        for budget in (False, True):
            r = asyncio.run(_run(rt, budget, "on" if budget else "off", n))
            results.append(r)
            print(f"  budget {'on ' if budget else 'off'}: " + ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                if k not in ("budget", "hog")))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        teardown_runtime(rt, TMP)
    out = {"n": n, "limit": limit, "start_s": started, "loadavg": open("/proc/loadavg").read().split()[:3],
           "results": results}
    save_if_asked(out)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    fds = 1024
    if "--limit" in args:
        i = args.index("--limit")
        fds = int(args[i + 1])
        del args[i:i + 2]
    main(int(args[0]) if args else 1000, fds)
