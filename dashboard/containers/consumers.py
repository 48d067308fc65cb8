"""Websocket consumers: check the user, join the group, forward events."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import events, reconciler
from .roles import CAN_VIEW

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class ContainersConsumer(AsyncJsonWebsocketConsumer):
    """Live list: every `containers` group event, as JSON."""

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
        reconciler.ensure_started()

    async def disconnect(self, code):
        """Leave the group."""
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(events.GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """The socket is one-way; client messages are refused politely."""
        await self.send_json({"error": "read-only"})

    # --------------------------------------------------------------- helpers
    async def _refuse(self, code: int):
        """Accept then close, so the browser sees our close code."""
        await self.accept()
        await self.close(code=code)

    # -------------------------------------------------- group event handlers
    async def container_changed(self, event):
        """container.changed → the browser."""
        await self.send_json(event)

    async def container_removed(self, event):
        """container.removed → the browser."""
        await self.send_json(event)
