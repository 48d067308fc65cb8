"""Usage columns of the container list: memory, CPU and tasks of the rows a page
shows, from the one sampler, for those rows only -- ours and every other
owner's that runs in a cgroup of its own (Docker, Podman, a pod, a unit),
read from that cgroup's files as ours are, never from an engine's stats.

The list page's socket (ws/containers/) says which of its rows are running,
``{"type": "watch", "ids": [...]}``, each time its rows change; the socket
subscribes the sampler to them without the process tree (as a detail
page's live socket does with it, so a container on screen in both is
sampled once), joins their `container.<id>`
groups and sends each sample on as ``{"type": "usage", "id", "mem",
"mem_limit", "cpu", "cpu_limit", "pids", "pids_max"}``.  Rows that leave the page, and the whole
set when the socket closes, are unsubscribed: containers off screen cost the
sampler nothing because of the list.
"""
from __future__ import annotations

import asyncio
import json

from channels.db import database_sync_to_async

from . import events
from . import sampler as _sampler
from .sampler import get_sampler

MAX_WATCHED = 200           # the largest page (dashboard/containers/listing.PAGE_SIZES)


def usage(cid: str, point: dict) -> dict:
    """The list's usage message from a sample point (dashboard/live/metrics.point)."""
    return {"type": "usage", "id": cid, "mem": point.get("mem"), "mem_limit": point.get("mem_limit"),
            "cpu": point.get("cpu"), "cpu_limit": point.get("cpu_limit"),
            "pids": point.get("pids"), "pids_max": point.get("pids_max")}


def _running(ids: list[str]) -> set[str]:
    from dashboard.containers.models import Container
    return set(Container.objects.filter(id__in=ids, status="running").values_list("id", flat=True))


def _running_theirs(keys: list[str]) -> set[str]:
    """Those of another owner's containers (discovery keys) that run in a
    cgroup of their own, as the list's discovery pass saw them (the pass the
    page was drawn from, while it is young enough): a bare namespace has no
    cgroup of its own to show the usage of."""
    from django.conf import settings

    from dashboard.containers import engines
    found, _, _ = engines.discovered(max_age=settings.TERRARIUM_LIST_DISCOVERY_AGE)
    return {f.key for f in found if f.key in keys and f.state == "running" and f.cgroup}


class UsageWatch:
    """A mixin for the containers socket (dashboard/containers/consumers.py)."""

    watched: frozenset = frozenset()

    async def watch(self, ids) -> None:
        """Watch exactly these (running, at most MAX_WATCHED); release the rest."""
        from runtime.state import ID_RE
        if not isinstance(ids, list):
            await self.send_json({"type": "error", "error": "watch takes a list of container ids"})
            return
        from dashboard.containers.engines import is_other
        ids = [i for i in ids[:MAX_WATCHED] if isinstance(i, str)]
        ours, theirs = [i for i in ids if ID_RE.match(i)], [i for i in ids if is_other(i)]
        wanted = await database_sync_to_async(_running)(ours) if ours else set()
        if theirs:                                  # Docker's, Podman's, a unit's: their own cgroup
            wanted |= await asyncio.to_thread(_running_theirs, theirs)
        gone, new = self.watched - wanted, wanted - self.watched
        self.watched = frozenset(wanted)
        for cid in gone:
            await self._unwatch(cid)
        for cid in new:
            await self.channel_layer.group_add(events.group(cid), self.channel_name)
            if _sampler.external():
                await self._ask(_sampler.SUBSCRIBE, cid)       # the history comes as container.history
            else:
                await self.container_history(await get_sampler().subscribe(cid, tree=False))
        if _sampler.external() and self.watched and getattr(self, "_renew", None) is None:
            self._renew = asyncio.get_running_loop().create_task(self._renew_leases())

    async def unwatch_all(self) -> None:
        watched, self.watched = self.watched, frozenset()
        renew, self._renew = getattr(self, "_renew", None), None
        if renew is not None:
            renew.cancel()
        for cid in watched:
            await self._unwatch(cid)

    async def _unwatch(self, cid: str) -> None:
        await self.channel_layer.group_discard(events.group(cid), self.channel_name)
        if _sampler.external():
            await self._ask(_sampler.UNSUBSCRIBE, cid)
        else:
            await get_sampler().unsubscribe(cid, tree=False)

    async def _ask(self, kind: str, cid: str) -> None:
        await self.channel_layer.send(_sampler.SAMPLER_CHANNEL, {
            "type": kind, "container": cid, "reply": self.channel_name, "lease": _sampler.lease_seconds(),
            "tree": False})

    async def _renew_leases(self) -> None:
        while self.watched:
            await asyncio.sleep(_sampler.lease_seconds() / 3)
            for cid in self.watched:
                await self._ask(_sampler.SUBSCRIBE, cid)
        self._renew = None

    # ------------------------------------------------- group events → usage
    async def container_sample(self, event) -> None:
        ev = json.loads(event["json"]) if "json" in event else event
        if ev.get("id") in self.watched:
            await self.send_json(usage(ev["id"], ev.get("point") or {}))

    async def container_history(self, event) -> None:
        """On subscribing: the last point the sampler has, if any, at once."""
        ev = json.loads(event["json"]) if "json" in event else event
        points = ev.get("points") or ()
        if points and ev.get("id") in self.watched:
            await self.send_json(usage(ev["id"], points[-1]))

    async def container_procs(self, event) -> None:
        """The list shows no trees."""

    async def container_gone(self, event) -> None:
        ev = json.loads(event["json"]) if "json" in event else event
        if ev.get("id") in self.watched:
            await self.send_json(usage(ev["id"], {}))
