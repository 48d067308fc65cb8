"""The sampler's hold on the reader: what a container keeps open is released
when its last viewer leaves (internal) or its last lease goes (external)."""
import asyncio

from asgiref.sync import async_to_sync

from dashboard.live import sampler
from dashboard.live.sampler import SUBSCRIBE, UNSUBSCRIBE, Sampler


class Reader(sampler.Reader):
    """Counts reads; holds a 'descriptor' per container read until forget()."""

    def __init__(self):
        self.held, self.forgotten = set(), []

    def read(self, cid, tree=True):
        self.held.add(cid)
        return ({"memory_usage": 1, "memory_inactive_file": 0, "memory_limit": None, "cpu_usage_ns": 1,
                 "pids_current": 1, "pids_max": None, "sources": {}}, [])

    def forget(self, cid):
        self.held.discard(cid)
        self.forgotten.append(cid)


def test_last_viewer_leaving_releases_the_container():
    reader = Reader()
    s = Sampler(tick=0.01, keep=60, reader=reader, record=False)

    async def run():
        await s.subscribe("a")
        await s.subscribe("a")
        await s.subscribe("b")
        await s.tick_once()
        assert reader.held == {"a", "b"}
        await s.unsubscribe("a")
        assert reader.forgotten == []                  # one viewer of a is still there
        await s.unsubscribe("a")
        assert reader.forgotten == ["a"] and reader.held == {"b"}
        assert s.history("a")["points"]                # the recent past stays for a reload
        await s.unsubscribe("b")
        assert reader.held == set() and not s.running
    async_to_sync(run)()


def test_a_tick_begun_before_the_viewer_left_does_not_reopen_it():
    reader = Reader()
    s = Sampler(tick=0.01, keep=60, reader=reader, record=False)

    async def run():
        await s.subscribe("a")
        await s.stop()                                 # drive the ticks by hand
        with s._reader_lock:                           # a tick's thread is about to read "a"...
            tick = asyncio.ensure_future(s.tick_once())
            await asyncio.sleep(0)
            s.subscribers.pop("a")                     # ...when its viewer leaves
        await tick
        assert reader.held == set()
    async_to_sync(run)()


def test_external_leases_release_when_the_last_one_goes(monkeypatch):
    reader = Reader()
    s = Sampler(tick=0.01, keep=60, reader=reader, record=False)

    class Layer:
        async def send(self, channel, msg):
            pass

        async def group_send(self, group, msg):
            pass
    monkeypatch.setattr("dashboard.live.sampler.get_channel_layer", lambda: Layer())

    async def run():
        await s.handle({"type": SUBSCRIBE, "container": "a", "reply": "ch1", "lease": 30})
        await s.handle({"type": SUBSCRIBE, "container": "a", "reply": "ch2", "lease": 0.001})
        await s.tick_once()
        assert reader.held == {"a"}
        await s.handle({"type": UNSUBSCRIBE, "container": "a", "reply": "ch1"})
        assert reader.forgotten == []                  # ch2's lease still holds it
        assert s.expire_leases(now=10**12) == ["a"]     # the loop releases what this returns
        await s.release("a")
        assert reader.held == set()
    async_to_sync(run)()
