"""Runtime.list() keeps a container until one of its state files changes --
a running one also only while its init is the same process -- and never one
whose state depends on more (a health check): same answers as reading
everything again, for a fraction of the work at 1,000."""
import os
import signal
import time

from runtime import Limits, Runtime, Spec
from runtime.model import Healthcheck
from runtime.pidinfo import process_start_time


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
    rt.start(c.id)                                             # running: kept while init lives
    running = _mine(rt, c.id)
    assert running.status == "running" and running.pid and running.namespaces
    assert _mine(rt, c.id) is running
    assert _mine(Runtime(rt.root, rt.cgroup_parent), c.id) == running
    rt.kill(c.id)
    rt.wait(c.id, timeout=10)
    exited = _mine(rt, c.id)
    assert exited.status == "exited" and exited.exit_code == 137 and _mine(rt, c.id) is exited
    fresh = Runtime(rt.root, rt.cgroup_parent)                 # what a reader with no cache says
    assert _mine(fresh, c.id) == exited
    rt.remove(c.id)
    assert c.id not in {x.id for x in rt.list(all=True)}
    assert c.id not in rt._list_cache                          # a removed one is not kept


def test_list_notices_a_running_container_whose_shim_and_init_were_killed(rt, cleanup, name):
    """No file changes when the shim is SIGKILLed with its container (nobody
    writes exit.json): the kept running container is dropped because its init
    is gone, and the list says what a fresh read says."""
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    cleanup.append(c.id)
    running = _mine(rt, c.id)
    assert running.status == "running" and _mine(rt, c.id) is running
    os.kill(running.shim_pid, signal.SIGKILL)
    os.kill(running.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_start_time(running.pid) is not None or process_start_time(running.shim_pid) is not None:
        assert time.monotonic() < deadline, "the killed init or shim is still there"
        time.sleep(0.02)
    after = _mine(rt, c.id)
    assert after.status == "exited" and after.error == "the shim died; exit status unknown"
    assert _mine(Runtime(rt.root, rt.cgroup_parent), c.id) == after


def test_list_reads_a_container_with_a_health_check_every_time(rt, cleanup, name):
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300"),
                    healthcheck=Healthcheck(test=("true",), interval=30.0)))
    cleanup.append(c.id)
    assert _mine(rt, c.id).status == "running" and _mine(rt, c.id) is not _mine(rt, c.id)
