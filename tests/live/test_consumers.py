"""The live socket and the one sampler: subscribe, receive, unsubscribe; nothing
is sampled while nobody watches; one sample per tick however many viewers."""
import asyncio

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from asgiref.sync import async_to_sync

from dashboard.asgi import application
from dashboard.live import events, sampler as sampler_mod, selectors
from runtime import Sample
from tests.dashboard.test_consumers import _headers

pytestmark = pytest.mark.django_db(transaction=True)
CID = "c" * 64
URL = f"/ws/containers/{CID}/live/"


class FakeKernel:
    """Stands in for the runtime reads; counts them."""

    def __init__(self):
        self.reads = 0
        self.ns = 0

    def sample(self, *, container_id):
        self.reads += 1
        self.ns += 100_000_000
        return Sample.of("v1", {"memory_usage": self.reads << 20, "memory_inactive_file": 0,
                                "memory_limit": 64 << 20, "cpu_usage_ns": self.ns, "pids_current": 1,
                                "pids_max": None}, {"memory_usage": "memory.usage_in_bytes"})

    def forest(self, *, container_id):
        return []


@pytest.fixture
def kernel(monkeypatch, settings):
    settings.TERRARIUM_RECONCILE_INTERVAL = 0
    settings.TERRARIUM_LIVE_TICK = 0.05
    settings.TERRARIUM_SAMPLER_READER = "selectors"   # FakeKernel stands in for the selectors
    sampler_mod.reset_sampler()
    k = FakeKernel()
    monkeypatch.setattr(selectors, "container_raw_sample", k.sample)
    monkeypatch.setattr(selectors, "container_process_forest", k.forest)
    monkeypatch.setattr(selectors, "container_exists", lambda *, container_id: container_id == CID)
    # No history here (tests/live/test_sampler_history.py has it): its minute pass
    # over the session's real containers wrote the shared in-memory test database
    # in a thread while a test logged out, and SQLite's shared cache answered
    # "database table is locked" to the logout.
    monkeypatch.setattr(sampler_mod, "_factory", sampler_mod.Sampler)   # no consumer declared
    yield k
    sampler_mod.reset_sampler()


def _groups_empty():
    return not get_channel_layer().groups.get(events.group(CID))


async def _next(comm, type_):
    while True:
        msg = await comm.receive_json_from(timeout=3)
        if msg.get("type") == type_:
            return msg


def test_anonymous_is_refused(kernel):
    async def run():
        comm = WebsocketCommunicator(application, URL, headers=_headers())
        await comm.connect()
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}
    async_to_sync(run)()
    assert kernel.reads == 0 and _groups_empty()


def test_foreign_origin_is_refused(kernel, viewer):
    headers = _headers(viewer, "http://evil.example")

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        connected, _ = await comm.connect()
        assert not connected
    async_to_sync(run)()
    assert kernel.reads == 0


def test_subscribe_receive_and_unsubscribe(kernel, viewer):
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        hist = await comm.receive_json_from(timeout=2)
        assert hist["type"] == events.HISTORY and hist["points"] == []
        s1 = await _next(comm, events.SAMPLE)
        s2 = await _next(comm, events.SAMPLE)
        assert s2["point"]["mem"] > s1["point"]["mem"]
        assert s2["point"]["cpu"] is not None and s2["sources"]["mem"] == "memory.usage_in_bytes"
        assert (await _next(comm, events.PROCS))["tree"] == []
        await comm.disconnect()
        assert not sampler_mod.get_sampler().running
        reads = kernel.reads
        await asyncio.sleep(0.2)
        assert kernel.reads == reads                       # nobody watches: no sampling

        # a reload: the history comes first
        comm = WebsocketCommunicator(application, URL, headers=headers)
        await comm.connect()
        hist = await comm.receive_json_from(timeout=2)
        assert len(hist["points"]) >= 2 and hist["sources"]["mem"] == "memory.usage_in_bytes"
        await comm.disconnect()
    async_to_sync(run)()
    assert _groups_empty()
    assert sampler_mod.get_sampler().subscribers == {}


def test_no_sampling_when_nobody_watches(kernel):
    async def run():
        await asyncio.sleep(0.3)
    async_to_sync(run)()
    assert kernel.reads == 0 and not sampler_mod.get_sampler().running


def test_many_viewers_one_sample_per_tick(kernel, viewer):
    headers = _headers(viewer)

    async def run():
        comms = [WebsocketCommunicator(application, URL, headers=headers) for _ in range(5)]
        for c in comms:
            await c.connect()
        for c in comms:
            await _next(c, events.SAMPLE)
        s = sampler_mod.get_sampler()
        assert s.subscribers == {CID: 5}
        reads, t0 = kernel.reads, asyncio.get_running_loop().time()
        await asyncio.sleep(0.5)
        ticks = (asyncio.get_running_loop().time() - t0) / 0.05
        assert kernel.reads - reads <= ticks + 1           # one read per tick, not per viewer
        for c in comms:
            await c.disconnect()
    async_to_sync(run)()
    assert _groups_empty() and not sampler_mod.get_sampler().running


def test_logout_stops_the_feed_and_the_sampling(kernel, viewer, settings):
    """The socket closes with 4401 and the sampler forgets the viewer at once."""
    from tests.dashboard.test_consumers import _logged_in
    settings.TERRARIUM_WS_RECHECK = 60               # the logout signal does it, not the timer
    client, headers = _logged_in(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await _next(comm, events.SAMPLE)
        assert sampler_mod.get_sampler().subscribers == {CID: 1}
        await asyncio.to_thread(client.post, "/logout/")
        while (out := await comm.receive_output(timeout=2))["type"] != "websocket.close":
            pass                                     # samples already on their way
        assert out["code"] == 4401
        assert sampler_mod.get_sampler().subscribers == {}
    async_to_sync(run)()
    assert _groups_empty()


def test_an_unknown_container_is_refused_and_not_sampled(kernel, viewer):
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, f"/ws/containers/{'d' * 64}/live/", headers=headers)
        await comm.connect()
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}
    async_to_sync(run)()
    assert kernel.reads == 0 and sampler_mod.get_sampler().subscribers == {}


def test_sockets_per_session_are_capped(kernel, viewer, settings):
    from tests.dashboard.test_consumers import _logged_in
    settings.TERRARIUM_WS_PER_SESSION = 2
    _, headers = _logged_in(viewer)

    async def run():
        socks = [WebsocketCommunicator(application, URL, headers=headers) for _ in range(3)]
        for s in socks[:2]:
            assert (await s.connect())[0]
            await _next(s, events.HISTORY)
        await socks[2].connect()
        assert await socks[2].receive_output(timeout=2) == {"type": "websocket.close", "code": 4429}
        await socks[0].disconnect()
        again = WebsocketCommunicator(application, URL, headers=headers)   # a place is free again
        assert (await again.connect())[0]
        await _next(again, events.HISTORY)
        await again.disconnect()
        await socks[1].disconnect()
    async_to_sync(run)()
    assert sampler_mod.get_sampler().subscribers == {} and _groups_empty()
