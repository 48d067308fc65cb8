"""The watcher on the real kernel: a container with a 20 MB limit allocates
100 MB; the OomEvent lands in the DB with the right container, process and
command, its counters agree with memory.oom_control, and `oom.killed` is
published on the `events` group."""
import asyncio
import os
import time

import pytest

from dashboard.containers.models import OomEvent
from dashboard.oom import services
from runtime import Limits, Spec
from runtime.oom import read_counts
from tests.conftest import needs_root
from tests.oom.watch import watching

pytestmark = [needs_root, pytest.mark.root, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg not readable")]

HOG = "head -c 100m /dev/zero | tail"


async def _watch_until_event(rt, spec, *, wait_known=False, timeout=20):
    """Start a watcher, run the container, return (container, first oom.killed event)."""
    async with watching() as (w, layer, ch):
        c = await asyncio.to_thread(rt.run, spec)
        if wait_known:                       # let the watcher see the init pid first
            while c.id not in w.scope.targets:
                await asyncio.sleep(0.05)
        msg = await asyncio.wait_for(layer.receive(ch), timeout)
        await asyncio.sleep(0.3)             # let a counter confirmation land
        return c, msg


def test_child_killed_container_lives_on(rt, name, cleanup):
    for attempt in range(3):
        # Now and then the kernel also kills the init right after the hog's
        # tail (its choice, not ours): then the container did not live on and
        # this case did not happen; run it again.
        cleanup.append(f"{name}-{attempt}")
        spec = Spec(image="busybox", name=f"{name}-{attempt}", cmd=("sh", "-c", f"{HOG}; sleep 30"),
                    limits=Limits(memory=20 << 20))
        c, msg = asyncio.run(_watch_until_event(rt, spec))
        if rt.inspect(c.id).status == "running":
            break
    name = c.name
    assert msg["type"] == "oom.killed"
    ev = OomEvent.objects.get(pk=msg["event"]["id"])
    assert (ev.scope, ev.container_key, ev.container_name) == ("container", c.id, name)
    assert ev.container_id == c.id                       # the FK to the mirror row
    assert ev.killed_command == "tail" and ev.killed_pid and ev.killed_pid != c.pid
    assert not ev.is_init and not ev.is_global
    assert ev.limit_kb == 20480 and ev.usage_kb and ev.usage_kb <= 20480
    assert "Killed process %d (tail)" % ev.killed_pid in ev.raw
    assert ev.detected_by in ("kmsg", "kmsg+counter")
    # the container is still running: its own counter is there to compare
    assert rt.inspect(c.id).status == "running"
    kernel = read_counts(rt.cgroups.paths(c.id)["memory"])
    assert ev.counters["oom_kill"] == kernel.oom_kill == 1
    assert OomEvent.objects.filter(container_key=c.id).count() == 1     # deduped
    assert msg["event"]["killed_command"] == "tail" and msg["event"]["limit_kb"] == 20480


def test_init_killed_container_dies(rt, name, cleanup):
    cleanup.append(name)
    # tail buffers /dev/zero's one endless line; `exec` makes it the container's init
    spec = Spec(image="busybox", name=name, cmd=("sh", "-c", "sleep 0.5; exec tail /dev/zero"),
                limits=Limits(memory=20 << 20))
    c, msg = asyncio.run(_watch_until_event(rt, spec, wait_known=True))
    ev = OomEvent.objects.get(pk=msg["event"]["id"])
    assert (ev.container_key, ev.killed_pid, ev.killed_command) == (c.id, c.pid, "tail")
    assert ev.is_init and msg["event"]["is_init"]
    for _ in range(50):
        state = rt.inspect(c.id)
        if state.status == "exited":
            break
        asyncio.run(asyncio.sleep(0.1))
    assert (state.exit_code, state.oom_killed) == (137, True)
    assert ev.counters["oom_kill"] == state.oom_kills == 1   # the shim read memory.oom_control


def test_kills_while_the_dashboard_was_down_are_caught_up(rt, name, cleanup):
    for attempt in range(3):
        # Now and then the kernel kills the container's init too, right after
        # the hog: the container is gone and there is nothing to catch up from.
        # Then run it again (the victims are the kernel's choice, not ours).
        cleanup.append(f"{name}-{attempt}")
        c = rt.run(Spec(image="busybox", name=f"{name}-{attempt}", cmd=("sh", "-c", f"{HOG}; sleep 30"),
                        limits=Limits(memory=20 << 20)))
        memory = rt.cgroups.paths(c.id)["memory"]
        for _ in range(100):
            if not os.path.isdir(memory) or read_counts(memory).oom_kill:
                break
            asyncio.run(asyncio.sleep(0.05))
        if rt.inspect(c.id).status == "running":
            break
    (ev,) = [e for e in services.oom_catch_up() if e.container_key == c.id]
    assert (ev.detected_by, ev.counters["oom_kill"], ev.killed_pid) == ("counters-at-start", 1, None)
    assert not [e for e in services.oom_catch_up() if e.container_key == c.id]   # once only


def test_detection_stays_on_with_no_descriptor_to_keep(rt, name, cleanup, monkeypatch):
    """Over the descriptor budget (runtime/fdbudget.py; 1,000 limited containers
    under a 1,024-descriptor limit, bench/oom_fd_bench.py) nothing is kept
    open: the counters are polled, the memory record opens its files per read.
    Here with no budget at all and a handful of limited containers: the kill
    is recorded for the right one, confirmed by its polled counter, with its
    memory record."""
    from runtime import fdbudget
    monkeypatch.setattr(fdbudget.OOM, "limit", fdbudget.OOM.held)
    monkeypatch.setattr(fdbudget.STATS, "limit", fdbudget.STATS.held)
    for i in range(3):
        cleanup.append(f"{name}-idle{i}")
        rt.run(Spec(image="busybox", name=f"{name}-idle{i}", cmd=("sleep", "60"), limits=Limits(memory=20 << 20)))
    cleanup.append(name)
    spec = Spec(image="busybox", name=name, cmd=("sh", "-c", f"sleep 1; {HOG}; sleep 30"),
                limits=Limits(memory=20 << 20))

    async def main():
        async with watching() as (w, layer, ch):
            c = await asyncio.to_thread(rt.run, spec)
            msg = await asyncio.wait_for(layer.receive(ch), 20)
            polled = [wt.polled for wt in w.source.counters._watches.values()]
            for _ in range(50):              # the polled counter's confirmation
                ev = await asyncio.to_thread(OomEvent.objects.get, pk=msg["event"]["id"])
                if ev.detected_by == "kmsg+counter":
                    break
                await asyncio.sleep(0.1)
            return c, ev, polled

    c, ev, polled = asyncio.run(main())
    assert len(polled) >= 4 and all(polled)
    assert (ev.container_key, ev.killed_command) == (c.id, "tail")
    if rt.inspect(c.id).status == "running":   # the kernel may take the init too: then gone first
        assert ev.detected_by == "kmsg+counter" and ev.counters["oom_kill"] == 1
    assert ev.memory_window["points"]                 # read with its files opened per read


def test_the_scope_follows_the_runtimes_changes_without_listing(rt, name, cleanup, monkeypatch):
    """The watcher lists the containers once, at start; a container started
    later reaches its scope by the runtime's change events (an inspect of
    that one), the memory record only if it has a memory limit, and the
    sampler reads it; its exit takes it out again.  No list meanwhile."""
    from dashboard.oom import watcher as wmod
    lists = []
    real = wmod._scope

    async def counting():
        lists.append(1)
        return await real()
    monkeypatch.setattr(wmod, "_scope", counting)
    cleanup += [f"{name}-lim", f"{name}-free"]

    async def until(cond, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    async def main():
        async with watching() as (w, _, _ch):
            lim, free = await asyncio.gather(
                asyncio.to_thread(rt.run, Spec(image="busybox", name=f"{name}-lim", cmd=("sleep", "60"),
                                               limits=Limits(memory=32 << 20))),
                asyncio.to_thread(rt.run, Spec(image="busybox", name=f"{name}-free", cmd=("sleep", "60"))))
            await until(lambda: lim.id in w.recorder.targets and free.id in w.scope.targets)
            assert free.id not in w.recorder.targets
            await until(lambda: w.recorder.points(lim.id))       # read by the sampler
            await asyncio.to_thread(rt.kill, lim.id)
            await until(lambda: lim.id not in w.scope.targets and lim.id not in w.recorder.targets)
    asyncio.run(main())
    assert lists == [1]
