"""Pure parsers and limit arithmetic, from strings as the kernel prints them."""
import pytest

from runtime.cgroups import parse
from runtime.cgroups.base import check_limits, cpu_quota_us, layout_from_mounts, swap_bytes
from runtime.errors import InvalidArgument, NotFound
from runtime.model import Limits
from runtime.pidinfo import parse_mountinfo

HYBRID = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 master:3 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


def test_v1_controllers_of_ignores_flags_and_names():
    assert parse.v1_controllers_of("rw,cpu,cpuacct") == ("cpu", "cpuacct")
    assert parse.v1_controllers_of("rw,xattr,name=systemd") == ()
    assert parse.v1_controllers_of("rw,noprefix,release_agent=/x,cpuset") == ("cpuset",)


@pytest.mark.parametrize("text,value", [
    ("20971520\n", 20971520),
    ("9223372036854771712\n", None),      # v1 "unlimited"
    ("-1\n", None),
])
def test_limit_v1(text, value):
    assert parse.limit_v1(text) == value


def test_max_or_int_and_cpu_max_and_quota():
    assert parse.max_or_int("max\n") is None
    assert parse.max_or_int("4096\n") == 4096
    assert parse.cpu_max("max 100000\n") == (None, 100000)
    assert parse.cpu_max("50000 100000\n") == (50000, 100000)
    assert parse.quota_v1("-1\n") is None
    assert parse.quota_v1("25000\n") == 25000


def test_controllers_pids_freezer():
    assert parse.controllers("cpuset cpu io memory hugetlb pids rdma misc\n") == (
        "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
    assert parse.controllers("\n") == ()
    assert parse.pids("12\n7\n12\n") == [12, 7, 12]
    assert parse.pids("") == []
    assert parse.freezer_state("FREEZING\n") == "FREEZING"


def test_flat_keyed_oom_control_and_cpu_stat():
    oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert parse.flat_keyed(oom) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
    cpu = "nr_periods 12\nnr_throttled 5\nthrottled_time 123456789\nnr_bursts 0\nburst_time 0\n"
    assert parse.flat_keyed(cpu)["throttled_time"] == 123456789
    assert parse.flat_keyed("") == {}


def test_nested_keyed_and_io_stat_bytes():
    text = ("8:0 rbytes=1048576 wbytes=4096 rios=10 wios=1 dbytes=0 dios=0\n"
            "253:1 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    rows = parse.nested_keyed(text)
    assert rows["8:0"]["rios"] == 10
    assert parse.io_stat_bytes(text) == (1048576 + 512, 4096)
    assert parse.io_stat_bytes("") == (0, 0)


def test_blkio_bytes_sums_devices_and_skips_total():
    text = ("8:0 Read 8192\n8:0 Write 4096\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n"
            "8:0 Total 12288\n8:16 Read 100\n8:16 Write 1\n8:16 Total 101\nTotal 12389\n")
    assert parse.blkio_bytes(text) == (8292, 4097)
    assert parse.blkio_bytes("Total 0\n") == (0, 0)


# --- limit arithmetic (Docker's memory_swap rule)

@pytest.mark.parametrize("limits,swap", [
    (Limits(memory=64 << 20), 0),                               # memory alone: no swap
    (Limits(memory=64 << 20, memory_swap=96 << 20), 32 << 20),
    (Limits(memory=64 << 20, memory_swap=64 << 20), 0),
    (Limits(memory=64 << 20, memory_swap=-1), None),            # unlimited swap
    (Limits(), None),                                           # no memory limit at all
])
def test_swap_bytes(limits, swap):
    assert swap_bytes(limits) == swap


@pytest.mark.parametrize("limits", [
    Limits(memory=0), Limits(memory=-5), Limits(memory_swap=10 << 20),
    Limits(memory=20 << 20, memory_swap=10 << 20), Limits(cpus=0), Limits(cpus=0.001),
    Limits(pids=0),
])
def test_check_limits_refuses(limits):
    with pytest.raises(InvalidArgument):
        check_limits(limits)


def test_check_limits_accepts_and_quota():
    check_limits(Limits(memory=1 << 20, memory_swap=-1, cpus=0.01, pids=1))
    assert cpu_quota_us(0.5) == 50000
    assert cpu_quota_us(1.5) == 150000
    assert cpu_quota_us(0.07) == 7000            # no float truncation to 6999


def test_layout_from_mounts_hybrid_and_none():
    layout = layout_from_mounts(parse_mountinfo(HYBRID))
    assert layout.kind == "hybrid"
    assert layout.v1 == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                         "memory": "/sys/fs/cgroup/memory"}
    assert layout.v2 == "/sys/fs/cgroup/unified"
    with pytest.raises(NotFound):
        layout_from_mounts(parse_mountinfo(HYBRID.splitlines()[0]))
