"""ONE sampler per host: samples the containers someone watches, once per
tick, and publishes to their `container.<id>` groups.  Viewers cost a send,
not a sample.

Where it runs (setting TERRARIUM_SAMPLER):

- "internal" (default, the in-memory channel layer): inside the Daphne
  process; the first subscriber starts it on the running loop, the last one
  to leave stops it.
- "external" (the Redis channel layer, several Daphne workers): `manage.py
  sampler` runs it as its own process.  Consumers do not sample; they send
  ``sampler.subscribe`` / ``sampler.unsubscribe`` to the ``sampler`` channel
  on behalf of their viewer, renewing the subscription every lease/3 seconds
  (a lease: a Daphne that dies without unsubscribing stops costing samples
  after TERRARIUM_SAMPLER_LEASE seconds, default 15).  The sampler answers a
  new subscription with the history, sent to the consumer's own channel.

Blocking reads run in a worker thread, never on the event loop, one
``read_many`` per tick for every watched container.  They go through the
runtime's reader (runtime.stats' kept-open descriptors re-read with pread,
unchanged process sets and processes skipped), or, with
TERRARIUM_SAMPLER_READER="selectors", through dashboard.live.selectors (every
file opened and read again each time: the reference path, and the seam tests
replace).  In agent mode the reader is a subscription
(selectors.sample_stream): the agent reads the watched set on its own clock,
every tick, and pushes what changed; the sampler sends the set only when it
changes, and its ticks follow the agent's frames (``paced``) instead of a
timer of its own.  A point's ``t`` is when the tick's read began (the
agent's, through the agent), so sample → browser delay counts the read and
the way to the web tier.

Each event is published as ``{"type", "id", "json"}``: the event is encoded to
JSON once per tick, whatever the number of viewers, and consumers forward the
text as is.  Every sample carries ``seq``, the sampler's count of samples of
that container (the same figure on every worker's socket: one sample, many
viewers).  The tree (``container.procs``) is published when it changed.

The last ``TERRARIUM_LIVE_HISTORY`` seconds (default 15 min) per container
stay in memory, so a reload or a new tab gets the recent past on connect.

The live viewers are one of the sampler's consumers.  The others are
declared (``Sampler.add``) where the app is wired (dashboard/live/wiring.py),
each a ``Consumer``: how often it reads, whether the reader keeps its
containers' files open between readings, and on each reading what it wants
(``{id: with the tree?}``).  A tick reads the union of what the consumers
due then want, once -- a container watched by a viewer and recorded by the
OOM memory record is read by one reader once, its tree read if either
wants it -- and hands each consumer the readings of its ids.  So the OOM
memory record (dashboard/oom/memrecord.py: limited containers, memory
figures, the tree only near the limit) and the minute history
(dashboard/live/history.py: every running container nobody watches, no
tree, once a minute, nothing kept open) read through here, and no consumer
module imports another.  The loop runs while someone watches, or a consumer
``holds`` containers (the OOM memory record, while its watcher runs); the
passive ones (the history) read only while it runs.

Settings: TERRARIUM_LIVE_TICK (seconds, default 1.0), TERRARIUM_LIVE_HISTORY
(seconds, default 900), TERRARIUM_SAMPLER, TERRARIUM_SAMPLER_LEASE,
TERRARIUM_SAMPLER_READER.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings

from runtime import Sample, TerrariumError

from . import events, metrics, selectors

log = logging.getLogger(__name__)

SAMPLER_CHANNEL = "sampler"          # where consumers ask the external sampler
SUBSCRIBE = "sampler.subscribe"
UNSUBSCRIBE = "sampler.unsubscribe"


def tick_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_LIVE_TICK", 1.0))


def history_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_LIVE_HISTORY", 900.0))


def external() -> bool:
    """True when `manage.py sampler` samples and consumers only ask it."""
    return getattr(settings, "TERRARIUM_SAMPLER", "internal") == "external"


def lease_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_SAMPLER_LEASE", 15.0))


_encode = json.JSONEncoder(separators=(",", ":")).encode    # made once: json.dumps with
                                                           # separators builds one per call


def wire(ev: dict) -> dict:
    """A group message carrying the event as JSON text, encoded once."""
    return {"type": ev["type"], "id": ev["id"], "json": _encode(ev)}


class Reader:
    """What the sampler reads through: read(cid, tree) -> (raw, forest) or
    NotSampled; read_many(ids) -> {cid: (raw, forest) or NotSampled}, the
    sampler's one call per tick; forget(cid) when nobody watches it."""

    def read_many(self, ids, tree: bool = True, keep: bool = True) -> dict:
        out = {}
        for cid in ids:
            try:
                out[cid] = self.read(cid, tree)
            except selectors.NotSampled as e:
                out[cid] = e
        return out

    def forget(self, cid: str) -> None:
        pass

    def close(self) -> None:
        pass


class SelectorsReader(Reader):
    """Reads through dashboard.live.selectors: every file opened and read each tick."""

    def read(self, cid: str, tree: bool = True) -> tuple[Sample, list | None]:
        raw = selectors.container_raw_sample(container_id=cid)
        return raw, selectors.container_process_forest(container_id=cid) if tree else None


class StatsReader(Reader):
    """Reads through the runtime's reader (runtime.stats, in-process or in the
    agent): kept-open descriptors, unchanged work skipped.  Through the agent
    the reader is a subscription (selectors.sample_stream(interval)): the
    agent ticks and pushes, a read waits for its next frame (``paced``) and
    ``taken`` is when the agent's read began."""

    def __init__(self, reader=None, interval: float | None = None):
        self._reader = reader
        self.interval = interval          # the sampler's tick (set by the Sampler)

    @property
    def paced(self) -> bool:
        return getattr(self._reader, "paced", False)

    @property
    def taken(self):
        return getattr(self._reader, "taken", None)

    def read(self, cid: str, tree: bool = True) -> tuple[dict, list | None]:
        got = self.read_many([cid], tree)[cid]
        if isinstance(got, selectors.NotSampled):
            raise got
        return got

    def read_many(self, ids, tree: bool = True) -> dict:
        try:
            if self._reader is None:
                self._reader = (selectors.sample_stream(self.interval) if self.interval
                                else selectors.stats_reader())
            got = self._reader.read_many(ids, tree)
        except (TerrariumError, OSError) as e:        # the agent is not there
            return {cid: selectors.NotSampled(str(e)) for cid in ids}
        return {cid: selectors.NotSampled(str(r)) if isinstance(r, BaseException) else r
                for cid, r in got.items()}

    def forget(self, cid: str) -> None:
        if self._reader is not None:
            try:
                self._reader.forget(cid)
            except (TerrariumError, OSError):
                pass

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


class Consumer:
    """A reader of the one sampler besides the live viewers (subclass it).

    ``every``: seconds between its readings; ``keep``: the reader keeps its
    containers' files open between readings (False: opened and closed for
    each, as a once-a-minute pass wants); ``passive``: it reads only while
    the loop runs for someone else.  The sampler calls, on the loop,
    ``wants(watched)`` when it is due -- {id: with the tree} (``watched``:
    the live viewers' ids) -- then, in its worker thread, ``take(got, mono,
    wall)`` with {id: (raw, forest) or NotSampled} of those ids (the forest
    may be there unasked: another consumer wanted it), and on the loop again
    ``after()``.  ``holds()``: the ids whose kept files it still needs
    between its readings."""

    name = "consumer"
    every = 1.0
    keep = True
    passive = False

    def wants(self, watched) -> dict[str, bool]:
        return {}

    def holds(self) -> set[str]:
        return set()

    def take(self, got: dict, mono: float, wall: float) -> None:
        pass

    async def after(self) -> None:
        pass

    def next_after(self, now: float) -> float:
        """Loop time of its next reading after one at ``now``."""
        return now + self.every


def make_reader():
    if getattr(settings, "TERRARIUM_SAMPLER_READER", "stats") == "selectors":
        return SelectorsReader()
    return StatsReader()


@dataclass
class _Watched:
    """What the sampler keeps for one container."""
    points: deque
    sources: dict = field(default_factory=dict)
    tree: list | None = None
    prev_raw: Sample | None = None
    prev_mono: float | None = None
    prev_ticks: dict = field(default_factory=dict)
    seq: int = 0                          # samples taken of this container
    forest: list | None = None            # the forest the tree was made from
    raw_sources: Mapping[str, str] | None = None   # the raw ``sources`` the point sources came from
    idle: bool = False                    # every process in ``tree`` shows a CPU share of 0
    figures: dict | None = None           # the last sample's raw figures (metrics.figures)
    figure_sources: dict = field(default_factory=dict)


class Sampler:
    """Subscriptions (reference-counted per container), history and the tick loop."""

    def __init__(self, *, tick: float | None = None, keep: float | None = None, reader=None,
                 once=None):
        self.tick = tick or tick_seconds()
        self.once = once or selectors.stats_reader    # makes read_once's reader
        self.keep = keep or history_seconds()
        self.reader = reader or make_reader()
        if getattr(self.reader, "interval", 0) is None:
            self.reader.interval = self.tick      # a subscription ticks with the sampler
        self._reader_lock = threading.Lock()     # the reader is not thread-safe
        self._once_lock = threading.Lock()       # read_once's reader (nothing kept open)
        self._once_reader = None
        self.subscribers: dict[str, int] = {}
        self.tree_viewers: dict[str, int] = {}   # subscribers that show the tree (not the list's)
        self.tree_leases: dict[str, set[str]] = {}   # external: container -> channels with the tree
        self.leases: dict[str, dict[str, float]] = {}   # external: container -> {channel: expiry}
        self.state: dict[str, _Watched] = {}
        self.samples_taken = 0               # raw samples read, for tests and bench/
        self.reads = 0                       # containers read by the kept reader, for tests
        self.ticks = 0
        self.consumers: list[Consumer] = []
        self.point_hooks: list = []          # f(cid, point) per live point, in the sampler's thread
        self._due: dict[int, float] = {}     # id(consumer) -> loop time of its next reading
        self._live_at: float | None = None   # loop time of the viewers' next tick
        self._kept: set[str] = set()         # ids the kept reader holds files of
        self.holders: dict[str, set[str]] = {}   # read_now's holders (/metrics) -> their ids
        self._fresh: dict[str, tuple[float, tuple]] = {}   # id -> (monotonic, its last kept reading)
        self._side = None                    # read_now's reader while the kept one is a subscription
        self._side_kept: set[str] = set()
        self._task: asyncio.Task | None = None
        # set to end the loop's wait at once: a first viewer arrived while it
        # slept until a consumer's next time (the minute history's: a minute)
        self._wake: asyncio.Event | None = None
        self._serving = False
        self._paced: float | None = None      # the last tick followed the reader's clock: the
                                              # monotonic time its read began

    # ------------------------------------------------------------ consumers
    def add(self, consumer: Consumer) -> None:
        """Declare a consumer (its first reading on the next tick)."""
        if consumer not in self.consumers:
            self.consumers.append(consumer)
            self._due.pop(id(consumer), None)

    def remove(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            self._due.pop(id(consumer), None)

    def start(self) -> None:
        """Run the loop on the running event loop (a consumer that holds
        containers starts it; it stops when nobody needs it)."""
        self._ensure_running()

    def _needed(self) -> bool:
        return bool(self.subscribers or self._serving
                    or any(not c.passive and c.holds() for c in self.consumers))

    def _held(self) -> set[str]:
        """Ids whose kept files somebody still needs."""
        out = set(self.subscribers)
        for c in self.consumers:
            if c.keep:
                out |= c.holds()
        for ids in self.holders.values():
            out |= ids
        return out

    def read_now(self, holder: str, ids, max_age: float | None = None) -> dict:
        """{id: (raw, forest or None) or NotSampled} of ``ids`` now, no tree
        asked, for a consumer that reads on demand (/metrics, on scrape): a
        container a tick read less than ``max_age`` seconds ago (half a tick
        by default) is not read again; the others through the kept reader
        (a subscription in agent mode cannot take reads beside its ticks:
        then a reader of its own).  ``holder`` keeps exactly these ids' files
        open until its next call (or release_holder)."""
        ids = list(ids)
        max_age = self.tick / 2 if max_age is None else max_age
        with self._reader_lock:
            self.holders[holder] = set(ids)
            now = time.monotonic()
            out: dict = {}
            for cid in ids:
                hit = self._fresh.get(cid)
                if hit is not None and now - hit[0] <= max_age:
                    out[cid] = hit[1]
            rest = [cid for cid in ids if cid not in out]
            got = self._read_kept(dict.fromkeys(rest, False))
            self._release_locked()
        out.update(got)
        return {cid: _sampled(r) for cid, r in out.items()}

    def release_holder(self, holder: str) -> None:
        """read_now's holder needs nothing any more."""
        with self._reader_lock:
            self.holders.pop(holder, None)
            self._release_locked()

    def _read_side(self, ids: list[str], tree: bool = False) -> dict:
        """Read through the side reader: what the subscription (agent mode)
        does not carry -- the containers no viewer watches -- with files kept
        open, a request per tick (per 512 containers)."""
        if not ids:
            return {}
        if self._side is None:
            self._side = self.once()
        try:
            got = self._side.read_many(ids, tree)
        except (TerrariumError, OSError) as e:        # the agent is not there
            self._side.close()
            self._side, self._side_kept = None, set()
            return {cid: selectors.NotSampled(str(e)) for cid in ids}
        self.reads += len(got)
        self._side_kept.update(ids)
        return got

    def _release_locked(self) -> None:
        """Close what nobody holds (under the reader's lock)."""
        held = self._held()
        for cid in self._kept - held:
            self.reader.forget(cid)
            self._fresh.pop(cid, None)
        self._kept &= held
        if self._side is not None:
            for cid in self._side_kept - held:
                self._side.forget(cid)
            self._side_kept &= held

    def read_once(self, ids, tree: bool = False) -> dict:
        """{id: (raw, forest) or NotSampled} with every file opened for it and
        closed again (a one-off: the due consumers' pass, the tree at an OOM's
        start), beside the ticks' reader (in agent mode that one is a
        subscription).  Through one reader kept between calls: it holds no
        descriptor, but remembers each container's cgroup, files and last
        bytes for a few minutes (runtime.stats.StatsReader, ``once_for``), so
        the next minute's pass over containers that stood still reads what a
        tick reads, not every file again (bench/README.md, docker_bench)."""
        ids = list(ids)
        if not ids:
            return {}
        with self._once_lock:
            if self._once_reader is None:
                self._once_reader = self.once()
            try:
                got = self._once_reader.read_many(ids, tree, keep=False)
            except (TerrariumError, OSError) as e:     # the agent is not there: a new session next time
                self._once_reader.close()
                self._once_reader = None
                return {cid: selectors.NotSampled(str(e)) for cid in ids}
        return {cid: selectors.NotSampled(str(r)) if isinstance(r, BaseException) else r
                for cid, r in got.items()}

    # ------------------------------------------------------- subscriptions
    async def subscribe(self, container_id: str, tree: bool = True) -> dict:
        """Count one more viewer (``tree``: one that shows the process tree;
        the list's usage columns do not); start the loop if it was idle.
        → the history event."""
        self.subscribers[container_id] = self.subscribers.get(container_id, 0) + 1
        if tree:
            self.tree_viewers[container_id] = self.tree_viewers.get(container_id, 0) + 1
        self._ensure_running()
        self._poke()
        return self.history(container_id)

    async def unsubscribe(self, container_id: str, tree: bool = True) -> None:
        """One viewer fewer; the last one's leaving releases the container's
        descriptors, and the loop stops when nobody watches anything."""
        if tree:
            t = self.tree_viewers.get(container_id, 0) - 1
            if t > 0:
                self.tree_viewers[container_id] = t
            else:
                self.tree_viewers.pop(container_id, None)
        n = self.subscribers.get(container_id, 0) - 1
        if n > 0:
            self.subscribers[container_id] = n
            return
        self.subscribers.pop(container_id, None)
        await self.release(container_id)
        if not self._needed():
            await self.stop()

    async def release(self, container_id: str) -> None:
        """Close what the reader keeps open for a container nobody watches (its
        history stays).  In a thread, under the reader's lock: a tick may be
        reading in another thread, even one whose task was cancelled."""
        await asyncio.to_thread(self._forget, container_id)

    def _forget(self, container_id: str) -> None:
        with self._reader_lock:
            # not subscribed again meanwhile, nor kept by another consumer (nor
            # released already by a tick that saw nobody hold it)
            if container_id in self._kept and container_id not in self._held():
                self.reader.forget(container_id)
                self._kept.discard(container_id)
                self._fresh.pop(container_id, None)

    def history(self, container_id: str) -> dict:
        w = self.state.get(container_id)
        if w is None:
            return events.history_event(container_id, [], {}, None)
        self._prune(w, time.time())
        return events.history_event(container_id, list(w.points), w.sources, w.tree,
                                    w.figures, w.figure_sources)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="terrarium-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            try:
                await task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------ external (own process)
    async def handle(self, msg: dict) -> None:
        """A ``sampler.subscribe`` / ``sampler.unsubscribe`` from a consumer:
        {"type", "container": id, "reply": consumer channel, "tree": false for
        a viewer without the tree (default true)}.  A new lease is answered
        with the history on the reply channel; a renewal is not."""
        cid, reply = msg.get("container"), msg.get("reply")
        if not isinstance(cid, str) or not isinstance(reply, str):
            return
        leases = self.leases.setdefault(cid, {})
        trees = self.tree_leases.setdefault(cid, set())
        if msg.get("type") == SUBSCRIBE:
            new = reply not in leases
            leases[reply] = time.monotonic() + float(msg.get("lease") or lease_seconds())
            if msg.get("tree", True) is False:
                trees.discard(reply)
            else:
                trees.add(reply)
            self._count(cid)
            if new:
                self._poke()
                await get_channel_layer().send(reply, wire(self.history(cid)))
        elif msg.get("type") == UNSUBSCRIBE:
            leases.pop(reply, None)
            trees.discard(reply)
            if self._count(cid):
                await self.release(cid)

    def _count(self, cid: str) -> bool:
        """Subscribers (and those with the tree) from the leases; → True when the last one went."""
        leases = self.leases.get(cid) or {}
        trees = self.tree_leases.get(cid, set()) & leases.keys()
        if trees:
            self.tree_leases[cid], self.tree_viewers[cid] = trees, len(trees)
        else:
            self.tree_leases.pop(cid, None)
            self.tree_viewers.pop(cid, None)
        if leases:
            self.subscribers[cid] = len(leases)
            return False
        self.leases.pop(cid, None)
        return self.subscribers.pop(cid, None) is not None

    def expire_leases(self, now: float | None = None) -> list[str]:
        """Drop expired leases; → the containers nobody watches any more."""
        now = time.monotonic() if now is None else now
        dropped = []
        for cid in list(self.leases):
            leases = self.leases[cid]
            for ch in [c for c, t in leases.items() if t < now]:
                del leases[ch]
            if self._count(cid):
                dropped.append(cid)
        return dropped

    async def serve(self, *, ready=None) -> None:
        """Run as `manage.py sampler` does: take subscriptions from the
        ``sampler`` channel and tick for as long as the process lives."""
        self._serving = True
        layer = get_channel_layer()
        loop_task = asyncio.get_running_loop().create_task(self._run(), name="terrarium-sampler")
        self._task = loop_task
        if ready is not None:
            ready()
        try:
            while True:
                msg = await layer.receive(SAMPLER_CHANNEL)
                try:
                    await self.handle(msg)
                except Exception:                      # noqa: BLE001 - one bad message
                    log.exception("sampler: bad message %r", msg)
        finally:
            self._serving = False
            loop_task.cancel()

    # ----------------------------------------------------------- the loop
    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Until the next time something is due, or until _poke()."""
        wake = self._wake
        if wake is None:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):       # not wait_for: on 3.11 it can drop a cancel
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()

    async def _run(self) -> None:
        self._wake = asyncio.Event()          # of this loop
        try:
            await self._loop_ticks()
        finally:
            self._release_unheld()

    def _release_unheld(self) -> None:
        """Close what the reader keeps of containers nobody needs (the loop
        stopped: a consumer that left, a viewer whose leaving it did not see)."""
        with self._reader_lock:
            self._release_locked()

    async def _loop_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        while self._needed():
            try:
                if self.leases:
                    for cid in self.expire_leases():
                        await self.release(cid)
                await self.tick_once(self._take_due(loop.time()))
            except Exception:                      # noqa: BLE001 - keep the feed alive, say why
                log.exception("sampler tick failed")
            if self._paced is not None:            # the reader's clock paces the ticks: wait
                # for its next frame from shortly before it is due, not at once (a
                # worker thread waking while this tick's events go out competes
                # with them for the GIL: +0.8 ms sample -> browser at p50 in live_bench)
                wake = min(self._paced + 0.8 * self.tick, self._next_due(loop.time(), live=False))
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
                continue
            await self._sleep(max(0.0, self._next_due(loop.time()) - loop.time()))

    def _take_due(self, now: float) -> tuple[bool, list[Consumer]]:
        """(the viewers' tick is due, the consumers due) at loop time ``now``;
        their next times are set.  Behind time a reading is skipped, not burst."""
        eps = 0.002
        # frames of a subscription come every base tick, give or take
        live_eps = self.tick / 2 if self._paced is not None else eps
        live = False
        if not self.subscribers:
            self._live_at = None                  # the first viewer's tick comes at once
        elif self._live_at is None or now >= self._live_at - live_eps:
            live = True
            nxt = (self._live_at or now) + self.tick
            self._live_at = nxt if nxt > now else now + self.tick
        due = []
        for c in self.consumers:
            at = self._due.get(id(c))
            if at is None or now >= at - eps:
                self._due[id(c)] = c.next_after(now)
                due.append(c)
        return live, due

    def _next_due(self, now: float, live: bool = True) -> float:
        times = [self._due.get(id(c), now) for c in self.consumers]
        if live and self.subscribers:
            times.append(self._live_at if self._live_at is not None else now)
        return min(times) if times else now + self.tick

    async def tick_once(self, due: tuple[bool, list[Consumer]] | None = None) -> list[dict]:
        """One tick (in a thread): read what the viewers (if ``due`` says they
        are due; by default they and every consumer are) and the due consumers
        want, once each, and hand it out; publish the viewers' events.
        → the viewers' events."""
        live, consumers = due if due is not None else (True, list(self.consumers))
        ids = list(self.subscribers) if live else []
        now = time.time()
        self._paced = None
        gone = []
        for cid in [c for c in self.state if c not in self.subscribers]:
            if not self._prune(self.state[cid], now):
                del self.state[cid]               # nobody watched it for the whole window
                gone.append(cid)
        if not ids and not gone and not consumers:
            return []
        for cid in ids:
            self.state.setdefault(cid, _Watched(points=deque(maxlen=self._maxlen())))
        plan: list = []                           # (consumer, its wants), filled in the thread
        out = await asyncio.to_thread(self._collect, ids, gone, consumers, plan, frozenset(self.subscribers))
        layer = get_channel_layer()
        if ids:
            self.ticks += 1
        for cid, evs, msgs in out:
            w = self.state[cid]
            for ev in evs:                        # history is touched on the loop only
                if ev["type"] == events.SAMPLE:
                    w.points.append(ev["point"])
            if layer is not None:
                for msg in msgs:
                    await layer.group_send(events.group(cid), msg)
        for c, _ in plan:
            try:
                await c.after()
            except Exception:                      # noqa: BLE001 - one consumer must not stop the rest
                log.exception("sampler consumer %s failed", c.name)
        return [ev for _, evs, _ in out for ev in evs]

    # ----------------------------------------------- blocking part (thread)
    def _read_kept(self, kept: dict[str, bool], live: bool = False) -> dict:
        """The readings of ``kept`` ({id: with the tree}), files kept open: the
        ids with a tree in one read_many, the rest in another.  A subscription
        (agent mode: the agent ticks at the viewers' tick and pushes) carries
        the viewers' containers only, every one of them each time (its watch
        set stays put; the agent reads a tree only where something ran); the
        others, and every one on a tick that is not the viewers', go through a
        reader beside it (a request per tick).  ``live``: the viewers' tick."""
        if not kept:
            return {}
        reader, got = self.reader, {}
        if getattr(reader, "paced", False):
            if live and self.subscribers:
                got.update(reader.read_many(sorted(self.subscribers), True))
                self._kept.update(self.subscribers)
                self.reads += len(got)
            for tree in (True, False):
                got.update(self._read_side([c for c, t in kept.items() if t is tree and c not in got], tree))
        else:
            for tree in (True, False):
                part = [cid for cid, t in kept.items() if t is tree]
                if part:
                    got.update(reader.read_many(part, tree))
            self._kept.update(kept)
            self.reads += len(got)
        now = time.monotonic()
        fresh = self._fresh
        for cid, r in got.items():
            if isinstance(r, BaseException):
                fresh.pop(cid, None)
            else:
                fresh[cid] = (now, r)
        return got

    def _collect(self, ids: list[str], gone: list[str] = (), consumers=(), plan=None, watched=None
                 ) -> list[tuple[str, list[dict], list[dict]]]:
        """Read, compute and encode (all off the event loop).  ``consumers``:
        those due, asked here what they want (the history lists the running
        containers: blocking); ``plan`` gets (consumer, its wants) of those
        that want something.  → (id, events, wire messages) of the viewers'."""
        plan = [] if plan is None else plan
        watched = frozenset(ids) if watched is None else watched
        for c in consumers:
            try:
                w = c.wants(watched)
            except Exception:                      # noqa: BLE001 - one consumer must not stop the rest
                log.exception("sampler consumer %s failed", c.name)
                continue
            if w:
                plan.append((c, w))
        with self._reader_lock:
            held = self._held()
            for cid in gone:
                if cid not in held:
                    self.reader.forget(cid)
                    self._kept.discard(cid)
                    self._fresh.pop(cid, None)
            # (one who left since the tick began was released: do not reopen it)
            ids = [cid for cid in ids if cid in self.subscribers]
            kept: dict[str, bool] = {cid: cid in self.tree_viewers for cid in ids}
            once: dict[str, bool] = {}
            for c, w in plan:
                into = kept if c.keep else once
                for cid, tree in w.items():
                    into[cid] = into.get(cid, False) or tree
            mono, wall = time.monotonic(), time.time()
            got = self._read_kept(kept, live=bool(ids))
            taken = getattr(self.reader, "taken", None) if ids else None
            self._paced = taken[0] if taken is not None and self.subscribers else None
            if taken is not None:                 # a subscription's frame: when the agent read
                mono, wall = taken
            read = [(cid, self._sample_one(cid, _sampled(got[cid]), mono, wall)) for cid in ids]
            self._release_locked()                # nobody needs these files any more
        once = {cid: t for cid, t in once.items() if cid not in got}
        if once:
            got.update(self.read_once(list(once), any(once.values())))
        out = []
        for cid, evs in read:
            out.append((cid, evs, [wire(ev) for ev in evs]))
            if evs[0]["type"] == events.SAMPLE:
                for hook in self.point_hooks:     # the down-sampled DB history
                    hook(cid, evs[0]["point"])
        for c, w in plan:
            try:
                c.take({cid: _sampled(got[cid]) for cid in w if cid in got}, mono, wall)
            except Exception:                      # noqa: BLE001 - one consumer must not stop the rest
                log.exception("sampler consumer %s failed", c.name)
        return out

    def _sample_one(self, cid: str, got, mono: float, wall: float) -> list[dict]:
        """One container's events from its reading (taken at mono/wall), or from NotSampled."""
        w = self.state[cid]
        if isinstance(got, selectors.NotSampled):
            w.prev_raw = w.prev_mono = w.forest = None
            w.prev_ticks, w.idle = {}, False
            return [events.gone_event(cid, str(got))]
        raw, forest = got
        self.samples_taken += 1
        seconds = mono - w.prev_mono if w.prev_mono is not None else 0.0
        pt = metrics.point(w.prev_raw if seconds > 0 else None, raw, seconds, wall)
        w.seq += 1
        pt["seq"] = w.seq
        src = raw.sources
        changed = src is not w.raw_sources or not w.sources
        if changed:                            # runtime.stats shares one sources dict
            w.sources, w.raw_sources = metrics.point_sources(raw), src
            w.figure_sources = metrics.figure_sources(raw)
        # The figures go out when one moved (an idle container's seldom do: one
        # dict comparison, not ~50 more keys to build and encode every tick).
        figs = None
        if changed or w.figures is None or raw != w.prev_raw:
            figs = w.figures = metrics.figures(raw)
        w.prev_raw, w.prev_mono = raw, mono
        out = [events.sample_event(cid, pt, w.sources if changed else None, figs,
                                   w.figure_sources if changed else None)]
        if cid not in self.tree_viewers:          # nobody shows it: none read (or made)
            w.forest = w.tree = None
            w.prev_ticks, w.idle = {}, False
            return out
        # The tree: unchanged processes (the same forest object from runtime.stats)
        # used no CPU since last tick; once their shares read 0 the payload is
        # the same as last tick's and is not sent again.
        if forest is w.forest and w.idle:
            return out
        tree, w.prev_ticks = metrics.forest_json(forest, w.prev_ticks, seconds)
        w.forest, w.tree, w.idle = forest, tree, _idle(tree)
        out.append(events.procs_event(cid, tree))
        return out

    # -------------------------------------------------------------- helpers
    def _maxlen(self) -> int:
        return int(self.keep / self.tick) + 5

    def _prune(self, w: _Watched, now: float) -> bool:
        """Drop points older than the window; → whether any are left."""
        while w.points and w.points[0]["t"] < now - self.keep:
            w.points.popleft()
        return bool(w.points)


def _sampled(got):
    """A reading, or the error of one as NotSampled."""
    if isinstance(got, BaseException) and not isinstance(got, selectors.NotSampled):
        return selectors.NotSampled(str(got))
    return got


def _idle(tree: list) -> bool:
    """Every process in the payload shows a CPU share of 0 (not None)."""
    stack = list(tree)
    while stack:
        n = stack.pop()
        if n["cpu"] != 0:
            return False
        stack.extend(n["children"])
    return True


_sampler: Sampler | None = None
_factory = Sampler


def set_factory(make) -> None:
    """How get_sampler makes the process's sampler (dashboard/live/wiring.py:
    with its consumers declared)."""
    global _factory
    _factory = make


_made = threading.Lock()


def get_sampler() -> Sampler:
    """The process's one sampler (/metrics asks from a view's thread)."""
    global _sampler
    if _sampler is None:
        with _made:
            if _sampler is None:
                _sampler = _factory()
    return _sampler


def reset_sampler() -> None:
    """Forget the sampler (tests change settings between runs)."""
    global _sampler
    _sampler = None
