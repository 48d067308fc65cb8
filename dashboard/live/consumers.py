"""The live socket of one container: check the user, subscribe to the
sampler, forward `container.<id>` events.  Nothing is sampled here."""
from dashboard.containers.consumers import ViewerSocket

from . import events
from .sampler import get_sampler


class ContainerLiveConsumer(ViewerSocket):
    """ws/containers/<id>/live/: history on connect, then every sample and tree."""

    def group_name(self) -> str:
        self.container_id = self.scope["url_route"]["kwargs"]["container_id"]
        return events.group(self.container_id)

    async def on_join(self):
        await self.send_json(await get_sampler().subscribe(self.container_id))

    async def on_leave(self):
        await get_sampler().unsubscribe(self.container_id)

    container_sample = ViewerSocket.forward
    container_procs = ViewerSocket.forward
    container_gone = ViewerSocket.forward
