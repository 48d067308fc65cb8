"""The sampler's hold on the reader: what a container keeps open is released
when its last viewer leaves (internal) or its last lease goes (external)."""
import asyncio

from asgiref.sync import async_to_sync

from dashboard.live import sampler
from dashboard.live.sampler import SUBSCRIBE, UNSUBSCRIBE, Sampler
from dashboard.oom.memrecord import MemRecorder
from dashboard.oom.selectors import WatchTarget
from runtime import Sample


class Reader(sampler.Reader):
    """Counts reads; holds a 'descriptor' per container read until forget()."""

    def __init__(self, limit=None):
        self.held, self.forgotten, self.reads, self.limit = set(), [], [], limit

    def read(self, cid, tree=True):
        self.held.add(cid)
        self.reads.append((cid, tree))
        return (Sample.of("v1", {"memory_usage": 1, "memory_inactive_file": 0, "memory_limit": self.limit,
                                 "cpu_usage_ns": 1, "pids_current": 1, "pids_max": None}), [] if tree else None)

    def forget(self, cid):
        self.held.discard(cid)
        self.forgotten.append(cid)


class NullLayer:
    """A channel layer that drops what the sampler sends (history, samples)."""
    async def send(self, channel, msg):
        pass

    async def group_send(self, group, msg):
        pass


def no_layer(monkeypatch):
    monkeypatch.setattr("dashboard.live.sampler.get_channel_layer", lambda: NullLayer())


def test_last_viewer_leaving_releases_the_container():
    reader = Reader()
    s = Sampler(tick=0.01, keep=60, reader=reader)

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
    s = Sampler(tick=0.01, keep=60, reader=reader)

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
    s = Sampler(tick=0.01, keep=60, reader=reader)

    no_layer(monkeypatch)

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


def test_a_watched_and_limited_container_is_read_once_per_tick():
    """The live viewer of "a" and the OOM memory record of "a" and "b" (both
    limited): every tick reads each container once, through the one reader,
    the tree of "a" for its viewer; "b"'s tree only on its first sample (it
    is far from its limit).  Both consumers get their figures."""
    reader = Reader(limit=100 << 20)
    s = Sampler(tick=0.01, keep=60, reader=reader)
    rec = MemRecorder(interval=0.01)
    rec.targets = {c: WatchTarget(c, c, None, "", True) for c in ("a", "b")}
    s.add(rec)

    async def run():
        await s.subscribe("a")
        await s.stop()                                 # drive the ticks by hand
        for _ in range(3):
            reader.reads.clear()
            await s.tick_once()
            yield sorted(reader.reads)
    ticks = []

    async def collect():
        async for reads in run():
            ticks.append(reads)
    async_to_sync(collect)()
    assert ticks == [[("a", True), ("b", True)], [("a", True), ("b", False)], [("a", True), ("b", False)]]
    assert len(rec.points("a")) == len(rec.points("b")) == 3 and len(s.state["a"].points) == 3
    assert s.reads == 6 and s.samples_taken == 3
    # the viewer leaves: "a" stays open for the record; the record leaves: nothing is kept
    async_to_sync(s.unsubscribe)("a")
    assert reader.forgotten == [] and reader.held == {"a", "b"}
    s.remove(rec)
    s._release_unheld()
    assert sorted(reader.forgotten) == ["a", "b"] and reader.held == set()


def test_a_scrape_reuses_a_fresh_tick_and_keeps_only_what_it_read():
    """/metrics reads on demand through the sampler (read_now): a container a
    tick read within half a tick is not read again; what the scrape read
    stays open until a scrape no longer names it."""
    reader = Reader()
    s = Sampler(tick=10, keep=60, reader=reader)

    async def watch():
        await s.subscribe("a")
        await s.stop()
        await s.tick_once()
    async_to_sync(watch)()
    reader.reads.clear()
    got = s.read_now("metrics", ["a", "b"])
    assert reader.reads == [("b", False)]                  # "a": the tick's reading
    assert got["a"][0] is s.state["a"].prev_raw
    async_to_sync(s.unsubscribe)("a")
    assert reader.forgotten == []                          # the scrape still holds "a"
    s.read_now("metrics", ["b"])
    assert reader.forgotten == ["a"] and reader.held == {"b"}
    s.release_holder("metrics")
    assert reader.held == set()


def test_the_lists_usage_columns_cost_no_tree():
    """A list page's row (subscribe without the tree) is read without its
    processes and gets no tree; a detail page on the same container adds the
    tree for as long as it stays."""
    from dashboard.live import events
    reader = Reader()
    s = Sampler(tick=0.01, keep=60, reader=reader)

    async def tick():
        reader.reads.clear()
        evs = await s.tick_once()
        return reader.reads[:], [e["type"] for e in evs]

    async def run():
        await s.subscribe("a", tree=False)
        await s.stop()
        out = [await tick()]
        await s.subscribe("a")
        await s.stop()
        out.append(await tick())
        await s.unsubscribe("a")
        out.append(await tick())
        await s.unsubscribe("a", tree=False)
        return out
    assert async_to_sync(run)() == [([("a", False)], [events.SAMPLE]),
                                    ([("a", True)], [events.SAMPLE, events.PROCS]),
                                    ([("a", False)], [events.SAMPLE])]
    assert s.tree_viewers == {} and s.subscribers == {}


def test_through_a_subscription_the_record_of_a_watched_container_takes_the_viewers_frame():
    """Agent mode: the subscription carries the viewers' containers only; on
    the viewers' tick a watched and limited container's reading comes from
    its frame (one read), the other limited ones from the reader beside it;
    on the record's own ticks everything it wants comes from beside."""
    class Paced(Reader):
        paced, taken = True, None
    sub, side = Paced(limit=100 << 20), Reader(limit=100 << 20)
    s = Sampler(tick=0.01, keep=60, reader=sub, once=lambda: side)
    rec = MemRecorder(interval=0.01)
    rec.targets = {c: WatchTarget(c, c, None, "", True) for c in ("a", "b")}
    s.add(rec)

    async def run():
        await s.subscribe("a")
        await s.stop()
        await s.tick_once()                              # the viewers' tick and the record's
        first = (sorted(sub.reads), sorted(side.reads))
        sub.reads.clear()
        side.reads.clear()
        await s.tick_once((False, [rec]))                # the record's alone
        return first, (sorted(sub.reads), sorted(side.reads))
    first, second = async_to_sync(run)()
    assert first == ([("a", True)], [("b", True)])
    assert second == ([], [("a", False), ("b", False)])
    assert len(rec.points("a")) == 2 and len(s.state["a"].points) == 1


def test_external_leases_say_whether_the_viewer_shows_the_tree(monkeypatch):
    """`manage.py sampler`: a list's lease ("tree": false) costs no tree; a
    detail page's lease on the same container adds it until it goes."""
    s = Sampler(tick=0.01, keep=60, reader=Reader())

    no_layer(monkeypatch)

    async def run():
        await s.handle({"type": SUBSCRIBE, "container": "a", "reply": "list", "lease": 30, "tree": False})
        seen = [(dict(s.subscribers), dict(s.tree_viewers))]
        await s.handle({"type": SUBSCRIBE, "container": "a", "reply": "page", "lease": 30})
        seen.append((dict(s.subscribers), dict(s.tree_viewers)))
        await s.handle({"type": UNSUBSCRIBE, "container": "a", "reply": "page"})
        seen.append((dict(s.subscribers), dict(s.tree_viewers)))
        return seen
    assert async_to_sync(run)() == [({"a": 1}, {}), ({"a": 2}, {"a": 1}), ({"a": 1}, {})]


def test_a_first_viewer_wakes_a_loop_asleep_until_a_once_a_minute_consumer(monkeypatch):
    """The loop sleeps until the next consumer is due (the minute history: a
    minute); a viewer who comes meanwhile gets a sample within a tick, through
    subscribe() (internal) and a lease (`manage.py sampler`, which has only the
    history: before the wake-up it sampled nothing for a whole minute)."""
    class Minutely(sampler.Consumer):
        name, every = "minutely", 60.0

    no_layer(monkeypatch)

    async def run(join):
        reader = Reader()
        s = Sampler(tick=0.05, keep=60, reader=reader)
        s.consumers.append(Minutely())
        s._serving = True                              # as serve() runs it: the loop lives on its own
        s.start()
        await asyncio.sleep(0.2)                       # the consumer's first pass; then asleep for 60 s
        await join(s)
        await asyncio.sleep(0.5)
        n = s.ticks
        s._serving = False
        await s.stop()
        return n

    async def internal(s):
        await s.subscribe("a")

    async def external(s):
        await s.handle({"type": SUBSCRIBE, "container": "a", "reply": "ch1", "lease": 30})
    assert async_to_sync(run)(internal) >= 3
    assert async_to_sync(run)(external) >= 3


def test_one_off_readings_share_a_reader_until_it_fails():
    """read_once (the minute pass, an OOM's tree) goes through one reader made
    on first use and kept (runtime.stats remembers each container's files and
    last bytes there, with no descriptor); a reader that fails (the agent went)
    is closed and the next call makes another."""
    from runtime import TerrariumError
    made = []

    class Once(Reader):
        broken, closed = False, False

        def read_many(self, ids, tree=True, keep=True):
            assert keep is False
            if self.broken:
                raise TerrariumError("agent went away")
            return super().read_many(ids, tree, keep)

        def close(self):
            self.closed = True

    def once():
        made.append(Once())
        return made[-1]
    s = Sampler(tick=0.01, keep=60, reader=Reader(), once=once)
    assert set(s.read_once(["a", "b"])) == {"a", "b"}
    assert set(s.read_once(["c"], tree=True)) == {"c"}
    assert len(made) == 1 and made[0].reads == [("a", False), ("b", False), ("c", True)]
    made[0].broken = True
    got = s.read_once(["a"])
    assert isinstance(got["a"], sampler.selectors.NotSampled) and made[0].closed
    assert set(s.read_once(["a"])) == {"a"} and len(made) == 2 and not made[1].closed
