"""The VM really is pure cgroup v2, and its memory controller OOM-kills as
the runtime expects (memory.max, memory.events oom_kill)."""
import os
import signal
import time


CGROUP = "/sys/fs/cgroup"


def test_only_cgroup2_is_mounted():
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ", 1) for line in f if " - " in line]
    fstypes = [(m[0].split()[4], m[1].split()[0]) for m in mounts]
    assert ("/sys/fs/cgroup", "cgroup2") in fstypes
    v1 = [point for point, fstype in fstypes if fstype == "cgroup"]
    assert v1 == [], f"v1 hierarchies mounted: {v1}"


def test_root_offers_the_controllers_the_runtime_uses():
    with open(os.path.join(CGROUP, "cgroup.controllers")) as f:
        controllers = set(f.read().split())
    assert {"memory", "cpu", "pids", "io"} <= controllers
    assert os.path.exists(os.path.join(CGROUP, "cgroup.freeze")) is False  # root has none
    assert os.uname().release.startswith("6.1.")


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def _read(path):
    with open(path) as f:
        return f.read()


def test_memory_max_oom_kills_a_hog(cgroup_tree_unchanged):
    subtree = os.path.join(CGROUP, "cgroup.subtree_control")
    _write(subtree, "+memory")
    cg = os.path.join(CGROUP, f"tvm-oom-{os.getpid()}")
    os.mkdir(cg)
    try:
        _write(os.path.join(cg, "memory.max"), str(20 << 20))
        _write(os.path.join(cg, "memory.swap.max"), "0")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the hog: join the cgroup, then touch 64 MB
            try:
                os.close(r)
                _write(os.path.join(cg, "cgroup.procs"), "0")
                os.write(w, b"in")
                chunks = []
                for _ in range(64):
                    chunks.append(b"x" * (1 << 20))
                os._exit(0)
            except BaseException:
                os._exit(3)
        os.close(w)
        assert os.read(r, 2) == b"in"
        os.close(r)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "the hog was not OOM-killed within 60 s"
            time.sleep(0.05)
        assert os.WIFSIGNALED(status), f"hog exited normally: status {status:#x}"
        assert os.WTERMSIG(status) == signal.SIGKILL
        assert 128 + os.WTERMSIG(status) == 137
        events = dict(line.split() for line in _read(os.path.join(cg, "memory.events")).splitlines())
        assert int(events["oom_kill"]) == 1, events
        assert int(events["max"]) >= 1, events
        assert _read(os.path.join(cg, "cgroup.procs")).strip() == ""
    finally:
        os.rmdir(cg)
    assert not os.path.exists(cg)
