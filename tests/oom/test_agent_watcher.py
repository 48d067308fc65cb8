"""The OOM watcher with TERRARIUM_AGENT=1, on the real kernel and a real agent:
this process reads no kernel file (the in-process readers raise here), yet a
container's kill is recorded with its victim and container; after a kill -9
of the agent the watcher follows the next one, catches up the kill it missed
meanwhile, and records the kills after."""
import asyncio
import os
import signal
import threading

import pytest

from dashboard.containers.models import OomEvent
from dashboard.containers.runtime_client import get_runtime, reset_runtime
from dashboard.oom import events
from dashboard.oom.watcher import AgentFeed
from runtime import Limits, Spec
from runtime.agent_client import AgentRuntime
from tests.conftest import needs_root
from tests.oom.watch import watching

pytestmark = [needs_root, pytest.mark.root, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg not readable")]

HOG = "head -c 100m /dev/zero | tail"


def _forbidden(*_a, **_k):
    raise AssertionError("the watcher read a kernel file in-process in agent mode")


@pytest.fixture
def agent_only(settings, monkeypatch):
    """The runtime handle is the agent, and every in-process kernel read the
    OOM watcher could make fails (also the AgentRuntime's local fallback)."""
    import runtime.oom
    import runtime.oomfeed
    import runtime.pidinfo
    from dashboard.oom import watcher
    settings.TERRARIUM_AGENT = "1"
    settings.TERRARIUM_OOM_SAMPLE = 0          # the memory record is another reader's business
    reset_runtime()
    monkeypatch.setattr(runtime.oom.KmsgReader, "__init__", _forbidden)
    monkeypatch.setattr(runtime.oom.CgroupOomWatch, "__init__", _forbidden)
    for module in (runtime.oom, runtime.oomfeed, watcher):
        monkeypatch.setattr(module, "read_counts", _forbidden)
    for module in (runtime.pidinfo, runtime.oomfeed, watcher):
        monkeypatch.setattr(module, "memory_cgroup_of", _forbidden)
    monkeypatch.setattr(AgentRuntime, "_local_runtime", _forbidden)
    assert isinstance(get_runtime(), AgentRuntime)
    yield get_runtime()
    reset_runtime()


async def _next_kill(layer, ch, cid, timeout=20):
    """The next oom.killed published for container cid."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await asyncio.wait_for(layer.receive(ch), deadline - loop.time())
        if msg["type"] == events.KILLED and msg["event"]["container_id"] == cid:
            return msg


def _hog(art, name):
    return art.run(Spec(image="busybox", name=name, cmd=("sh", "-c", f"{HOG}; sleep 30"),
                        limits=Limits(memory=20 << 20)))


def test_a_kill_is_recorded_through_the_agent_alone(rt, name, cleanup, agent_only):
    art = agent_only

    async def run(spec_name):
        async with watching() as (w, layer, ch):
            assert isinstance(w.source, AgentFeed)
            c = await asyncio.to_thread(_hog, art, spec_name)
            msg = await _next_kill(layer, ch, c.id)
            await asyncio.sleep(0.3)                 # let a counter confirmation land
            return c, msg

    for attempt in range(3):
        # Now and then the kernel also kills the init right after the hog's
        # tail: then the container did not live on; run it again.
        cleanup.append(f"{name}-{attempt}")
        c, msg = asyncio.run(run(f"{name}-{attempt}"))
        if art.inspect(c.id).status == "running":
            break
    ev = OomEvent.objects.get(pk=msg["event"]["id"])
    assert (ev.scope, ev.container_key, ev.container_name, ev.container_id) == \
        ("container", c.id, c.name, c.id)
    assert ev.killed_command == "tail" and ev.killed_pid and ev.killed_pid != c.pid
    assert not ev.is_init and not ev.is_global and ev.limit_kb == 20480
    assert "Killed process %d (tail)" % ev.killed_pid in ev.raw
    assert ev.detected_by in ("kmsg", "kmsg+counter")
    assert ev.counters["oom_kill"] == art.oom_counts(c.id).oom_kill == 1
    assert ev.oom_memcg == f"/{art.cgroup_parent}/{c.id}"
    assert OomEvent.objects.filter(container_key=c.id).count() == 1     # deduped


def test_after_a_kill_9_of_the_agent_the_watcher_catches_up_and_follows_on(
        rt, name, cleanup, agent_only, monkeypatch):
    """While the stream is down (held down by the test until a kill has
    happened), the kill is caught up from the counters once it is back; a
    kill after that is followed from the kernel log again."""
    art = agent_only
    back = threading.Event()
    opened = []
    real = AgentRuntime.oom_events

    def held(self, refresh=0.5):
        opened.append(refresh)
        if len(opened) > 1:                      # the reconnection: wait for the test
            assert back.wait(60)
        return real(self, refresh)
    monkeypatch.setattr(AgentRuntime, "oom_events", held)

    def counted(cid):
        for _ in range(200):
            try:
                if art.oom_counts(cid).oom_kill:
                    return True
            except Exception:                    # noqa: BLE001 - its cgroup went (init killed too)
                return False
            threading.Event().wait(0.05)
        return False

    async def run():
        async with watching() as (w, layer, ch):
            try:
                old = art.call("info")["pid"]
                pidfd = os.pidfd_open(old)
                os.kill(old, signal.SIGKILL)
                await asyncio.to_thread(lambda: __import__("select").select([pidfd], [], [], 10))
                os.close(pidfd)
                for _ in range(500):                 # the watcher is trying to reconnect
                    if len(opened) > 1:
                        break
                    await asyncio.sleep(0.02)
                assert len(opened) == 2
                for attempt in range(3):
                    # The missed kill: a new agent starts on the run request, the
                    # stream stays held down meanwhile.
                    cleanup.append(f"{name}-gap-{attempt}")
                    gap = await asyncio.to_thread(_hog, art, f"{name}-gap-{attempt}")
                    if await asyncio.to_thread(counted, gap.id) and art.inspect(gap.id).status == "running":
                        break
                assert art.call("info")["pid"] != old
                back.set()
                caught = await _next_kill(layer, ch, gap.id)
                for attempt in range(3):
                    cleanup.append(f"{name}-after-{attempt}")
                    after = await asyncio.to_thread(_hog, art, f"{name}-after-{attempt}")
                    followed = await _next_kill(layer, ch, after.id)
                    await asyncio.sleep(0.3)
                    if art.inspect(after.id).status == "running":
                        break
                return w, gap, caught, after, followed
            finally:
                back.set()

    w, gap, caught, after, followed = asyncio.run(run())
    assert w.source.connects == 2
    ev = OomEvent.objects.get(pk=caught["event"]["id"])
    assert (ev.container_key, ev.detected_by, ev.counters["oom_kill"], ev.killed_pid) == \
        (gap.id, "counters-at-start", 1, None)
    assert OomEvent.objects.filter(container_key=gap.id).count() == 1
    ev = OomEvent.objects.get(pk=followed["event"]["id"])
    assert (ev.container_key, ev.killed_command) == (after.id, "tail")
    assert ev.detected_by in ("kmsg", "kmsg+counter")
