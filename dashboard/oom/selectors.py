"""Every read of the OOM app: the history, and what the watcher should watch."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from runtime import NotFound

from dashboard.containers.models import OomEvent
from dashboard.containers.runtime_client import get_runtime

SINCE_CHOICES = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1),
                 "7d": dt.timedelta(days=7), "": None}


@dataclass(frozen=True)
class WatchTarget:
    """A running container whose OOM counters the watcher follows."""
    container_id: str
    name: str
    pid: int | None                    # host pid of its init
    memory_dir: str                    # its memory cgroup directory
    limited: bool = False              # it has a memory limit (the memory record follows it)


@dataclass(frozen=True)
class WatchScope:
    parent: str                        # the runtime's cgroup parent ("terrarium")
    memory_root: str                   # the memory hierarchy's mount point
    targets: dict                      # container id -> WatchTarget
    parent_dir: str = ""               # our memory cgroup parent's directory

    def limited(self) -> dict:
        """{id: WatchTarget} of the targets with a memory limit."""
        return {cid: t for cid, t in self.targets.items() if t.limited}


def _target(c, parent_dir: str) -> WatchTarget | None:
    if c.status not in ("running", "paused"):
        return None
    return WatchTarget(c.id, c.name, c.pid, os.path.join(parent_dir, c.id),
                       bool(getattr(c.limits, "memory", None)))


def oom_watch_scope() -> WatchScope:
    """Our cgroup parent, the memory hierarchy root, and the running
    containers (one list of every container: at start, and now and then)."""
    rt = get_runtime()
    where = rt.oom_scope()                 # through the agent when the runtime is
    parent, parent_dir, memory_root = where["parent"], where["parent_dir"], where["memory_root"]
    targets = {}
    for c in rt.list(all=True):
        t = _target(c, parent_dir)
        if t is not None:
            targets[c.id] = t
    return WatchScope(parent, memory_root, targets, parent_dir)


def oom_watch_scope_update(scope: WatchScope, ids) -> WatchScope:
    """The scope after the containers ``ids`` changed (Runtime.changes): one
    inspect of each, not a list of all."""
    rt = get_runtime()
    targets = dict(scope.targets)
    for cid in ids:
        try:
            t = _target(rt.inspect(cid), scope.parent_dir)
        except NotFound:
            t = None
        if t is None:
            targets.pop(cid, None)
        else:
            targets[cid] = t
    return WatchScope(scope.parent, scope.memory_root, targets, scope.parent_dir)


def oom_event_list(*, container: str = "", scope: str = "", since: str = "",
                   limit: int = 500) -> list[OomEvent]:
    """History, newest first; ``container`` matches a name or an id prefix."""
    qs = OomEvent.objects.all()
    if container:
        qs = qs.filter(Q(container_name=container) | Q(container_key__startswith=container))
    if scope in (OomEvent.SCOPE_CONTAINER, OomEvent.SCOPE_HOST):
        qs = qs.filter(scope=scope)
    if SINCE_CHOICES.get(since):
        qs = qs.filter(at__gte=timezone.now() - SINCE_CHOICES[since])
    return list(qs[:limit])


def oom_event_get(*, event_id: int) -> OomEvent | None:
    return OomEvent.objects.filter(pk=event_id).first()


# the kernel's record of a kill and the runtime's exit time come from two clocks' reads
AFTER_SLACK = dt.timedelta(seconds=2)


def oom_aftermath(ev: OomEvent) -> tuple[str, str]:
    """What became of the container after this kill, judged from its state now
    (the mirror row, refreshed by the caller), not from whether the victim was
    its init: a `sh -c` init exits when the `tail` it waits for is killed.
    (key, sentence): died | ended | lives | restarted | gone | "" (not a
    container's kill, or no victim known)."""
    if ev.scope != OomEvent.SCOPE_CONTAINER or not ev.killed_pid:
        return "", ""
    if ev.is_init:
        return "died", "the container's init: the container died"
    c = ev.container
    if c is None:
        return "gone", ("not the container's init; the container has been removed since, "
                        "so whether it lived on is not known")
    if c.started_at and c.started_at > ev.at:
        return "restarted", "not the container's init; the container has been started again since"
    if c.status in ("exited", "created") and c.finished_at and c.finished_at >= ev.at - AFTER_SLACK:
        after = max((c.finished_at - ev.at).total_seconds(), 0)
        return "ended", (f"not the container's init, but the container exited {after:.1f} s after the kill "
                         f"(exit code {c.exit_code}): its init ended when this process died")
    if c.status in ("running", "paused"):
        return "lives", "not the container's init: the container lives on"
    return "", "not the container's init"


def oom_container_names() -> list[str]:
    return sorted(set(OomEvent.objects.exclude(container_name="")
                      .values_list("container_name", flat=True)))
