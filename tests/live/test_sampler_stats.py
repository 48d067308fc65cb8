"""runtime.stats, the sampler's fast reader, against the reference reads on a
real container: the same raw sample as the driver's sample(), the same tree
as procs.container_tree(); unchanged work skipped; descriptors closed."""
import os
import subprocess

import pytest

from runtime import Spec, procs, stats
from runtime.errors import NotFound
from tests.conftest import CLI, wait_settled
from tests.fds import count as _fds

pytestmark = pytest.mark.root

STATIC = ("kind", "memory_limit", "memsw_limit", "cpu_quota_us", "cpu_period_us", "pids_current",
          "pids_max", "sources")


def test_fast_reader_matches_the_reference_reads(rt, cleanup, name):
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait")))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 3)
    fds = _fds()
    r = stats.StatsReader(rt.cgroups)
    raw, forest = r.read(c.id)
    ref = rt.cgroups.sample(c.id)
    assert set(raw.figures) == set(ref.figures)
    for k in STATIC:
        assert raw.get(k) == ref.get(k), k

    def shape(f):
        return [(d, n.info.pid, n.info.ppid, n.info.ns_pids, n.info.cmdline, n.info.uid, n.info.comm)
                for d, n in procs.walk(f)]
    assert shape(forest) == shape(procs.container_tree(rt.cgroups.procs(c.id)))
    assert [n.info.ns_pid for _, n in procs.walk(forest)] == [1, 2, 3]
    assert "NSpid" in forest[0].info.sources["ns_pid"]

    # nothing changed: the same forest object, only stat re-read, no status
    table = r.containers[c.id].table
    status = table.reads["status"]
    raw2, forest2 = r.read(c.id)
    assert forest2 is forest and table.reads["status"] == status
    assert raw2.sources is raw.sources

    # a new process (exec in the container) shows up in a new forest
    execp = subprocess.Popen([CLI, "exec", name, "sleep", "30"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_settled(rt, c.id, 4)
        _, forest3 = r.read(c.id)
        assert forest3 is not forest
        assert ("sleep", "30") in [n.info.cmdline for _, n in procs.walk(forest3)]
    finally:
        execp.kill()                     # our own child, by its pid
        execp.wait()

    # removed: NotFound, and every descriptor it held is closed
    rt.remove(c.id, force=True)
    with pytest.raises(NotFound):
        r.read(c.id)
    assert r.containers == {} and _fds() == fds


def test_limits_are_reread_every_few_ticks(rt, cleanup, name):
    from runtime.model import Limits
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100"), limits=Limits(memory=64 << 20)))
    cleanup.append(c.id)
    r = stats.StatsReader(rt.cgroups)
    assert r.read(c.id)[0].memory_limit == 64 << 20
    rt.cgroups.update(c.id, Limits(memory=96 << 20))
    seen = [r.read(c.id)[0].memory_limit for _ in range(5)]
    assert seen[-1] == 96 << 20                # within slow_every (5) ticks
    r.close()
