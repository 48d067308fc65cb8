"""ONE reconciler per process: keeps the dashboard's mirror of the runtime's
containers in step and publishes what changed to the `containers` group.

It follows the runtime's state changes as they happen (Runtime.changes:
inotify on the state root, through the agent when the dashboard has one) and
reconciles only the containers that changed, so an idle host costs nothing
and a burst of 1,000 changes costs a few passes.  Once every
TERRARIUM_RECONCILE_FULL seconds it lists everything (what no record shows: a
shim killed together with its container).  When changes cannot be followed
(no inotify, the agent gone) it polls every TERRARIUM_RECONCILE_INTERVAL
seconds until they can again.

Daphne runs no ASGI lifespan events, so the first websocket consumer that
needs live updates starts it (ensure_started); it then runs for the life of
the event loop, however many browsers watch.
"""
import asyncio
import logging
import threading

from channels.db import database_sync_to_async
from django.conf import settings

from . import events, services
from .runtime_client import get_runtime

log = logging.getLogger(__name__)
_task: asyncio.Task | None = None
_warned = False                 # the fall back to polling was logged
_in_step = False                # the last pass succeeded and changes are followed
ALL = None                      # a batch meaning "list everything"


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


def in_step() -> bool:
    """The mirror follows the runtime now (this process's reconciler runs, its
    last pass succeeded): a page may read the mirror without a pass of its own."""
    return _in_step and _task is not None and not _task.done()


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


class ChangeFeed:
    """Runtime.changes in a thread of its own, its batches put on the loop's
    queue (the reconciler's, and the OOM watcher's scope).  ``engines``: other
    owners' containers too (TERRARIUM_ENGINE_EVENTS by default)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engines: bool | None = None):
        self.loop, self.queue = loop, asyncio.Queue()
        if engines is None:
            engines = getattr(settings, "TERRARIUM_ENGINE_EVENTS", True)
        self.engines = engines
        self.stopping = threading.Event()
        self.watching = threading.Event()      # the watch is in place: changes from now on are seen
        self.alive = True
        self.thread = threading.Thread(target=self._follow, name="terrarium-changes", daemon=True)
        self.thread.start()

    def _follow(self):
        global _warned
        try:
            engines = {"engines": True} if self.engines else {}
            for batch in get_runtime().changes(self.stopping.is_set, **engines):
                if not self.watching.is_set():
                    self.watching.set()                 # the first, empty batch
                    continue
                self.loop.call_soon_threadsafe(self.queue.put_nowait, batch)
        except Exception as e:  # noqa: BLE001 - any failure: the loop falls back to polling
            if not self.stopping.is_set() and not _warned:
                _warned = True
                log.warning("cannot follow the runtime's state changes (%s: %s); polling instead",
                            type(e).__name__, e)
        finally:
            self.alive = False
            self.watching.set()                         # nobody waits for a watch that failed
            if not self.stopping.is_set():
                try:
                    self.loop.call_soon_threadsafe(self.queue.put_nowait, ALL)   # wake the loop
                except RuntimeError:                    # it is closed: nobody to wake
                    pass

    def close(self):
        self.stopping.set()

    async def started(self, timeout: float = 5.0) -> None:
        """Until the watch is in place (or failed): the full pass that follows
        then misses nothing that changes while it runs."""
        await asyncio.to_thread(self.watching.wait, timeout)

    async def next(self, timeout: float):
        """The changed ids (merged over every batch waiting), ALL, or ALL after ``timeout``."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a batch
        # that arrives with a cancel and drops the cancel, and stop() then
        # waits for a reconciler that goes on (likely a test's 300 s hang in CI)
        try:
            async with asyncio.timeout(timeout):
                batch = await self.queue.get()
        except TimeoutError:
            return ALL
        while batch is not ALL and not self.queue.empty():
            more = self.queue.get_nowait()
            batch = ALL if more is ALL else batch | more
        return batch


async def _run(interval: float) -> None:
    global _in_step
    # A worker thread, not the loop: the runtime reads files and the ORM blocks.
    reconcile = database_sync_to_async(services.containers_reconcile, thread_sensitive=False)
    prune = database_sync_to_async(services.records_prune, thread_sensitive=False)
    full_every = float(getattr(settings, "TERRARIUM_RECONCILE_FULL", 30.0))
    failing, pruned_at = False, None
    loop = asyncio.get_running_loop()
    changes = ChangeFeed(loop)
    await changes.started()
    batch = ALL
    try:
        while True:
            try:
                await events.apublish(await reconcile(None if batch is ALL else batch))
                if pruned_at is None or loop.time() - pruned_at >= settings.TERRARIUM_PRUNE_EVERY:
                    pruned_at = loop.time()            # retention: old audit and OOM rows go
                    await prune()
                failing = False
                _in_step = changes.alive
            except asyncio.CancelledError:
                raise
            except Exception:
                _in_step = False
                if not failing:   # log the first of a run of failures, not one a second
                    log.exception("reconcile with the runtime failed; retrying every %.1fs", interval)
                failing = True
            if not changes.alive:                      # polling until changes can be followed again
                _in_step = False
                await asyncio.sleep(interval)
                changes = ChangeFeed(loop)
                await changes.started()
                batch = ALL
                continue
            batch = await changes.next(interval if failing else full_every)
    finally:
        _in_step = False
        changes.close()
