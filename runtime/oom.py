"""OOM detection: the kernel log (/dev/kmsg) and the cgroup OOM counters.

Two independent ways to see that the kernel killed a process for memory:

* ``KmsgReader`` follows ``/dev/kmsg`` and ``OomAssembler`` turns the ~80
  records of one OOM report into one ``OomReport`` (victim pid, comm, cgroup,
  memory figures, the raw lines).  Rich, but needs a readable kernel log.
* ``CgroupOomWatch`` waits on the cgroup's own counters: v1
  ``memory.oom_control`` through an eventfd registered in
  ``cgroup.event_control``, v2 ``memory.events`` through inotify.  Terse
  (a count), but works wherever the cgroup is visible and agrees with the
  kernel's own books.

Both expose ``fileno()`` so one ``poll()`` loop or an asyncio loop
(``loop.add_reader``) can wait on them.  Parsers are pure ``str -> value``
functions.  Nothing here imports Django.

Kernel sources the formats come from: kernel/printk/printk.c
(``devkmsg_read``, ``info_print_ext_header``), mm/oom_kill.c (``dump_header``,
``dump_oom_victim``, ``__oom_kill_process``), mm/memcontrol.c and
mm/memcontrol-v1.c (``mem_cgroup_print_oom_context``,
``mem_cgroup_print_oom_meminfo``, ``memcg_write_event_control``).
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import struct
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Iterator, Mapping, NotRequired, TypedDict

from . import fdbudget
from . import inotify as _inotify_mod
from .errors import InvalidArgument, KernelError, NotFound

__all__ = [
    "KmsgRecord", "KmsgReader", "parse_kmsg_record", "split_kmsg_records",
    "OomReport", "OomAssembler", "parse_oom_reports",
    "parse_invoked_line", "parse_oom_kill_line", "parse_killed_line",
    "parse_memory_line", "parse_task_in_line",
    "OomControl", "MemoryEvents", "OomCounts", "CgroupOomEvent", "CgroupOomWatch",
    "parse_oom_control", "parse_memory_events", "read_counts",
    "monotonic_usec", "kmsg_clock_offset",
]

KMSG_PATH = "/dev/kmsg"
KMSG_BUFSIZE = 8192           # CONSOLE_EXT_LOG_MAX: a smaller read() of a record fails EINVAL
MAX_REPORT_LINES = 200        # a memcg report is ~80 records; a global one with Mem-Info, more


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock /dev/kmsg timestamps are close to."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def kmsg_clock_offset(path: str = "/dev/kmsg", probes: int = 3) -> int:
    """Microseconds the kmsg clock is ahead of CLOCK_MONOTONIC (negative: behind).

    kmsg timestamps come from local_clock() (sched_clock), not CLOCK_MONOTONIC;
    on this VM they run ~17 ms behind.  Subtract the offset from a record's
    usec before comparing it with monotonic_usec().  Measured by writing
    ``probes`` debug-level lines ("terrarium: clock probe") to the kernel log
    and reading them back: needs root, and leaves those lines in the log.
    """
    best = None
    with KmsgReader(path) as reader:
        try:
            wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"open {path} for writing") from None
        try:
            for _ in range(probes):
                tag = f"terrarium: clock probe {os.urandom(4).hex()}"
                t0 = monotonic_usec()
                os.write(wfd, f"<7>{tag}\n".encode())
                t1 = monotonic_usec()
                for rec in reader.follow(timeout=1.0):
                    if rec.text == tag:
                        if best is None or t1 - t0 < best[0]:
                            best = (t1 - t0, rec.usec - (t0 + t1) // 2)
                        break
        finally:
            os.close(wfd)
    if best is None:
        raise KernelError(errno.ETIMEDOUT, f"clock probe not read back from {path}")
    return best[1]


# --- /dev/kmsg records -------------------------------------------------------

@dataclass(frozen=True)
class KmsgRecord:
    """One record of the kernel log as /dev/kmsg hands it out."""
    seq: int
    usec: int                 # local_clock() at printk time, microseconds since boot
    facility: int             # prio >> 3 (0 = kernel)
    level: int                # prio & 7 (0 emerg ... 7 debug)
    text: str
    props: Mapping[str, str] = field(default_factory=dict, hash=False)


_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(raw: bytes) -> str:
    # devkmsg escapes bytes < ' ', >= 127 and '\' itself as \xNN (printk.c, append_char/escaped).
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw).decode("utf-8", "replace")


def parse_kmsg_record(raw: bytes | str) -> KmsgRecord:
    """Parse one record: ``prio,seq,usec,flags[,more];text`` then `` KEY=VALUE`` lines."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    lines = raw.rstrip(b"\n").split(b"\n")
    head, sep, text = lines[0].partition(b";")
    fields = head.split(b",")
    if not sep or len(fields) < 4:
        raise InvalidArgument(f"not a kmsg record: {raw[:80]!r}")
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        raise InvalidArgument(f"not a kmsg record: {raw[:80]!r}") from None
    props: dict[str, str] = {}
    for extra in fields[4:]:                 # e.g. caller=T123 with CONFIG_PRINTK_CALLER
        k, _, v = extra.partition(b"=")
        props[k.decode("ascii", "replace")] = v.decode("ascii", "replace")
    for cont in lines[1:]:
        if cont.startswith(b" "):
            k, _, v = cont[1:].partition(b"=")
            props[_unescape(k)] = _unescape(v)
    return KmsgRecord(seq=seq, usec=usec, facility=prio >> 3, level=prio & 7,
                      text=_unescape(text), props=props)


def split_kmsg_records(data: bytes | str) -> list[KmsgRecord]:
    """Parse a capture of records, one per line, continuation lines starting with a space."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    records: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b" ") and records:
            records[-1] += line
        elif line.strip():
            records.append(line)
    return [parse_kmsg_record(r) for r in records]


class KmsgReader:
    """Follow /dev/kmsg.  Starts at the end unless ``from_start``.

    ``read_available()`` never blocks; ``follow(timeout)`` blocks in poll().
    An overrun (EPIPE: records overwritten before we read them) is counted in
    ``missed`` (records) and ``overruns`` (times) and reading carries on.
    """

    def __init__(self, path: str = KMSG_PATH, *, from_start: bool = False):
        self.path = path
        self.missed = 0
        self.overruns = 0
        self.last_seq: int | None = None
        self._read = os.read          # replaced in tests to play back EPIPE
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"open {path}") from None
        if not from_start:
            os.lseek(self._fd, 0, os.SEEK_END)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "KmsgReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_one(self) -> KmsgRecord | None:
        """The next record, or None when there is nothing new (EAGAIN)."""
        while True:
            try:
                raw = self._read(self._fd, KMSG_BUFSIZE)
            except BlockingIOError:
                return None
            except BrokenPipeError:
                # The ring buffer wrapped past our position; the kernel moved us to
                # the oldest record still there.  The gap shows up in its seq.
                self.overruns += 1
                continue
            except InterruptedError:
                continue
            except OSError as e:
                raise KernelError(e.errno or errno.EIO, f"read {self.path}") from None
            if not raw:
                return None
            rec = parse_kmsg_record(raw)
            if self.last_seq is not None and rec.seq > self.last_seq + 1:
                self.missed += rec.seq - self.last_seq - 1
            self.last_seq = rec.seq
            return rec

    def read_available(self) -> list[KmsgRecord]:
        """Every record readable now, without blocking."""
        out = []
        while (rec := self.read_one()) is not None:
            out.append(rec)
        return out

    def follow(self, timeout: float | None = None) -> Iterator[KmsgRecord]:
        """Yield records as they come; stop after ``timeout`` seconds with none."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            rec = self.read_one()
            if rec is not None:
                yield rec
                continue
            if not poller.poll(ms):
                return


# --- OOM report lines (pure parsers) ----------------------------------------

_INVOKED = re.compile(r"^(?P<comm>.*) invoked oom-killer: (?P<rest>.*)$")
_GFP = re.compile(r"gfp_mask=(?P<gfp>[^,]+)")
_ORDER = re.compile(r"\border=(?P<order>-?\d+)")
_ADJ = re.compile(r"\boom_score_adj=(?P<adj>-?\d+)")
_CALLER = re.compile(r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) (?:Not tainted|Tainted)")
# memory: / memory+swap: (v1) / swap: (v2) / kmem: (v1)
_MEMORY = re.compile(r"^(?P<what>memory|memory\+swap|swap|kmem): usage (?P<usage>\d+)kB, "
                     r"limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)$")
# dump_oom_victim(): pbl lists may hold commas ("0-1,3"), cgroup paths and comm too,
# so the fields are matched in the kernel's fixed order rather than split on ','.
_OOM_KILL = re.compile(
    r"^oom-kill:constraint=(?P<constraint>[A-Z_]+),nodemask=(?P<nodemask>.*?)"
    r"(?:,cpuset=(?P<cpuset>.*?),mems_allowed=(?P<mems_allowed>.*?))?"
    r"(?:,oom_memcg=(?P<oom_memcg>.*?)|,(?P<global_oom>global_oom))?"
    r"(?:,task_memcg=(?P<task_memcg>.*?))?"
    r",task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$")
_KILLED = re.compile(
    r"^(?:(?P<message>[^:]*out of memory|Out of memory[^:]*): )?Killed process (?P<pid>\d+) "
    r"\((?P<comm>.*)\) total-vm:(?P<total_vm>\d+)kB, anon-rss:(?P<anon_rss>\d+)kB, "
    r"file-rss:(?P<file_rss>\d+)kB(?:, shmem-rss:(?P<shmem_rss>\d+)kB)?"
    r"(?:, UID:(?P<uid>\d+) pgtables:(?P<pgtables>\d+)kB oom_score_adj:(?P<adj>-?\d+))?")
# Older kernels (< 4.19): the cgroups in prose, and a "Kill process ... or sacrifice child" line.
_TASK_IN = re.compile(r"^(?:Task in (?P<task_memcg>.*) killed as a result of limit of "
                      r"|Memory limit reached of cgroup )(?P<oom_memcg>.*)$")
_KILL_CHOSEN = re.compile(r"^(?P<message>.*): Kill process (?P<pid>\d+) \((?P<comm>.*)\) "
                          r"score (?P<score>\d+) or sacrifice child$")


class InvokedLine(TypedDict):
    invoker_comm: str
    gfp_mask: str | None
    order: int | None
    invoker_oom_score_adj: int | None


class OomKillLine(TypedDict):
    constraint: str
    nodemask: str
    cpuset: str | None
    mems_allowed: str | None
    oom_memcg: str | None
    task_memcg: str | None
    comm: str
    pid: int
    uid: int
    is_global: bool


class KilledLine(TypedDict):
    message: str | None
    pid: int
    comm: str
    total_vm_kb: int
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int | None
    uid: int | None
    pgtables_kb: int | None
    oom_score_adj: int | None
    is_global: bool | None


class TaskInLine(TypedDict):
    task_memcg: str | None
    oom_memcg: str


def parse_invoked_line(text: str) -> InvokedLine | None:
    """``X invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N``."""
    m = _INVOKED.match(text)
    if not m:
        return None
    rest = m["rest"]
    gfp, order, adj = _GFP.search(rest), _ORDER.search(rest), _ADJ.search(rest)
    return {"invoker_comm": m["comm"],
            "gfp_mask": gfp["gfp"] if gfp else None,
            "order": int(order["order"]) if order else None,
            "invoker_oom_score_adj": int(adj["adj"]) if adj else None}


def parse_memory_line(text: str) -> tuple[str, int, int, int] | None:
    """``memory: usage 20480kB, limit 20480kB, failcnt 141`` -> (what, usage, limit, failcnt)."""
    m = _MEMORY.match(text)
    if not m:
        return None
    return m["what"], int(m["usage"]), int(m["limit"]), int(m["failcnt"])


def parse_oom_kill_line(text: str) -> OomKillLine | None:
    """The one-line summary ``oom-kill:constraint=...,task=...,pid=...,uid=...``.

    A host-wide OOM prints ``global_oom`` instead of ``oom_memcg=``; its
    ``task_memcg`` is only where the victim lived, never the cause, so
    ``oom_memcg`` is None for it (and for any constraint but CONSTRAINT_MEMCG).
    """
    m = _OOM_KILL.match(text)
    if not m:
        return None
    constraint = m["constraint"]
    oom_memcg = m["oom_memcg"] if constraint == "CONSTRAINT_MEMCG" else None
    return {"constraint": constraint, "nodemask": m["nodemask"], "cpuset": m["cpuset"],
            "mems_allowed": m["mems_allowed"], "oom_memcg": oom_memcg,
            "task_memcg": m["task_memcg"], "comm": m["task"], "pid": int(m["pid"]),
            "uid": int(m["uid"]),
            "is_global": oom_memcg is None}


def parse_killed_line(text: str) -> KilledLine | None:
    """``[Memory cgroup out of memory: |Out of memory: ]Killed process N (comm) total-vm:...``."""
    m = _KILLED.match(text)
    if not m:
        return None
    def opt(k: str) -> int | None:
        return int(m[k]) if m[k] is not None else None
    message = m["message"]
    return {"message": message, "pid": int(m["pid"]), "comm": m["comm"],
            "total_vm_kb": int(m["total_vm"]), "anon_rss_kb": int(m["anon_rss"]),
            "file_rss_kb": int(m["file_rss"]), "shmem_rss_kb": opt("shmem_rss"),
            "uid": opt("uid"), "pgtables_kb": opt("pgtables"), "oom_score_adj": opt("adj"),
            # None when the kernel did not say (old kernels print a bare "Killed process").
            "is_global": None if message is None else not message.startswith("Memory cgroup")}


def parse_task_in_line(text: str) -> TaskInLine | None:
    """Older kernels: ``Task in /x killed as a result of limit of /y``."""
    m = _TASK_IN.match(text)
    if not m:
        return None
    return {"task_memcg": m["task_memcg"], "oom_memcg": m["oom_memcg"]}


# --- OOM reports --------------------------------------------------------------

@dataclass(frozen=True)
class OomReport:
    """One OOM kill as the kernel logged it.  Sizes in kB, as logged."""
    usec: int                         # kernel timestamp of the kill ("Killed process" record)
    pid: int                          # the victim, host pid
    comm: str
    is_global: bool                   # host-wide (or cpuset/mempolicy): no cgroup to blame
    oom_memcg: str | None             # the cgroup whose limit was hit; None if is_global or unknown
    task_memcg: str | None            # the victim's cgroup
    constraint: str | None            # CONSTRAINT_MEMCG / CONSTRAINT_NONE / ...; None on old kernels
    uid: int | None = None
    total_vm_kb: int | None = None
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None
    shmem_rss_kb: int | None = None
    pgtables_kb: int | None = None
    oom_score_adj: int | None = None  # the victim's
    usage_kb: int | None = None       # "memory: usage" of oom_memcg (memcg OOMs only)
    limit_kb: int | None = None
    failcnt: int | None = None
    memsw_usage_kb: int | None = None  # v1 "memory+swap:" (v2 prints "swap:")
    memsw_limit_kb: int | None = None
    invoker_comm: str | None = None   # the task whose allocation failed
    invoker_pid: int | None = None
    gfp_mask: str | None = None
    order: int | None = None
    started_usec: int | None = None   # kernel timestamp of the first record
    first_seq: int | None = None
    last_seq: int | None = None
    missed_records: int = 0           # seq gaps inside the report (kmsg overrun)
    lines: tuple[str, ...] = ()       # the report's records' text, capped at MAX_REPORT_LINES


class _Partial(TypedDict):
    """A report being assembled: its records so far, and what their lines said."""
    started_usec: int
    first_seq: int
    last_seq: int
    missed_records: int
    lines: list[str]
    invoked: NotRequired[InvokedLine]
    invoker_pid: NotRequired[int]
    memory: NotRequired[tuple[int, int, int]]        # usage, limit (kB), failcnt
    memsw: NotRequired[tuple[int, int]]              # v1 memory+swap usage, limit (kB)
    oom_kill: NotRequired[OomKillLine]
    task_in: NotRequired[TaskInLine]
    chosen_message: NotRequired[str]


class OomAssembler:
    """Feed kmsg records in order; ``feed()`` returns an OomReport when one completes.

    The kernel prints one report at a time (oom_lock), starting with
    "invoked oom-killer" and ending with "Killed process".  Records from
    other printk callers may interleave; they land in ``lines`` too.  A
    report whose start was lost still completes on its "Killed process" line.
    """

    def __init__(self, max_lines: int = MAX_REPORT_LINES):
        self.max_lines = max_lines
        self._cur: _Partial | None = None

    def _open(self, rec: KmsgRecord) -> _Partial:
        self._cur = {"started_usec": rec.usec, "first_seq": rec.seq, "last_seq": rec.seq,
                     "missed_records": 0, "lines": []}
        return self._cur

    def feed(self, rec: KmsgRecord) -> OomReport | None:
        text = rec.text
        if (inv := parse_invoked_line(text)) is not None:
            cur = self._open(rec)          # a report that never completed is dropped
            cur["invoked"] = inv
        elif self._cur is None:
            if not text.startswith(("oom-kill:", "Task in ", "Memory limit reached",
                                    "Memory cgroup out of memory", "Out of memory",
                                    "Killed process")):
                return None
            cur = self._open(rec)
        else:
            cur = self._cur
            if rec.seq > cur["last_seq"] + 1:
                cur["missed_records"] += rec.seq - cur["last_seq"] - 1
            cur["last_seq"] = max(cur["last_seq"], rec.seq)
        if len(cur["lines"]) < self.max_lines:
            cur["lines"].append(text)
        if inv is not None:
            return None
        if (m := _CALLER.match(text)) and "invoker_pid" not in cur:
            cur["invoker_pid"] = int(m["pid"])
        elif (mem := parse_memory_line(text)) is not None:
            what, usage, limit, failcnt = mem
            if what == "memory":
                cur["memory"] = (usage, limit, failcnt)
            elif what == "memory+swap":
                cur["memsw"] = (usage, limit)
        elif (ok := parse_oom_kill_line(text)) is not None:
            cur["oom_kill"] = ok
        elif (ti := parse_task_in_line(text)) is not None:
            cur["task_in"] = ti
        elif (kc := _KILL_CHOSEN.match(text)) is not None:
            cur["chosen_message"] = kc["message"]
        elif (kl := parse_killed_line(text)) is not None:
            self._cur = None
            return self._build(rec, cur, kl)
        return None

    @staticmethod
    def _build(rec: KmsgRecord, cur: _Partial, kl: KilledLine) -> OomReport:
        ok, ti = cur.get("oom_kill"), cur.get("task_in")
        constraint: str | None
        oom_memcg: str | None
        task_memcg: str | None
        if ok is not None:
            constraint, is_global = ok["constraint"], ok["is_global"]
            oom_memcg, task_memcg = ok["oom_memcg"], ok["task_memcg"]
        elif ti is not None:
            # Old kernels print "Task in" only for memcg OOMs.
            constraint, is_global = None, False
            oom_memcg, task_memcg = ti["oom_memcg"], ti["task_memcg"]
        else:
            # No line names a cgroup ("Out of memory: Kill[ed] process", or a report
            # whose start was lost): nothing to blame a cgroup on.
            # A memcg kill whose cgroup lines were lost keeps is_global False, oom_memcg None.
            constraint, oom_memcg, task_memcg = None, None, None
            message = kl["message"] or cur.get("chosen_message")
            is_global = message is None or not message.startswith("Memory cgroup")
        uid = kl["uid"] if kl["uid"] is not None else (ok["uid"] if ok else None)
        inv = cur.get("invoked")
        usage, limit, failcnt = cur.get("memory", (None, None, None))
        memsw_usage, memsw_limit = cur.get("memsw", (None, None))
        return OomReport(
            usec=rec.usec, pid=kl["pid"], comm=kl["comm"], is_global=is_global,
            oom_memcg=None if is_global else oom_memcg, task_memcg=task_memcg,
            constraint=constraint, uid=uid,
            total_vm_kb=kl["total_vm_kb"], anon_rss_kb=kl["anon_rss_kb"],
            file_rss_kb=kl["file_rss_kb"], shmem_rss_kb=kl["shmem_rss_kb"],
            pgtables_kb=kl["pgtables_kb"], oom_score_adj=kl["oom_score_adj"],
            usage_kb=usage, limit_kb=limit, failcnt=failcnt,
            memsw_usage_kb=memsw_usage, memsw_limit_kb=memsw_limit,
            invoker_comm=inv["invoker_comm"] if inv else None, invoker_pid=cur.get("invoker_pid"),
            gfp_mask=inv["gfp_mask"] if inv else None, order=inv["order"] if inv else None,
            started_usec=cur["started_usec"], first_seq=cur["first_seq"],
            last_seq=cur["last_seq"], missed_records=cur["missed_records"],
            lines=tuple(cur["lines"]))


def parse_oom_reports(records: Iterable[KmsgRecord]) -> list[OomReport]:
    """Every complete OOM report in a sequence of records."""
    asm = OomAssembler()
    return [r for rec in records if (r := asm.feed(rec)) is not None]


# --- cgroup OOM counters (pure parsers) ---------------------------------------

@dataclass(frozen=True)
class OomControl:
    """v1 ``memory.oom_control``."""
    oom_kill_disable: bool
    under_oom: bool
    oom_kill: int


@dataclass(frozen=True)
class MemoryEvents:
    """v2 ``memory.events`` (hierarchical counts)."""
    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    oom_group_kill: int = 0


@dataclass(frozen=True)
class OomCounts:
    """One cgroup's OOM counters, either version.  ``oom_kill`` is what to compare."""
    version: int                      # 1 or 2
    oom_kill: int
    oom: int | None = None            # v2: times the OOM killer was invoked
    under_oom: bool | None = None     # v1: an OOM in progress (or blocked by oom_kill_disable)
    max: int | None = None            # v2: times usage hit memory.max
    high: int | None = None           # v2


def _keyvals(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def parse_oom_control(text: str) -> OomControl:
    """``oom_kill_disable 0\\nunder_oom 0\\noom_kill 1`` (oom_kill exists since 4.13)."""
    kv = _keyvals(text)
    if "under_oom" not in kv:
        raise InvalidArgument(f"not a memory.oom_control: {text[:80]!r}")
    return OomControl(oom_kill_disable=bool(kv.get("oom_kill_disable", 0)),
                      under_oom=bool(kv["under_oom"]), oom_kill=kv.get("oom_kill", 0))


def parse_memory_events(text: str) -> MemoryEvents:
    """``low N\\nhigh N\\nmax N\\noom N\\noom_kill N[\\noom_group_kill N]``."""
    kv = _keyvals(text)
    if "oom_kill" not in kv:
        raise InvalidArgument(f"not a memory.events: {text[:80]!r}")
    return MemoryEvents(**{k: kv[k] for k in MemoryEvents.__dataclass_fields__ if k in kv})


def _counts_from(version: int, text: str) -> OomCounts:
    if version == 1:
        c = parse_oom_control(text)
        return OomCounts(version=1, oom_kill=c.oom_kill, under_oom=c.under_oom)
    e = parse_memory_events(text)
    return OomCounts(version=2, oom_kill=e.oom_kill, oom=e.oom, max=e.max, high=e.high)


def _counter_file(cgroup_dir: str) -> tuple[int, str]:
    v1 = os.path.join(cgroup_dir, "memory.oom_control")
    if os.path.exists(v1):
        return 1, v1
    v2 = os.path.join(cgroup_dir, "memory.events")
    if os.path.exists(v2):
        return 2, v2
    raise NotFound(f"no memory.oom_control or memory.events in cgroup {cgroup_dir!r}")


def read_counts(cgroup_dir: str) -> OomCounts:
    """Read a cgroup's OOM counters, v1 or v2 by what the directory holds."""
    version, path = _counter_file(cgroup_dir)
    try:
        with open(path) as f:
            return _counts_from(version, f.read())
    except OSError as e:
        raise KernelError(e.errno or errno.EIO, f"read {path}") from None


# --- cgroup OOM watch ----------------------------------------------------------

_IN_MODIFY = _inotify_mod.IN_MODIFY
_IN_IGNORED = _inotify_mod.IN_IGNORED
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_INOTIFY_EVENT = struct.Struct("iIII")
_inotify = _inotify_mod.libc          # the ctypes calls, set up once (runtime/inotify.py)


@dataclass(frozen=True)
class CgroupOomEvent:
    """The counters of one watched cgroup moved (or it went away)."""
    key: Hashable
    cgroup_dir: str
    counts: OomCounts
    new_kills: int                    # oom_kill now minus oom_kill at the previous event
    woke_ns: int | None               # CLOCK_MONOTONIC when the eventfd/inotify woke us (None: a
                                      # cgroup gone, or read before any wake)
    seen_ns: int                      # CLOCK_MONOTONIC when these counts were read
    gone: bool = False                # the cgroup was removed (v1 signals the eventfd on rmdir)


@dataclass
class _Watch:
    key: Hashable
    cgroup_dir: str
    version: int
    counter_fd: int                   # memory.oom_control / memory.events, read by pread
    wake_fd: int                      # v1: the eventfd; v2: -1 (the shared inotify fd)
    wd: int                           # v2: inotify watch descriptor
    last: OomCounts
    polled: bool = False              # over the descriptor budget: no descriptor kept, read by sweep()
    path: str = ""                    # the counter file
    pending_since: int | None = None  # monotonic ns of the wake still waiting for oom_kill
    pending_until: int = 0


class CgroupOomWatch:
    """Wait for OOM kills in a set of cgroups, each under a caller's key.

    ``fileno()`` is one epoll descriptor covering every eventfd (v1) and the
    inotify descriptor (v2): register it with poll() or ``loop.add_reader``,
    then call ``read_events()``.  A v1 eventfd fires when the OOM *starts*,
    before the kill is counted, so a woken cgroup stays pending and is re-read
    until ``oom_kill`` rises or ``settle`` seconds pass; ``timeout_hint()``
    says when to call ``read_events()`` again.  ``wait(timeout)`` does all that.
    """

    def __init__(self, cgroups: Mapping[Hashable, str] | None = None, *, settle: float = 0.25,
                 recheck: float = 0.001):
        self.settle_ns = int(settle * 1e9)
        self.recheck = recheck
        self._watches: dict[Hashable, _Watch] = {}
        self._by_fd: dict[int, _Watch] = {}
        self._by_wd: dict[int, _Watch] = {}
        self._inotify_fd = -1
        self._epoll = select.epoll()
        for key, path in (cgroups or {}).items():
            self.add(path, key)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def polled(self) -> bool:
        """Whether any watch is kept without a descriptor (sweep() reads those)."""
        return any(w.polled for w in self._watches.values())

    def keys(self) -> list[Hashable]:
        return list(self._watches)

    def counts(self, key: Hashable) -> OomCounts:
        """The counts as of the last event (or add)."""
        return self._watches[key].last

    # -- adding and removing

    def add(self, cgroup_dir: str, key: Hashable | None = None) -> OomCounts:
        """Watch a cgroup directory; returns its counts now."""
        key = cgroup_dir if key is None else key
        if key in self._watches:
            raise InvalidArgument(f"OOM watch key {key!r} already used")
        version, path = _counter_file(cgroup_dir)
        fds = 2 if version == 1 else 1
        if not fdbudget.OOM.take(fds):
            last = read_counts(cgroup_dir)            # KernelError if it is gone
            self._watches[key] = _Watch(key, cgroup_dir, version, -1, -1, -1, last, polled=True, path=path)
            return last
        try:
            return self._add(key, cgroup_dir, version, path)
        except BaseException:
            fdbudget.OOM.give(fds)
            raise

    def _add(self, key: Hashable, cgroup_dir: str, version: int, path: str) -> OomCounts:
        try:
            counter_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"open {path}") from None
        try:
            last = _counts_from(version, os.pread(counter_fd, 4096, 0).decode())
            if version == 1:
                w = self._add_v1(key, cgroup_dir, counter_fd, last)
            else:
                w = self._add_v2(key, cgroup_dir, path, counter_fd, last)
        except BaseException:
            os.close(counter_fd)
            raise
        self._watches[key] = w
        return last

    def _add_v1(self, key: Hashable, cgroup_dir: str, counter_fd: int, last: OomCounts) -> _Watch:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.path.join(cgroup_dir, "cgroup.event_control")
        try:
            # memcg_write_event_control(): "<event_fd> <fd of memory.oom_control>"
            with open(control, "w") as f:
                f.write(f"{efd} {counter_fd}")
            self._epoll.register(efd, select.EPOLLIN)
        except OSError as e:
            os.close(efd)
            raise KernelError(e.errno or errno.EIO, f"register eventfd in {control}") from None
        w = _Watch(key, cgroup_dir, 1, counter_fd, efd, -1, last)
        self._by_fd[efd] = w
        return w

    def _add_v2(self, key: Hashable, cgroup_dir: str, path: str, counter_fd: int, last: OomCounts) -> _Watch:
        libc = _inotify()
        if self._inotify_fd < 0:
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                raise KernelError(ctypes.get_errno(), "inotify_init1")
            self._inotify_fd = fd
            self._epoll.register(fd, select.EPOLLIN)
        wd = libc.inotify_add_watch(self._inotify_fd, os.fsencode(path), _IN_MODIFY)
        if wd < 0:
            raise KernelError(ctypes.get_errno(), f"inotify_add_watch {path}")
        w = _Watch(key, cgroup_dir, 2, counter_fd, -1, wd, last)
        self._by_wd[wd] = w
        return w

    def remove(self, key: Hashable) -> None:
        """Stop watching; closing a v1 eventfd also unregisters it in the kernel."""
        w = self._watches.pop(key, None)
        if w is None:
            raise NotFound(f"OOM watch {key!r} not found")
        self._drop(w)

    def _drop(self, w: _Watch) -> None:
        self._watches.pop(w.key, None)
        if w.polled:
            return
        fdbudget.OOM.give(2 if w.version == 1 else 1)
        if w.version == 1:
            self._by_fd.pop(w.wake_fd, None)
            try:
                self._epoll.unregister(w.wake_fd)
            except OSError:
                pass
            os.close(w.wake_fd)
        else:
            if self._by_wd.pop(w.wd, None) is not None and self._inotify_fd >= 0:
                _inotify().inotify_rm_watch(self._inotify_fd, w.wd)   # fails quietly if gone
        os.close(w.counter_fd)

    def close(self) -> None:
        for w in list(self._watches.values()):
            self._drop(w)
        if self._inotify_fd >= 0:
            os.close(self._inotify_fd)
            self._inotify_fd = -1
        self._epoll.close()

    def __enter__(self) -> "CgroupOomWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events

    def pending(self) -> list[Hashable]:
        """Keys woken (an OOM started) whose ``oom_kill`` has not risen yet."""
        return [w.key for w in self._watches.values() if w.pending_since is not None]

    def timeout_hint(self) -> float | None:
        """Seconds until read_events() should run again although nothing woke, or None."""
        pending = any(w.pending_since is not None for w in self._watches.values())
        return self.recheck if pending else None

    def read_events(self) -> list[CgroupOomEvent]:
        """Handle whatever is ready now, without blocking."""
        now = time.monotonic_ns()
        for fd, _ in self._epoll.poll(0):
            if fd == self._inotify_fd:
                self._drain_inotify(now)
            elif (w := self._by_fd.get(fd)) is not None:
                try:
                    os.read(fd, 8)           # reset the eventfd counter
                except BlockingIOError:
                    pass
                self._mark(w, now)
        out = []
        for w in list(self._watches.values()):
            if w.pending_since is not None and (ev := self._check(w)) is not None:
                out.append(ev)
        return out

    def wait(self, timeout: float | None = None) -> list[CgroupOomEvent]:
        """Block until there are events or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.read_events()
            if events:
                return events
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            hint = self.timeout_hint()
            t = hint if left is None else (left if hint is None else min(left, hint))
            self._epoll.poll(-1 if t is None else t, 1)

    def _mark(self, w: _Watch, now: int) -> None:
        if w.pending_since is None:
            w.pending_since = now
        w.pending_until = now + self.settle_ns

    def _drain_inotify(self, now: int) -> None:
        while True:
            try:
                buf = os.read(self._inotify_fd, 4096)
            except BlockingIOError:
                return
            for off in _inotify_offsets(buf):
                wd, mask, _, _ = _INOTIFY_EVENT.unpack_from(buf, off)
                w = self._by_wd.get(wd)
                if w is None:
                    continue
                if mask & _IN_IGNORED:       # the file (cgroup) went away
                    self._by_wd.pop(wd, None)
                self._mark(w, now)

    def sweep(self) -> bool:
        """Read the counters of the watches kept without descriptors (over the
        budget: open, read, close each); those that moved are marked as a
        wake would.  → whether any did (call read_events() then).  The caller
        sweeps every refresh (0.5 s) while polled() says there are such watches:
        such a cgroup's kill is seen that much later from its counters, at once
        from kmsg.  A watch that did not move is given descriptors again as
        soon as the budget has room (other watches removed), so polling lasts
        only as long as the crowd that caused it."""
        now, moved = time.monotonic_ns(), False
        for w in list(self._watches.values()):
            if not w.polled or w.pending_since is not None:
                continue
            try:
                counts = _counts_from(w.version, _read_text(w.path))
            except (OSError, InvalidArgument):
                self._mark(w, now)                   # gone: read_events() says so
                moved = True
                continue
            if counts != w.last:
                self._mark(w, now)
                moved = True
            elif self._promote(w, now):
                moved = True
        return moved

    def _promote(self, w: _Watch, now: int) -> bool:
        """Give polled watch w its descriptors if the budget allows; → whether
        its counters moved between the sweep's read and the new watch's (it
        is then marked, and read_events() reports against the old counts)."""
        fds = 2 if w.version == 1 else 1
        if not fdbudget.OOM.take(fds):
            return False
        del self._watches[w.key]
        try:
            counts = self._add(w.key, w.cgroup_dir, w.version, w.path)
        except (OSError, KernelError, InvalidArgument):
            fdbudget.OOM.give(fds)                   # (_add gives nothing back itself)
            self._watches[w.key] = w                 # still polled; a gone cgroup shows next sweep
            return False
        if counts == w.last:
            return False
        new = self._watches[w.key]
        new.last = w.last
        self._mark(new, now)
        return True

    def _check(self, w: _Watch) -> CgroupOomEvent | None:
        seen = time.monotonic_ns()
        try:
            if w.polled:
                text = _read_text(w.path)
            else:
                text = os.pread(w.counter_fd, 4096, 0).decode()
            counts = _counts_from(w.version, text)
        except (OSError, InvalidArgument):
            # A removed cgroup's files fail with ENODEV; v1 signals the eventfd on rmdir.
            ev = CgroupOomEvent(w.key, w.cgroup_dir, w.last, 0, w.pending_since, seen, gone=True)
            self._drop(w)
            return ev
        new_kills = counts.oom_kill - w.last.oom_kill
        oom_rose = counts.oom is not None and counts.oom > (w.last.oom or 0)
        settled = seen >= w.pending_until
        if new_kills <= 0 and not settled:
            if w.version == 2 and not oom_rose and not counts.under_oom:
                # memory.events also moves for max/high: not an OOM, nothing to wait for.
                w.last, w.pending_since = counts, None
            return None
        woke, w.last, w.pending_since = w.pending_since, counts, None
        if new_kills <= 0 and w.version == 2 and not oom_rose:
            return None
        return CgroupOomEvent(w.key, w.cgroup_dir, counts, max(new_kills, 0), woke, seen)


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _inotify_offsets(buf: bytes) -> Iterator[int]:
    off = 0
    while off + _INOTIFY_EVENT.size <= len(buf):
        yield off
        off += _INOTIFY_EVENT.size + _INOTIFY_EVENT.unpack_from(buf, off)[3]
