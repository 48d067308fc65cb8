"""runtime.oom: kmsg parsing, OOM report assembly, cgroup OOM counters.

Parsers are tested from strings and from records captured on this machine
(tests/fixtures/kmsg/).  The v1 tests at the end OOM-kill a child in a
throwaway memory cgroup under /sys/fs/cgroup/memory/terrarium-test-<hex>/,
removed in teardown; they skip without root or without a v1 memory hierarchy.
"""
from __future__ import annotations

import errno
import os
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument, NotFound
from runtime.oom import (CgroupOomWatch, KmsgReader, OomAssembler, kmsg_clock_offset,
                         monotonic_usec,
                         parse_invoked_line, parse_killed_line, parse_kmsg_record,
                         parse_memory_events, parse_memory_line, parse_oom_control,
                         parse_oom_kill_line, parse_oom_reports, parse_task_in_line,
                         read_counts, split_kmsg_records)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kmsg"
MEMORY_V1 = "/sys/fs/cgroup/memory"


def fixture_records(name: str):
    return split_kmsg_records((FIXTURES / name).read_bytes())


# --- kmsg records -------------------------------------------------------------

def test_record_header_text_and_priority():
    rec = parse_kmsg_record(b"3,446,349802631,-;Memory cgroup out of memory: Killed process 1\n")
    assert (rec.seq, rec.usec, rec.facility, rec.level) == (446, 349802631, 0, 3)
    assert rec.text == "Memory cgroup out of memory: Killed process 1"
    assert rec.props == {}


def test_record_continuation_lines_extra_header_fields_and_escapes():
    raw = (b"14,7,123,-,caller=T42;back\\x5cslash\\x0anext line\n"
           b" SUBSYSTEM=net\n DEVICE=n2\n")
    rec = parse_kmsg_record(raw)
    assert rec.facility == 1 and rec.level == 6          # prio 14 = user.info
    assert rec.text == "back\\slash\nnext line"
    assert rec.props == {"caller": "T42", "SUBSYSTEM": "net", "DEVICE": "n2"}


@pytest.mark.parametrize("raw", [b"", b"no header here\n", b"6,x,1,-;text\n", b"6,1;text\n"])
def test_record_rejects_garbage(raw):
    with pytest.raises(InvalidArgument):
        parse_kmsg_record(raw)


def test_split_keeps_continuation_lines_with_their_record():
    recs = fixture_records("global_oom.txt")
    nic = next(r for r in recs if "NIC Link" in r.text)
    assert nic.props == {"SUBSYSTEM": "net", "DEVICE": "n2"}
    assert [r.seq for r in recs] == list(range(8120, 8158))


# --- line parsers ---------------------------------------------------------------

def test_invoked_line_new_and_old_kernels():
    assert parse_invoked_line(
        "python3.11 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
    ) == {"invoker_comm": "python3.11", "gfp_mask": "0xcc0(GFP_KERNEL)", "order": 0,
          "invoker_oom_score_adj": 0}
    old = parse_invoked_line("stress invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), "
                             "nodemask=(null), order=2, oom_score_adj=-1000")
    assert (old["order"], old["invoker_oom_score_adj"]) == (2, -1000)
    assert parse_invoked_line("oom_reaper: reaped process 1 (x)") is None


def test_memory_lines():
    assert parse_memory_line("memory: usage 32768kB, limit 32768kB, failcnt 19") == \
        ("memory", 32768, 32768, 19)
    assert parse_memory_line("memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0") == \
        ("memory+swap", 32768, 9007199254740988, 0)
    assert parse_memory_line("Memory cgroup stats for /x:") is None


def test_oom_kill_line_memcg():
    d = parse_oom_kill_line(
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        "oom_memcg=/anchor-oom,task_memcg=/anchor-oom/child,task=python3.11,pid=2134,uid=0")
    assert d["oom_memcg"] == "/anchor-oom" and d["task_memcg"] == "/anchor-oom/child"
    assert (d["comm"], d["pid"], d["uid"], d["is_global"]) == ("python3.11", 2134, 0, False)


def test_oom_kill_line_global_is_never_a_cgroup():
    d = parse_oom_kill_line(
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
        "task_memcg=/user.slice/user-1000.slice/session-3.scope,task=stress-ng,pid=4242,uid=1000")
    assert d["is_global"] is True and d["oom_memcg"] is None
    assert d["task_memcg"] == "/user.slice/user-1000.slice/session-3.scope"


def test_oom_kill_line_with_commas_in_lists_paths_and_comm():
    d = parse_oom_kill_line(
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=0-1,3,cpuset=/a,b,mems_allowed=0-1,3,"
        "oom_memcg=/odd,name,task_memcg=/odd,name/x,task=we,ird (c),pid=7,uid=1000")
    assert d["mems_allowed"] == "0-1,3" and d["cpuset"] == "/a,b"
    assert d["oom_memcg"] == "/odd,name" and d["task_memcg"] == "/odd,name/x"
    assert (d["comm"], d["pid"], d["uid"]) == ("we,ird (c)", 7, 1000)


def test_killed_line_forms():
    new = parse_killed_line(
        "Memory cgroup out of memory: Killed process 2134 (python3.11) total-vm:47616kB, "
        "anon-rss:37028kB, file-rss:2408kB, shmem-rss:0kB, UID:0 pgtables:132kB oom_score_adj:0")
    assert (new["pid"], new["comm"], new["total_vm_kb"], new["anon_rss_kb"], new["file_rss_kb"],
            new["shmem_rss_kb"], new["uid"], new["pgtables_kb"], new["oom_score_adj"]) == \
        (2134, "python3.11", 47616, 37028, 2408, 0, 0, 132, 0)
    assert new["is_global"] is False
    glob = parse_killed_line("Out of memory: Killed process 9 (a (b)) total-vm:1kB, anon-rss:2kB, "
                             "file-rss:3kB, shmem-rss:4kB, UID:5 pgtables:6kB oom_score_adj:-17")
    assert (glob["comm"], glob["is_global"], glob["oom_score_adj"]) == ("a (b)", True, -17)
    old = parse_killed_line("Killed process 2345 (stress) total-vm:106792kB, anon-rss:19096kB, "
                            "file-rss:268kB")
    assert (old["pid"], old["shmem_rss_kb"], old["uid"], old["is_global"]) == (2345, None, None, None)
    # The reaper's line afterwards is not a kill.
    assert parse_killed_line("oom_reaper: reaped process 2345 (stress), now anon-rss:0kB, "
                             "file-rss:0kB, shmem-rss:0kB") is None


def test_task_in_line():
    assert parse_task_in_line("Task in /docker/a killed as a result of limit of /docker") == \
        {"task_memcg": "/docker/a", "oom_memcg": "/docker"}
    assert parse_task_in_line("Memory limit reached of cgroup /x") == \
        {"task_memcg": None, "oom_memcg": "/x"}


# --- report assembly --------------------------------------------------------------

def test_real_memcg_report_captured_here():
    recs = fixture_records("memcg_oom_v1.txt")
    (rep,) = parse_oom_reports(recs)
    assert rep.comm == "tail" and rep.invoker_comm == "head"   # head's pipe write hit the limit
    assert rep.invoker_pid is not None and rep.invoker_pid != rep.pid
    assert rep.pid == parse_oom_kill_line(recs[-2].text)["pid"]
    assert rep.constraint == "CONSTRAINT_MEMCG" and rep.is_global is False
    assert rep.oom_memcg.startswith("/terrarium-test-") and rep.oom_memcg.endswith("/oomcap")
    assert rep.task_memcg == rep.oom_memcg
    assert (rep.usage_kb, rep.limit_kb) == (20480, 20480) and rep.failcnt > 0
    assert rep.memsw_usage_kb == 20480 and rep.memsw_limit_kb == 9007199254740988
    assert rep.anon_rss_kb > 15000 and rep.total_vm_kb > rep.anon_rss_kb
    assert (rep.uid, rep.oom_score_adj, rep.shmem_rss_kb) == (0, 0, 0)
    assert rep.gfp_mask.startswith("0x") and rep.order == 0
    assert rep.usec == recs[-1].usec and rep.started_usec == recs[0].usec
    assert rep.lines == tuple(r.text for r in recs) and len(rep.lines) == len(recs) > 60
    assert (rep.first_seq, rep.last_seq, rep.missed_records) == (recs[0].seq, recs[-1].seq, 0)


def test_global_report_is_not_attributed_to_the_victims_cgroup():
    reports = parse_oom_reports(fixture_records("global_oom.txt"))
    assert len(reports) == 1                      # the reaper line after it is no second kill
    rep = reports[0]
    assert rep.is_global is True and rep.oom_memcg is None
    assert rep.constraint == "CONSTRAINT_NONE"
    assert rep.task_memcg == "/user.slice/user-1000.slice/session-3.scope"
    assert (rep.pid, rep.comm, rep.uid, rep.anon_rss_kb) == (4242, "stress-ng-vm", 1000, 7803520)
    assert rep.usage_kb is None and rep.limit_kb is None   # memcg-only lines
    assert rep.lines[0].startswith("stress-ng-vm invoked oom-killer")
    assert rep.lines[-1].startswith("Out of memory: Killed process 4242")


def test_old_kernel_report():
    (rep,) = parse_oom_reports(fixture_records("memcg_oom_old.txt"))
    assert rep.is_global is False and rep.constraint is None
    assert rep.oom_memcg == rep.task_memcg == "/docker/4f2a9c"
    assert (rep.pid, rep.comm, rep.total_vm_kb, rep.anon_rss_kb, rep.file_rss_kb) == \
        (2345, "stress", 106792, 19096, 268)
    assert (rep.usage_kb, rep.limit_kb, rep.failcnt) == (20480, 20480, 57)
    assert (rep.memsw_usage_kb, rep.memsw_limit_kb) == (40960, 40960)
    assert rep.uid is None and rep.pgtables_kb is None
    assert rep.lines[-2].endswith("or sacrifice child")


def test_old_kernel_global_report_has_no_cgroup():
    recs = split_kmsg_records(
        "4,1,10,-;a invoked oom-killer: gfp_mask=0x14200ca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0\n"
        "3,2,11,-;Out of memory: Kill process 5 (a) score 900 or sacrifice child\n"
        "3,3,12,-;Killed process 6 (a-child) total-vm:10kB, anon-rss:9kB, file-rss:1kB, shmem-rss:0kB\n")
    (rep,) = parse_oom_reports(recs)
    assert (rep.pid, rep.comm, rep.is_global, rep.oom_memcg) == (6, "a-child", True, None)


def test_reports_in_a_row_and_a_report_whose_start_was_lost():
    memcg = fixture_records("memcg_oom_v1.txt")
    glob = fixture_records("global_oom.txt")
    tail_only = memcg[-2:]                          # reader started mid-report
    reports = parse_oom_reports(tail_only + glob + memcg)
    assert [r.is_global for r in reports] == [False, True, False]
    assert reports[0].oom_memcg == reports[2].oom_memcg and reports[0].pid == reports[2].pid
    assert len(reports[0].lines) == 2 and reports[0].invoker_comm is None


def test_unfinished_report_is_dropped_when_the_next_one_starts():
    memcg = fixture_records("memcg_oom_v1.txt")
    glob = fixture_records("global_oom.txt")
    (rep,) = parse_oom_reports(memcg[:-3] + glob)   # first one never printed its kill
    assert rep.is_global and rep.usage_kb is None    # nothing leaked from the first report


def test_lines_are_capped_and_gaps_counted():
    recs = fixture_records("memcg_oom_v1.txt")
    holey = recs[:10] + recs[15:]
    (rep,) = parse_oom_reports(holey)
    assert rep.missed_records == 5
    asm = OomAssembler(max_lines=20)
    (capped,) = [r for rec in recs if (r := asm.feed(rec)) is not None]
    assert len(capped.lines) == 20 and capped.pid == rep.pid   # fields come from every line


def test_non_oom_records_are_ignored():
    asm = OomAssembler()
    for text in ["usb 1-1: new device", "Killed processes are fun", "oom_reaper: reaped process 1 (x)"]:
        assert asm.feed(parse_kmsg_record(f"6,1,1,-;{text}\n")) is None


# --- kmsg reader ---------------------------------------------------------------------

class PlayBack:
    """Stands in for os.read: returns records, raises what it is told."""

    def __init__(self, items):
        self.items = list(items)

    def __call__(self, fd, n):
        item = self.items.pop(0) if self.items else BlockingIOError(errno.EAGAIN, "again")
        if isinstance(item, BaseException):
            raise item
        return item


needs_kmsg = pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg not readable")


@needs_kmsg
def test_reader_counts_overruns_and_carries_on():
    with KmsgReader() as reader:
        reader._read = PlayBack([b"6,10,1,-;a\n", BrokenPipeError(errno.EPIPE, "pipe"),
                                 b"6,15,2,-;b\n", b"6,16,3,-;c\n"])
        assert [r.seq for r in reader.read_available()] == [10, 15, 16]
        assert (reader.missed, reader.overruns, reader.last_seq) == (4, 1, 16)
        assert reader.read_one() is None


@needs_kmsg
def test_reader_starts_at_end_or_start_and_follow_times_out():
    with KmsgReader(from_start=True) as old:
        first = old.read_available()
    assert len(first) > 10
    assert all(b.seq > a.seq for a, b in zip(first, first[1:]))
    with KmsgReader() as reader:
        t0 = time.monotonic()
        new = list(reader.follow(timeout=0.2))
        assert time.monotonic() - t0 < 5
        assert all(r.seq > first[-1].seq for r in new)     # nothing old replayed


# --- cgroup counters: parsers and the v2 (inotify) path on a fake tree ------------------

def test_parse_oom_control():
    c = parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 3\n")
    assert (c.oom_kill_disable, c.under_oom, c.oom_kill) == (False, True, 3)
    assert parse_oom_control("oom_kill_disable 1\nunder_oom 0\n").oom_kill == 0   # < 4.13
    with pytest.raises(InvalidArgument):
        parse_oom_control("low 0\n")


def test_parse_memory_events():
    e = parse_memory_events("low 0\nhigh 12\nmax 340\noom 2\noom_kill 1\noom_group_kill 0\n")
    assert (e.low, e.high, e.max, e.oom, e.oom_kill, e.oom_group_kill) == (0, 12, 340, 2, 1, 0)
    with pytest.raises(InvalidArgument):
        parse_memory_events("under_oom 0\n")


def _events(low=0, high=0, max_=0, oom=0, kill=0):
    return f"low {low}\nhigh {high}\nmax {max_}\noom {oom}\noom_kill {kill}\noom_group_kill 0\n"


def test_read_counts_picks_the_version_from_the_files(tmp_path):
    (tmp_path / "memory.events").write_text(_events(max_=5, oom=2, kill=1))
    c = read_counts(str(tmp_path))
    assert (c.version, c.oom_kill, c.oom, c.max, c.under_oom) == (2, 1, 2, 5, None)
    with pytest.raises(NotFound):
        read_counts(str(tmp_path / "nope"))


def test_v2_watch_reports_kills_not_max_events(tmp_path):
    cg = tmp_path / "c1"
    cg.mkdir()
    events = cg / "memory.events"
    events.write_text(_events())
    with CgroupOomWatch({"c1": str(cg)}, settle=0.05) as watch:
        assert watch.wait(0.05) == []
        events.write_text(_events(max_=40, high=3))     # pressure, no OOM: no event
        assert watch.wait(0.1) == []
        events.write_text(_events(max_=41, oom=1, kill=1))
        r, _, _ = select.select([watch], [], [], 2)     # fileno() works with select/asyncio
        assert r == [watch]
        (ev,) = watch.wait(2)
        assert (ev.key, ev.new_kills, ev.counts.oom_kill, ev.gone) == ("c1", 1, 1, False)
        assert ev.woke_ns <= ev.seen_ns
        events.write_text(_events(max_=41, oom=2, kill=1))   # OOM invoked, kill not counted yet
        assert watch.wait(0.01) == []
        events.write_text(_events(max_=41, oom=2, kill=3))
        (ev,) = watch.wait(2)
        assert ev.new_kills == 2
        watch.remove("c1")
        assert watch.keys() == []
        with pytest.raises(NotFound):
            watch.remove("c1")


def _room_for_one_watch(tmp_path, monkeypatch) -> dict[str, str]:
    """Two v2 counter dirs, "kept" and "polled", and a descriptor budget with
    room for one watch: the second one made is polled."""
    from runtime import fdbudget
    monkeypatch.setattr(fdbudget.OOM, "limit", fdbudget.OOM.held + 1)
    dirs = {}
    for key in ("kept", "polled"):
        (tmp_path / key).mkdir()
        (tmp_path / key / "memory.events").write_text(_events())
        dirs[key] = str(tmp_path / key)
    return dirs


def test_over_the_descriptor_budget_a_watch_is_polled(tmp_path, monkeypatch):
    """runtime/fdbudget.py: a watch beyond the budget keeps no descriptor and is
    read by sweep(); its kill is reported as a kept watch's is."""
    from runtime import fdbudget
    held = fdbudget.OOM.held
    dirs = _room_for_one_watch(tmp_path, monkeypatch)
    fds = len(os.listdir("/proc/self/fd"))
    with CgroupOomWatch(dirs, settle=0.05) as watch:
        assert len(os.listdir("/proc/self/fd")) == fds + 3          # epoll, inotify, one counter file
        assert [w.polled for w in watch._watches.values()] == [False, True]
        assert watch.sweep() is False
        Path(dirs["polled"], "memory.events").write_text(_events(max_=3, oom=1, kill=1))
        assert watch.wait(0.05) == []                               # no wake without a descriptor
        assert watch.sweep() is True
        (ev,) = watch.wait(1)
        assert (ev.key, ev.new_kills, ev.counts.oom_kill) == ("polled", 1, 1)
        watch.remove("polled")
    assert fdbudget.OOM.held == held                                    # given back


def test_a_polled_watch_gets_its_descriptor_back_once_the_budget_has_room(tmp_path, monkeypatch):
    """Polling lasts only as long as the crowd: after the kept watch is
    removed, the next sweep() gives the polled one a descriptor, and a kill
    after that wakes it without a sweep."""
    from runtime import fdbudget
    held = fdbudget.OOM.held
    dirs = _room_for_one_watch(tmp_path, monkeypatch)
    with CgroupOomWatch(dirs, settle=0.05) as watch:
        assert watch.sweep() is False
        assert watch.polled()                                       # no room yet
        watch.remove("kept")
        assert watch.sweep() is False                               # promoted, nothing moved
        assert not watch.polled() and fdbudget.OOM.held == held + 1
        Path(dirs["polled"], "memory.events").write_text(_events(max_=3, oom=1, kill=1))
        (ev,) = watch.wait(1)                                       # woken by inotify
        assert (ev.key, ev.new_kills, ev.counts.oom_kill) == ("polled", 1, 1)
    assert fdbudget.OOM.held == held


def test_watch_works_under_asyncio_add_reader(tmp_path):
    import asyncio
    events = tmp_path / "memory.events"
    events.write_text(_events())

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        with CgroupOomWatch({"a": str(tmp_path)}) as watch:
            loop.add_reader(watch.fileno(), lambda: [got.set_result(e) for e in watch.read_events()
                                                     if not got.done()])
            loop.call_later(0.05, events.write_text, _events(oom=1, kill=1))
            try:
                return await asyncio.wait_for(got, 5)
            finally:
                loop.remove_reader(watch.fileno())

    ev = asyncio.run(main())
    assert (ev.key, ev.new_kills) == ("a", 1)


# --- the real kernel: cgroup v1 ---------------------------------------------------------

needs_v1 = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(f"{MEMORY_V1}/cgroup.event_control"),
    reason="needs root and a v1 memory hierarchy")


class MemCg:
    """A throwaway v1 memory cgroup and the children started in it."""

    def __init__(self, limit: int):
        self.parent = f"{MEMORY_V1}/terrarium-test-{secrets.token_hex(4)}"
        self.path = f"{self.parent}/oom"
        self.rel = self.path[len(MEMORY_V1):]
        self.children: list[subprocess.Popen] = []
        os.mkdir(self.parent)
        os.mkdir(self.path)
        Path(self.path, "memory.limit_in_bytes").write_text(str(limit))

    def spawn_hog(self, mb: int = 100) -> subprocess.Popen:
        # The shell joins the cgroup ($1, never interpolated), then execs Python: same pid.
        code = f"x = b'a' * ({mb} << 20)"
        p = subprocess.Popen(
            ["/bin/busybox", "sh", "-c", 'echo $$ > "$1" && exec "$2" -I -S -c "$3"', "sh",
             f"{self.path}/cgroup.procs", sys.executable, code],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.children.append(p)
        return p

    def remove(self) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for d in (self.path, self.parent):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


@pytest.fixture
def memcg():
    cg = MemCg(20 << 20)
    yield cg
    cg.remove()


@needs_v1
@needs_kmsg
def test_real_oom_kill_seen_by_kmsg_and_eventfd(memcg, capsys):
    reader = KmsgReader()
    watch = CgroupOomWatch({"test": memcg.path})
    asm = OomAssembler()
    report = report_seen = None
    kills = []
    try:
        assert watch.counts("test").oom_kill == 0
        child = memcg.spawn_hog(100)
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        poller.register(watch, select.POLLIN)
        deadline = time.monotonic() + 30
        while (report is None or not kills) and time.monotonic() < deadline:
            hint = watch.timeout_hint()
            poller.poll(50 if hint is None else max(1, int(hint * 1000)))
            for rec in reader.read_available():
                if (r := asm.feed(rec)) is not None and r.task_memcg == memcg.rel:
                    report, report_seen = r, monotonic_usec()
            kills += [e for e in watch.read_events() if e.new_kills]
        rc = child.wait(10)
    finally:
        watch.close()
        reader.close()
    assert rc == -9, child.stderr.read()
    assert report is not None, "no OOM report in /dev/kmsg"
    assert report.pid == child.pid
    assert report.comm == os.path.basename(sys.executable)[:15]
    assert report.oom_memcg.endswith(memcg.rel) and not report.is_global
    assert report.limit_kb == 20480
    assert len(kills) == 1 and kills[0].new_kills == 1 and kills[0].counts.oom_kill == 1
    assert read_counts(memcg.path).oom_kill == 1           # agrees with memory.oom_control

    # kmsg usec is local_clock(), offset from CLOCK_MONOTONIC (~17 ms here): correct for it.
    offset = kmsg_clock_offset()
    kill_us, start_us = report.usec - offset, report.started_usec - offset
    with capsys.disabled():
        print(f"\n  OOM delays (kmsg clock offset {offset / 1000:+.2f} ms vs CLOCK_MONOTONIC;"
              f" report logged in {(kill_us - start_us) / 1000:.2f} ms):"
              f"\n    eventfd woke      {(kills[0].woke_ns / 1000 - kill_us) / 1000:+7.2f} ms after the kill"
              f" ({(kills[0].woke_ns / 1000 - start_us) / 1000:+.2f} after the report began)"
              f"\n    oom_kill counted  {(kills[0].seen_ns / 1000 - kill_us) / 1000:+7.2f} ms"
              f"\n    kmsg report read  {(report_seen - kill_us) / 1000:+7.2f} ms")


@needs_v1
def test_v1_eventfd_fires_when_the_cgroup_is_removed(memcg):
    watch = CgroupOomWatch(settle=0.05)
    try:
        watch.add(memcg.path, "gone-soon")
        memcg.remove()
        (ev,) = watch.wait(5)
        assert ev.gone and ev.key == "gone-soon" and ev.new_kills == 0
        assert watch.keys() == []
    finally:
        watch.close()


@needs_v1
def test_v1_watch_stays_quiet_without_oom(memcg):
    with CgroupOomWatch({"quiet": memcg.path}) as watch:
        assert watch.wait(0.1) == []
        assert watch.counts("quiet").version == 1 and watch.counts("quiet").under_oom is False
        with pytest.raises(InvalidArgument):
            watch.add(memcg.path, "quiet")
