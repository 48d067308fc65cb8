"""Runtime.changes: the containers whose state changed, from inotify on the
state root (runtime/changes.py), in-process and through the agent."""
import threading
import time

import pytest

from runtime import Spec
from runtime.changes import StateWatch

pytestmark = pytest.mark.root


def _collect(watch, want, timeout=10.0):
    """Batches from the watch until ``want(seen)`` holds; → every id seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not want(seen):
        assert time.monotonic() < deadline, f"saw only {seen}"
        batch = watch.read(200)
        assert batch is not None, "queue overflow"
        seen |= batch
    return seen


def test_each_state_change_names_its_container(rt, cleanup, name):
    with StateWatch(rt.containers_dir) as w:
        c = rt.create(Spec(image="lab", name=name, cmd=("sleep", "100")))
        cleanup.append(c.id)
        assert c.id in _collect(w, lambda s: c.id in s)              # created (the directory, config.json)
        assert w.watched >= 1
        w.read(300)                                                     # the create's last events
        rt.start(c.id)
        assert _collect(w, lambda s: c.id in s) == {c.id}               # run.json, from the shim
        rt.pause(c.id)
        assert c.id in _collect(w, lambda s: c.id in s)                 # config.json: paused
        rt.resume(c.id)
        rt.stop(c.id, timeout=2)
        assert c.id in _collect(w, lambda s: c.id in s)                 # exit.json
        w.read(300)
        rt.remove(c.id)
        assert c.id in _collect(w, lambda s: c.id in s)                 # the directory went
        assert w.read(300) in (set(), {c.id})


def test_quiet_when_nothing_changes(rt, cleanup, name):
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100")))
    cleanup.append(c.id)
    with StateWatch(rt.containers_dir) as w:
        rt.list(all=True)                                 # reading changes nothing
        rt.inspect(c.id)
        assert w.read(500) == set()


def test_follow_reports_a_burst_and_stops_when_told(rt, cleanup, name):
    stop = threading.Event()
    batches = []
    ready = threading.Event()

    def follow():
        with StateWatch(rt.containers_dir) as w:
            ready.set()
            for b in w.follow(stop.is_set, wake=0.2):
                batches.append(b)
    t = threading.Thread(target=follow)
    t.start()
    try:
        ready.wait(5)
        made = [rt.create(Spec(image="lab", name=f"{name}-{i}", cmd=("true",))) for i in range(20)]
        cleanup.extend(c.id for c in made)
        deadline = time.monotonic() + 10
        while set().union(*batches) < {c.id for c in made} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set().union(*batches) >= {c.id for c in made}
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()
