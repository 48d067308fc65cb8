"""Fast, repeated sampling of containers: what a sampler calls every tick.

    from runtime import stats
    reader = stats.StatsReader(rt.cgroups)           # one per sampler
    raw, forest = reader.read(cid)                   # == cg.sample(cid), procs.container_tree(...)
    reader.forget(cid)                               # the container is no longer watched

``CgroupDriver.sample`` and ``procs.container_tree`` open, read and close
every file on every call; per container and tick that is ~16 cgroup files
plus three files per process, and most of the cost is the open/close and the
Python around it, not the kernel's work.  Here each container keeps its
files open and re-reads them with ``os.pread(fd, n, 0)`` (cgroupfs and procfs
regenerate the content on every read at offset 0), and skips work whose
input did not change:

- the process set: ``cgroup.procs`` is read as bytes; when they equal last
  tick's, no pid is listed, opened or closed;
- a process: only ``/proc/<pid>/stat`` is re-read (CPU ticks, RSS, state,
  threads, ppid); when its bytes equal last tick's the previous ProcessInfo is
  reused as is.  ``status`` (NSpid, Uid) and ``cmdline`` are read when the
  process is first seen, when its ``comm`` changes (an exec), and every
  ``refresh`` ticks (a setuid, a rewritten argv);
- the forest: rebuilt only when some ProcessInfo changed;
- limits and the figures no graph plots (memory.limit_in_bytes, memsw.*,
  max_usage, cfs quota/period, pids.max; memory.max, cpu.max ... on v2) are
  re-read every ``slow_every`` ticks (default 5) and carried over between.

Processes are keyed by (pid, start time): a kept-open ``/proc/<pid>/stat`` of
an exited process fails with ESRCH, and a reused pid shows another start
time, so a new process never inherits an old one's record.  Descriptors are
reopened on ENOENT/ESTALE/ENODEV (a cgroup removed and made again) and all
of a container's are closed by ``forget`` or when its cgroup is gone.

RSS here is stat field 24 (pages, the kernel's fast per-mm counter) rather
than status VmRSS: they count the same pages, VmRSS summed exactly, so they
can differ by the per-CPU batch (a few hundred kB at most).

The raw dict has exactly the keys and ``sources`` of the driver's
``sample()`` (v1 and v2; tests compare them).  Not thread-safe: one reader
per sampler thread.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from . import procs as _procs
from .cgroups import parse
from .errors import NotFound

_REOPEN = (errno.ENOENT, errno.ESTALE, errno.ENODEV)
_GONE = (errno.ENOENT, errno.ESRCH)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_BUF = 65536


class _File:
    """One kept-open kernel file, re-read from offset 0."""
    __slots__ = ("path", "fd")

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def read(self) -> bytes | None:
        """The file's bytes now; None if it does not exist (a knob not offered)."""
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
            if len(data) == _BUF:               # rare (a huge memory.stat): read it all
                data += _read_rest(self.fd, _BUF)
            return data
        return None

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None


def _read_rest(fd: int, offset: int) -> bytes:
    chunks = []
    while True:
        chunk = os.pread(fd, _BUF, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _pick(text: str, keys) -> dict[str, int]:
    """The integer values of some ``key value`` lines (flat_keyed, for a few keys)."""
    out = {}
    for key in keys:
        head = key + " "
        if text.startswith(head):
            i = len(head)
        else:
            i = text.find("\n" + head)
            if i < 0:
                continue
            i += len(head) + 1
        j = text.find("\n", i)
        try:
            out[key] = int(text[i:] if j < 0 else text[i:j])
        except ValueError:
            pass
    return out


# --- cgroup files, per driver kind ---------------------------------------------
# (key, controller, knob, parser).  The driver's sample() is the reference: same
# keys, same sources, same parsers.

_V1 = (
    ("memory_usage", "memory", "memory.usage_in_bytes", parse.integer),
    ("memory_limit", "memory", "memory.limit_in_bytes", parse.limit_v1),
    ("memory_max_usage", "memory", "memory.max_usage_in_bytes", parse.integer),
    ("memory_failcnt", "memory", "memory.failcnt", parse.integer),
    ("memsw_usage", "memory", "memory.memsw.usage_in_bytes", parse.integer),
    ("memsw_limit", "memory", "memory.memsw.limit_in_bytes", parse.limit_v1),
    ("memsw_failcnt", "memory", "memory.memsw.failcnt", parse.integer),
    ("memory_stat", "memory", "memory.stat", None),
    ("memory_events", "memory", "memory.oom_control", parse.flat_keyed),
    ("cpu_usage_ns", "cpuacct", "cpuacct.usage", parse.integer),
    ("cpu_stat", "cpu", "cpu.stat", None),
    ("cpu_quota_us", "cpu", "cpu.cfs_quota_us", parse.quota_v1),
    ("cpu_period_us", "cpu", "cpu.cfs_period_us", parse.integer),
    ("pids_current", "pids", "pids.current", parse.integer),
    ("pids_max", "pids", "pids.max", parse.max_or_int),
    ("io", "blkio", "blkio.throttle.io_service_bytes_recursive", parse.blkio_bytes),
)
_V1_MEMSTAT = (("memory_cache", "total_cache"), ("memory_rss", "total_rss"),
               ("memory_inactive_file", "total_inactive_file"), ("memory_swap", "total_swap"))
_V1_CPUSTAT = (("cpu_nr_periods", "nr_periods"), ("cpu_nr_throttled", "nr_throttled"),
               ("cpu_throttled_ns", "throttled_time"))

_V2 = (
    ("memory_usage", "unified", "memory.current", parse.integer),
    ("memory_limit", "unified", "memory.max", parse.max_or_int),
    ("memory_swap", "unified", "memory.swap.current", parse.integer),
    ("memory_swap_limit", "unified", "memory.swap.max", parse.max_or_int),
    ("memory_stat", "unified", "memory.stat", None),
    ("memory_events", "unified", "memory.events", parse.flat_keyed),
    ("cpu_stat", "unified", "cpu.stat", None),
    ("cpu_max", "unified", "cpu.max", parse.cpu_max),
    ("pids_current", "unified", "pids.current", parse.integer),
    ("pids_max", "unified", "pids.max", parse.max_or_int),
    ("io", "unified", "io.stat", parse.io_stat_bytes),
)
_V2_MEMSTAT = (("memory_cache", "file"), ("memory_rss", "anon"), ("memory_inactive_file", "inactive_file"))


def _v1_sources(mounted) -> dict[str, str]:
    src = {key: knob for key, ctl, knob, _ in _V1 if ctl in mounted}
    src.pop("memory_stat", None), src.pop("cpu_stat", None)
    for key, stat_key in _V1_MEMSTAT:
        src[key] = f"memory.stat {stat_key}"
    src["oom_kills"] = "memory.oom_control oom_kill"
    src.update(cpu_nr_periods="cpu.stat nr_periods", cpu_nr_throttled="cpu.stat nr_throttled",
               cpu_throttled_ns="cpu.stat throttled_time")
    f = src.pop("io", None)
    src["io_read_bytes"] = src["io_write_bytes"] = f
    return src


def _v2_sources() -> dict[str, str]:
    src = {key: knob for key, _, knob, _ in _V2}
    for k in ("memory_stat", "cpu_stat", "cpu_max", "io"):
        src.pop(k)
    for key, stat_key in _V2_MEMSTAT:
        src[key] = f"memory.stat {stat_key}"
    src["oom_kills"] = "memory.events oom_kill"
    src.update(cpu_usage_ns="cpu.stat usage_usec", cpu_nr_periods="cpu.stat nr_periods",
               cpu_nr_throttled="cpu.stat nr_throttled", cpu_throttled_ns="cpu.stat throttled_usec")
    src["cpu_quota_us"] = src["cpu_period_us"] = "cpu.max"
    src["io_read_bytes"], src["io_write_bytes"] = "io.stat rbytes", "io.stat wbytes"
    return src


# Limits, and figures no graph plots: re-read every ``slow_every`` ticks (default
# 5), carried over in between.  A limit changed while the page is open shows
# within that many ticks.
_SLOW = frozenset({"memory_limit", "memory_max_usage", "memsw_usage", "memsw_limit", "memsw_failcnt",
                   "cpu_quota_us", "cpu_period_us", "pids_max", "memory_swap_limit", "cpu_max"})


class CgroupFiles:
    """The kept-open cgroup files of one container; ``sample()`` = driver.sample()."""

    def __init__(self, driver, name: str, slow_every: int = 5):
        self.kind = "v2" if driver.kind == "v2" else "v1"
        self.name = name
        paths = driver.paths(name)                    # controller -> directory
        self.dirs = list(dict.fromkeys(paths.values()))
        table = _V2 if self.kind == "v2" else _V1
        self.files = [(key, _File(os.path.join(paths[ctl], knob)) if ctl in paths else None, parser)
                      for key, ctl, knob, parser in table]
        self.sources = _v2_sources() if self.kind == "v2" else _v1_sources(paths)
        # cgroup.procs of one hierarchy: every hierarchy holds the same processes
        # (attach writes them all); pids is the one a container must have.
        procs_dir = next((paths[c] for c in ("pids", "memory", "unified") if c in paths), self.dirs[0])
        self.procs = _File(os.path.join(procs_dir, "cgroup.procs"))
        self.slow_every, self._ticks, self._texts = max(int(slow_every), 1), 0, {}

    def close(self) -> None:
        self._ticks, self._texts = 0, {}
        for _, f, _ in self.files:
            if f is not None:
                f.close()
        self.procs.close()

    def _gone(self) -> bool:
        return not any(os.path.isdir(d) for d in self.dirs)

    def sample(self) -> dict:
        """Raw numbers of one moment, as the driver's sample() gives them
        (``sources`` is shared between calls: do not change it)."""
        slow = self._ticks % self.slow_every == 0
        self._ticks += 1
        texts = self._texts
        try:
            for key, f, parser in self.files:
                if f is None:
                    texts[key] = None
                    continue
                if not slow and key in _SLOW:
                    continue
                data = f.read()
                texts[key] = None if data is None else data.decode()
        except OSError as e:
            if e.errno in _REOPEN and self._gone():
                raise NotFound(f"cgroup of {self.name} not found") from None
            raise
        if texts[self.files[0][0]] is None and self._gone():
            raise NotFound(f"cgroup of {self.name} not found")
        return self._build_v2(texts) if self.kind == "v2" else self._build_v1(texts)

    def procs_bytes(self) -> bytes:
        data = self.procs.read()
        if data is None:
            raise NotFound(f"cgroup of {self.name} not found")
        return data

    def _parsed(self, texts) -> dict:
        out = {}
        for key, _, parser in self.files:
            t = texts[key]
            out[key] = None if t is None or parser is None else parser(t)
        return out

    def _build_v1(self, texts) -> dict:
        out = {"kind": "v1"}
        out.update(self._parsed(texts))
        del out["memory_stat"], out["cpu_stat"]
        stat = _pick(texts["memory_stat"] or "", [k for _, k in _V1_MEMSTAT])
        for key, stat_key in _V1_MEMSTAT:
            out[key] = stat.get(stat_key)
        out["oom_kills"] = (out["memory_events"] or {}).get("oom_kill")
        cpu = _pick(texts["cpu_stat"] or "", [k for _, k in _V1_CPUSTAT])
        for key, stat_key in _V1_CPUSTAT:
            out[key] = cpu.get(stat_key)
        io = out.pop("io")
        out["io_read_bytes"], out["io_write_bytes"] = io if io else (None, None)
        out["sources"] = self.sources
        return out

    def _build_v2(self, texts) -> dict:
        out = {"kind": "v2"}
        out.update(self._parsed(texts))
        del out["memory_stat"], out["cpu_stat"]
        stat = _pick(texts["memory_stat"] or "", [k for _, k in _V2_MEMSTAT])
        for key, stat_key in _V2_MEMSTAT:
            out[key] = stat.get(stat_key)
        out["memory_failcnt"] = None
        out["oom_kills"] = (out["memory_events"] or {}).get("oom_kill")
        cpu = _pick(texts["cpu_stat"] or "", ("usage_usec", "throttled_usec", "nr_periods", "nr_throttled"))
        usage, throttled = cpu.get("usage_usec"), cpu.get("throttled_usec")
        out["cpu_usage_ns"] = None if usage is None else usage * 1000
        out["cpu_nr_periods"] = cpu.get("nr_periods")
        out["cpu_nr_throttled"] = cpu.get("nr_throttled")
        out["cpu_throttled_ns"] = None if throttled is None else throttled * 1000
        cpu_max = out.pop("cpu_max")
        out["cpu_quota_us"], out["cpu_period_us"] = cpu_max if cpu_max else (None, None)
        io = out.pop("io")
        out["io_read_bytes"], out["io_write_bytes"] = io if io else (None, None)
        out["sources"] = self.sources
        return out


# --- processes -------------------------------------------------------------------

class _Proc:
    """One process of a container: its kept-open files and last reading."""
    __slots__ = ("pid", "base", "stat", "status", "cmdline", "raw", "start", "comm",
                 "ns_pids", "uid", "uid_src", "ns_src", "cmd", "cmd_raw", "age", "info")

    def __init__(self, pid: int, proc: str):
        self.pid, self.base = pid, f"{proc}/{pid}"
        self.stat = _File(f"{self.base}/stat")
        self.status = _File(f"{self.base}/status")
        self.cmdline = _File(f"{self.base}/cmdline")
        self.raw = self.start = self.comm = self.info = None
        self.age = 0

    def close(self) -> None:
        self.stat.close(), self.status.close(), self.cmdline.close()


class ProcessTable:
    """The processes of one container, re-read cheaply every tick."""

    def __init__(self, proc: str = _procs.PROC, users: Mapping[int, str] | None = None,
                 refresh: int = 10):
        self.proc, self.users, self.refresh = proc, users, refresh
        self.by_pid: dict[int, _Proc] = {}
        self._procs_raw: bytes | None = None
        self._forest: list | None = None
        self.reads = {"procs_changed": 0, "stat": 0, "status": 0}   # for tests and bench/

    def close(self) -> None:
        for p in self.by_pid.values():
            p.close()
        self.by_pid.clear()
        self._procs_raw = self._forest = None

    def forest(self, procs_raw: bytes) -> list:
        """The container's forest (runtime.procs.ProcessNode) from cgroup.procs' bytes."""
        changed = False
        if procs_raw != self._procs_raw:
            self.reads["procs_changed"] += 1
            self._procs_raw = procs_raw
            pids = set(parse.pids(procs_raw.decode()))
            for pid in [p for p in self.by_pid if p not in pids]:
                self.by_pid.pop(pid).close()
            for pid in pids:
                if pid not in self.by_pid:
                    self.by_pid[pid] = _Proc(pid, self.proc)
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
            self._forest = _procs.build_forest(p.info for p in self.by_pid.values())
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
        p.age += 1
        if raw == p.raw and p.age < self.refresh:
            return True                                   # nothing changed: same ProcessInfo
        st = _procs.parse_stat(raw.decode("utf-8", "replace"))
        if p.start is not None and st.start_ticks != p.start:
            return False                                  # the pid was reused: a new process
        if p.start is None or st.comm != p.comm or p.age >= self.refresh:
            if not self._identity(p):
                return False
            p.age = 0
        p.raw, p.start, p.comm = raw, st.start_ticks, st.comm
        p.info = self._info(p, st)
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
        lines = _procs.parse_status(status.decode("utf-8", "replace"), ("NSpid", "Uid"))
        p.ns_pids = _procs.parse_nspid(lines["NSpid"]) if "NSpid" in lines else None
        p.ns_src = f"{p.base}/status: {lines['NSpid']}" if "NSpid" in lines else None
        p.uid = _procs.parse_uid(lines["Uid"]) if "Uid" in lines else -1
        p.uid_src = f"{p.base}/status: {lines['Uid']}" if "Uid" in lines else None
        p.cmd_raw, p.cmd = cmd, _procs.parse_cmdline(cmd)
        return True

    def _info(self, p: _Proc, st) -> _procs.ProcessInfo:
        sf = f"{p.base}/stat"
        sources = {"pid": f"{sf}: field 1 pid={st.pid}", "comm": f"{sf}: field 2 comm=({st.comm})",
                   "cmdline": f"{p.base}/cmdline: {p.cmd_raw[:200]!r}",
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
        return _procs.ProcessInfo(
            pid=st.pid, ppid=st.ppid, ns_pids=p.ns_pids or (st.pid,), uid=p.uid,
            user=self.users.get(p.uid) if self.users is not None else None,
            state=st.state, comm=st.comm, cmdline=p.cmd, rss=st.rss_pages * _PAGE,
            cpu_ticks=st.utime + st.stime, start_ticks=st.start_ticks, threads=st.threads,
            kthread=bool(st.flags & _procs.PF_KTHREAD), sources=sources)


class ContainerStats:
    """Kept-open cgroup files and process table of one container."""

    def __init__(self, driver, name: str, proc: str = _procs.PROC):
        self.cgroup = CgroupFiles(driver, name)
        self.table = ProcessTable(proc)

    def read(self) -> tuple[dict, list]:
        raw = self.cgroup.sample()
        return raw, self.table.forest(self.cgroup.procs_bytes())

    def close(self) -> None:
        self.cgroup.close()
        self.table.close()


class StatsReader:
    """Per-container ContainerStats, made on first read, closed by forget()
    or when the cgroup is gone (NotFound propagates)."""

    def __init__(self, driver, proc: str = _procs.PROC):
        self.driver, self.proc = driver, proc
        self.containers: dict[str, ContainerStats] = {}

    def read(self, name: str) -> tuple[dict, list]:
        c = self.containers.get(name)
        if c is None:
            if not self.driver.exists(name):
                raise NotFound(f"cgroup '{self.driver.parent}/{name}' not found")
            c = self.containers[name] = ContainerStats(self.driver, name, self.proc)
        try:
            return c.read()
        except NotFound:
            self.forget(name)
            raise

    def forget(self, name: str) -> None:
        c = self.containers.pop(name, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        for name in list(self.containers):
            self.forget(name)
