"""On the real kernel: a lab container held near its limit gets a near-OOM
warning on the `events` group; when it is then OOM-killed, the event row holds
the OOM card: the memory record before the kill, the figures just before, and
the process tree with the victim and its pid inside the container."""
import asyncio
import os
import time

import pytest

from dashboard.containers.models import OomEvent
from dashboard.oom import events
from runtime import Limits, Spec
from tests.conftest import needs_root
from tests.oom.watch import watching

pytestmark = [needs_root, pytest.mark.root, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg not readable")]

# 20 MB held in a 22 MB limit (~96 % with the shells), then a second allocation
# pushes it over: the kernel kills the biggest process, memhog's `tail`.
CMD = "memhog 5 4 0.1 & sleep 2; head -c 30m /dev/zero | tail; sleep 30"


def _watch_until_killed(rt, name, cmd, limit):
    """Run the container under a watcher until its OOM kill is published;
    → (container, the `events` group messages about it)."""
    async def run():
        got = []
        async with watching() as (_, layer, ch):
            c = await asyncio.to_thread(rt.run, Spec(image="lab", name=name, cmd=("sh", "-c", cmd),
                                                     limits=Limits(memory=limit)))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                m = await asyncio.wait_for(layer.receive(ch), deadline - time.monotonic())
                mine = (m.get("warning") or m.get("event") or {}).get("container_id") == c.id
                if mine:
                    got.append(m)
                    if m["type"] == events.KILLED:
                        break
            await asyncio.sleep(0.3)
            return c, got
    return asyncio.run(run())


def test_warning_then_kill_with_the_card(rt, name, cleanup, settings):
    settings.TERRARIUM_OOM_SAMPLE = 0.2
    settings.TERRARIUM_OOM_WARN_PERCENT = 90
    settings.TERRARIUM_OOM_WARN_SAMPLES = 3
    cleanup.append(name)
    c, got = _watch_until_killed(rt, name, CMD, 22 << 20)
    kinds = [m["type"] for m in got]
    assert events.WARNING in kinds and kinds[-1] == events.KILLED, kinds
    warn = next(m["warning"] for m in got if m["type"] == events.WARNING)
    assert warn["reason"] == "near-limit" and warn["percent"] >= 90 and warn["limit"] == 22 << 20
    assert warn["url"].endswith(f"/containers/{c.id}/") or c.id in warn["url"]

    ev = OomEvent.objects.get(pk=got[-1]["event"]["id"])
    assert ev.killed_command == "tail" and ev.container_key == c.id
    win = ev.memory_window
    kill_t = win["kill_t"]
    before = [p for p in win["points"] if p[0] <= kill_t]
    assert len(before) >= 3 and win["limit"] == 22 << 20
    assert ev.before["usage"] >= 0.9 * (22 << 20) and ev.before["ws"] <= ev.before["usage"]
    tree = ev.procs_before["tree"]
    assert tree and ev.procs_before["t"] <= kill_t + 0.05
    from dashboard.oom.memrecord import walk_json
    victims = [n for _, n in walk_json(tree) if n.get("victim")]
    assert [v["pid"] for v in victims] == [ev.killed_pid]
    assert ev.victim_ns_pid == victims[0]["ns_pid"] and 1 < ev.victim_ns_pid < 100


def test_the_card_says_where_the_memory_was(rt, name, cleanup, settings):
    """16 MiB in /dev/shm (tmpfs) of a 22 MiB limit, then `tail` grows until the
    kernel kills it: "why was I OOM-killed when my process was small?" -- the
    card says most of the memory was tmpfs, from memory.stat."""
    settings.TERRARIUM_OOM_SAMPLE = 0.2
    cleanup.append(name)
    cmd = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=16 2>/dev/null; sleep 2; head -c 30m /dev/zero | tail; sleep 30"
    c, got = _watch_until_killed(rt, name, cmd, 22 << 20)
    assert got and got[-1]["type"] == events.KILLED, [m["type"] for m in got]
    ev = OomEvent.objects.get(pk=got[-1]["event"]["id"])
    assert ev.killed_command == "tail" and ev.container_key == c.id
    assert ev.before["anatomy"]["shmem"] >= 15 << 20
    assert ev.before["largest"].endswith("of the 22.0 MiB limit was shmem (tmpfs, shared memory)"), ev.before
