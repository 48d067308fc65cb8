"""Fast, repeated sampling of containers: what a sampler calls every tick.

    from runtime import stats
    reader = stats.StatsReader(rt.cgroups)           # one per sampler
    sample, forest = reader.read(cid)                # == cg.sample(cid), procs.container_tree(...)
    reader.forget(cid)                               # the container is no longer watched

``CgroupDriver.sample`` and ``procs.container_tree`` open, read and close
every file on every call; per container and tick that is ~16 cgroup files
plus three files per process, and most of the cost is the open/close and the
Python around it, not the kernel's work.  Here each container keeps its
files open and re-reads them with ``os.pread(fd, n, 0)`` (cgroupfs and procfs
regenerate the content on every read at offset 0), parses a file only when
its bytes changed, and reads only what can have changed:

- every tick: memory usage, CPU time (cpuacct.usage; v2 cpu.stat), the task
  count (pids.current) and io (4 preads).  When the first three all stand
  still the tick is *idle*: nothing in the cgroup ran, charged or freed
  memory, forked or exited, and nothing else is read -- memory.stat's LRU
  sizes and swap, failcnt, OOM kills, CFS throttling and every process's
  /proc/<pid>/stat cannot have moved (figures are carried over);
- on an *active* tick: memory.stat (one read gives cache, rss, inactive_file
  and swap), failcnt, memory.oom_control / memory.events, v1 cpu.stat, and
  the processes; ``cgroup.procs`` only when the task count changed (or a
  process vanished, or the count and the processes' threads disagree);
- every ``slow_every`` ticks (default 5): everything, limits and the figures
  no graph plots (memory.limit_in_bytes, memsw.*, max_usage, cfs quota/period,
  pids.max; memory.max, cpu.max ... on v2) included.  What an idle tick can
  miss -- LRU aging or RSS shrunk by reclaim from outside, a limit changed --
  shows within that many ticks;
- a one-off pass (``read_many(keep=False)``: a page's reading, history's
  minute) keeps no descriptor but keeps the last bytes, and reads the next
  pass as a tick, plus the limits every pass (figures.py "limit"): its
  passes are far apart, and a limit just changed (``docker update``) shows
  on the next;
- a process: only ``/proc/<pid>/stat`` is re-read (CPU ticks, RSS, state,
  threads, ppid); when its bytes equal last tick's, or only figures a
  ProcessInfo does not hold moved (page faults, children's times), the
  previous ProcessInfo is reused as is.  ``status`` (NSpid, Uid) and ``cmdline`` are read when the
  process is first seen, when its ``comm`` changes (an exec), and after
  ``refresh`` active ticks (a setuid, a rewritten argv);
- the forest: rebuilt only when some ProcessInfo changed (the sampler sends
  the tree only then).

An idle container with 3 processes costs ~7 preads a tick on average
(bench/sampler_cost.py); ``read(name, tree=False)`` reads no process at all.
Beside the cgroup files, every tick reads the container's network counters,
``/proc/<pid>/net/dev`` (figures.NET_DEV; opened and closed each time, see
_NetDev: one openat, one read, one close; none for ``--network host``).

Processes are keyed by (pid, start time): a kept-open ``/proc/<pid>/stat`` of
an exited process fails with ESRCH, and a reused pid shows another start
time, so a new process never inherits an old one's record.  Descriptors are
reopened on ENOENT/ESTALE/ENODEV (a cgroup removed and made again) and all
of a container's are closed by ``forget`` or when its cgroup is gone.  A
container holds its ~16 cgroup files plus one ``stat`` per process for at most
KEEP_OPEN processes; ``status``, ``cmdline`` and ``cgroup.procs`` (whose v1 pid
list would go stale, see CgroupFiles) are never kept open.  All of it within the
process's descriptor budget (runtime/fdbudget.py, shared by every reader of
the process): a container or process beyond it has its files opened and
closed per read instead.

RSS here is stat field 24 (pages, the kernel's fast per-mm counter) rather
than status VmRSS: they count the same pages, VmRSS summed exactly, so they
can differ by the per-CPU batch (a few hundred kB at most).

The reading is the driver's ``sample()`` record (runtime/cgroups/record.py
``Sample``: the same figures and ``sources``, v1 and v2; tests compare them).
Not thread-safe: one reader per sampler thread.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from . import fdbudget
from . import procs as _procs
from .cgroups import figures, parse
from .cgroups.base import CgroupDriver, same_netns
from .cgroups.record import Figure, Sample
from .errors import NotFound, TerrariumError
from .pidinfo import StatFields, parse_nspid, parse_stat, parse_status, parse_uid
from .procs import ProcessInfo, ProcessNode

Forest = list[ProcessNode]
# One container's reading: its cgroup's record and its processes (None: not read).
Reading = tuple[Sample, Forest | None]

_REOPEN = (errno.ENOENT, errno.ESTALE, errno.ENODEV)
_GONE = (errno.ENOENT, errno.ESRCH)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_BUF = 65536
# Processes per container whose /proc/<pid>/stat stays open (see ProcessTable).
KEEP_OPEN = 256


class _File:
    """One kernel file, re-read from offset 0: kept open, or with ``keep=False``
    opened and closed around each read (outside the descriptor budget).

    ``whole``: read on to EOF.  A seq_file such as cgroup.procs answers one
    read with at most about a page even when asked for more, so a short
    first read does not mean the end (1,000 pids are ~6 kB: a one-read
    cgroup.procs lost a third of them).  The small knobs fit one read."""
    __slots__ = ("path", "fd", "keep", "whole")

    def __init__(self, path: str, keep: bool = True, whole: bool = False):
        self.path, self.keep, self.whole = path, keep, whole
        self.fd: int | None = None

    def read(self) -> bytes | None:
        """The file's bytes now; None if it does not exist (a knob not offered)."""
        if self.fd is not None:                 # the fast path: one syscall
            try:
                data = os.pread(self.fd, _BUF, 0)
            except OSError as e:
                if e.errno not in _REOPEN:
                    raise
            else:
                if self.whole and data:
                    return data + _read_rest(self.fd, len(data))
                if len(data) < _BUF:
                    return data
        return self._read()

    def _read(self) -> bytes | None:
        if self.keep:
            return self._read_open()
        try:
            return self._read_open()
        finally:
            self.close()

    def _read_open(self) -> bytes | None:
        for attempt in (0, 1):
            if self.fd is None:
                try:
                    self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
            try:
                data = os.pread(self.fd, _BUF, 0)
            except OSError as e:
                if e.errno not in _REOPEN or attempt:
                    raise
                self.close()                    # removed and made again: reopen once
                continue
            if len(data) == _BUF or (self.whole and data):   # rare (a huge memory.stat): read it all
                data += _read_rest(self.fd, len(data))
            return data
        return None

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None


def _read_rest(fd: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, _BUF, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


# What to read and when: runtime/cgroups/figures.py (one table per cgroup
# version, walked here and by the drivers' sample()).  On an active tick an
# idle container costs 4 preads; what "active" misses (LRU aging by reclaim
# elsewhere, a page of its cache touched by another cgroup's process) shows on
# the next slow tick.


class _Source(Protocol):
    """What a _Knob reads: a _File, or the _NetDev of a container."""
    def read(self) -> bytes | None: ...
    def close(self) -> None: ...


class _Knob:
    """A kept-open cgroup file with its last bytes and the figures parsed from
    them: the row's parser runs only when the bytes changed (most files, most
    ticks, do not).  ``value`` is None while the file is absent."""
    __slots__ = ("file", "parse", "raw", "value")

    def __init__(self, file: _Source, parser: figures.Parse):
        self.file, self.parse = file, parser
        self.raw: bytes | None = None
        self.value: dict[str, Figure] | None = None

    def get(self) -> bool:
        """Re-read; → whether the bytes changed."""
        data = self.file.read()
        if data == self.raw:
            return False
        self.raw = data
        self.value = None if data is None else self.parse(data)
        return True

    def close(self) -> None:
        self.file.close()
        self.raw = self.value = None


class _NetDev:
    """``net/dev`` of the network namespace a container's processes are in
    (figures.NET_DEV): ``/proc/<pid>/net/dev`` of the first process its
    cgroup.procs lists, opened, read and closed each tick.  Never kept open:
    an open procfs net file holds its namespace, which would outlive the
    container (and its veth pair with it) while a viewer watches.  What is
    kept is an O_PATH descriptor of ``/proc/<pid>``: it follows that process,
    never a reused pid (a lookup under it fails once the process is gone,
    and the next read picks a process again).  A process in the reader's own
    namespace (``--network host``) gives None, with no read at all.

    Not kept (``keep=False``: a one-off reader, or over the budget), the
    O_PATH is closed after each read; the next read opens that pid's again and
    keeps it if its ns/net is still the same namespace (a reused pid of
    another namespace is not: cgroup.procs is read for a process then), so a
    one-off pass does not list the cgroup's processes again for it."""
    __slots__ = ("procs", "proc", "fd", "dir", "reads", "keep", "last", "seen")

    def __init__(self, procs: _File, proc: str, keep: bool = True):
        self.procs, self.proc = procs, proc
        self.fd: int | None = None        # O_PATH of /proc/<pid>
        self.dir: str | None = None       # "/proc/<pid>" while that namespace is not ours
        self.reads = 0                    # net/dev reads and cgroup.procs reads to pick a process
        self.keep = keep                  # False: over the descriptor budget, the O_PATH is not kept
        self.last: tuple[int, tuple[int, int]] | None = None     # (pid, its ns/net's (dev, ino))
        self.seen: bytes | None = None    # cgroup.procs as _pick read it this tick (CgroupFiles resets it)

    def read(self) -> bytes | None:
        try:
            return self._read()
        finally:
            if not self.keep and self.fd is not None:
                os.close(self.fd)             # opened again next read (``dir`` and ``last`` stay)
                self.fd = None

    def _read(self) -> bytes | None:
        for _ in (0, 1):
            if self.fd is None and not self._pick():
                return None
            if self.dir is None:
                return None                           # the reader's own namespace
            try:
                fd = os.open("net/dev", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
            except OSError as e:
                if e.errno not in (*_GONE, errno.EINVAL):
                    raise
                self.close()                          # that process is gone: pick another
                continue
            try:
                self.reads += 1
                data = os.read(fd, _BUF)
                while len(data) > _PAGE - 512 and (more := os.read(fd, _BUF)):
                    data += more                      # a seq_file answers a page at a time
            finally:
                os.close(fd)
            return data
        return None

    def _pick(self) -> bool:
        if self.last is not None and self._open(*self.last):
            return True                       # the process of the last read, same namespace
        self.reads += 1
        data = self.seen = self.procs.read()
        pid = next(iter(parse.pids(data.decode())), None) if data else None
        return pid is not None and self._open(pid)

    def _open(self, pid: int, ns: tuple[int, int] | None = None) -> bool:
        """Take /proc/<pid> (if its ns/net is ``ns``, when given)."""
        try:
            fd = os.open(f"{self.proc}/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.stat("ns/net", dir_fd=fd)
        except OSError:
            st = None
        if st is None or (ns is not None and (st.st_dev, st.st_ino) != ns):
            os.close(fd)
            return False
        self.fd, self.dir = fd, None if same_netns(st) else f"{self.proc}/{pid}"
        self.last = (pid, (st.st_dev, st.st_ino))
        return True

    def close(self) -> None:
        self.last = None
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = self.dir = None


class _Layout:
    """What the fast reader reads of a cgroup of one table version with a given
    set of controllers: the table's rows that are there, by cadence (indices
    into ``table.rows``), each row's figures as None for when its file is not
    there, the sources.  Worked out once per layout (``layout()``) and shared
    by every container that has it -- all of one engine's, all of ours -- so a
    new container's reading builds only its own files."""
    __slots__ = ("table", "files", "net", "by_when", "absent", "sources", "row_of", "open")

    def __init__(self, table: figures.Table, controllers: frozenset[str]):
        self.table = table
        rows = table.rows
        self.files = tuple(i for i, r in enumerate(rows) if r.controller in controllers)
        self.net = tuple(i for i, r in enumerate(rows) if r.controller == figures.NETNS)
        self.by_when = {w: tuple(i for i in self.files if rows[i].when == w) for w in figures.WHEN}
        self.absent = tuple(figures.absent(r) for r in rows)
        self.sources = figures.sources(table, controllers)
        self.row_of = {f: i for i, r in enumerate(rows) for f in r.figures}     # figure -> its row
        # descriptors a kept-open reading holds: its files and net/dev's O_PATH
        self.open = len(self.files) + bool(self.net)


_LAYOUTS: dict[tuple[str, frozenset[str]], _Layout] = {}


def layout(kind: str, controllers: frozenset[str]) -> _Layout:
    """The shared _Layout of a ``kind`` cgroup with these controllers."""
    table = figures.table(kind)
    lay = _LAYOUTS.get((kind, controllers))
    if lay is None or lay.table is not table:           # new, or the table was replaced (a test's row)
        lay = _LAYOUTS[kind, controllers] = _Layout(table, controllers)
    return lay


def _reread(knobs: tuple[_Knob, ...]) -> bool:
    """Re-read each of them (all: no short cut); → whether any one's bytes changed."""
    changed = False
    for k in knobs:
        if k.get():
            changed = True
    return changed


class CgroupFiles:
    """The kept-open cgroup files of one container; ``sample()`` = driver.sample().

    After a sample, ``active`` says whether the container's memory usage, CPU
    time or task count moved since the previous one, ``tasks_changed`` whether
    its task count did, and ``slow`` whether this was a slow tick (everything read).

    ``once``: the files of a one-off reader's container (``read_many(keep=False)``):
    none is kept open -- each is opened, read and closed -- but their last
    bytes are, so the next one-off pass over it reads what a tick of a kept-open
    reader would, plus its limits ("limit" rows: passes are far apart, and a
    limit changed since must show on the next one)."""

    def __init__(self, driver: CgroupDriver, name: str, slow_every: int = 5, proc: str = _procs.PROC,
                 once: bool = False):
        self.name, self.once = name, once
        paths = self._paths = driver.paths(name)      # controller -> directory
        lay = self.layout = layout("v2" if driver.kind == "v2" else "v1", frozenset(paths))
        self.table, self.kind = lay.table, lay.table.kind
        self.dirs = list(dict.fromkeys(paths.values()))
        # cgroup.procs of one hierarchy: every hierarchy holds the same processes
        # (attach writes them all); pids is the one a container must have.
        # Opened for each read, never kept: on v1, a read from offset 0 of an
        # open cgroup.procs reuses the pid list the kernel cached for the cgroup
        # (kernel/cgroup/cgroup-v1.c, cgroup_pidlist_start), which lives on while
        # it is read at least once a second -- a reader ticking faster kept
        # listing processes long gone and never saw the new ones.
        procs_dir = next((paths[c] for c in ("pids", "memory", "unified") if c in paths), self.dirs[0])
        self.procs = _File(os.path.join(procs_dir, "cgroup.procs"), keep=False, whole=True)
        # Kept open within the process's descriptor budget (runtime/fdbudget.py);
        # beyond it, or ``once``, every file is opened and closed per read.
        self.kept = lay.open if not once and fdbudget.STATS.take(lay.open) else 0
        keep = self.kept > 0
        self.net = _NetDev(self.procs, proc, keep=keep)
        rows = lay.table.rows
        knobs: list[_Knob | None] = [None] * len(rows)      # by row; None: not there
        for i in lay.files:
            knobs[i] = _Knob(_File(f"{paths[rows[i].controller]}/{rows[i].file}", keep), rows[i].parse)
        for i in lay.net:
            knobs[i] = _Knob(self.net, rows[i].parse)
        self._knobs = tuple(knobs)
        tick, io, active, slow, limit = (tuple(k for i in lay.by_when[w] if (k := knobs[i]) is not None)
                                         for w in ("tick", "always", "active", "slow", "limit"))
        self._tick_knobs, self._io_knobs, self._active_knobs = tick, io, active
        self._slow_knobs, self._limit_knobs = slow, limit
        # net/dev: every tick, counted in self.net.reads, not in self.reads (cgroup files)
        self._net_knobs = tuple(k for i in lay.net if (k := knobs[i]) is not None)
        self._tasks = self._knob("pids_current")
        self._first = self._knob("memory_usage") or next(iter(tick), None)
        self.sources = lay.sources
        self._sources_netns: str | None = None        # the net.dir self.sources names
        self.slow_every, self._ticks = max(int(slow_every), 1), 0
        self.active = self.tasks_changed = self.slow = True
        self._tasks_raw: bytes | None = None
        self._last: Sample | None = None   # the last sample, returned again while no file changes
        self.reads = 0                # preads of cgroup files (cgroup.procs too), for tests and bench/

    def _knob(self, figure: str) -> _Knob | None:
        i = self.layout.row_of.get(figure)
        return None if i is None else self._knobs[i]

    @property
    def knobs(self) -> dict[str, _Knob | None]:
        """figure -> its file's _Knob (None: not there), for tests and bench/."""
        return {f: self._knobs[i] for f, i in self.layout.row_of.items()}

    @property
    def files(self) -> list[tuple[str, _Source | None]]:
        """(file name, _File or None) of every row, in the table's order."""
        return [(r.file, k.file if k else None) for r, k in zip(self.table.rows, self._knobs)]

    def close(self) -> None:
        self._ticks, self._tasks_raw, self._last = 0, None, None
        self.active = self.tasks_changed = self.slow = True
        for k in self._knobs:
            if k is not None:
                k.close()
        self.procs.close()
        self.net.close()
        fdbudget.STATS.give(self.kept)
        self.kept = 0

    def _gone(self) -> bool:
        return not any(os.path.isdir(d) for d in self.dirs)

    def sample(self) -> Sample:
        """One reading, as the driver's sample() gives it.  ``sources`` and
        the parsed dicts (memory_events) are shared between calls, and while no
        file's bytes change the same record comes back (so a consumer can tell
        "nothing moved" by identity)."""
        slow = self.slow = self._ticks % self.slow_every == 0
        self._ticks += 1
        self.net.seen = None
        try:
            changed = _reread(self._tick_knobs)
            tasks = self._tasks
            if tasks is None or tasks.value is None:          # no pids controller: always list
                self.tasks_changed = True
            else:
                self.tasks_changed = tasks.raw is not self._tasks_raw
                self._tasks_raw = tasks.raw
            # every file's bytes, this tick (not short-circuited: each is read)
            moved = _reread(self._io_knobs) | _reread(self._net_knobs) | changed
            n = len(self._tick_knobs) + len(self._io_knobs)
            active = self.active = changed or slow
            if active:
                moved = _reread(self._active_knobs) | moved
                n += len(self._active_knobs)
            if slow:
                moved = _reread(self._slow_knobs) | moved
                n += len(self._slow_knobs)
            if slow or self.once:
                moved = _reread(self._limit_knobs) | moved
                n += len(self._limit_knobs)
            self.reads += n
            if self.net.dir != self._sources_netns:     # a process (another one) to read net/dev of
                self._sources_netns = self.net.dir
                self.sources = figures.sources(self.table, self._paths, self.net.dir)
                moved = True
        except OSError as e:
            if e.errno in _REOPEN and self._gone():
                raise NotFound(f"cgroup of {self.name} not found") from None
            raise
        if (self._first is None or self._first.raw is None) and self._gone():
            raise NotFound(f"cgroup of {self.name} not found")
        if not moved and self._last is not None:
            return self._last                 # no file changed: the same sample (and object)
        out: dict[str, Figure] = {}
        for k, none in zip(self._knobs, self.layout.absent):
            out.update(none if k is None or k.value is None else k.value)
        out.update(self.table.constants)
        self._last = last = Sample.of(self.kind, out, self.sources)
        return last

    def procs_bytes(self) -> bytes:
        """cgroup.procs now: as net/dev's pick read it this tick (a container
        first seen, or whose process for net/dev ended), else read again."""
        data, self.net.seen = self.net.seen, None
        if data is None:
            self.reads += 1
            data = self.procs.read()
        if data is None:
            raise NotFound(f"cgroup of {self.name} not found")
        return data


class _Proc:
    """One process of a container: its files and last reading.  Only ``stat``
    (read every active tick) may stay open, and only inside the container's
    budget; ``status`` and ``cmdline`` are read at first sight, at an exec and
    every ``refresh`` ticks, so they are opened per read."""
    __slots__ = ("pid", "base", "stat", "status", "cmdline", "raw", "start", "comm",
                 "ns_pids", "uid", "uid_src", "ns_src", "cmd", "cmd_raw", "ident_at", "info")

    def __init__(self, pid: int, proc: str, keep: bool = True):
        self.pid, self.base = pid, f"{proc}/{pid}"
        self.stat = _File(f"{self.base}/stat", keep)
        self.status = _File(f"{self.base}/status", keep=False)
        self.cmdline = _File(f"{self.base}/cmdline", keep=False)
        self.raw: bytes | None = None
        self.start: int | None = None
        self.comm: str | None = None
        self.info: ProcessInfo | None = None
        self.ns_pids: tuple[int, ...] | None = None
        self.uid: int | None = None
        self.cmd_raw: bytes | None = None
        self.cmd: tuple[str, ...] = ()
        self.ns_src: str | None = None
        self.uid_src: str | None = None
        self.ident_at = 0

    def close(self) -> None:
        self.stat.close()
        self.status.close()
        self.cmdline.close()
        if self.stat.keep:                        # its descriptor back to the budget
            self.stat.keep = False
            fdbudget.STATS.give(1)


class ProcessTable:
    """The processes of one container, re-read cheaply every tick.

    ``ticks`` is the owner's clock (ContainerStats counts the ticks on which
    something in the cgroup ran: a setuid or an argv rewrite needs the process
    to run): status and cmdline are re-read once a process's were read
    ``refresh`` ticks ago.

    At most ``keep_open`` processes keep their ``stat`` open (default
    KEEP_OPEN); the others open it per read.  A container with thousands of
    processes then costs the reader a bounded number of descriptors, not
    three per process (one watched ``spawn 1000`` took a 1024-descriptor
    Daphne down)."""

    def __init__(self, proc: str = _procs.PROC, users: Mapping[int, str] | None = None,
                 refresh: int = 10, keep_open: int | None = None):
        self.proc, self.users, self.refresh = proc, users, refresh
        self.keep_open = KEEP_OPEN if keep_open is None else keep_open
        self.by_pid: dict[int, _Proc] = {}
        self._procs_raw: bytes | None = None
        self._forest: Forest | None = None
        self.ticks = 0
        self.reads = {"procs_changed": 0, "stat": 0, "status": 0}   # for tests and bench/

    @property
    def needs_list(self) -> bool:
        """No process set yet, or a process vanished: cgroup.procs must be read."""
        return self._procs_raw is None or self._forest is None

    def close(self) -> None:
        for p in self.by_pid.values():
            p.close()
        self.by_pid.clear()
        self._procs_raw = self._forest = None

    @property
    def open_files(self) -> int:
        """Descriptors held now (for tests and bench/)."""
        return sum(f.fd is not None for p in self.by_pid.values() for f in (p.stat, p.status, p.cmdline))

    def forest(self, procs_raw: bytes | None) -> Forest:
        """The container's forest (runtime.procs.ProcessNode) from cgroup.procs'
        bytes; None: the same processes as last time (the task count stood still)."""
        changed = False
        if procs_raw is not None and procs_raw != self._procs_raw:
            self.reads["procs_changed"] += 1
            self._procs_raw = procs_raw
            pids = set(parse.pids(procs_raw.decode()))
            for pid in [p for p in self.by_pid if p not in pids]:
                self.by_pid.pop(pid).close()
            kept = sum(p.stat.keep for p in self.by_pid.values())
            for pid in sorted(pids):                  # the oldest pids (init first) keep theirs
                if pid not in self.by_pid:
                    keep = kept < self.keep_open and fdbudget.STATS.take(1)
                    self.by_pid[pid] = _Proc(pid, self.proc, keep=keep)
                    kept += keep
            changed = True
        for pid, p in list(self.by_pid.items()):
            before = p.info
            if not self._update(p):
                p.close()                                 # exited since cgroup.procs was read
                del self.by_pid[pid]
                self._procs_raw = None                    # list again next tick
                changed = True
            elif p.info is not before:
                changed = True
        if changed or self._forest is None:
            self._forest = _procs.build_forest(p.info for p in self.by_pid.values() if p.info is not None)
        return self._forest

    def _update(self, p: _Proc) -> bool:
        """Re-read one process; False if it is gone."""
        try:
            raw = p.stat.read()
            self.reads["stat"] += 1
        except OSError as e:
            if e.errno in _GONE:
                return False
            raise
        if not raw:
            return False
        due = self.ticks - p.ident_at >= self.refresh
        if raw == p.raw and not due:
            return True                                   # nothing changed: same ProcessInfo
        st = parse_stat(raw.decode("utf-8", "replace"))
        if p.start is not None and st.start_ticks != p.start:
            return False                                  # the pid was reused: a new process
        if p.start is None or st.comm != p.comm or due:
            before = (p.ns_pids, p.uid, p.cmd_raw)
            if not self._identity(p):
                return False
            p.ident_at = self.ticks
            if raw == p.raw and before == (p.ns_pids, p.uid, p.cmd_raw):
                return True                               # re-checked, still the same
        p.raw, p.start, p.comm = raw, st.start_ticks, st.comm
        info, old = self._info(p, st), p.info
        if old is None or info != old or info.sources != old.sources:
            p.info = info
        # else: what moved is not in a ProcessInfo (page faults, the children's
        # times: a shell that forks), so the process, and the forest, stay the same
        return True

    def _identity(self, p: _Proc) -> bool:
        """status (NSpid, Uid) and cmdline: what changes only at exec or setuid."""
        try:
            status = p.status.read()
            cmd = p.cmdline.read()
            self.reads["status"] += 1
        except OSError as e:
            if e.errno in _GONE:
                return False
            raise
        if status is None or cmd is None:
            return False
        lines = parse_status(status.decode("utf-8", "replace"), ("NSpid", "Uid"))
        p.ns_pids = parse_nspid(lines["NSpid"]) if "NSpid" in lines else None
        p.ns_src = f"{p.base}/status: {lines['NSpid']}" if "NSpid" in lines else None
        p.uid = parse_uid(lines["Uid"]) if "Uid" in lines else -1
        p.uid_src = f"{p.base}/status: {lines['Uid']}" if "Uid" in lines else None
        p.cmd_raw, p.cmd = cmd, _procs.parse_cmdline(cmd)
        return True

    def _info(self, p: _Proc, st: StatFields) -> ProcessInfo:
        sf = f"{p.base}/stat"
        uid = -1 if p.uid is None else p.uid             # both set by _identity first
        sources = {"pid": f"{sf}: field 1 pid={st.pid}", "comm": f"{sf}: field 2 comm=({st.comm})",
                   "cmdline": f"{p.base}/cmdline: {(p.cmd_raw or b'')[:200]!r}",
                   "cpu_ticks": f"{sf}: field 14 utime={st.utime}, field 15 stime={st.stime}",
                   "start_ticks": f"{sf}: field 22 starttime={st.start_ticks}",
                   "ppid": f"{sf}: field 4 ppid={st.ppid}",
                   "state": f"{sf}: field 3 state={st.state}",
                   "threads": f"{sf}: field 20 num_threads={st.threads}",
                   "rss": f"{sf}: field 24 rss={st.rss_pages} pages"}
        if p.ns_src:
            sources["ns_pid"] = p.ns_src
        if p.uid_src:
            sources["uid"] = p.uid_src
        return ProcessInfo(
            pid=st.pid, ppid=st.ppid, ns_pids=p.ns_pids or (st.pid,), uid=uid,
            user=self.users.get(uid) if self.users is not None else None,
            state=st.state, comm=st.comm, cmdline=p.cmd, rss=st.rss_pages * _PAGE,
            cpu_ticks=st.utime + st.stime, start_ticks=st.start_ticks, threads=st.threads,
            kthread=bool(st.flags & _procs.PF_KTHREAD), sources=sources)


class ContainerStats:
    """Kept-open cgroup files and process table of one container (``once``:
    none kept open, their last bytes kept: see CgroupFiles)."""

    def __init__(self, driver: CgroupDriver, name: str, proc: str = _procs.PROC, slow_every: int = 5,
                 keep_open: int | None = None, once: bool = False):
        self.cgroup = CgroupFiles(driver, name, slow_every, proc, once)
        self.table = ProcessTable(proc, keep_open=0 if once else keep_open)
        self._missed = False          # a read without the tree saw activity

    def read(self, tree: bool = True) -> Reading:
        """(sample, forest); the forest is None with ``tree=False`` (no
        process is read: what a pass that only records history needs).

        The processes are re-read only when the cgroup says something happened:
        while its CPU time, memory usage and task count stand still no process
        in it ran, so no /proc/<pid>/stat changed (a slow tick re-reads them
        anyway: RSS can shrink by reclaim from outside).  cgroup.procs is read
        when the task count changed, on slow ticks, after a process vanished,
        and when the count and the processes' threads disagree (a thread ended
        while a process started: the count stood still)."""
        cg, t = self.cgroup, self.table
        raw = cg.sample()
        if cg.active:
            t.ticks += 1                               # identity can change only by running
        if not tree:
            # What this tick saw is not lost for the next read with the tree
            # (a reader that wants it every other tick: the OOM memory record).
            self._missed = self._missed or cg.active or cg.slow
            if cg.tasks_changed or cg.slow:
                t._procs_raw = None                    # list again then
            return raw, None
        missed, self._missed = self._missed, False
        if not (cg.active or cg.slow or missed or t.needs_list):
            return raw, t._forest
        relist = cg.tasks_changed or cg.slow or t.needs_list
        forest = t.forest(cg.procs_bytes() if relist else None)
        tasks = raw.pids_current
        if tasks is not None and not relist and \
                tasks != sum(p.info.threads for p in t.by_pid.values() if p.info is not None):
            t._procs_raw = None                        # list again next tick
        return raw, forest

    def close(self) -> None:
        self.cgroup.close()
        self.table.close()


# seconds a one-off pass's container is remembered after its last read (its
# cgroup, files and last bytes; no descriptor): the minute history passes every 60 s
ONCE_FOR = 300.0


class StatsReader:
    """Per-container ContainerStats, made on first read, closed by forget()
    or when the cgroup is gone (NotFound propagates).

    A one-off pass (``read_many(keep=False)``) reads through ContainerStats of
    its own, made with ``once``: no descriptor outlives a container's read,
    but where its cgroup is, its files and their last bytes, and its
    processes' do, for the next one-off pass -- which then reads what a tick
    of a kept-open reader reads (an idle container: its tick files, io,
    net/dev and its limits; no process), not every file again.  A container
    is kept so for ``once_for`` seconds after its last one-off read: passes
    split into parts (the agent's, 512 containers a request) and a single
    container's reading between two passes (an OOM's tree) keep what the
    others need, and a container no pass names any more is dropped."""

    def __init__(self, driver: CgroupDriver, proc: str = _procs.PROC, slow_every: int = 5,
                 keep_open: int | None = None,
                 resolve: Callable[[str], tuple[CgroupDriver, str]] | None = None,
                 once_for: float = ONCE_FOR):
        self.driver, self.proc, self.slow_every = driver, proc, slow_every
        self.once_for = once_for
        self.keep_open = keep_open
        # name -> (driver, cgroup name): another owner's container (a discovery
        # key, "docker-<id>") lives under a parent of its own
        self.resolve = resolve or self._ours
        self.containers: dict[str, ContainerStats] = {}
        # name -> (ContainerStats holding no descriptor, monotonic time of its
        # last one-off read)
        self._once: dict[str, tuple[ContainerStats, float]] = {}

    def _ours(self, name: str) -> tuple[CgroupDriver, str]:
        return self.driver, name

    def _open(self, name: str, once: bool) -> ContainerStats:
        # no exists() first: a cgroup that is not there raises NotFound at its
        # first sample (its usage file absent and its directories gone), and a
        # cold pass would pay a stat per hierarchy per container for it
        driver, cg = self.resolve(name)
        return ContainerStats(driver, cg, self.proc, self.slow_every, self.keep_open, once)

    def read(self, name: str, tree: bool = True) -> Reading:
        c = self.containers.get(name)
        if c is None:
            self._once.pop(name, None)              # a kept reading starts afresh, within the budget
            c = self.containers[name] = self._open(name, once=False)
        try:
            return c.read(tree)
        except NotFound:
            self.forget(name)
            raise

    def read_many(self, names: Iterable[str], tree: bool = True,
                  keep: bool = True) -> dict[str, Reading | TerrariumError | OSError]:
        """{name: (raw, forest), or the error (NotFound, ...) that name's read
        raised}: one pass over many containers, as the agent's ``sample`` verb
        answers it.  keep=False: a one-off pass (history's once a minute),
        each container's files opened for its read and closed again; a
        container read with keep=True before is forgotten (its files closed)."""
        out: dict[str, Reading | TerrariumError | OSError] = {}
        now = time.monotonic()
        for name in names:
            try:
                if keep:
                    out[name] = self.read(name, tree)
                    continue
                kept = self.containers.pop(name, None)
                if kept is not None:
                    kept.close()
                was = self._once.pop(name, None)
                c = was[0] if was is not None else self._open(name, once=True)
                out[name] = c.read(tree)
                self._once[name] = (c, now)     # an error: not kept, the next pass starts afresh
            except (TerrariumError, OSError) as e:
                out[name] = e
        if not keep:
            self._once = {n: v for n, v in self._once.items() if now - v[1] <= self.once_for}
        return out

    def forget(self, name: str) -> None:
        self._once.pop(name, None)
        c = self.containers.pop(name, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        self._once = {}
        for name in list(self.containers):
            self.forget(name)
