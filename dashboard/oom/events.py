"""The event contract of OOM kills on the `events` group, defined once.

    {"type": "oom.killed", "event": {...oom_payload...}}
    {"type": "oom.warning", "warning": {...warning_payload...}}   (before a kill)

The watcher publishes; consumers only forward.
"""
from django.urls import reverse

GROUP = "events"
KILLED = "oom.killed"
WARNING = "oom.warning"


def oom_payload(ev) -> dict:
    """The public, JSON-safe view of one OomEvent row."""
    return {
        "id": ev.pk,
        "url": reverse("oom:detail", args=[ev.pk]),
        "at": ev.at.isoformat(),
        "kernel_usec": ev.kernel_usec,
        "scope": ev.scope,
        "container_id": ev.container_key or None,
        "container_name": ev.container_name,
        "killed_pid": ev.killed_pid,
        "killed_command": ev.killed_command,
        "is_init": ev.is_init,
        "is_global": ev.is_global,
        "limit_kb": ev.limit_kb,
        "usage_kb": ev.usage_kb,
        "detected_by": ev.detected_by,
    }


def killed_event(ev) -> dict:
    return {"type": KILLED, "event": oom_payload(ev)}


def warning_payload(w: dict) -> dict:
    """A near-OOM warning from memrecord.PressureTracker (+ container_id, container_name)."""
    return {
        "container_id": w["container_id"], "container_name": w.get("container_name", ""),
        "url": reverse("containers:detail", args=[w["container_id"]]),
        "reason": w["reason"], "text": w["text"], "usage": w["usage"], "limit": w["limit"],
        "percent": w["percent"], "t": w["t"],
    }


def warning_event(w: dict) -> dict:
    return {"type": WARNING, "warning": warning_payload(w)}


async def apublish(events) -> None:
    from dashboard.containers.events import agroup_send
    await agroup_send(GROUP, events)
