"""Websocket consumers: check the user, join a group, forward its events.

ViewerSocket is that pattern once; each socket of the dashboard names its
group and what to start when someone joins, and lists the event types it
forwards.  Access is checked at connect and kept checked while the socket is
open (dashboard/containers/access.py): it closes on logout, and within
TERRARIUM_WS_RECHECK seconds of the session ending or the user losing access.
"""
import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import DatabaseError

from dashboard.live.listusage import UsageWatch

from . import access, events, reconciler
from .access import CLOSE_FORBIDDEN, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from .roles import CAN_VIEW

log = logging.getLogger(__name__)


class ViewerSocket(AsyncJsonWebsocketConsumer):
    """A one-way socket for anyone allowed to view.  (Origin is checked in asgi.py.)"""

    perm = CAN_VIEW                  # what the socket needs, at connect and while open

    # ------------------------------------------------------ socket handlers
    async def connect(self):
        """Refuse anonymous users (4401) and users without view permission (4403)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        if not await database_sync_to_async(user.has_perm)(self.perm):
            return await self._refuse(CLOSE_FORBIDDEN)
        session = self.scope.get("session")
        self.session_key, self.user_id = getattr(session, "session_key", None), user.pk
        code = await self.refused()
        if code is not None:
            return await self._refuse(code)
        if not access.claim(self.session_key):
            return await self._refuse(CLOSE_TOO_MANY)
        self.claimed = True
        self.group = self.group_name()
        self.groups_joined = [self.group, access.user_group(user.pk)]
        if self.session_key:
            self.groups_joined.append(access.session_group(self.session_key))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.joined = True
        await self.accept()
        self._watch = asyncio.get_running_loop().create_task(self._recheck_every())
        await self.on_join()

    async def disconnect(self, code):
        """Leave the groups."""
        if getattr(self, "claimed", False):
            self.claimed = False
            access.release(self.session_key)
        if getattr(self, "joined", False):
            self.joined = False
            watch = getattr(self, "_watch", None)
            if watch is not None and watch is not asyncio.current_task():
                watch.cancel()
            for group in self.groups_joined:
                await self.channel_layer.group_discard(group, self.channel_name)
            await self.on_leave()

    async def receive_json(self, content, **kwargs):
        """The socket is one-way; client messages are refused politely."""
        await self.send_json({"error": "read-only"})

    # ----------------------------------------------------------------- hooks
    def group_name(self) -> str:
        raise NotImplementedError

    async def refused(self) -> int | None:
        """Before joining (the user may view): a close code to refuse with, or None."""
        return None

    async def on_join(self):
        """After accept: start producers, send the first state."""

    async def on_leave(self):
        """After leaving the group."""

    # --------------------------------------------------------------- helpers
    async def _refuse(self, code: int):
        """Accept then close, so the browser sees our close code."""
        await self.accept()
        await self.close(code=code)

    async def forward(self, event):
        """A group event → the browser, as is (it carries its "type")."""
        await self.send_json(event)

    async def layer_resync(self, event):
        """This socket's queue overflowed and ``dropped`` events never reached it
        (dashboard/live/layers.py): the page must refetch, not trust what it shows."""
        await self.send_json({"type": "resync", "dropped": event.get("dropped", 0)})

    # ------------------------------------------------------ access checks
    async def _end(self, code: int):
        """Close at once, then leave (the sampler stops sampling for us).
        Leaving can wait for a sampler tick under way: the browser must not."""
        self.ended = True
        await self.close(code=code)
        await self.disconnect(code)

    async def send(self, *args, **kwargs):
        """Nothing more after _end closed the socket (a group event may still come)."""
        if not getattr(self, "ended", False):
            await super().send(*args, **kwargs)

    async def recheck(self, shared: bool = False) -> int | None:
        """Check the session, user and permission again; close if refused.
        shared: the periodic check, which this session's other sockets share."""
        code = await database_sync_to_async(access.socket_access)(
            session_key=self.session_key, user_id=self.user_id, perm=self.perm, shared=shared)
        if code is not None and getattr(self, "joined", False):
            await self._end(code)
        return code

    async def _recheck_every(self):
        while getattr(self, "joined", False):
            await asyncio.sleep(access.recheck_seconds())
            try:
                if await self.recheck(shared=True) is not None:
                    return
            except DatabaseError as e:                 # a locked DB: try again next time
                log.warning("websocket access re-check failed: %s", e)

    async def access_ended(self, event):
        """The session logged out."""
        if getattr(self, "joined", False):
            await self._end(CLOSE_UNAUTHENTICATED)

    async def access_changed(self, event):
        """The user or their role changed: check now."""
        await self.recheck()


class ContainersConsumer(UsageWatch, ViewerSocket):
    """Live list: every `containers` group event, as JSON; and the usage of the
    rows the page names ({"type": "watch", "ids": [...]}: dashboard/live/listusage.py)."""

    def group_name(self) -> str:
        return events.GROUP

    async def on_join(self):
        reconciler.ensure_started()

    async def on_leave(self):
        await self.unwatch_all()

    async def receive_json(self, content, **kwargs):
        """{"type": "watch", "ids": [...]} and {"type": "since", "at": unix
        time}: all a page says; the rest is refused as on every read-only socket."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "watch":
            await self.watch(content.get("ids"))
        elif kind == "since":
            await self.since(content.get("at"))
        else:
            await super().receive_json(content, **kwargs)

    async def since(self, at) -> None:
        """The page's data was taken at ``at``: {"type": "resync"} if a change
        was published since (before this socket joined, so it did not get it)."""
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            await self.send_json({"type": "error", "error": "since takes a unix time"})
        elif events.changed_at() > at:
            await self.send_json({"type": "resync"})

    container_changed = ViewerSocket.forward
    container_removed = ViewerSocket.forward
