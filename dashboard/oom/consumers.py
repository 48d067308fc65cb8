"""`ws/events/`: every page's socket for OOM kills (the `events` group)."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.containers.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from dashboard.containers.roles import CAN_VIEW

from . import events, watcher


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """Forwards `oom.killed` to the browser; starts the OOM watcher."""

    # ------------------------------------------------------ socket handlers
    async def connect(self):
        """Refuse anonymous users (4401) and users without view permission (4403)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        if not await database_sync_to_async(user.has_perm)(CAN_VIEW):
            return await self._refuse(CLOSE_FORBIDDEN)
        await self.channel_layer.group_add(events.GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        watcher.ensure_started()

    async def disconnect(self, code):
        """Leave the group."""
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(events.GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """The socket is one-way."""
        await self.send_json({"error": "read-only"})

    # --------------------------------------------------------------- helpers
    async def _refuse(self, code: int):
        """Accept then close, so the browser sees our close code."""
        await self.accept()
        await self.close(code=code)

    # -------------------------------------------------- group event handlers
    async def oom_killed(self, event):
        """oom.killed → the browser."""
        await self.send_json(event)
