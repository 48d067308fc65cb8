"""The v2 driver on a fake cgroup2 tree in a temp dir, and layout detection.

FakeCgroup2 is a small stand-in for cgroupfs: mkdir fills a new cgroup with
the files a 6.x kernel shows (controller files only for what the parent
enabled in cgroup.subtree_control), writes to subtree_control apply +/-
tokens and refuse controllers the parent does not offer, cgroup.freeze
updates cgroup.events, cgroup.kill empties cgroup.procs, and rmdir fails
with EBUSY while processes or child cgroups remain.
"""
import errno
import os
import signal
import subprocess

import pytest

from runtime.cgroups import FS, V1Driver, V2Driver, detect, driver
from runtime.errors import InvalidArgument, KernelError, NotFound
from runtime.model import Limits

ALL = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")

MEMORY_STAT = """\
anon 4423680
file 2162688
kernel 389120
kernel_stack 32768
pagetables 69632
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 1216512
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
inactive_anon 4407296
active_anon 16384
inactive_file 1622016
active_file 540672
unevictable 0
slab_reclaimable 94208
slab_unreclaimable 160312
pgfault 2312
pgmajfault 4
workingset_refault_anon 0
"""

CPU_STAT_CORE = "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnice_usec 0\n"
CPU_STAT_FULL = CPU_STAT_CORE + ("core_sched.force_idle_usec 0\nnr_periods 0\nnr_throttled 0\n"
                                 "throttled_usec 0\nnr_bursts 0\nburst_usec 0\n")

CONTROLLER_FILES = {
    "memory": {
        "memory.current": "0\n", "memory.max": "max\n", "memory.high": "max\n",
        "memory.low": "0\n", "memory.min": "0\n", "memory.peak": "0\n",
        "memory.swap.current": "0\n", "memory.swap.max": "max\n",
        "memory.swap.events": "high 0\nmax 0\nfail 0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "memory.events.local": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "memory.stat": MEMORY_STAT, "memory.oom.group": "0\n",
    },
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n", "cpu.weight.nice": "0\n",
            "cpu.max.burst": "0\n", "cpu.idle": "0\n"},
    "io": {"io.stat": "", "io.max": "", "io.weight": "default 100\n", "io.pressure": ""},
    "pids": {"pids.max": "max\n", "pids.current": "0\n", "pids.peak": "0\n",
             "pids.events": "max 0\n"},
}


class FakeCgroup2(FS):
    """A cgroup2 file system on a temp dir, close enough to the kernel's rules."""

    def __init__(self, root, offered=ALL, kill_file=True, freeze_works=True):
        self.root = str(root)
        self.writes = []             # (path relative to root, value)
        self.kill_file = kill_file
        self.freeze_works = freeze_works
        self._populate(self.root, offered, is_root=True)

    def _populate(self, d, controllers, is_root=False):
        files = {"cgroup.controllers": " ".join(controllers) + "\n",
                 "cgroup.subtree_control": "\n", "cgroup.procs": "", "cgroup.threads": "",
                 "cgroup.max.depth": "max\n", "cgroup.stat": "nr_descendants 0\n",
                 "cpu.stat": CPU_STAT_FULL if "cpu" in controllers else CPU_STAT_CORE}
        if not is_root:
            files.update({"cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0\n",
                          "cgroup.type": "domain\n"})
            if self.kill_file:
                files["cgroup.kill"] = ""
            for c in controllers:
                files.update(CONTROLLER_FILES.get(c, {}))
        for f, text in files.items():
            with open(os.path.join(d, f), "w") as fh:
                fh.write(text)

    def _put(self, path, text):
        with open(path, "w") as fh:
            fh.write(text)

    def mkdir(self, path):
        if os.path.isdir(path):
            return False
        parent = os.path.dirname(path)
        enabled = self.read(os.path.join(parent, "cgroup.subtree_control")).split()
        os.mkdir(path)
        self._populate(path, enabled)
        return True

    def rmdir(self, path):
        if not os.path.isdir(path):
            raise KernelError(errno.ENOENT, f"rmdir {path}")
        if self.read(os.path.join(path, "cgroup.procs")).split() or any(
                os.path.isdir(os.path.join(path, e)) for e in os.listdir(path)):
            raise KernelError(errno.EBUSY, f"rmdir {path}")
        for f in os.listdir(path):
            os.unlink(os.path.join(path, f))
        os.rmdir(path)

    def write(self, path, value):
        if not os.path.exists(path):
            raise KernelError(errno.ENOENT, f"write {path}")
        self.writes.append((os.path.relpath(path, self.root), value))
        d, knob = os.path.split(path)
        if knob == "cgroup.subtree_control":
            offered = self.read(os.path.join(d, "cgroup.controllers")).split()
            enabled = self.read(path).split()
            for tok in value.split():
                c = tok[1:]
                if tok[0] not in "+-" or c not in offered:
                    raise KernelError(errno.EINVAL, f"write {value!r} to {path}")
                if d != self.root and self.read(os.path.join(d, "cgroup.procs")).split():
                    raise KernelError(errno.EBUSY, f"write {value!r} to {path}")
                if tok[0] == "+" and c not in enabled:
                    enabled.append(c)
                elif tok[0] == "-" and c in enabled:
                    enabled.remove(c)
            self._put(path, " ".join(c for c in ALL if c in enabled) + "\n")
        elif knob == "cgroup.procs":
            int(value)
            self._put(path, self.read(path) + value + "\n")
        elif knob == "cgroup.freeze":
            self._put(path, value + "\n")
            if self.freeze_works:
                self._put(os.path.join(d, "cgroup.events"), f"populated 1\nfrozen {value}\n")
        elif knob == "cgroup.kill":
            assert value == "1"
            self._put(os.path.join(d, "cgroup.procs"), "")
        elif knob in ("memory.max", "memory.swap.max", "pids.max"):
            if value != "max":
                assert int(value) >= 0, value
            self._put(path, value + "\n")
        elif knob == "cpu.max":
            quota, period = value.split()
            assert quota == "max" or int(quota) >= 1000
            assert int(period) >= 1000
            self._put(path, value + "\n")
        else:
            self._put(path, value + "\n")

    def set(self, rel, text):
        """Play the kernel: change a file's contents behind the driver's back."""
        self._put(os.path.join(self.root, rel), text)


def knob(fake, rel):
    with open(os.path.join(fake.root, rel)) as fh:
        return fh.read().strip()




# --- create and limits

def test_driver_picks_v2_for_a_tree_with_cgroup_controllers(cg, fake):
    assert isinstance(cg, V2Driver)
    assert cg.paths("abc") == {"unified": os.path.join(fake.root, "terrarium", "abc")}


def test_create_enables_controllers_from_the_root_down(fake):
    cg = driver("outer/terrarium", root_override=fake.root, fs=fake)
    cg.create("abc", Limits(memory=20 << 20))
    assert knob(fake, "cgroup.subtree_control") == "cpu io memory pids"
    assert knob(fake, "outer/cgroup.subtree_control") == "cpu io memory pids"
    assert knob(fake, "outer/terrarium/cgroup.subtree_control") == "cpu io memory pids"
    # the container itself delegates nothing (it will hold processes)
    assert knob(fake, "outer/terrarium/abc/cgroup.subtree_control") == ""
    assert knob(fake, "outer/terrarium/abc/cgroup.controllers") == "cpu io memory pids"
    assert ("cgroup.subtree_control", "+memory +cpu +pids +io") in fake.writes


def test_create_only_enables_what_is_missing_and_offered(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    fake = FakeCgroup2(root, offered=("cpu", "memory", "pids"))   # no io here
    fake.set("cgroup.subtree_control", "memory\n")
    cg = driver("terrarium", root_override=fake.root, fs=fake)
    cg.create("abc", Limits())
    ctl_writes = [w for w in fake.writes if w[0].endswith("subtree_control")]
    assert ctl_writes == [("cgroup.subtree_control", "+cpu +pids"),
                          ("terrarium/cgroup.subtree_control", "+memory +cpu +pids")]
    cg.create("def", Limits())       # second container: nothing left to enable
    assert len([w for w in fake.writes if w[0].endswith("subtree_control")]) == 2


def test_create_memory_only_means_no_swap(cg, fake):
    cg.create("abc", Limits(memory=20 << 20, cpus=0.5, pids=64))
    assert knob(fake, "terrarium/abc/memory.max") == str(20 << 20)
    assert knob(fake, "terrarium/abc/memory.swap.max") == "0"
    assert knob(fake, "terrarium/abc/cpu.max") == "50000 100000"
    assert knob(fake, "terrarium/abc/pids.max") == "64"


@pytest.mark.parametrize("limits,mem,swap,cpu,pids", [
    (Limits(), "max", "max", "max 100000", "max"),
    (Limits(memory=64 << 20, memory_swap=96 << 20), str(64 << 20), str(32 << 20),
     "max 100000", "max"),
    (Limits(memory=64 << 20, memory_swap=-1), str(64 << 20), "max", "max 100000", "max"),
    (Limits(cpus=2.5, pids=1), "max", "max", "250000 100000", "1"),
])
def test_limit_values(cg, fake, limits, mem, swap, cpu, pids):
    cg.create("abc", limits)
    assert [knob(fake, f"terrarium/abc/{k}") for k in
            ("memory.max", "memory.swap.max", "cpu.max", "pids.max")] == [mem, swap, cpu, pids]


def test_update_is_live_and_none_resets_to_max(cg, fake):
    cg.create("abc", Limits(memory=20 << 20, cpus=0.5, pids=10))
    cg.update("abc", Limits(memory=40 << 20, memory_swap=50 << 20, cpus=1.0))
    assert knob(fake, "terrarium/abc/memory.max") == str(40 << 20)
    assert knob(fake, "terrarium/abc/memory.swap.max") == str(10 << 20)
    assert knob(fake, "terrarium/abc/cpu.max") == "100000 100000"
    assert knob(fake, "terrarium/abc/pids.max") == "max"
    cg.update("abc", Limits())
    assert knob(fake, "terrarium/abc/memory.max") == "max"
    assert knob(fake, "terrarium/abc/memory.swap.max") == "max"


def test_update_missing_cgroup_is_not_found(cg):
    with pytest.raises(NotFound, match="terrarium/nope"):
        cg.update("nope", Limits(memory=1 << 20))


def test_limit_without_its_controller_fails_and_rolls_back(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    fake = FakeCgroup2(root, offered=("cpu", "pids"))              # no memory controller
    cg = driver("terrarium", root_override=fake.root, fs=fake)
    with pytest.raises(KernelError) as e:
        cg.create("abc", Limits(memory=20 << 20))
    assert e.value.code == errno.ENOENT
    assert "memory.max" in str(e.value) and "not enabled" in str(e.value)
    assert not os.path.exists(os.path.join(fake.root, "terrarium"))
    cg.create("abc", Limits(cpus=0.5))                             # unlimited memory is fine
    assert knob(fake, "terrarium/abc/cpu.max") == "50000 100000"


def test_bad_names_are_refused_before_any_write(cg, fake):
    for bad in ("", "..", "a/b", "."):
        with pytest.raises(InvalidArgument):
            cg.create(bad, Limits())
    with pytest.raises(InvalidArgument):
        driver("../escape", root_override=fake.root, fs=fake)
    with pytest.raises(InvalidArgument):
        cg.create("abc", Limits(memory=10 << 20, memory_swap=5 << 20))
    assert fake.writes == []


# --- processes, freezer, kill, counters

def test_attach_and_procs(cg, fake):
    cg.create("abc", Limits())
    cg.attach("abc", 4242)
    cg.attach("abc", 0)
    assert ("terrarium/abc/cgroup.procs", "4242") in fake.writes
    assert ("terrarium/abc/cgroup.procs", "0") in fake.writes
    fake.set("terrarium/abc/cgroup.procs", "4242\n17\n4242\n")
    assert cg.procs("abc") == [17, 4242]
    with pytest.raises(InvalidArgument):
        cg.attach("abc", -1)


def test_freeze_thaw_follow_cgroup_events(cg, fake):
    cg.create("abc", Limits())
    assert not cg.is_frozen("abc")
    cg.freeze("abc")
    assert knob(fake, "terrarium/abc/cgroup.freeze") == "1"
    assert cg.is_frozen("abc")
    cg.thaw("abc")
    assert knob(fake, "terrarium/abc/cgroup.freeze") == "0"
    assert not cg.is_frozen("abc")


def test_freeze_times_out_when_events_never_say_frozen(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    fake = FakeCgroup2(root, freeze_works=False)
    cg = driver("terrarium", root_override=fake.root, fs=fake)
    cg.create("abc", Limits())
    with pytest.raises(KernelError) as e:
        cg.freeze("abc", timeout=0.05)
    assert e.value.code == errno.EBUSY and "cgroup.events" in str(e.value)


def test_kill_all_uses_cgroup_kill_for_sigkill(cg, fake):
    cg.create("abc", Limits())
    fake.set("terrarium/abc/cgroup.procs", "11\n12\n")
    assert cg.kill_all("abc", signal.SIGKILL) == 2
    assert fake.writes[-1] == ("terrarium/abc/cgroup.kill", "1")
    assert cg.procs("abc") == []


def test_kill_all_signals_each_pid_without_cgroup_kill(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    fake = FakeCgroup2(root, kill_file=False)     # kernels before 5.14
    cg = driver("terrarium", root_override=fake.root, fs=fake)
    cg.create("abc", Limits())
    child = subprocess.Popen(["sleep", "30"])
    try:
        fake.set("terrarium/abc/cgroup.procs", f"{child.pid}\n")
        assert cg.kill_all("abc", signal.SIGKILL) == 1
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_oom_kills_from_memory_events(cg, fake):
    cg.create("abc", Limits(memory=20 << 20))
    assert cg.oom_kills("abc") == 0
    fake.set("terrarium/abc/memory.events", "low 0\nhigh 0\nmax 57\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert cg.oom_kills("abc") == 2


def fill_sample_files(fake, name="abc"):
    """The counters a busy v2 cgroup shows, as the kernel writes them (shared with test_stats)."""
    fake.set(f"terrarium/{name}/memory.current", "6615040\n")
    fake.set(f"terrarium/{name}/memory.swap.current", "4096\n")
    fake.set(f"terrarium/{name}/memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n")
    fake.set(f"terrarium/{name}/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
             "nice_usec 0\nnr_periods 40\nnr_throttled 7\nthrottled_usec 2500\nnr_bursts 0\nburst_usec 0\n")
    fake.set(f"terrarium/{name}/pids.current", "3\n")
    fake.set(f"terrarium/{name}/io.stat", "8:0 rbytes=1048576 wbytes=8192 rios=3 wios=2 dbytes=0 dios=0\n"
             "8:16 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")


def check_sample_of_the_files(s):
    """What a sample of fill_sample_files' cgroup (made with Limits(memory=64
    MiB, cpus=0.5, pids=100)) must say, figures and sources (shared with
    test_stats: the driver and the kept-open reader read the same)."""
    assert s.memory_usage == 6615040
    assert s.memory_limit == 64 << 20
    assert s.memory_swap == 4096 and s.memory_swap_limit == 0
    assert s.memory_cache == 2162688 and s.memory_inactive_file == 1622016
    assert s.figures["memory_rss"] == 4423680
    assert s.memory_events["max"] == 9 and s.oom_kills == 1 and s.memory_failcnt is None
    assert s.cpu_usage_ns == 1_500_000
    assert (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns) == (40, 7, 2_500_000)
    assert (s.cpu_quota_us, s.cpu_period_us) == (50000, 100000)
    assert (s.pids_current, s.pids_max) == (3, 100)
    assert (s.io_read_bytes, s.io_write_bytes) == (1048576 + 4096, 8192)
    assert s.sources["cpu_usage_ns"] == "cpu.stat usage_usec"
    assert s.sources["memory_inactive_file"] == "memory.stat inactive_file"
    assert s.sources["memory_usage"] == "memory.current"
    assert s.sources["io_read_bytes"] == "io.stat rbytes"


def test_sample_reads_raw_numbers_with_sources(cg, fake):
    cg.create("abc", Limits(memory=64 << 20, cpus=0.5, pids=100))
    fill_sample_files(fake)
    check_sample_of_the_files(cg.sample("abc"))


# --- remove

def test_remove_waits_for_processes_then_leaves_the_parent(cg, fake):
    cg.create("abc", Limits())
    fake.set("terrarium/abc/cgroup.procs", "99\n")
    with pytest.raises(KernelError) as e:
        cg.remove("abc", timeout=0.05)
    assert e.value.code == errno.EBUSY
    assert cg.exists("abc")
    fake.set("terrarium/abc/cgroup.procs", "")
    cg.remove("abc")
    assert not cg.exists("abc")
    assert os.path.isdir(os.path.join(fake.root, "terrarium"))    # parent stays
    cg.remove("abc")                                              # already gone: fine
    assert cg.remove_parent() is True
    assert not os.path.exists(os.path.join(fake.root, "terrarium"))
    assert cg.remove_parent() is True                             # twice: fine


def test_remove_parent_keeps_a_parent_with_children(cg, fake):
    cg.create("abc", Limits())
    assert cg.remove_parent() is False
    assert cg.exists("abc")


# --- the helpers' own cgroup

def test_join_daemons_makes_parent_and_daemons_and_moves_the_caller(cg, fake):
    held = cg.join_daemons()
    try:
        assert ("terrarium/_daemons/cgroup.procs", "0") in fake.writes     # "0": the caller
    finally:
        os.close(held)


def test_remove_parent_keeps_daemons_with_a_process_then_removes_both(cg, fake):
    cg.create("abc", Limits())
    os.close(cg.join_daemons())
    cg.remove("abc")
    assert cg.remove_parent() is False                            # a helper is still in it
    assert os.path.isdir(os.path.join(fake.root, "terrarium/_daemons"))
    fake.set("terrarium/_daemons/cgroup.procs", "")
    assert cg.remove_parent() is True
    assert not os.path.exists(os.path.join(fake.root, "terrarium"))


def test_only_the_last_helper_to_leave_removes_the_cgroups(cg, fake):
    first, second = cg.join_daemons(), cg.join_daemons()     # two helpers
    assert cg.leave_daemons(first) is False                  # the other still holds its lock
    assert os.path.isdir(os.path.join(fake.root, "terrarium/_daemons"))
    fake.set("terrarium/_daemons/cgroup.procs", "")          # (the fake cannot move us out)
    assert cg.leave_daemons(second) is True
    assert not os.path.exists(os.path.join(fake.root, "terrarium"))


def test_remove_parent_keeps_the_parent_while_a_container_remains(cg, fake):
    cg.create("abc", Limits())
    os.close(cg.join_daemons())
    fake.set("terrarium/_daemons/cgroup.procs", "")
    assert cg.remove_parent() is False
    assert cg.exists("abc")
    assert not os.path.exists(os.path.join(fake.root, "terrarium/_daemons"))


# --- detection

V2_MOUNTINFO = """\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 24 0:26 / {root} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
35 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
36 31 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
38 31 0:35 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,cpuset
"""

HYBRID_MOUNTINFO = V1_MOUNTINFO + (
    "33 31 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:11 - cgroup2 cgroup2 rw,nsdelegate\n")


def test_detect_pure_v2_reads_root_controllers(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    layout = detect(text=V2_MOUNTINFO.format(root=tmp_path))
    assert layout.kind == "v2"
    assert layout.v2 == str(tmp_path)
    assert layout.v1 == {}
    assert "memory" in layout.v2_controllers and "io" in layout.v2_controllers
    assert isinstance(driver(layout=layout), V2Driver)


def test_detect_v1_with_comounted_cpu_cpuacct():
    layout = detect(text=V1_MOUNTINFO)
    assert layout.kind == "v1" and layout.v2 is None
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"
    assert "name=systemd" not in layout.v1 and "systemd" not in layout.v1
    assert layout.named == {"name=systemd": "/sys/fs/cgroup/systemd"}
    cg = driver("terrarium", layout=layout)
    assert isinstance(cg, V1Driver)
    assert "cpuset" not in cg.paths("x") and "net_cls" not in cg.paths("x")
    # cpu and cpuacct share one directory: it is made / attached / removed once
    assert cg._dirs("x").count("/sys/fs/cgroup/cpu,cpuacct/terrarium/x") == 1
    assert len(cg._dirs("x")) == 4


def test_detect_hybrid_uses_v1_driver():
    layout = detect(text=HYBRID_MOUNTINFO)
    assert layout.kind == "hybrid"
    assert layout.v2 == "/sys/fs/cgroup/unified"
    assert layout.v1["memory"] == "/sys/fs/cgroup/memory"
    cg = driver(layout=layout)
    assert isinstance(cg, V1Driver)
    # systemd tracks units' processes in name=systemd and the hybrid cgroup2
    # tree: the helpers' cgroup is made there too, containers' cgroups are not
    assert cg._daemon_roots()["name=systemd"] == "/sys/fs/cgroup/systemd"
    assert cg._daemon_roots()[""] == "/sys/fs/cgroup/unified"
    assert "/sys/fs/cgroup/unified/terrarium/x" not in cg._dirs("x")


def test_detect_prefers_the_mount_showing_the_hierarchy_root():
    text = ("50 31 0:33 /docker/abc /mnt/inner rw - cgroup cgroup rw,memory\n"
            "51 31 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert detect(text=text).v1["memory"] == "/sys/fs/cgroup/memory"


def test_detect_without_cgroups_is_not_found():
    with pytest.raises(NotFound):
        detect(text=V2_MOUNTINFO.splitlines()[0] + "\n")


def test_root_override_with_layout_maps_v1_controllers(tmp_path):
    layout = detect(text=V1_MOUNTINFO)
    cg = driver("terrarium", layout=layout, root_override=str(tmp_path))
    assert cg.paths("x")["memory"] == str(tmp_path / "memory" / "terrarium" / "x")
