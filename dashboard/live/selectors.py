"""The live feed's reads of the runtime (blocking: call them from a thread).

Like dashboard/containers/selectors.py, this is the only place dashboard/live
touches the runtime, so it can later move behind the root agent's socket."""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, replace

from runtime import NotFound, Sample, TerrariumError
from runtime import procs as _procs

from dashboard.containers.runtime_client import get_runtime

from . import metrics as _metrics

_ID = re.compile(r"[0-9a-f]{64}\Z")


class NotSampled(Exception):
    """The container has no cgroup to read (not running, or removed)."""


class NotListed(Exception):
    """The runtime could not list its containers (the agent is down, the state root unreadable)."""


def running_containers() -> list:
    """The containers whose cgroup is live (running or paused), as runtime Containers."""
    try:
        return get_runtime().list(all=False)
    except (TerrariumError, OSError) as e:
        raise NotListed(str(e)) from None


_scope_dir: dict[int, str] = {}       # id(runtime) -> its memory cgroup parent directory


def live_cgroup_ids() -> list[str] | None:
    """The ids of the containers whose cgroup is there now (running or paused:
    the shim makes it at start and removes it at exit), from one listing of
    the runtime's memory cgroup parent; None when that cannot be listed (the
    caller lists the containers instead).  No state file is read."""
    rt = get_runtime()
    try:
        parent = _scope_dir.get(id(rt))
        if parent is None:
            parent = _scope_dir[id(rt)] = rt.oom_scope()["parent_dir"]
        with os.scandir(parent) as it:
            return [e.name for e in it if len(e.name) == 64 and _ID.match(e.name) and e.is_dir()]
    except FileNotFoundError:
        return []                           # no container started yet: no parent
    except (TerrariumError, OSError, KeyError):
        return None


def container_exists(*, container_id: str) -> bool:
    """Whether the runtime knows this container (running or not); another
    owner's by its discovery key (dashboard/containers/engines.py)."""
    from dashboard.containers import engines
    if engines.is_other(container_id):
        return engines.get(key=container_id) is not None
    try:
        get_runtime().inspect(container_id)
    except NotFound:
        return False
    return True


def stats_reader():
    """The runtime's kept-open reader of containers' cgroup files and processes
    (read / read_many / forget / close, as runtime.stats.StatsReader):
    Runtime.stats_reader() in-process, or through the root agent
    AgentRuntime.stats_reader(), a sampling session on a connection of its
    own.  Every sampler of the dashboard reads through one of these (the OOM
    memory record through the same method of the runtime it is given), one
    per sampling thread (a reader is not thread-safe), closed when done."""
    return get_runtime().stats_reader()


def sample_stream(interval: float):
    """The live sampler's reader: through the root agent, a subscription
    (AgentRuntime.sample_stream: the agent reads every interval seconds and
    pushes what changed, pacing the sampler); in-process, stats_reader()."""
    rt = get_runtime()
    make = getattr(rt, "sample_stream", None)
    return make(interval) if make is not None else rt.stats_reader()


def _read_once(container_id: str, tree: bool):
    """One reading with every file opened for it and closed again (nothing kept)."""
    reader = stats_reader()
    try:
        got = reader.read_many([container_id], tree, keep=False)[container_id]
    except (TerrariumError, OSError) as e:
        raise NotSampled(str(e)) from None
    finally:
        reader.close()
    if isinstance(got, BaseException):
        raise NotSampled(str(got))
    return got


def container_raw_sample(*, container_id: str) -> Sample:
    """One cgroup sample (runtime.stats; the record runtime.cgroups .sample returns)."""
    return _read_once(container_id, False)[0]


def container_process_forest(*, container_id: str) -> list:
    """The container's processes as a forest of runtime.procs.ProcessNode."""
    return _read_once(container_id, True)[1]


# --- host pages (namespaces, processes, cgroups) --------------------------------
# Read at most once a second per process however many pages poll (each poll
# gets the same snapshot), so viewers cost a render, not a /proc walk.  The
# reads are root's (every process's /proc): runtime.Runtime.host_*, which the
# agent serves to an unprivileged web tier; the masking for viewers is here.

HOST_TTL = 1.0
_host_cache: dict[str, tuple[float, object]] = {}
_host_lock = threading.Lock()
_cpu_prev: dict[tuple[str, str], tuple[float, int]] = {}    # (hierarchy, path) -> (mono, ns)


def _cached(key: str, read):
    with _host_lock:
        hit = _host_cache.get(key)
        now = time.monotonic()
        if hit is None or now - hit[0] >= HOST_TTL:
            hit = (now, read())
            _host_cache[key] = hit
        return hit[1]


def _containers() -> list:
    return get_runtime().list(all=True)


@dataclass(frozen=True)
class NamespaceRow:
    ns: object                         # runtime.procs.NamespaceInfo
    container_name: str | None
    source: str                        # "/proc/<pid>/ns/<type> -> <type>:[<inode>]"


@dataclass(frozen=True)
class ProcessRow:
    depth: int
    info: object                       # runtime.procs.ProcessInfo
    role: str | None                   # shim | forkserver | cliserver | cli (runtime.procs.ROLES)
    container: tuple[str, str] | None  # (id, name) when it is a container's init


def host_namespace_rows(*, with_cmdline: bool = True) -> list[NamespaceRow]:
    """Every namespace (lsns), each with its container's name and its source link.
    Without with_cmdline (viewers) a command shows only its program's name:
    arguments carry passwords and tokens."""
    rows = _cached("namespaces", _read_namespaces)
    if with_cmdline:
        return rows
    return [replace(r, ns=replace(r.ns, command=_program(r.ns.command))) for r in rows]


def _program(command: str) -> str:
    """'/usr/bin/python3 manage.py --password x' -> 'python3'; '[kthreadd]' stays."""
    if command.startswith("["):
        return command
    return command.split(" ", 1)[0].rsplit("/", 1)[-1]


def _read_namespaces():
    rows = get_runtime().host_namespaces()          # root's: through the agent if there is one
    names = {c.id: c.name for c in _containers()}
    return [NamespaceRow(ns, names.get(ns.container),
                         f"/proc/{ns.pid}/ns/{ns.type} -> {ns.type}:[{ns.inode}]") for ns in rows]


def host_process_rows(*, with_cmdline: bool = True) -> list[ProcessRow]:
    """The host PID namespace as pstree -p rows, Terrarium's processes marked;
    without with_cmdline (viewers), no command lines (comm stays)."""
    def read():
        forest = get_runtime().host_processes()
        roles = _procs.terrarium_roles(forest)
        inits = {c.pid: (c.id, c.name) for c in _containers()
                 if c.pid and c.status in ("running", "paused")}
        return [ProcessRow(d, n.info, roles.get(n.pid), inits.get(n.pid))
                for d, n in _procs.walk(forest)]
    rows = _cached("ptree", read)
    if with_cmdline:
        return rows
    return [replace(r, info=_without_cmdline(r.info)) for r in rows]


def _without_cmdline(info):
    """The process without its arguments, in the figure and in its source note."""
    sources = {**info.sources, "cmdline": f"/proc/{info.pid}/cmdline (shown to operators)"}
    return replace(info, cmdline=(), sources=sources)


@dataclass(frozen=True)
class CgroupRow:
    hierarchy: str
    node: object                       # runtime.cgroups.tree.CgroupNode
    cpu: float | None                  # share of one core since the previous read
    container: tuple[str, str] | None  # (id, name) of a Terrarium container
    terrarium: bool                    # Terrarium's own parent cgroup

    @property
    def name(self) -> str:
        return self.node.path.rsplit("/", 1)[-1] or "/"

    @property
    def cpu_pct(self) -> str:
        return "" if self.cpu is None else f"{self.cpu * 100:.1f} %"


def host_cgroup_rows() -> list[tuple[str, str, list[CgroupRow]]]:
    """[(hierarchy, mount, rows)]: every cgroup of memory/cpuacct/pids (v1) or the
    v2 tree, CPU share from cumulative usage between two reads, containers marked."""
    return _cached("cgroups", _read_cgroups)


def _read_cgroups():
    rt = get_runtime()
    by_path = {"/" + c.cgroup: (c.id, c.name) for c in _containers() if c.cgroup}
    parent = "/" + rt.cgroup_parent
    now = time.monotonic()
    out = []
    for h in rt.host_cgroups():
        rows = []
        for n in h.nodes:
            cpu = None
            if n.cpu_usage_ns is not None:
                prev = _cpu_prev.get((h.name, n.path))
                if prev is not None:
                    cpu = _metrics.cpu_share(prev[1], n.cpu_usage_ns, now - prev[0])
                _cpu_prev[(h.name, n.path)] = (now, n.cpu_usage_ns)
            rows.append(CgroupRow(h.name, n, None if cpu is None else round(cpu, 4),
                                  by_path.get(n.path), n.path == parent))
        out.append((h.name, h.mount, rows))
    return out


def reset_host_cache() -> None:
    """Forget snapshots and CPU baselines (tests)."""
    with _host_lock:
        _host_cache.clear()
        _cpu_prev.clear()


# --- down-sampled history ------------------------------------------------------

def container_history(*, container_id: str, hours: float = 24) -> dict:
    """The DB's per-minute rows of one container as uPlot columns (epoch s)."""
    from datetime import datetime, timedelta, timezone

    from .models import MinutePoint
    since = datetime.now(timezone.utc) - timedelta(hours=hours)
    rows = MinutePoint.objects.filter(container_id=container_id, minute__gte=since).order_by("minute")
    keys = ("mem_avg", "mem_max", "mem_limit", "cpu_avg", "pids_max", "io_r", "io_w")
    out: dict = {"t": [], **{k: [] for k in keys}}
    for r in rows.values("minute", *keys):
        out["t"].append(int(r["minute"].timestamp()))
        for k in keys:
            out[k].append(r[k])
    return out
