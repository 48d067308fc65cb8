"""The live socket of one container: check the user, subscribe to the
sampler, forward `container.<id>` events.  Nothing is sampled here.

With TERRARIUM_SAMPLER=external the sampler is another process (`manage.py
sampler`): the socket asks it by channel-layer messages and renews the
subscription (a lease) every lease/3 seconds while it is open."""
import asyncio

from dashboard.containers.access import CLOSE_NOT_FOUND
from dashboard.containers.consumers import ViewerSocket

from . import events, selectors
from . import sampler as _sampler
from .sampler import get_sampler


class ContainerLiveConsumer(ViewerSocket):
    """ws/containers/<id>/live/: history on connect, then every sample and tree."""

    def group_name(self) -> str:
        return events.group(self.container_id)

    async def refused(self) -> int | None:
        """An id the runtime does not know is not sampled (4404)."""
        self.container_id = self.scope["url_route"]["kwargs"]["container_id"]
        if not await asyncio.to_thread(selectors.container_exists, container_id=self.container_id):
            return CLOSE_NOT_FOUND
        return None

    async def on_join(self):
        if not _sampler.external():
            await self.send_json(await get_sampler().subscribe(self.container_id))
            return
        await self._ask(_sampler.SUBSCRIBE)          # the history comes back as container.history
        self._renew = asyncio.get_running_loop().create_task(self._renew_lease())

    async def on_leave(self):
        if not _sampler.external():
            await get_sampler().unsubscribe(self.container_id)
            return
        renew = getattr(self, "_renew", None)
        if renew is not None:
            renew.cancel()
        await self._ask(_sampler.UNSUBSCRIBE)

    async def _ask(self, kind: str):
        await self.channel_layer.send(_sampler.SAMPLER_CHANNEL, {
            "type": kind, "container": self.container_id, "reply": self.channel_name,
            "lease": _sampler.lease_seconds()})

    async def _renew_lease(self):
        every = _sampler.lease_seconds() / 3
        while True:
            await asyncio.sleep(every)
            await self._ask(_sampler.SUBSCRIBE)

    async def forward(self, event):
        """The sampler's JSON text as is (encoded once for every viewer)."""
        text = event.get("json")
        if text is not None:
            await self.send(text_data=text)
        else:
            await self.send_json(event)

    container_sample = forward
    container_procs = forward
    container_gone = forward
    container_history = forward
