"""Runtime.list() keeps a settled container (created and never started, or
exited; no restart policy or health check) until one of its state files
changes, and never one whose state depends on a process: same answers as
reading everything again, for a fraction of the work at 1,000."""
from runtime import Limits, Runtime, Spec


def _mine(rt, cid):
    return next(c for c in rt.list(all=True) if c.id == cid)


def test_list_keeps_settled_containers_until_a_file_changes(rt, cleanup, name):
    c = rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    cleanup.append(c.id)
    first = _mine(rt, c.id)
    assert _mine(rt, c.id) is first                            # kept: not read again
    rt.update(c.id, Limits(memory=32 << 20))                   # config.json rewritten
    changed = _mine(rt, c.id)
    assert changed is not first and changed.limits.memory == 32 << 20
    rt.start(c.id)                                             # running: read every time
    running = _mine(rt, c.id)
    assert running.status == "running" and running.pid and _mine(rt, c.id) is not running
    rt.kill(c.id)
    rt.wait(c.id, timeout=10)
    exited = _mine(rt, c.id)
    assert exited.status == "exited" and exited.exit_code == 137 and _mine(rt, c.id) is exited
    fresh = Runtime(rt.root, rt.cgroup_parent)                 # what a reader with no cache says
    assert _mine(fresh, c.id) == exited
    rt.remove(c.id)
    assert c.id not in {x.id for x in rt.list(all=True)}
    assert c.id not in rt._list_cache                          # a removed one is not kept
