"""The OOM feed: what the dashboard's OOM watcher needs root for, as a stream.

The agent's ``oom-events`` verb runs ``follow()``: it follows /dev/kmsg from
now (``OomAssembler`` turns records into reports) and the OOM counters of the
runtime's running containers (``CgroupOomWatch``, kept in step with
containers starting and stopping), and yields one JSON-ready item per thing
that happened, in the order it was seen:

    {"kind": "ready", "parent": ..., "memory_root": ..., "kmsg": null | "why not"}
        once, when both readers are attached (what is seen from then on is sent)
    {"kind": "report", "report": {...OomReport...}, "memcg": ..., "counts": {...} | null,
     "proc_memcg": ... | null}
        a complete kernel report; ``counts``: the counters of ``memcg`` (the
        cgroup the report blames, or for a report without cgroup lines the
        victim's own, ``proc_memcg``, read from /proc while it still existed)
        read the moment the report completed, since the cgroup goes as soon as
        a killed container exits
    {"kind": "counters", "events": [{"key": id, "new_kills": n, "counts": {...}, "gone": b}],
     "pending": [id, ...]}
        counters that moved (read at detection), and the containers whose
        OOM has started (v1 eventfd) but whose kill is not counted yet

The client sends ids and numbers, never paths: the cgroups and the kernel log
are the agent's choice.  The dashboard's in-process watcher reads the same
sources itself (dashboard/oom/watcher.py); both hand the same values to the
same attribution and recording code.  No Django here.
"""
from __future__ import annotations

import dataclasses
import os
import select
import time
from collections.abc import Hashable, Iterable
from typing import Any, Callable, Iterator, Literal, Protocol, TypedDict, Union

from .cgroups import CgroupDriver
from .errors import KernelError, NotFound, TerrariumError
from .oom import CgroupOomWatch, KmsgReader, OomAssembler, OomCounts, OomReport, read_counts
from .pidinfo import memory_cgroup_of

KMSG_PATH = "/dev/kmsg"

class _Listed(Protocol):
    """What the feed reads of a listed container (runtime.model.Container)."""
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...


class Runtime(Protocol):
    """What the feed uses of a runtime (runtime.containers.Runtime)."""
    @property
    def cgroup_parent(self) -> str: ...
    @property
    def cgroups(self) -> CgroupDriver: ...
    @property
    def containers_dir(self) -> str: ...

    def list(self, all: bool = True) -> Iterable[_Listed]: ...  # noqa: A002 - the runtime's word
    def resolve(self, ref: str) -> str: ...
    def inspect(self, ref: str) -> _Listed: ...


# An OomReport / OomCounts as JSON: its fields by name (dataclasses.asdict).
ReportDict = dict[str, Any]
CountsDict = dict[str, Any]


class ReadyItem(TypedDict):
    kind: Literal["ready"]
    parent: str
    memory_root: str
    kmsg: str | None


class ReportItem(TypedDict):
    kind: Literal["report"]
    report: ReportDict
    memcg: str | None
    counts: CountsDict | None
    proc_memcg: str | None


class CounterEvent(TypedDict):
    key: Hashable
    new_kills: int
    counts: CountsDict | None
    gone: bool


class CountersItem(TypedDict):
    kind: Literal["counters"]
    pending: list[Hashable]
    events: list[CounterEvent]


class KmsgLostItem(TypedDict):
    kind: Literal["kmsg-lost"]
    error: str


Item = Union[ReadyItem, ReportItem, CountersItem, KmsgLostItem]


class Scope(TypedDict):
    parent: str             # the runtime's cgroup parent
    parent_dir: str         # its memory directory
    memory_root: str        # the memory hierarchy's mount point


# ------------------------------------------------------------ values as JSON

def report_to_dict(report: OomReport) -> ReportDict:
    d = dataclasses.asdict(report)
    d["lines"] = list(report.lines)
    return d


def report_from_dict(d: ReportDict) -> OomReport:
    return OomReport(**{**d, "lines": tuple(d.get("lines") or ())})


def counts_to_dict(counts: OomCounts | None) -> CountsDict | None:
    return dataclasses.asdict(counts) if counts is not None else None


def counts_from_dict(d: CountsDict | None) -> OomCounts | None:
    return OomCounts(**d) if d else None


# ----------------------------------------------------------------- the scope

def memory_scope(rt: Runtime) -> Scope:
    """The runtime's cgroup parent, its memory directory and the memory
    hierarchy's mount point (what attribution and counter paths start from)."""
    parent = rt.cgroup_parent.strip("/")
    parent_dir = rt.cgroups.parent_paths()["memory"]
    memory_root = parent_dir[: -len(parent)].rstrip("/") or "/"
    return {"parent": parent, "parent_dir": parent_dir, "memory_root": memory_root}


def container_counts(rt: Runtime, ref: str) -> OomCounts:
    """A running container's OOM counters now (NotFound/KernelError when it has none)."""
    return read_counts(rt.cgroups.paths(rt.resolve(ref))["memory"])


def _running(rt: Runtime) -> dict[str, str]:
    """id -> memory cgroup directory of each running (or paused) container."""
    return {c.id: rt.cgroups.paths(c.id)["memory"] for c in rt.list(all=True)
            if c.status in ("running", "paused")}


# -------------------------------------------------------------------- follow

def follow(rt: Runtime, gone: Callable[[], bool], *, refresh: float = 0.5, settle: float = 0.25,
           kmsg_path: str = KMSG_PATH, full: float = 30.0) -> Iterator[Item]:
    """Yield the feed's items (see the module docstring) until ``gone()``,
    which is asked at least every ``refresh`` seconds; every descriptor is
    closed when the generator ends or is closed.  Which containers run is
    listed once, then followed from the state root's changes (runtime/
    changes.py: an inspect of each container that changed), with a full
    list every ``full`` seconds (what no record shows) -- or every
    ``refresh`` seconds when changes cannot be followed."""
    from .changes import ALL, StateWatch
    scope = memory_scope(rt)
    counters = CgroupOomWatch(settle=settle)
    kmsg: KmsgReader | None = None
    why: str | None = None
    watch: StateWatch | None = None
    poller = select.epoll()
    try:
        try:
            kmsg = KmsgReader(kmsg_path)                 # at the end: only new records
            poller.register(kmsg.fileno(), select.EPOLLIN)
        except TerrariumError as e:
            why = str(e)
        poller.register(counters.fileno(), select.EPOLLIN)
        try:
            watch = StateWatch(rt.containers_dir)
            poller.register(watch.fileno(), select.EPOLLIN)
        except OSError:
            watch = None                                 # no inotify: a list every refresh
        assembler = OomAssembler()
        _sync(rt, counters)
        next_full = time.monotonic() + full
        yield {"kind": "ready", "parent": scope["parent"], "memory_root": scope["memory_root"],
               "kmsg": why}
        next_sync = time.monotonic() + refresh
        pending: set[Hashable] = set()
        while True:
            hint = counters.timeout_hint()
            wait = max(0.0, next_sync - time.monotonic())
            ready = {fd for fd, _ in poller.poll(wait if hint is None else min(wait, hint))}
            if kmsg is not None and kmsg.fileno() in ready:
                try:
                    records = kmsg.read_available()
                except KernelError as e:
                    poller.unregister(kmsg.fileno())
                    kmsg.close()
                    kmsg = None
                    yield {"kind": "kmsg-lost", "error": str(e)}
                    records = []
                for rec in records:
                    report = assembler.feed(rec)
                    if report is not None:
                        yield _report_item(report, scope["memory_root"])
            if watch is not None and watch.fileno() in ready:
                changed = watch.read(0)
                try:
                    if changed is ALL:
                        _sync(rt, counters)
                    else:
                        _sync_some(rt, counters, changed)
                except TerrariumError:
                    pass                                 # the next full list tries again
            if counters.fileno() in ready or hint is not None:
                evs = counters.read_events()
                now_pending = set(counters.pending())
                if evs or now_pending - pending:
                    yield {"kind": "counters", "pending": sorted(now_pending, key=str),
                           "events": [{"key": ev.key, "new_kills": ev.new_kills,
                                       "counts": counts_to_dict(ev.counts), "gone": ev.gone}
                                      for ev in evs]}
                pending = now_pending
            if time.monotonic() >= next_sync:
                if gone():
                    return
                if watch is None or time.monotonic() >= next_full:
                    try:
                        _sync(rt, counters)
                        next_full = time.monotonic() + full
                    except TerrariumError:
                        pass                             # the next refresh tries again
                counters.sweep()                         # over the descriptor budget: read now
                next_sync = time.monotonic() + refresh
    finally:
        if watch is not None:
            watch.close()
        if kmsg is not None:
            kmsg.close()
        counters.close()
        poller.close()


def _report_item(report: OomReport, memory_root: str) -> ReportItem:
    """A report, with what only root can read while it is still there."""
    proc_memcg = None
    memcg = None if report.is_global else (report.oom_memcg or report.task_memcg)
    if not report.is_global and memcg is None:          # ratelimited: no cgroup lines
        proc_memcg = memory_cgroup_of(report.pid)
        memcg = proc_memcg
    counts = None
    if memcg:
        try:
            counts = read_counts(os.path.join(memory_root, memcg.lstrip("/")))
        except TerrariumError:
            pass
    return {"kind": "report", "report": report_to_dict(report), "memcg": memcg,
            "counts": counts_to_dict(counts), "proc_memcg": proc_memcg}


def _sync(rt: Runtime, counters: CgroupOomWatch) -> None:
    """Watch the counters of running containers; drop the rest."""
    wanted = _running(rt)
    for key in counters.keys():
        if key not in wanted:
            counters.remove(key)
    for cid, path in wanted.items():
        if cid not in counters.keys():
            try:
                counters.add(path, cid)
            except TerrariumError:                       # it exited between the list and now
                pass


def _sync_some(rt: Runtime, counters: CgroupOomWatch, ids: Iterable[str]) -> None:
    """The containers ``ids`` changed: watch each one's counters while it runs."""
    for cid in ids:
        try:
            c = rt.inspect(cid)
        except NotFound:
            c = None
        running = c is not None and c.status in ("running", "paused")
        if not running:
            if cid in counters.keys():
                counters.remove(cid)
        elif cid not in counters.keys():
            try:
                counters.add(rt.cgroups.paths(cid)["memory"], cid)
            except TerrariumError:                       # it exited meanwhile
                pass
