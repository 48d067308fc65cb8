"""The live socket of one container: check the user, subscribe to the
sampler, forward `container.<id>` events.  Nothing is sampled here."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.containers.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from dashboard.containers.roles import CAN_VIEW

from . import events
from .sampler import get_sampler


class ContainerLiveConsumer(AsyncJsonWebsocketConsumer):
    """ws/containers/<id>/live/: history on connect, then every sample and tree."""

    # ------------------------------------------------------ socket handlers
    async def connect(self):
        """Refuse anonymous (4401) and roleless (4403) users; join and subscribe."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        if not await database_sync_to_async(user.has_perm)(CAN_VIEW):
            return await self._refuse(CLOSE_FORBIDDEN)
        self.container_id = self.scope["url_route"]["kwargs"]["container_id"]
        await self.channel_layer.group_add(events.group(self.container_id), self.channel_name)
        await self.accept()
        self.subscribed = True
        await self.send_json(await get_sampler().subscribe(self.container_id))

    async def disconnect(self, code):
        """Leave the group and drop the subscription."""
        if getattr(self, "subscribed", False):
            self.subscribed = False
            await self.channel_layer.group_discard(events.group(self.container_id), self.channel_name)
            await get_sampler().unsubscribe(self.container_id)

    async def receive_json(self, content, **kwargs):
        """The socket is one-way."""
        await self.send_json({"error": "read-only"})

    # --------------------------------------------------------------- helpers
    async def _refuse(self, code: int):
        await self.accept()
        await self.close(code=code)

    # -------------------------------------------------- group event handlers
    async def container_sample(self, event):
        await self.send_json(event)

    async def container_procs(self, event):
        await self.send_json(event)

    async def container_gone(self, event):
        await self.send_json(event)
