"""runtime.stats, the sampler's kept-open reader, on its own:

- v1 against the real files of a real container on this kernel: the values
  agree with the v1 driver's sample() and with the files read directly;
- v2 on the fake cgroup2 tree of test_cgroups_v2 (FakeCgroup2, which follows
  the kernel's rules): memory.current, memory.stat, memory.events, cpu.stat,
  pids and io.stat parsed right, and what is re-read when;
- the bytes parsers from strings.

The skipping rules (docs in runtime/stats.py): an idle tick -- memory usage,
CPU time and task count unchanged -- reads 4 files; memory.stat, failcnt,
events and cpu.stat follow on active ticks; limits every ``slow_every`` ticks
(and on every pass of a one-off reader, which keeps the last bytes, no descriptor).
"""
import os
import subprocess
import time

import pytest

from runtime import Spec, stats
from runtime.cgroups import detect, figures
from runtime.errors import NotFound
from runtime.model import Limits
from runtime.procs import walk
from tests.conftest import CLI, is_root, wait_settled
from tests.fds import count as _fds
from tests.runtime.test_cgroups_v2 import MEMORY_STAT, check_sample_of_the_files, fill_sample_files

try:
    LAYOUT = detect()
except Exception:       # noqa: BLE001 - no cgroups at all: the v1 tests skip
    LAYOUT = None

needs_v1 = pytest.mark.skipif(not is_root() or LAYOUT is None or LAYOUT.kind == "v2"
                              or "memory" not in LAYOUT.v1, reason="needs root and cgroup v1")


# --- parsers --------------------------------------------------------------------

def test_picker_reads_keys_anywhere_and_only_whole_keys():
    pick = figures.picker(("anon", "file", "inactive_file"))
    assert pick(MEMORY_STAT.encode()) == (4423680, 2162688, 1622016)      # "anon" is line 1
    assert pick(b"file_mapped 5\nanon 1\n") == (1, None, None)             # not a prefix match
    assert pick(b"") == (None, None, None)
    assert pick(b"anon 7") == (7, None, None)                               # no final newline
    v1 = figures.picker(("total_cache", "total_rss", "total_inactive_file", "total_swap"))
    text = b"cache 1\nrss 2\ntotal_cache 10\ntotal_rss 20\ntotal_rss_huge 99\ntotal_inactive_file 5\n"
    assert v1(text) == (10, 20, 5, None)                                    # no total_swap: no swap accounting


# --- v2, on the fake tree ---------------------------------------------------------



def test_v2_values_are_parsed_as_the_driver_parses_them(cg, fake):
    cg.create("abc", Limits(memory=64 << 20, cpus=0.5, pids=100))
    fill_sample_files(fake)
    r = stats.StatsReader(cg)
    raw, forest = r.read("abc")
    assert raw == cg.sample("abc")                       # every key, value and source
    assert forest == []                                  # the fake's cgroup.procs is empty
    check_sample_of_the_files(raw)
    r.close()


def test_v2_unlimited_and_missing_files_read_as_the_driver_reads_them(cg, fake):
    cg.create("abc", Limits())
    os.unlink(os.path.join(fake.root, "terrarium/abc/memory.swap.current"))   # no swap accounting
    r = stats.StatsReader(cg)
    raw, _ = r.read("abc")
    assert raw == cg.sample("abc")
    assert raw.memory_limit is None and raw.pids_max is None and raw.memory_swap is None
    assert (raw.cpu_quota_us, raw.cpu_period_us) == (None, 100000)
    assert (raw.io_read_bytes, raw.io_write_bytes) == (0, 0)             # an empty io.stat
    r.close()


def test_v2_what_is_reread_when(cg, fake):
    cg.create("abc", Limits(memory=64 << 20))
    fill_sample_files(fake)
    r = stats.StatsReader(cg, slow_every=5)
    r.read("abc")                                        # tick 0: a slow tick, everything read
    files = r.containers["abc"].cgroup
    # idle: nothing moved -- memory.current, cpu.stat, pids.current, io.stat and the
    # three pressure files (their averages decay while the container sleeps) only
    n = files.reads
    raw, _ = r.read("abc")
    assert files.reads - n == 7 and not files.active
    # memory.stat moves while memory.current stands still (LRU aging from outside):
    # carried over until the next slow tick
    fake.set("terrarium/abc/memory.stat", MEMORY_STAT.replace("inactive_file 1622016", "inactive_file 4096"))
    assert r.read("abc")[0].memory_inactive_file == 1622016
    # the container charges memory: an active tick reads memory.stat and memory.events too
    fake.set("terrarium/abc/memory.current", "7000000\n")
    fake.set("terrarium/abc/memory.events", "low 0\nhigh 0\nmax 10\noom 2\noom_kill 2\noom_group_kill 0\n")
    raw = r.read("abc")[0]
    assert files.active and raw.memory_usage == 7000000
    assert raw.memory_inactive_file == 4096 and raw.oom_kills == 2
    # a limit changed while it runs shows on the next slow tick (tick 5)
    cg.update("abc", Limits(memory=96 << 20, cpus=1.5))
    seen = [r.read("abc")[0] for _ in range(2)]          # ticks 4 and 5
    assert seen[0].memory_limit == 64 << 20 and seen[1].memory_limit == 96 << 20
    assert (seen[1].cpu_quota_us, seen[1].cpu_period_us) == (150000, 100000)
    assert seen[1] == cg.sample("abc")
    r.close()


def test_v2_reads_the_processes_of_cgroup_procs(cg, fake):
    cg.create("abc", Limits())
    child = subprocess.Popen(["sleep", "30"])
    try:
        fake.set("terrarium/abc/cgroup.procs", f"{child.pid}\n")
        fake.set("terrarium/abc/pids.current", "1\n")
        r = stats.StatsReader(cg)
        _, forest = r.read("abc")
        assert [n.info.pid for n in forest] == [child.pid]
        assert forest[0].info.cmdline == ("sleep", "30") and forest[0].info.ppid == os.getpid()
        # idle tick: the same forest, no /proc file read
        t = r.containers["abc"].table
        n = dict(t.reads)
        assert r.read("abc")[1] is forest and t.reads == n
        # with tree=False no process is read at all
        assert r.read("abc", tree=False)[1] is None
        # it exits (and is reaped): the task count drops, the forest empties
        child.kill()
        child.wait()
        fake.set("terrarium/abc/cgroup.procs", "")
        fake.set("terrarium/abc/pids.current", "0\n")
        assert r.read("abc")[1] == []
        r.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_v2_descriptor_budget_per_container_and_per_process(cg, fake):
    """Only stat stays open, for at most keep_open processes; the rest are read
    all the same, by open+read+close."""
    cg.create("abc", Limits())
    children = [subprocess.Popen(["sleep", "30", str(i)]) for i in range(6)]
    try:
        fake.set("terrarium/abc/cgroup.procs", "".join(f"{c.pid}\n" for c in children))
        fake.set("terrarium/abc/pids.current", f"{len(children)}\n")
        fds = _fds()
        r = stats.StatsReader(cg, keep_open=2)
        _, forest = r.read("abc")
        table = r.containers["abc"].table
        cgroup_fds = sum(f.fd is not None for _, f in r.containers["abc"].cgroup.files if f)
        assert sorted(n.info.cmdline[2] for n in forest) == [str(i) for i in range(6)]
        assert table.open_files == 2                       # stat of the two lowest pids, nothing else
        assert _fds() - fds == cgroup_fds + 2
        kept = sorted(p.pid for p in table.by_pid.values() if p.stat.fd is not None)
        assert kept == sorted(c.pid for c in children)[:2]
        fake.set("terrarium/abc/memory.current", "12345\n")     # an active tick re-reads them all
        before = table.reads["stat"]
        r.read("abc")
        assert table.reads["stat"] - before == 6 and table.open_files == 2
        r.forget("abc")
        assert _fds() == fds
    finally:
        for c in children:
            c.kill()
            c.wait()


def test_status_and_cmdline_are_never_kept_open(cg, fake):
    cg.create("abc", Limits())
    child = subprocess.Popen(["sleep", "30"])
    try:
        fake.set("terrarium/abc/cgroup.procs", f"{child.pid}\n")
        fake.set("terrarium/abc/pids.current", "1\n")
        r = stats.StatsReader(cg)
        _, forest = r.read("abc")
        p = r.containers["abc"].table.by_pid[child.pid]
        assert forest[0].info.ns_pids and forest[0].info.cmdline == ("sleep", "30")
        assert p.stat.fd is not None and p.status.fd is None and p.cmdline.fd is None
        r.close()
    finally:
        child.kill()
        child.wait()


def test_v2_forget_closes_every_descriptor_and_a_missing_cgroup_is_not_found(cg, fake):
    # (a removed cgroup's kept-open files fail with ENODEV on the real kernel,
    # which a temp dir cannot play: the v1 test below removes a real one)
    cg.create("abc", Limits())
    fds = _fds()
    r = stats.StatsReader(cg)
    r.read("abc")
    assert _fds() > fds
    r.forget("abc")
    assert r.containers == {} and _fds() == fds
    cg.remove("abc")
    with pytest.raises(NotFound):
        r.read("abc")
    assert r.containers == {} and _fds() == fds


def test_one_off_passes_hold_no_descriptor_and_resolve_a_cgroup_once(cg, fake, monkeypatch):
    """keep=False: every file closed after the pass; the next pass reuses what
    the first worked out (no second resolve) and reads what moved; a
    container left out of passes for ``once_for`` seconds, or gone, is not kept."""
    cg.create("abc", Limits())
    cg.create("def", Limits())
    asked = []
    fds = _fds()
    clock = [1000.0]
    monkeypatch.setattr(stats.time, "monotonic", lambda: clock[0])
    r = stats.StatsReader(cg, resolve=lambda name: asked.append(name) or (cg, name), once_for=300)
    first = r.read_many(["abc", "def"], tree=False, keep=False)
    assert r.containers == {} and _fds() == fds and sorted(asked) == ["abc", "def"]
    fake.set("terrarium/abc/memory.current", "7777\n")
    again = r.read_many(["abc"], tree=False, keep=False)
    assert sorted(asked) == ["abc", "def"] and _fds() == fds
    assert again["abc"][0].memory_usage == 7777 != first["abc"][0].memory_usage
    assert sorted(r._once) == ["abc", "def"]            # "def" left out of one pass: still known
    clock[0] += 301
    r.read_many(["abc"], tree=False, keep=False)
    assert list(r._once) == ["abc"]                      # ... but not for five minutes: dropped
    r.read("abc")                                        # a kept reading: made afresh (in the budget)
    assert sorted(asked) == ["abc", "abc", "def"] and r._once == {}
    r.forget("abc")
    r.read_many(["abc"], tree=False, keep=False)
    cg.remove("abc")
    assert isinstance(r.read_many(["abc"], keep=False)["abc"], NotFound)
    assert r._once == {} and r.containers == {} and _fds() == fds


def test_a_one_off_pass_reads_what_a_tick_reads_and_every_limit(cg, fake):
    """The next one-off pass over an idle container reads its tick files and
    its limits, no more, and holds no descriptor after; a limit changed
    (our update) shows on that very pass, not on the next slow one."""
    cg.create("abc", Limits(memory=64 << 20))
    fill_sample_files(fake)
    fds = _fds()
    r = stats.StatsReader(cg, slow_every=1000)         # no slow pass after the first
    first = r.read_many(["abc"], keep=False)["abc"][0]
    files = r._once["abc"][0].cgroup
    n = files.reads
    assert r.read_many(["abc"], keep=False)["abc"][0] is first      # nothing moved: the same record
    # memory.current, cpu.stat, pids.current, io.stat, the three pressure files;
    # memory.max, .high, .low, .min, .swap.max, cpu.max, pids.max
    assert files.reads - n == 7 + 7 and not files.active and _fds() == fds
    assert [f for f, k in files.knobs.items() if k in files._limit_knobs] == [
        "memory_limit", "memory_high", "memory_low", "memory_min", "memory_swap_limit",
        "cpu_quota_us", "cpu_period_us", "pids_max"]
    cg.update("abc", Limits(memory=96 << 20, cpus=1.5, pids=40))
    raw = r.read_many(["abc"], keep=False)["abc"][0]
    assert (raw.memory_limit, raw.cpu_quota_us, raw.cpu_period_us, raw.pids_max) == \
        (96 << 20, 150000, 100000, 40)
    assert raw == cg.sample("abc") and _fds() == fds and r.containers == {}
    r.close()


def test_a_one_off_pass_over_an_idle_container_reads_no_process(cg, fake):
    """Its processes' last readings are kept too (no descriptor): an idle
    pass gives the same forest without a /proc read; a busy one re-reads them."""
    cg.create("abc", Limits())
    child = subprocess.Popen(["sleep", "30"])
    try:
        fake.set("terrarium/abc/cgroup.procs", f"{child.pid}\n")
        fake.set("terrarium/abc/pids.current", "1\n")
        fds = _fds()
        r = stats.StatsReader(cg, slow_every=1000)
        _, forest = r.read_many(["abc"], keep=False)["abc"]
        t = r._once["abc"][0].table
        n = dict(t.reads)
        assert [x.info.pid for x in forest] == [child.pid] and t.open_files == 0 and _fds() == fds
        assert r.read_many(["abc"], keep=False)["abc"][1] is forest and t.reads == n
        assert r._once["abc"][0].cgroup.net.reads == 1          # (our namespace) cgroup.procs read once for it
        fake.set("terrarium/abc/memory.current", "12345\n")       # it ran: its stat is read again
        _, again = r.read_many(["abc"], keep=False)["abc"]
        assert t.reads["stat"] == n["stat"] + 1 and t.reads["status"] == n["status"]
        assert [x.info.pid for x in again] == [child.pid] and _fds() == fds
        r.close()
    finally:
        child.kill()
        child.wait()


# --- v1, on this kernel's real files ------------------------------------------------

def _file(paths, controller, knob):
    with open(os.path.join(paths[controller], knob)) as f:
        return f.read()


def _stat(text, key):
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return None


@needs_v1
@pytest.mark.root
def test_v1_values_agree_with_the_driver_and_the_files(rt, cleanup, name):
    c = rt.run(Spec(image="lab", name=name, cmd=("memhog", "4", "2", "0.1"),
                    limits=Limits(memory=64 << 20, cpus=0.5, pids=50)))
    cleanup.append(c.id)
    time.sleep(0.8)                                      # memhog holds its 8 MB now
    cg = rt.cgroups
    paths = cg.paths(c.id)
    fds = _fds()
    r = stats.StatsReader(cg)
    # an idle container's figures hold still; a page-cache flush or a per-CPU
    # charge drain can move them between two reads, so allow a retry or two
    for _ in range(5):
        raw, _ = r.read(c.id)
        ref = cg.sample(c.id)
        again, _ = r.read(c.id)
        if raw == ref == again:
            break
        time.sleep(0.2)
    assert set(raw.figures) == set(ref.figures)
    assert raw == ref, {k: (v, ref.figures[k]) for k, v in raw.figures.items() if v != ref.figures[k]}
    # and what the files say, read here directly
    mem = _file(paths, "memory", "memory.stat")
    assert raw.memory_usage == int(_file(paths, "memory", "memory.usage_in_bytes"))
    assert raw.memory_usage >= 8 << 20                # memhog's 2 x 4 MB
    assert raw.memory_limit == int(_file(paths, "memory", "memory.limit_in_bytes")) == 64 << 20
    assert raw.memory_cache == _stat(mem, "total_cache")
    assert raw.figures["memory_rss"] == _stat(mem, "total_rss") and raw.figures["memory_rss"] >= 8 << 20
    assert raw.memory_inactive_file == _stat(mem, "total_inactive_file")
    assert raw.memory_swap == _stat(mem, "total_swap")
    assert raw.memory_failcnt == int(_file(paths, "memory", "memory.failcnt"))
    assert raw.oom_kills == _stat(_file(paths, "memory", "memory.oom_control"), "oom_kill")
    assert raw.cpu_usage_ns == int(_file(paths, "cpuacct", "cpuacct.usage")) > 0
    assert raw.cpu_nr_periods == _stat(_file(paths, "cpu", "cpu.stat"), "nr_periods")
    assert (raw.cpu_quota_us, raw.cpu_period_us) == (50000, 100000)
    assert raw.pids_current == int(_file(paths, "pids", "pids.current")) >= 3
    assert raw.pids_max == 50
    assert raw.sources["memory_usage"] == "memory.usage_in_bytes"
    assert raw.sources["memory_inactive_file"] == "memory.stat total_inactive_file"
    assert raw.sources["cpu_usage_ns"] == "cpuacct.usage"
    # removed while kept open (ENODEV from kernfs): NotFound, and its descriptors closed
    rt.remove(c.id, force=True)
    with pytest.raises(NotFound):
        r.read(c.id)
    assert r.containers == {} and _fds() == fds


@needs_v1
@pytest.mark.root
def test_v1_limits_updated_show_on_the_next_one_off_pass(rt, cleanup, name):
    """terrarium update between two one-off passes, on this kernel's files:
    the next pass has the new limits though no slow pass is due, and no
    descriptor stays after either."""
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100"),
                    limits=Limits(memory=64 << 20, cpus=0.5, pids=50)))
    cleanup.append(c.id)
    fds = _fds()
    r = rt.stats_reader(slow_every=1000)
    try:
        raw = r.read_many([c.id], keep=False)[c.id][0]
        assert (raw.memory_limit, raw.cpu_quota_us, raw.pids_max) == (64 << 20, 50000, 50)
        assert _fds() == fds
        rt.update(c.id, Limits(memory=96 << 20, cpus=1.5, pids=60))
        raw = r.read_many([c.id], keep=False)[c.id][0]
        assert (raw.memory_limit, raw.cpu_quota_us, raw.pids_max) == (96 << 20, 150000, 60)
        assert not r._once[c.id][0].cgroup.slow and r.containers == {} and _fds() == fds
        # net/dev of its own namespace read twice, its process picked from cgroup.procs once
        assert r._once[c.id][0].cgroup.net.reads == 3 and raw.get("net_rx_bytes") is not None
    finally:
        r.close()


@needs_v1
@pytest.mark.root
def test_a_first_reading_lists_cgroup_procs_once(rt, cleanup, name, monkeypatch):
    """A container read for the first time (kept or one-off) needs cgroup.procs
    twice over: a process to read net/dev of, and the process list.  Both come
    from one read of the file; the next tick that relists reads it again."""
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait")))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 3)
    procs: list[str] = []
    read = stats._File.read

    def counted(self):
        if self.path.endswith("/cgroup.procs"):
            procs.append(self.path)
        return read(self)
    monkeypatch.setattr(stats._File, "read", counted)
    for keep in (True, False):
        r = rt.stats_reader(slow_every=1)                # every tick relists
        try:
            procs.clear()
            got = r.read_many([c.id], keep=keep)[c.id]
            assert not isinstance(got, Exception) and len(procs) == 1, procs
            assert [n.info.cmdline for _, n in walk(got[1])].count(("sleep", "100")) == 2
            procs.clear()
            r.read_many([c.id], keep=keep)
            assert len(procs) == 1, procs                # net/dev's process kept: the list alone
        finally:
            r.close()


@needs_v1
@pytest.mark.root
def test_v1_idle_ticks_read_four_files_and_activity_reads_the_rest(rt, cleanup, name):
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait")))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 3)
    r = stats.StatsReader(rt.cgroups, slow_every=1000)   # no slow tick in this test
    _, forest = r.read(c.id)
    cs = r.containers[c.id]
    quiet = 0
    for _ in range(10):                                  # idle: most ticks read 4 files, no process
        n, st = cs.cgroup.reads, cs.table.reads["stat"]
        raw, f = r.read(c.id)
        if not cs.cgroup.active:
            quiet += 1
            assert cs.cgroup.reads - n == 4 and cs.table.reads["stat"] == st and f is forest
        forest = f
        time.sleep(0.05)
    assert quiet >= 5
    # a process started in it (through the CLI) is in the next tick's forest
    p = subprocess.Popen([CLI, "exec", name, "sleep", "30"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_settled(rt, c.id, 4, timeout=10)            # in the cgroup *and* exec'd: not yet python
        _, f = r.read(c.id)
        assert ("sleep", "30") in [n.info.cmdline for _, n in walk(f)]
    finally:
        p.kill()                                         # our own child, by its pid
        p.wait()
    r.close()



@needs_v1
@pytest.mark.root
def test_v1_processes_that_come_and_go_between_ticks_are_listed_as_they_are(rt, cleanup, name):
    """A reader ticking faster than once a second sees each new process: v1
    hands a kept-open cgroup.procs the pid list it cached at an earlier read
    (the reader listed the first `sleep` for ever, long after it was gone)."""
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "while :; do sleep 0.2; done")))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 2)
    r = stats.StatsReader(rt.cgroups, slow_every=1000)     # listed on task changes and vanishings only
    seen = set()
    try:
        for _ in range(30):                                 # ~1.5 s: about seven sleeps
            _, forest = r.read(c.id)
            seen |= {n.info.pid for _, n in walk(forest) if n.info.cmdline == ("sleep", "0.2")}
            time.sleep(0.05)
    finally:
        r.close()
    assert len(seen) >= 3, seen


@needs_v1
@pytest.mark.root
def test_v1_a_thousand_processes_are_all_read_within_the_descriptor_budget(rt, cleanup, name):
    """cgroup.procs of 1,001 pids is longer than one seq_file read (~a page):
    every pid is listed; only KEEP_OPEN stat files stay open."""
    c = rt.run(Spec(image="lab", name=name, cmd=("spawn", "1000", "300")))
    cleanup.append(c.id)
    deadline = time.monotonic() + 60
    while len(rt.cgroups.procs(c.id)) <= 1000:
        assert time.monotonic() < deadline, "spawn 1000 did not start its sleeps"
        time.sleep(0.1)
    fds = _fds()
    r = stats.StatsReader(rt.cgroups)
    _, forest = r.read(c.id)
    assert len(forest) == 1 and len(forest[0].children) == 1000
    assert forest[0].info.ns_pid == 1 and forest[0].children[0].info.comm == "sleep"
    assert r.containers[c.id].table.open_files == stats.KEEP_OPEN
    r.forget(c.id)
    assert _fds() == fds


def test_over_the_process_descriptor_budget_nothing_is_kept_open(rt, cleanup, name, monkeypatch):
    """runtime/fdbudget.py: a reader past the process's budget opens every
    file per read (cgroup files, /proc/<pid>/stat, net/dev's /proc/<pid>)
    and holds no descriptor between reads, with the same figures."""
    from runtime import fdbudget
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "100"), limits=Limits(memory=64 << 20)))
    cleanup.append(c.id)
    monkeypatch.setattr(fdbudget.STATS, "limit", fdbudget.STATS.held)
    r = stats.StatsReader(rt.cgroups)
    try:
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            raw, forest = r.read(c.id)
            assert len(os.listdir("/proc/self/fd")) == fds
        ref = rt.cgroups.sample(c.id)
        assert set(raw.figures) == set(ref.figures) and raw.memory_limit == ref.memory_limit == 64 << 20
        assert [n.info.pid for _, n in walk(forest)] == [c.pid]
        assert (raw.figures["net_rx_bytes"] is None) == (ref.figures["net_rx_bytes"] is None)      # net/dev read the same way
    finally:
        r.close()
    assert fdbudget.STATS.refused > 0
