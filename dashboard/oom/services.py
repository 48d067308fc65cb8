"""Every write of the OOM app: recording kills the watcher saw.

Called from the watcher through database_sync_to_async (worker threads), from
the `oom_watch` command, and from tests.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from runtime import TerrariumError
from runtime.oom import OomCounts, OomReport, monotonic_usec

from dashboard.containers import services as container_services
from dashboard.containers.models import Container, OomEvent

log = logging.getLogger(__name__)


def _counts_dict(counts: OomCounts | None) -> dict:
    return {k: v for k, v in dataclasses.asdict(counts).items() if v is not None} if counts else {}


def _kernel_time(usec: int) -> dt.datetime:
    """Wall clock of a kmsg timestamp (good to the kmsg clock's ~20 ms skew)."""
    return timezone.now() - dt.timedelta(microseconds=max(0, monotonic_usec() - usec))


def _mirror_row(container_id: str) -> Container | None:
    """The container's mirror row, brought in step if it is not there yet."""
    row = Container.objects.filter(id=container_id).first()
    if row is None:
        try:
            row = container_services.container_refresh(container_id=container_id)
        except TerrariumError as e:
            log.warning("OOM in container %s, which the runtime cannot show: %s", container_id[:12], e)
    return row


def oom_record(*, scope: str, container_id: str | None, report: OomReport | None,
               counts: OomCounts | None, detected_by: str, init_pid: int | None = None,
               name: str = "", memcg: str | None = None, card: dict | None = None) -> OomEvent:
    """Save one kill.  ``init_pid``: the container's init as the watcher last saw it.
    ``card``: memrecord.MemRecorder.card() — the memory record and tree before it."""
    row = _mirror_row(container_id) if container_id else None
    card = card or {}
    before = card.get("before") or {}
    limit_kb = report.limit_kb if report else None
    if limit_kb is None and before.get("limit"):
        limit_kb = before["limit"] // 1024
    if limit_kb is None and row is not None and row.memory_limit:
        limit_kb = row.memory_limit // 1024
    fields = dict(
        at=_kernel_time(report.usec) if report else timezone.now(),
        scope=scope, container=row, container_key=container_id or "",
        container_name=(row.name if row else name) or "", counters=_counts_dict(counts),
        detected_by=detected_by, limit_kb=limit_kb,
        oom_memcg=memcg or (report.oom_memcg if report else "") or "",
        memory_window=card.get("memory_window") or {}, before=before,
        procs_before=card.get("procs_before") or {}, victim_ns_pid=card.get("victim_ns_pid"),
    )
    if before.get("usage") is not None:
        fields["usage_kb"] = before["usage"] // 1024        # replaced by the kernel's figure below
    if report is not None:
        fields.update(
            kernel_usec=report.usec, is_global=report.is_global, killed_pid=report.pid,
            killed_command=report.comm, is_init=init_pid is not None and report.pid == init_pid,
            task_memcg=report.task_memcg or "", constraint=report.constraint or "",
            usage_kb=report.usage_kb if report.usage_kb is not None else fields.get("usage_kb"),
            failcnt=report.failcnt, anon_rss_kb=report.anon_rss_kb,
            file_rss_kb=report.file_rss_kb, total_vm_kb=report.total_vm_kb,
            raw="\n".join(report.lines))
    return OomEvent.objects.create(**fields)


def oom_card_update(*, event_id: int, card: dict) -> None:
    """The seconds after the kill are in: store the whole window (and the tree
    and victim if the first save had none)."""
    ev = OomEvent.objects.filter(pk=event_id).first()
    if ev is None:
        return
    ev.memory_window = card["memory_window"]
    fields = ["memory_window"]
    if not ev.procs_before and card.get("procs_before"):
        ev.procs_before, ev.victim_ns_pid = card["procs_before"], card.get("victim_ns_pid")
        fields += ["procs_before", "victim_ns_pid"]
    if not ev.before and card.get("before"):
        ev.before = card["before"]
        fields.append("before")
    ev.save(update_fields=fields)


def oom_confirm(*, container_id: str, token: tuple, counts: OomCounts | None) -> OomEvent | None:
    """A counter rise matched a kill already recorded from the kernel log."""
    usec, pid = token
    with transaction.atomic():
        ev = (OomEvent.objects.select_for_update()
              .filter(container_key=container_id, kernel_usec=usec, killed_pid=pid).first())
        if ev is None:
            return None
        ev.detected_by = "kmsg+counter"
        ev.counters = _counts_dict(counts)
        ev.save(update_fields=["detected_by", "counters"])
    return ev


def oom_catch_up(*, now: float | None = None) -> list[OomEvent]:
    """Kills the counters know of and the history does not (the dashboard was down).

    For each container, the runtime's count for its last run (the shim's
    record for exited ones, memory.oom_control/memory.events for running
    ones) is compared with the events stored since that run started; each
    missing kill is recorded as seen "from counters".
    """
    from dashboard.containers.runtime_client import get_runtime

    rt = get_runtime()
    out = []
    for c in rt.list(all=True):
        if not c.started_at:
            continue
        kills, counts = c.oom_kills or 0, None
        if c.status in ("running", "paused"):
            try:
                counts = rt.oom_counts(c.id)       # through the agent when the runtime is
                kills = counts.oom_kill
            except TerrariumError:
                continue
        if kills <= 0:
            continue
        since = dt.datetime.fromtimestamp(c.started_at, tz=dt.timezone.utc) - dt.timedelta(seconds=1)
        seen = OomEvent.objects.filter(container_key=c.id, at__gte=since).count()
        for _ in range(kills - seen):
            out.append(oom_record(scope=OomEvent.SCOPE_CONTAINER, container_id=c.id, report=None,
                                  counts=counts or OomCounts(version=0, oom_kill=kills),
                                  detected_by="counters-at-start", name=c.name,
                                  memcg=f"/{c.cgroup}"))
    return out


