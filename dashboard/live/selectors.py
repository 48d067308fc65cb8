"""The live feed's reads of the runtime (blocking: call them from a thread).

Like dashboard/containers/selectors.py, this is the only place dashboard/live
touches the runtime, so it can later move behind the root agent's socket."""
from __future__ import annotations

from runtime import TerrariumError
from runtime import procs as _procs

from dashboard.containers.runtime_client import get_runtime


class NotSampled(Exception):
    """The container has no cgroup to read (not running, or removed)."""


def container_raw_sample(*, container_id: str) -> dict:
    """One raw cgroup sample (see runtime.cgroups .sample)."""
    try:
        return get_runtime().cgroups.sample(container_id)
    except (TerrariumError, OSError) as e:
        raise NotSampled(str(e)) from None


def container_process_forest(*, container_id: str) -> list:
    """The container's processes as a forest of runtime.procs.ProcessNode."""
    try:
        pids = get_runtime().cgroups.procs(container_id)
    except (TerrariumError, OSError) as e:
        raise NotSampled(str(e)) from None
    return _procs.container_tree(pids)


def host_namespaces() -> list:
    """Every namespace on the host (lsns), with Terrarium's containers marked."""
    rt = get_runtime()
    owned = {c.id: c.namespaces for c in rt.list(all=True) if c.namespaces}
    names = {c.id: c.name for c in rt.list(all=True)}
    rows = _procs.namespaces(owners=_procs.namespace_owners(owned))
    return [(ns, names.get(ns.container)) for ns in rows]


def host_process_tree() -> tuple[list, dict[int, str], dict[int, str]]:
    """The host's PID namespace tree; {pid: shim|forkserver}; {init pid: container name}."""
    rt = get_runtime()
    forest = _procs.host_tree()
    inits = {c.pid: c.name for c in rt.list(all=True) if c.pid and c.status in ("running", "paused")}
    return forest, _procs.terrarium_roles(forest), inits
