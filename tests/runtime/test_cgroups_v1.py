"""The v1 driver on the real kernel (hybrid host: v1 controllers + empty cgroup2).

Each test works under a throwaway parent ``terrarium-test-<hex>`` at the
root of every hierarchy and removes it in teardown; only processes spawned
here are ever signalled.  Our own process sits in a ``process_api`` memory
cgroup that is not ours: every write the driver makes is recorded and
checked never to land there.
"""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from runtime.cgroups import FS, V1Driver, detect, driver, parse
from runtime.errors import KernelError
from runtime.model import Limits
from runtime.pidinfo import parse_cgroup, parse_mountinfo

pytestmark = pytest.mark.root

LAYOUT = None
try:
    LAYOUT = detect()
except Exception:       # no cgroups at all: every test here skips
    pass

if os.geteuid() != 0 or LAYOUT is None or LAYOUT.kind == "v2" or "memory" not in LAYOUT.v1:
    pytest.skip("needs root and cgroup v1 controllers", allow_module_level=True)

MB = 1 << 20
DOCKER_DEVICES = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                  "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"]


class RecordingFS(FS):
    def __init__(self):
        self.writes = []

    def write(self, path, value):
        self.writes.append((path, value))
        super().write(path, value)

    def mkdir(self, path):
        self.writes.append((path, "<mkdir>"))
        return super().mkdir(path)

    def rmdir(self, path):
        self.writes.append((path, "<rmdir>"))
        super().rmdir(path)


def own_cgroups():
    with open("/proc/self/cgroup") as f:
        return parse_cgroup(f.read())


@pytest.fixture
def cg():
    fs = RecordingFS()
    before = own_cgroups()
    parent = "terrarium-test-" + os.urandom(4).hex()
    drv = driver(parent, layout=LAYOUT, fs=fs)
    spawned = []
    drv.spawned = spawned
    yield drv
    for p in spawned:                      # only our own children
        if p.poll() is None:
            p.kill()
        p.wait()
    for root in dict.fromkeys(drv.mounts.values()):
        pdir = os.path.join(root, parent)
        if os.path.isdir(pdir):
            for child in os.listdir(pdir):
                if os.path.isdir(os.path.join(pdir, child)):
                    drv._rmdir_retry(os.path.join(pdir, child), time.monotonic() + 2)
    drv.remove_parent()
    leftovers = [os.path.join(root, parent) for root in
                 dict.fromkeys(LAYOUT.v1.values()) if os.path.exists(os.path.join(root, parent))]
    assert leftovers == []
    # never touched anything outside our own parent, never moved ourselves
    assert all(f"/{parent}" in path for path, _ in fs.writes), fs.writes
    assert not [p for p, _ in fs.writes if "process_api" in p]
    assert own_cgroups() == before


def spawn(cg, *argv, **kw):
    p = subprocess.Popen(list(argv), **kw)
    cg.spawned.append(p)
    return p


def knob(cg, name, controller, file):
    with open(os.path.join(cg.paths(name)[controller], file)) as f:
        return f.read().strip()


def test_create_sets_limits_and_devices(cg):
    paths = cg.create("c1", Limits(memory=20 * MB, cpus=0.5, pids=10))
    assert set(paths) == {"memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "devices"} & set(LAYOUT.v1)
    for d in paths.values():
        assert os.path.isdir(d) and d.endswith(f"/{cg.parent}/c1")
    if "cpuset" in LAYOUT.v1:
        assert not os.path.exists(os.path.join(LAYOUT.v1["cpuset"], cg.parent))
    assert knob(cg, "c1", "memory", "memory.limit_in_bytes") == str(20 * MB)
    assert knob(cg, "c1", "memory", "memory.memsw.limit_in_bytes") == str(20 * MB)
    assert knob(cg, "c1", "memory", "memory.swappiness") == "0"
    assert knob(cg, "c1", "cpu", "cpu.cfs_period_us") == "100000"
    assert knob(cg, "c1", "cpu", "cpu.cfs_quota_us") == "50000"
    assert knob(cg, "c1", "pids", "pids.max") == "10"
    assert knob(cg, "c1", "devices", "devices.list").splitlines() == DOCKER_DEVICES
    assert cg.exists("c1")
    assert "memory.oom_control" in cg.files("c1")[paths["memory"]]


def test_attach_moves_only_the_child(cg):
    cg.create("c1", Limits(memory=64 * MB))
    p = spawn(cg, "sleep", "30")
    cg.attach("c1", p.pid)
    with open(f"/proc/{p.pid}/cgroup") as f:
        where = parse_cgroup(f.read())
    for c in cg.mounts:
        assert where[c] == f"/{cg.parent}/c1", c
    assert cg.procs("c1") == [p.pid]
    assert os.getpid() not in cg.procs("c1")


def test_attach_zero_means_the_calling_process(cg):
    cg.create("c1", Limits())
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {repo!r}); from runtime.cgroups import driver; "
            f"driver({cg.parent!r}).attach('c1', 0); "
            "print(open('/proc/self/cgroup').read())")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert parse_cgroup(out.stdout)["memory"] == f"/{cg.parent}/c1"
    assert cg.procs("c1") == []         # it exited


def test_freeze_and_thaw(cg):
    cg.create("c1", Limits())
    p = spawn(cg, "sleep", "30")
    cg.attach("c1", p.pid)
    assert not cg.is_frozen("c1")
    cg.freeze("c1")
    assert cg.is_frozen("c1")
    assert knob(cg, "c1", "freezer", "freezer.state") == "FROZEN"
    cg.thaw("c1")
    assert not cg.is_frozen("c1")
    assert knob(cg, "c1", "freezer", "freezer.state") == "THAWED"
    assert p.poll() is None


def test_update_grows_and_shrinks_memory_in_the_right_order(cg):
    # A wrong order makes the kernel refuse with EINVAL (memsw < memory).
    cg.create("c1", Limits(memory=20 * MB, cpus=0.5, pids=10))
    cg.update("c1", Limits(memory=100 * MB, memory_swap=200 * MB, cpus=1.5))
    assert knob(cg, "c1", "memory", "memory.limit_in_bytes") == str(100 * MB)
    assert knob(cg, "c1", "memory", "memory.memsw.limit_in_bytes") == str(200 * MB)
    assert knob(cg, "c1", "memory", "memory.swappiness") != "0"
    assert knob(cg, "c1", "cpu", "cpu.cfs_quota_us") == "150000"
    assert knob(cg, "c1", "pids", "pids.max") == "max"
    cg.update("c1", Limits(memory=10 * MB))
    assert knob(cg, "c1", "memory", "memory.limit_in_bytes") == str(10 * MB)
    assert knob(cg, "c1", "memory", "memory.memsw.limit_in_bytes") == str(10 * MB)
    assert knob(cg, "c1", "memory", "memory.swappiness") == "0"
    assert knob(cg, "c1", "cpu", "cpu.cfs_quota_us") == "-1"
    cg.update("c1", Limits())
    assert parse.limit_v1(knob(cg, "c1", "memory", "memory.limit_in_bytes")) is None
    assert parse.limit_v1(knob(cg, "c1", "memory", "memory.memsw.limit_in_bytes")) is None


def test_kill_all_sigkill_freezes_kills_thaws(cg):
    cg.create("c1", Limits())
    kids = [spawn(cg, "sleep", "30") for _ in range(3)]
    for k in kids:
        cg.attach("c1", k.pid)
    assert cg.kill_all("c1", signal.SIGKILL) == 3
    assert [k.wait(timeout=5) for k in kids] == [-signal.SIGKILL] * 3
    assert not cg.is_frozen("c1")
    assert cg.procs("c1") == []


def test_kill_all_other_signal(cg):
    cg.create("c1", Limits())
    p = spawn(cg, "sleep", "30")
    cg.attach("c1", p.pid)
    assert cg.kill_all("c1", signal.SIGTERM) == 1
    assert p.wait(timeout=5) == -signal.SIGTERM


def test_remove_is_busy_while_alive_and_leaves_nothing(cg):
    cg.create("c1", Limits(memory=32 * MB))
    p = spawn(cg, "sleep", "30")
    cg.attach("c1", p.pid)
    with pytest.raises(KernelError) as e:
        cg.remove("c1", timeout=0.05)
    assert e.value.code == errno.EBUSY and cg.parent in str(e.value)
    assert cg.exists("c1")
    p.kill()                   # remove() retries EBUSY while the process exits
    cg.remove("c1")
    p.wait()
    assert not cg.exists("c1")
    assert all(not os.path.exists(d) for d in cg.paths("c1").values())
    assert all(os.path.isdir(d) for d in cg.parent_paths().values())    # parent kept
    cg.remove("c1")                                                     # missing: fine
    assert cg.remove_parent() is True
    assert all(not os.path.exists(d) for d in cg.parent_paths().values())


def test_remove_parent_keeps_parent_with_a_child(cg):
    cg.create("c1", Limits())
    assert cg.remove_parent() is False
    assert cg.exists("c1")


def test_real_oom_kill_is_sigkill_and_counted(cg):
    cg.create("oom", Limits(memory=20 * MB))
    # The child waits on stdin until it is in the cgroup, then allocates
    # (and touches) 100 MB; with memsw = memory there is nowhere to swap.
    p = spawn(cg, "/bin/busybox", "sh", "-c",
              f"read x; exec {sys.executable} -I -S -c 'b = b\"x\" * (100 << 20)'",
              stdin=subprocess.PIPE)
    cg.attach("oom", p.pid)
    p.stdin.write(b"go\n")
    p.stdin.close()
    assert p.wait(timeout=30) == -signal.SIGKILL
    assert cg.oom_kills("oom") == 1
    s = cg.sample("oom")
    assert s.oom_kills == 1
    assert s.memory_max_usage == 20 * MB          # it did reach the limit
    # failcnt is reported, but kernel 6.18 keeps it at 0 even through an OOM
    assert s.memory_failcnt is not None and s.memsw_failcnt is not None
    assert s.memory_limit == 20 * MB


def test_sample_shows_cpu_throttling(cg):
    cg.create("cpu", Limits(cpus=0.1, pids=5))
    p = spawn(cg, "/bin/busybox", "sh", "-c", "read x; while :; do :; done",
              stdin=subprocess.PIPE)
    cg.attach("cpu", p.pid)
    p.stdin.write(b"go\n")
    p.stdin.flush()
    time.sleep(0.6)
    s = cg.sample("cpu")
    cg.kill_all("cpu")
    p.wait(timeout=5)
    assert 0 < s.cpu_usage_ns < 0.3e9         # 10% of one core over 0.6 s ~ 60 ms
    assert s.cpu_nr_throttled >= 1 and s.cpu_throttled_ns > 0
    assert (s.cpu_quota_us, s.cpu_period_us) == (10000, 100000)
    assert (s.pids_current, s.pids_max) == (1, 5)
    # memory charged before the attach stays with the old cgroup (v1 does
    # not move charges by default): the busy shell has charged nothing here
    assert s.memory_usage is not None
    assert s.sources["cpu_usage_ns"] == "cpuacct.usage"
    assert s.sources["memory_failcnt"] == "memory.failcnt"
    assert s.io_read_bytes is not None


def test_host_layout_is_parsed_not_hard_coded():
    assert isinstance(driver("unused", layout=LAYOUT), V1Driver)
    with open("/proc/self/mountinfo") as f:
        v1_mounts = [m for m in parse_mountinfo(f.read()) if m.fstype == "cgroup"]
    for m in v1_mounts:
        for c in parse.v1_controllers_of(m.super_options):
            assert LAYOUT.v1[c] == m.mount_point
