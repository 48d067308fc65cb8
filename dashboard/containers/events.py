"""The event contract of the `containers` group, defined once.

    {"type": "container.changed", "container": {...container_payload...}}
    {"type": "container.removed", "container": {"id": ..., "name": ...}}

Producers (services, the reconciler) publish; consumers only forward.

A page drawn before an event and joined to the group after it would miss it:
it says when its data was taken ({"type": "since", "at": unix time}, on
opening its socket) and gets {"type": "resync"} when this process published
to the group since then (changed_at()).
"""
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

GROUP = "containers"
CHANGED = "container.changed"
REMOVED = "container.removed"

_changed_at = 0.0           # unix time this process last published to GROUP


def changed_at() -> float:
    """When this process last published a change to the group (unix time; 0: never)."""
    return _changed_at


def container_payload(row) -> dict:
    """The public, JSON-safe view of one mirror row."""
    return {
        "id": row.id,
        "name": row.name,
        "image": row.image,
        "status": row.status,
        "exit_code": row.exit_code,
        "oom_killed": row.oom_killed,
        "pid": row.pid,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "memory_limit": row.memory_limit,
        "cpus_limit": row.cpus_limit,
        "pids_limit": row.pids_limit,
    }


def changed_event(row) -> dict:
    return {"type": CHANGED, "container": container_payload(row)}


def removed_event(container_id: str, name: str) -> dict:
    return {"type": REMOVED, "container": {"id": container_id, "name": name}}


async def agroup_send(group: str, events) -> None:
    """Send typed events to a group (any app's); a no-op without a channel layer."""
    layer = get_channel_layer()
    if layer is None:
        return
    for event in events:
        await layer.group_send(group, event)


async def apublish(events) -> None:
    global _changed_at
    events = list(events)
    if events:
        _changed_at = time.time()       # before the send: a socket that joins meanwhile asks since
    await agroup_send(GROUP, events)


def publish(events) -> None:
    """From sync code (views, services, management commands)."""
    events = list(events)
    if events:
        async_to_sync(apublish)(events)
