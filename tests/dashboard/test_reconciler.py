"""The reconciler follows the runtime's state changes instead of listing every
container every second: a change reaches the `containers` group at once, only
the changed container is read, and an idle host costs no pass at all -- in
process and through the agent (whose inotify watches the dashboard cannot hold)."""
import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from dashboard.containers import events, reconciler, services
from dashboard.containers.runtime_client import reset_runtime
from runtime import Spec

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.root]


@pytest.fixture(params=["in-process", "agent"])
def mode(request, settings):
    settings.TERRARIUM_RECONCILE_INTERVAL = 1.0
    settings.TERRARIUM_RECONCILE_FULL = 3600.0          # no full pass during the test
    if request.param == "agent":
        settings.TERRARIUM_AGENT = "1"
    reset_runtime()
    yield request.param
    reset_runtime()


def test_changes_reach_the_list_without_polling(mode, rt, cleanup, name, monkeypatch):
    passes = []
    real = services.containers_reconcile

    def counted(ids=None):
        passes.append(None if ids is None else set(ids))
        return real(ids)
    monkeypatch.setattr(services, "containers_reconcile", counted)

    async def run():
        layer = get_channel_layer()
        ch = await layer.new_channel()
        await layer.group_add(events.GROUP, ch)
        task = reconciler.ensure_started()
        try:
            deadline = time.monotonic() + 15
            while not passes and time.monotonic() < deadline:     # the first, full pass
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)                                 # idle: no pass at all
            assert passes == [None], passes
            c = await asyncio.to_thread(rt.run, Spec(image="lab", name=name, cmd=("sleep", "100")))
            cleanup.append(c.id)
            t0 = time.monotonic()
            while True:
                m = await asyncio.wait_for(layer.receive(ch), 10)
                if m["type"] == events.CHANGED and m["container"]["id"] == c.id \
                        and m["container"]["status"] == "running":
                    break
            seen_in = time.monotonic() - t0
            await asyncio.to_thread(rt.stop, c.id, 2)
            while True:
                m = await asyncio.wait_for(layer.receive(ch), 10)
                if m["type"] == events.CHANGED and m["container"]["id"] == c.id \
                        and m["container"]["status"] == "exited":
                    break
            return seen_in
        finally:
            await reconciler.stop()
            await layer.group_discard(events.GROUP, ch)
            assert task is not None

    seen_in = async_to_sync(run)()
    assert seen_in < 5.0
    assert passes[0] is None and all(p is not None for p in passes[1:]), passes   # one full pass only
    assert set().union(*passes[1:]) == {c for c in set().union(*passes[1:])} and \
        all(len(p) == 1 for p in passes[1:]), passes                             # only the one container


def test_a_stop_that_arrives_with_a_batch_is_not_lost():
    """stop() cancels the reconciler while it waits for the next batch; on
    Python 3.11 asyncio.wait_for returned a batch that arrived in the same
    turn and dropped the cancel, so the reconciler went on and stop() waited
    for it for ever.  Only the feed's queue is used (no thread follows)."""
    feed = object.__new__(reconciler.ChangeFeed)

    async def run():
        feed.queue = asyncio.Queue()
        waiting = asyncio.create_task(feed.next(10))
        await asyncio.sleep(0.01)
        feed.queue.put_nowait({"a" * 64})
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await feed.next(0.01) == {"a" * 64}               # the batch itself stays queued
        feed.queue.put_nowait({"b" * 64})
        feed.queue.put_nowait(reconciler.ALL)
        assert await feed.next(0.01) is reconciler.ALL          # merged: everything
    asyncio.run(run())
