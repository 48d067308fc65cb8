"""runtime.stats (the sampler's kept-open reader) on a real cgroup v2 kernel:
a container that holds ~20 MB and burns CPU under a 0.5-core quota, read the
way the sampler reads it, tick after tick.

The figures must be sane and agree with the V2 driver's sample(): memory
usage >= 15 MB and a working set that counts it (anonymous memory is not
inactive file cache), CPU time growing and throttled under the quota, pids
matching the processes found, io.stat read (this VM has no block device: 0
bytes, as the driver reads it), no OOM kill; and a removed container is
NotFound with every descriptor closed.
"""
import os
import time

import pytest

CGROUP = "/sys/fs/cgroup"
MB = 1 << 20

# 20 MB held by busybox `tail -c`, which keeps the last N bytes of its input
# until EOF (the subshell's sleep holds EOF off), and a busy loop.
HOLD_AND_BURN = ("sh", "-c", "(head -c 20m /dev/zero; sleep 300) | tail -c 20m >/dev/null & "
                             "while :; do :; done")


@pytest.fixture(scope="module")
def rt(module_runtime):
    try:
        import runtime
        from runtime import stats  # noqa: F401
        from runtime.containers import Runtime  # noqa: F401
    except ImportError as e:
        pytest.skip(f"no runtime.stats yet: {e}")
    with module_runtime("vm-stats") as r:
        yield r, runtime


def _fds():
    return len(os.listdir("/proc/self/fd"))



def test_stats_reader_on_a_real_v2_container(rt):
    r, runtime = rt
    from runtime import stats
    from runtime.errors import NotFound
    from runtime.procs import walk
    c = r.run(runtime.Spec(image="busybox", name="stats", cmd=HOLD_AND_BURN,
                           limits=runtime.Limits(memory=128 * MB, cpus=0.5, pids=32)))
    fds = _fds()
    reader = stats.StatsReader(r.cgroups)
    assert r.cgroups.kind == "v2"

    # memory: wait (ticking as the sampler would) until the 20 MB are held
    deadline, raw = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        raw, forest = reader.read(c.id)
        if (raw.memory_usage or 0) >= 20 * MB:
            break
        time.sleep(0.25)
    assert raw.kind == "v2"
    assert raw.memory_usage >= 15 * MB, raw
    with open(os.path.join(CGROUP, c.cgroup, "memory.current")) as f:
        assert abs(raw.memory_usage - int(f.read())) < 4 * MB      # the file, read directly
    ws = raw.memory_usage - (raw.memory_inactive_file or 0)
    assert ws >= 15 * MB, raw                            # anonymous memory: in the working set
    assert raw.figures["memory_rss"] >= 15 * MB, raw             # memory.stat anon
    assert raw.memory_limit == 128 * MB and raw.memory_swap_limit == 0
    assert raw.oom_kills == 0 and raw.memory_failcnt is None

    # cpu: the busy loop's time grows, at most about the 0.5-core quota, throttled
    t0, first = time.monotonic(), reader.read(c.id)[0]
    time.sleep(1.5)
    raw, forest = reader.read(c.id)
    seconds = time.monotonic() - t0
    used = raw.cpu_usage_ns - first.cpu_usage_ns
    assert used > 0.05e9, (first, raw)
    assert used / 1e9 / seconds <= 0.5 * 1.3, (used, seconds)     # the quota holds (TCG: some slack)
    assert raw.cpu_nr_periods > first.cpu_nr_periods
    assert raw.cpu_nr_throttled >= 1 and raw.cpu_throttled_ns > 0, raw
    assert (raw.cpu_quota_us, raw.cpu_period_us) == (50000, 100000)

    # pids: the count matches the processes (and threads) found; init is pid 1 inside
    for _ in range(20):                                  # head may be exiting: tick until still
        procs = [n for _, n in walk(forest)]
        if raw.pids_current == sum(n.info.threads for n in procs):
            break
        time.sleep(0.25)
        raw, forest = reader.read(c.id)
    assert raw.pids_current == sum(n.info.threads for n in procs) >= 3, (raw, procs)   # sh, tail, sleep
    assert raw.pids_max == 32
    assert sorted(n.info.pid for n in procs) == sorted(r.cgroups.procs(c.id))
    assert [n.info.ns_pid for n in forest] == [1]
    assert ("tail", "-c", "20m") in [n.info.cmdline for n in procs]

    # io: read from io.stat (no block device here: no bytes), as the driver reads it
    ref = r.cgroups.sample(c.id)
    assert isinstance(raw.io_read_bytes, int) and raw.io_read_bytes >= 0
    assert isinstance(raw.io_write_bytes, int) and raw.io_write_bytes >= 0
    assert (raw.io_read_bytes, raw.io_write_bytes) == (ref.io_read_bytes, ref.io_write_bytes)
    assert set(raw.figures) == set(ref.figures) and raw.sources == ref.sources
    for k in ("memory_limit", "memory_swap_limit", "cpu_quota_us", "cpu_period_us", "pids_max"):
        assert raw.get(k) == ref.get(k), k

    # removed: NotFound (ENODEV on the kept-open files), and every descriptor closed
    r.remove(c.id, force=True)
    with pytest.raises(NotFound):
        reader.read(c.id)
    assert reader.containers == {} and _fds() == fds


def test_pressure_is_read_and_reaches_metrics(rt):
    """PSI on v2 reaches /metrics: CPU pressure grows for busy loops that wait
    for a 0.3-core quota, and container_pressure_* are taken from the sample."""
    r, runtime = rt
    from runtime import stats
    c = r.run(runtime.Spec(image="busybox", name="psi", cmd=(
        "sh", "-c", "while :; do :; done & while :; do :; done & while :; do :; done"),
        limits=runtime.Limits(cpus=0.3)))
    reader = stats.StatsReader(r.cgroups)
    try:
        first = reader.read(c.id, tree=False)[0]
        if first.figures["psi_cpu_some_total"] is None:
            pytest.skip("this kernel has no PSI (CONFIG_PSI off or psi=0)")
        time.sleep(1.5)
        raw = reader.read(c.id, tree=False)[0]
        waited = raw.figures["psi_cpu_some_total"] - first.figures["psi_cpu_some_total"]
        assert waited > 0.1e6, (first.figures["psi_cpu_some_total"], raw.figures["psi_cpu_some_total"])     # µs

        exporter = pytest.importorskip("dashboard.live.exporter")
        fams = {f.name: f for f in exporter.families([(("/x", "busybox", "psi"), raw)])}
        got = fams["container_pressure_cpu_waiting_seconds"].samples[0]
        assert got.name == "container_pressure_cpu_waiting_seconds_total"
        assert got.value == pytest.approx(raw.figures["psi_cpu_some_total"] / 1e6) and got.value > 0
        assert "container_pressure_memory_stalled_seconds" in fams
    finally:
        reader.close()
        r.remove(c.id, force=True)
