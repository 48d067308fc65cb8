"""`ws/events/`: every page's socket for OOM kills (the `events` group)."""
import datetime as dt
import math

from channels.db import database_sync_to_async

from dashboard.containers.consumers import ViewerSocket
from dashboard.containers.models import OomEvent

from . import events, watcher

CATCH_UP_MAX = 20               # kills replayed to a page that just connected, at most
CATCH_UP_WINDOW = 120.0         # seconds back, at most


def _killed_since(since: float) -> list[dict]:
    """The kills after `since` (unix time, server clock), oldest first."""
    now = dt.datetime.now(dt.timezone.utc)
    start = max(dt.datetime.fromtimestamp(since, dt.timezone.utc), now - dt.timedelta(seconds=CATCH_UP_WINDOW))
    rows = list(OomEvent.objects.filter(at__gt=start).order_by("-at")[:CATCH_UP_MAX])
    return [events.killed_event(ev) for ev in reversed(rows)]


class EventsConsumer(ViewerSocket):
    """Forwards `oom.killed` and `oom.warning` to the browser; starts the OOM watcher.

    A page that just connected may ask once for the kills since its navigation
    began ({"type": "catch-up", "since": unix time on the server's clock}):
    the OOM lab's kill happens while the browser is still between the create
    form and the detail page, before that page's socket is open."""

    def group_name(self) -> str:
        return events.GROUP

    async def on_join(self):
        watcher.ensure_started()

    async def receive_json(self, content, **kwargs):
        since = content.get("since") if isinstance(content, dict) and content.get("type") == "catch-up" else None
        if isinstance(since, (int, float)) and not isinstance(since, bool) and math.isfinite(since) \
                and not getattr(self, "caught_up", False):
            self.caught_up = True                   # once per connection: no replay loop
            for event in await database_sync_to_async(_killed_since)(float(since)):
                await self.send_json(event)
            return
        await super().receive_json(content, **kwargs)

    oom_killed = ViewerSocket.forward
    oom_warning = ViewerSocket.forward
