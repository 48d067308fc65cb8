"""`ws/events/`: every page's socket for OOM kills (the `events` group)."""
from dashboard.containers.consumers import ViewerSocket

from . import events, watcher


class EventsConsumer(ViewerSocket):
    """Forwards `oom.killed` and `oom.warning` to the browser; starts the OOM watcher."""

    def group_name(self) -> str:
        return events.GROUP

    async def on_join(self):
        watcher.ensure_started()

    oom_killed = ViewerSocket.forward
    oom_warning = ViewerSocket.forward
