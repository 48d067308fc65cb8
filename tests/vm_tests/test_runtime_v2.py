"""The project's runtime on a pure cgroup v2 kernel: the V2 driver directly,
then whole containers through runtime.Runtime.

Each group skips (with the reason) while the part of the runtime it needs
does not exist yet.
"""
import importlib
import importlib.util
import os
import signal
import time

import pytest

CGROUP = "/sys/fs/cgroup"
MB = 1 << 20


def _need(module, *attrs):
    """Import module or skip; skip too when it lacks one of attrs."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        pytest.skip(f"{module} does not exist yet")
    mod = importlib.import_module(module)
    missing = [a for a in attrs if not hasattr(mod, a)]
    if missing:
        pytest.skip(f"{module} has no {', '.join(missing)} yet")
    return mod


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _events(path):
    return dict((k, int(v)) for k, v in (line.split() for line in _read(path).splitlines()))


def _wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------- the driver

@pytest.fixture
def drv(cgroup_tree_unchanged):
    cgroups = _need("runtime.cgroups", "driver", "detect")
    model = _need("runtime.model", "Limits")
    d = cgroups.driver(f"tvm-drv-{os.getpid()}")
    yield d, model.Limits
    if d.exists("c1"):
        d.kill_all("c1")
        d.remove("c1")
    d.remove_parent()


def test_detect_says_v2():
    cgroups = _need("runtime.cgroups", "detect")
    layout = cgroups.detect()
    assert layout.kind == "v2"


def test_driver_limits_update_freeze_remove(drv):
    d, Limits = drv
    assert d.kind == "v2"
    for verb in ("create", "attach", "update", "freeze", "thaw", "oom_kills", "remove"):
        if not hasattr(d, verb):
            pytest.skip(f"the v2 driver has no {verb}() yet")
    d.create("c1", Limits(memory=32 * MB, cpus=0.5, pids=16))
    cg = os.path.join(CGROUP, d.parent, "c1")
    assert _read(f"{cg}/memory.max") == str(32 * MB)
    assert _read(f"{cg}/memory.swap.max") == "0"
    assert _read(f"{cg}/cpu.max") == "50000 100000"
    assert _read(f"{cg}/pids.max") == "16"

    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    try:
        d.attach("c1", pid)
        assert _read(f"{cg}/cgroup.procs").split() == [str(pid)]

        d.update("c1", Limits(memory=64 * MB, cpus=1.5, pids=100))
        assert _read(f"{cg}/memory.max") == str(64 * MB)
        assert _read(f"{cg}/cpu.max") == "150000 100000"
        assert _read(f"{cg}/pids.max") == "100"
        d.update("c1", Limits())
        assert _read(f"{cg}/memory.max") == "max"
        assert _read(f"{cg}/cpu.max") == "max 100000"

        d.freeze("c1")
        assert _read(f"{cg}/cgroup.freeze") == "1"
        assert _events(f"{cg}/cgroup.events")["frozen"] == 1
        d.thaw("c1")
        assert _events(f"{cg}/cgroup.events")["frozen"] == 0
        assert d.oom_kills("c1") == 0
        d.kill_all("c1")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    d.remove("c1")
    assert not os.path.exists(cg)
    assert d.remove_parent()
    assert not os.path.exists(os.path.join(CGROUP, d.parent))


def test_driver_counts_an_oom_kill(drv):
    d, Limits = drv
    d.create("c1", Limits(memory=20 * MB))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)                      # wait until attached
            hog = [b"x" * MB for _ in range(64)]
            os._exit(len(hog) and 0)
        except BaseException:
            os._exit(3)
    os.close(r)
    d.attach("c1", pid)
    os.write(w, b"g")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, hex(status)
    assert d.oom_kills("c1") == 1
    d.remove("c1")


# ---------------------------------------------------------- whole containers

@pytest.fixture(scope="module")
def rt(module_runtime):
    runtime = _need("runtime", "Spec", "Limits")
    _need("runtime.containers", "Runtime")
    with module_runtime("vm-rt") as r:
        yield r, runtime


def _cg(c):
    return os.path.join(CGROUP, c.cgroup)


def test_create_start_stop_remove_with_limits(rt):
    r, runtime = rt
    limits = runtime.Limits(memory=64 * MB, cpus=0.5, pids=32)
    c = r.create(runtime.Spec(image="busybox", name="life", cmd=("sleep", "300"), limits=limits))
    assert c.status == "created"
    c = r.start("life")
    assert c.status == "running" and c.pid
    cg = _cg(c)
    assert _read(f"{cg}/memory.max") == str(64 * MB)
    assert _read(f"{cg}/memory.swap.max") == "0"
    assert _read(f"{cg}/cpu.max") == "50000 100000"
    assert _read(f"{cg}/pids.max") == "32"
    assert str(c.pid) in _read(f"{cg}/cgroup.procs").split()
    t = time.monotonic()
    c = r.stop("life", timeout=5)
    assert c.status == "exited"
    assert c.exit_code in (137, 143)
    assert time.monotonic() - t < 8
    assert not c.oom_killed
    r.remove("life")
    assert not os.path.exists(cg), "the container's cgroup is still there after remove"
    assert "life" not in {x.name for x in r.list()}


def test_helpers_live_in_daemons_and_the_last_out_removes_the_parent(module_runtime):
    runtime = _need("runtime", "Spec")
    _need("runtime.cgroups.base", "DAEMONS")
    with module_runtime("vm-daemons") as r:
        parent = os.path.join(CGROUP, r.cgroup_parent)
        c = r.run(runtime.Spec(image="busybox", name="d", cmd=("sleep", "300")))
        for pid in (c.shim_pid, int(_read(os.path.join(r.run_dir, "forkserver.pid")))):
            assert _read(f"/proc/{pid}/cgroup") == f"0::/{r.cgroup_parent}/_daemons"
        r.shutdown_servers()
        assert os.path.isdir(parent)                    # its container and shim remain
        r.remove("d", force=True)                       # the shim, last out, takes it along
        _wait_for(lambda: not os.path.exists(parent), what="the parent's removal")


def test_pids_limit_holds(rt):
    r, runtime = rt
    # A subshell forks sleeps until the 8-pid limit refuses (busybox sh gives
    # up on the first failed fork): init + subshell + 6 sleeps.  The subshell
    # exits and the container's sh execs, which needs no new pid, so the
    # container stays up with init + 6 sleeps = 7 pids.
    c = r.run(runtime.Spec(image="busybox", name="pids", limits=runtime.Limits(pids=8),
                           cmd=("sh", "-c", "(i=0; while [ $i -lt 20 ]; do sleep 300 & i=$((i+1)); done); "
                                "exec sleep 300")))
    cg = _cg(c)

    def at_limit():
        assert r.inspect("pids").status == "running", r.logs("pids")
        return (_events(f"{cg}/pids.events").get("max", 0) >= 1
                and int(_read(f"{cg}/pids.current")) == 7)
    _wait_for(at_limit, what="pids.current 7 and a refused fork in pids.events")
    assert _read(f"{cg}/pids.max") == "8"
    assert b"fork" in r.logs("pids").lower()
    r.remove("pids", force=True)
    assert not os.path.exists(cg)


def test_oom_kill_gives_137_and_oom_flag(rt):
    r, runtime = rt
    c = r.run(runtime.Spec(image="busybox", name="oom", limits=runtime.Limits(memory=20 * MB),
                           cmd=("sh", "-c", "head -c 100m /dev/zero | tail")))
    cg = _cg(c)
    c = r.wait("oom", timeout=60)
    assert c.status == "exited"
    assert c.exit_code == 137, c
    assert c.oom_killed, c
    r.remove("oom")
    assert not os.path.exists(cg)


def test_device_nodes_made_inside_cannot_be_opened(rt):
    """cgroup v2 has no devices controller: the nodev mounts are the only guard
    against a container opening a device node it made with CAP_MKNOD."""
    r, runtime = rt
    script = ("mknod /tmp/mine c 1 3 && echo made; echo x > /tmp/mine && echo wrote-tmp; "
              "mknod /dev/mine c 1 3 && echo x > /dev/mine && echo wrote-dev; "
              "echo x > /dev/null && echo null-ok")
    r.run(runtime.Spec(image="busybox", name="mknod", cmd=("sh", "-c", script)))
    r.wait("mknod", timeout=60)
    out = r.logs("mknod").decode().split()
    assert "made" in out and "null-ok" in out, out
    assert "wrote-tmp" not in out and "wrote-dev" not in out, out
    r.remove("mknod")


def test_update_changes_limits_live(rt):
    r, runtime = rt
    c = r.run(runtime.Spec(image="busybox", name="upd", cmd=("sleep", "300"),
                           limits=runtime.Limits(memory=64 * MB, pids=32)))
    cg = _cg(c)
    assert _read(f"{cg}/memory.max") == str(64 * MB)
    c = r.update("upd", runtime.Limits(memory=128 * MB, cpus=0.25, pids=50))
    assert c.status == "running"
    assert c.limits.memory == 128 * MB
    assert _read(f"{cg}/memory.max") == str(128 * MB)
    assert _read(f"{cg}/cpu.max") == "25000 100000"
    assert _read(f"{cg}/pids.max") == "50"
    r.remove("upd", force=True)
    assert not os.path.exists(cg)


def test_pause_resume_uses_cgroup_freeze(rt):
    r, runtime = rt
    c = r.run(runtime.Spec(image="busybox", name="frz", cmd=("sleep", "300")))
    cg = _cg(c)
    c = r.pause("frz")
    assert c.status == "paused"
    assert _read(f"{cg}/cgroup.freeze") == "1"
    assert _events(f"{cg}/cgroup.events")["frozen"] == 1
    c = r.resume("frz")
    assert c.status == "running"
    assert _read(f"{cg}/cgroup.freeze") == "0"
    assert _events(f"{cg}/cgroup.events")["frozen"] == 0
    # A paused container can still be stopped.
    r.pause("frz")
    c = r.stop("frz", timeout=1)
    assert c.status == "exited"
    r.remove("frz")
    assert not os.path.exists(cg)


# ------------------------------------------- the OOM issue's v2 paths

def _hog_in(d, name):
    """Fork a child that joins cgroup `name` of driver d and touches 64 MB."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
            hog = [b"x" * MB for _ in range(64)]
            os._exit(len(hog) and 0)
        except BaseException:
            os._exit(3)
    os.close(r)
    d.attach(name, pid)
    os.write(w, b"g")
    os.close(w)
    return pid


def test_oom_watch_sees_memory_events_and_kmsg_report(drv):
    oom = _need("runtime.oom", "CgroupOomWatch", "KmsgReader", "parse_oom_reports")
    d, Limits = drv
    d.create("c1", Limits(memory=20 * MB))
    cg = os.path.join(CGROUP, d.parent, "c1")
    kmsg = oom.KmsgReader()                         # from now on
    with oom.CgroupOomWatch({"c1": cg}) as watch:
        assert watch.counts("c1").version == 2
        assert watch.counts("c1").oom_kill == 0
        pid = _hog_in(d, "c1")
        events = []
        deadline = time.monotonic() + 30
        while not any(e.new_kills for e in events):
            assert time.monotonic() < deadline, f"no OOM event through inotify: {events}"
            events += watch.wait(1.0)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    ev = [e for e in events if e.new_kills][0]
    assert ev.key == "c1" and ev.new_kills == 1 and ev.counts.oom_kill == 1
    assert ev.counts.version == 2
    try:
        reports = oom.parse_oom_reports(kmsg.read_available())
    finally:
        kmsg.close()
    assert [r.pid for r in reports] == [pid], reports
    rep = reports[0]
    assert not rep.is_global
    assert rep.oom_memcg == f"/{d.parent}/c1"
    assert rep.task_memcg == f"/{d.parent}/c1"
    assert rep.limit_kb == 20 * 1024
    d.remove("c1")


def test_driver_sample_reads_v2_files(drv):
    d, Limits = drv
    if not hasattr(d, "sample"):
        pytest.skip("the v2 driver has no sample() yet")
    d.create("c1", Limits(memory=64 * MB, cpus=0.5, pids=10))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Only memory touched after the move is charged to c1: wait for it.
        os.close(w)
        os.read(r, 1)
        end = time.monotonic() + 0.3
        junk = b"y" * (4 * MB)
        while time.monotonic() < end:
            pass
        signal.pause()
        os._exit(len(junk) and 0)
    os.close(r)
    try:
        d.attach("c1", pid)
        os.write(w, b"g")
        os.close(w)
        _wait_for(lambda: (d.sample("c1").memory_usage or 0) >= 4 * MB, what="memory.current")
        _wait_for(lambda: (d.sample("c1").cpu_usage_ns or 0) > 0, what="cpu.stat usage_usec")
        s = d.sample("c1")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert s.kind == "v2"
    assert s.memory_limit == 64 * MB
    assert s.memory_usage > 0
    assert s.memory_swap_limit == 0
    assert (s.cpu_quota_us, s.cpu_period_us) == (50000, 100000)
    assert s.pids_max == 10 and s.pids_current == 1
    assert s.oom_kills == 0
    assert s.sources["memory_usage"] == "memory.current"
    d.remove("c1")
