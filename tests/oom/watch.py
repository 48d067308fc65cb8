"""The watcher set-up every kernel-driven OOM test shares."""
import asyncio
import contextlib

from channels.layers import get_channel_layer

from dashboard.oom import events
from dashboard.oom.watcher import OomWatcher


@contextlib.asynccontextmanager
async def watching(refresh: float = 0.1):
    """A running OomWatcher, ready, and a channel in the `events` group:
    yields (watcher, layer, channel); both are let go afterwards."""
    w = OomWatcher(refresh=refresh)
    task = asyncio.create_task(w.run())
    layer = get_channel_layer()
    ch = await layer.new_channel()
    await layer.group_add(events.GROUP, ch)
    try:
        await asyncio.wait_for(w.ready.wait(), 15)
        yield w, layer, ch
    finally:
        await layer.group_discard(events.GROUP, ch)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
