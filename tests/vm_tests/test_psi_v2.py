"""Pressure stall information per container on a real cgroup v2 kernel (the
VM boots with psi=1): cpu.pressure moves under a CPU hog with a quota, and
memory.pressure under a memory hog the kernel has to throttle; both read by
the sampler's reader through the table's rows, each with its file."""
import os
import time

import pytest

CGROUP = "/sys/fs/cgroup"
MB = 1 << 20


@pytest.fixture(scope="module")
def rt(module_runtime):
    import runtime
    with module_runtime("vm-psi") as r:
        yield r, runtime


def _grows(reader, cid, key, timeout=30.0):
    """The figure's first reading and a later, larger one (ticking as the sampler does)."""
    first = reader.read(cid, tree=False)[0]
    assert first.get(key) is not None, f"{key} missing: no PSI in this kernel? {first.sources}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        raw = reader.read(cid, tree=False)[0]
        if raw.figures[key] > first.figures[key]:
            return first, raw
    pytest.fail(f"{key} stayed at {first.get(key)} for {timeout}s")


def test_cpu_pressure_moves_under_a_cpu_hog_with_a_quota(rt):
    r, runtime = rt
    from runtime import stats
    burn = "for i in 1 2 3; do (while :; do :; done) & done; wait"
    c = r.run(runtime.Spec(image="busybox", name="psi-cpu", cmd=("sh", "-c", burn),
                           limits=runtime.Limits(cpus=0.5)))
    reader = stats.StatsReader(r.cgroups)
    try:
        first, raw = _grows(reader, c.id, "psi_cpu_some_total")
        assert raw.sources["psi_cpu_some_total"] == "cpu.pressure some total"
        assert raw.cpu_nr_throttled > first.cpu_nr_throttled        # and throttled under the quota
        assert 0 <= raw.figures["psi_cpu_some_avg10"] <= 100
    finally:
        reader.close()
        r.remove(c.id, force=True)


def test_memory_pressure_moves_when_the_kernel_throttles_a_hog(rt):
    """memory.high 8 MiB under a 64 MiB max, 24 MiB of anonymous memory held:
    with no swap the kernel cannot reclaim it and makes the allocator sleep
    (the over-high penalty), which memory.pressure counts as a stall."""
    r, runtime = rt
    from runtime import stats
    hog = "sleep 1; (head -c 24m /dev/zero; sleep 300) | tail -c 24m >/dev/null"
    c = r.run(runtime.Spec(image="busybox", name="psi-mem", cmd=("sh", "-c", hog),
                           limits=runtime.Limits(memory=64 * MB)))
    with open(os.path.join(CGROUP, c.cgroup, "memory.high"), "w") as f:   # our own container's cgroup
        f.write(str(8 * MB))
    reader = stats.StatsReader(r.cgroups)
    try:
        first, raw = _grows(reader, c.id, "psi_memory_some_total")
        assert raw.sources["psi_memory_some_total"] == "memory.pressure some total"
        assert raw.figures["memory_high"] == 8 * MB and raw.memory_limit == 64 * MB
        events = r.cgroups.sample(c.id).memory_events
        assert events["high"] > 0 and events["oom_kill"] == 0
    finally:
        reader.close()
        r.remove(c.id, force=True)
