"""Websocket consumers: check the user, join a group, forward its events.

ViewerSocket is that pattern once; each socket of the dashboard names its
group and what to start when someone joins, and lists the event types it
forwards.
"""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import events, reconciler
from .roles import CAN_VIEW

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class ViewerSocket(AsyncJsonWebsocketConsumer):
    """A one-way socket for anyone allowed to view.  (Origin is checked in asgi.py.)"""

    # ------------------------------------------------------ socket handlers
    async def connect(self):
        """Refuse anonymous users (4401) and users without view permission (4403)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        if not await database_sync_to_async(user.has_perm)(CAN_VIEW):
            return await self._refuse(CLOSE_FORBIDDEN)
        self.group = self.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self.accept()
        await self.on_join()

    async def disconnect(self, code):
        """Leave the group."""
        if getattr(self, "joined", False):
            self.joined = False
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.on_leave()

    async def receive_json(self, content, **kwargs):
        """The socket is one-way; client messages are refused politely."""
        await self.send_json({"error": "read-only"})

    # ----------------------------------------------------------------- hooks
    def group_name(self) -> str:
        raise NotImplementedError

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


class ContainersConsumer(ViewerSocket):
    """Live list: every `containers` group event, as JSON."""

    def group_name(self) -> str:
        return events.GROUP

    async def on_join(self):
        reconciler.ensure_started()

    container_changed = ViewerSocket.forward
    container_removed = ViewerSocket.forward
