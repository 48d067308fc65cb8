"""The live feed's arithmetic, from numbers: CPU share, working set, rates, trees."""
import os

import pytest

from dashboard.live import metrics
from runtime import Sample
from runtime.procs import ProcessInfo, ProcessNode

V1_SOURCES = {"memory_usage": "memory.usage_in_bytes", "memory_inactive_file": "memory.stat total_inactive_file",
              "cpu_usage_ns": "cpuacct.usage"}


def test_working_set_is_usage_minus_inactive_file():
    assert metrics.working_set(100 << 20, 30 << 20) == 70 << 20
    assert metrics.working_set(100, None) == 100
    assert metrics.working_set(None, 5) is None
    assert metrics.working_set(10, 20) == 0          # read at different moments: never negative


def test_cpu_share_from_cumulative_nanoseconds():
    assert metrics.cpu_share(0, 500_000_000, 1.0) == pytest.approx(0.5)
    assert metrics.cpu_share(1_000_000_000, 5_000_000_000, 2.0) == pytest.approx(2.0)   # two cores
    assert metrics.cpu_share(None, 5, 1.0) is None                   # first tick
    assert metrics.cpu_share(10, 5, 1.0) == 0                        # counter reset
    assert metrics.cpu_share(0, 5, 0) is None


def test_cpu_share_from_clock_ticks():
    """A process's share from its utime+stime ticks: the same function."""
    assert metrics.cpu_share(100, 150, 1.0, per_second=100) == 0.5
    assert metrics.cpu_share(0, 400, 2.0, per_second=100) == 2.0      # two cores busy
    assert metrics.cpu_share(500, 20, 1.0, per_second=100) == 0.0     # pid reused: no negative share
    assert metrics.cpu_share(0, 100, 1.0, metrics.CLK_TCK) == 100 / os.sysconf("SC_CLK_TCK")


def test_cpu_limit_in_cores():
    assert metrics.cpu_limit(50_000, 100_000) == 0.5
    assert metrics.cpu_limit(None, 100_000) is None
    assert metrics.cpu_limit(-1, 100_000) is None


def test_point_from_two_raw_samples():
    prev = Sample.of("v1", {"cpu_usage_ns": 1_000_000_000, "io_read_bytes": 0, "io_write_bytes": 4096,
                            "cpu_nr_throttled": 3, "cpu_throttled_ns": 1_000_000})
    raw = Sample.of("v1", {"memory_usage": 64 << 20, "memory_inactive_file": 16 << 20, "memory_limit": 128 << 20,
                           "cpu_usage_ns": 1_250_000_000, "cpu_quota_us": 25_000, "cpu_period_us": 100_000,
                           "cpu_nr_throttled": 5, "cpu_throttled_ns": 201_000_000, "pids_current": 3,
                           "pids_max": 64, "io_read_bytes": 2048, "io_write_bytes": 4096}, V1_SOURCES)
    p = metrics.point(prev, raw, 0.5, 1000.0)
    assert p["ws"] == 48 << 20 and p["mem"] == 64 << 20 and p["mem_limit"] == 128 << 20
    assert p["cpu"] == pytest.approx(0.5) and p["cpu_limit"] == 0.25
    assert p["throttled"] == 2 and p["throttled_s"] == pytest.approx(0.2)
    assert p["io_r"] == 4096 and p["io_w"] == 0
    assert p["pids"] == 3 and p["pids_max"] == 64
    first = metrics.point(None, raw, 0, 1000.0)
    assert first["cpu"] is None and first["io_r"] is None and first["ws"] == 48 << 20
    src = metrics.point_sources(raw)
    assert src["mem"] == "memory.usage_in_bytes"
    assert src["ws"] == "memory.usage_in_bytes - memory.stat total_inactive_file"
    assert src["cpu"] == "cpuacct.usage"


def _info(pid, ppid, ticks, start=100, ns=None):
    return ProcessInfo(pid=pid, ppid=ppid, ns_pids=(pid, ns or pid - 99), uid=0, user=None, state="S",
                       comm="sh", cmdline=("sh", "-c", "x"), rss=4096, cpu_ticks=ticks,
                       start_ticks=start, threads=1, kthread=False,
                       sources={"ns_pid": f"/proc/{pid}/status: NSpid:\t{pid}\t{ns or pid - 99}"})


def test_forest_json_nests_and_pairs_cpu_ticks_by_pid_and_start_time():
    forest = [ProcessNode(_info(100, 99, 10), (ProcessNode(_info(101, 100, 20)),))]
    tree, ticks = metrics.forest_json(forest, {}, 1.0)
    assert tree[0]["pid"] == 100 and tree[0]["ns_pid"] == 1 and tree[0]["cpu"] is None
    assert tree[0]["children"][0]["pid"] == 101 and tree[0]["children"][0]["ns_pid"] == 2
    assert "NSpid" in tree[0]["sources"]["ns_pid"]
    later = [ProcessNode(_info(100, 99, 10 + metrics.CLK_TCK // 2),
                         (ProcessNode(_info(101, 100, 5, start=999)),))]   # 101 reused
    tree2, _ = metrics.forest_json(later, ticks, 1.0)
    assert tree2[0]["cpu"] == pytest.approx(0.5)
    assert tree2[0]["children"][0]["cpu"] is None
