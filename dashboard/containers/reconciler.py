"""ONE reconciler per process: polls the runtime about once a second and
publishes what changed to the `containers` group.

Daphne runs no ASGI lifespan events, so the first websocket consumer that
needs live updates starts it (ensure_started); it then runs for the life of
the event loop, however many browsers watch.
"""
import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from . import events, services

log = logging.getLogger(__name__)
_task: asyncio.Task | None = None


def ensure_started() -> asyncio.Task | None:
    """Start the reconciler on the running loop unless it already runs there."""
    global _task
    interval = settings.TERRARIUM_RECONCILE_INTERVAL
    if interval <= 0:
        return None
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_run(interval), name="terrarium-reconciler")
    return _task


async def stop() -> None:
    """Cancel the reconciler (tests)."""
    global _task
    task, _task = _task, None
    if task and not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _run(interval: float) -> None:
    # A worker thread, not the loop: rt.list() reads files and the ORM blocks.
    reconcile = database_sync_to_async(services.containers_reconcile, thread_sensitive=False)
    prune = database_sync_to_async(services.records_prune, thread_sensitive=False)
    failing, pruned_at = False, None
    loop = asyncio.get_running_loop()
    while True:
        try:
            await events.apublish(await reconcile())
            if pruned_at is None or loop.time() - pruned_at >= settings.TERRARIUM_PRUNE_EVERY:
                pruned_at = loop.time()            # retention: old audit and OOM rows go
                await prune()
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception:
            if not failing:   # log the first of a run of failures, not one a second
                log.exception("reconcile with the runtime failed; retrying every %.1fs", interval)
            failing = True
        await asyncio.sleep(interval)
