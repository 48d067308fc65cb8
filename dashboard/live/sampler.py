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
The down-sampled DB history (dashboard.live.history) gets every point of a
watched container, and, once a minute while the loop runs, one cgroup read
of every running container nobody watches (``history.minute_pass``).

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
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings

from runtime import TerrariumError

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

    def read_many(self, ids, tree: bool = True) -> dict:
        out = {}
        for cid in ids:
            try:
                out[cid] = self.read(cid, tree)
            except selectors.NotSampled as e:
                out[cid] = e
        return out

    def forget(self, cid: str) -> None:
        pass


class SelectorsReader(Reader):
    """Reads through dashboard.live.selectors: every file opened and read each tick."""

    def read(self, cid: str, tree: bool = True) -> tuple[dict, list | None]:
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


def _history_hook(name: str = "record"):
    """dashboard.live.history.record (one call per point, in the sampler's
    thread) or .minute_pass (once a minute), if that module is there."""
    try:
        from . import history
    except ImportError:
        return None
    return getattr(history, name, None)


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
    prev_raw: dict | None = None
    prev_mono: float | None = None
    prev_ticks: dict = field(default_factory=dict)
    seq: int = 0                          # samples taken of this container
    forest: list | None = None            # the forest the tree was made from
    raw_sources: dict | None = None       # the raw ``sources`` the point sources came from
    idle: bool = False                    # every process in ``tree`` shows a CPU share of 0
    figures: dict | None = None           # the last sample's raw figures (metrics.figures)
    figure_sources: dict = field(default_factory=dict)


class Sampler:
    """Subscriptions (reference-counted per container), history and the tick loop."""

    def __init__(self, *, tick: float | None = None, keep: float | None = None, reader=None,
                 record=None, minute_pass=None):
        self.tick = tick or tick_seconds()
        self.keep = keep or history_seconds()
        self.reader = reader or make_reader()
        if getattr(self.reader, "interval", 0) is None:
            self.reader.interval = self.tick      # a subscription ticks with the sampler
        self._reader_lock = threading.Lock()     # the reader is not thread-safe
        self.subscribers: dict[str, int] = {}
        self.leases: dict[str, dict[str, float]] = {}   # external: container -> {channel: expiry}
        self.state: dict[str, _Watched] = {}
        self.samples_taken = 0               # raw samples read, for tests and bench/
        self.ticks = 0
        self._task: asyncio.Task | None = None
        self._serving = False
        self.record = _history_hook() if record is None else (record or None)
        # once a minute, the containers nobody watches (history.minute_pass(skip=watched));
        # off with record=False unless given
        if minute_pass is None:
            minute_pass = _history_hook("minute_pass") if record is None else None
        self.minute_pass = minute_pass or None
        self.passes = 0                       # minute passes run, for tests
        self._pass_at: float | None = None    # loop time of the next one
        self._paced: float | None = None      # the last tick followed the reader's clock: the
                                              # monotonic time its read began

    # ------------------------------------------------------- subscriptions
    async def subscribe(self, container_id: str) -> dict:
        """Count one more viewer; start the loop if it was idle.  → the history event."""
        self.subscribers[container_id] = self.subscribers.get(container_id, 0) + 1
        self._ensure_running()
        return self.history(container_id)

    async def unsubscribe(self, container_id: str) -> None:
        """One viewer fewer; the last one's leaving releases the container's
        descriptors, and the loop stops when nobody watches anything."""
        n = self.subscribers.get(container_id, 0) - 1
        if n > 0:
            self.subscribers[container_id] = n
            return
        self.subscribers.pop(container_id, None)
        await self.release(container_id)
        if not self.subscribers and not self._serving:
            await self.stop()

    async def release(self, container_id: str) -> None:
        """Close what the reader keeps open for a container nobody watches (its
        history stays).  In a thread, under the reader's lock: a tick may be
        reading in another thread, even one whose task was cancelled."""
        await asyncio.to_thread(self._forget, container_id)

    def _forget(self, container_id: str) -> None:
        with self._reader_lock:
            if container_id not in self.subscribers:      # not subscribed again meanwhile
                self.reader.forget(container_id)

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
        {"type", "container": id, "reply": consumer channel}.  A new lease is
        answered with the history on the reply channel; a renewal is not."""
        cid, reply = msg.get("container"), msg.get("reply")
        if not isinstance(cid, str) or not isinstance(reply, str):
            return
        leases = self.leases.setdefault(cid, {})
        if msg.get("type") == SUBSCRIBE:
            new = reply not in leases
            leases[reply] = time.monotonic() + float(msg.get("lease") or lease_seconds())
            self.subscribers[cid] = len(leases)
            if new:
                await get_channel_layer().send(reply, wire(self.history(cid)))
        elif msg.get("type") == UNSUBSCRIBE:
            leases.pop(reply, None)
            if self._count(cid):
                await self.release(cid)

    def _count(self, cid: str) -> bool:
        """Subscribers from the leases; → True when the last one went."""
        n = len(self.leases.get(cid) or ())
        if n:
            self.subscribers[cid] = n
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
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.subscribers or self._serving:
            try:
                if self.leases:
                    for cid in self.expire_leases():
                        await self.release(cid)
                await self.tick_once()
                if self.minute_pass is not None and (self._pass_at is None or loop.time() >= self._pass_at):
                    await self.run_minute_pass()
            except Exception:                      # noqa: BLE001 - keep the feed alive, say why
                log.exception("sampler tick failed")
            if self._paced is not None:            # the reader's clock paces the ticks: wait
                # for its next frame from shortly before it is due, not at once (a
                # worker thread waking while this tick's events go out competes
                # with them for the GIL: +0.8 ms sample -> browser at p50 in live_bench)
                next_at = loop.time()
                await asyncio.sleep(max(0.0, self._paced + 0.8 * self.tick - time.monotonic()))
                continue
            next_at += self.tick
            delay = next_at - loop.time()
            if delay < 0:                          # fell behind: skip, don't burst
                next_at, delay = loop.time(), 0
            await asyncio.sleep(delay)

    async def run_minute_pass(self) -> None:
        """The history's pass over the containers nobody watches (in a
        thread); the next one is due just after the next minute turns."""
        loop = asyncio.get_running_loop()
        now = time.time()
        self._pass_at = loop.time() + (now // 60 * 60 + 60 + 1 - now)
        self.passes += 1
        await asyncio.to_thread(self.minute_pass, set(self.subscribers))

    async def tick_once(self) -> list[dict]:
        """Sample every watched container once (in a thread) and publish."""
        ids = list(self.subscribers)
        now = time.time()
        self._paced = None
        gone = []
        for cid in [c for c in self.state if c not in self.subscribers]:
            if not self._prune(self.state[cid], now):
                del self.state[cid]               # nobody watched it for the whole window
                gone.append(cid)
        if not ids and not gone:
            return []
        for cid in ids:
            self.state.setdefault(cid, _Watched(points=deque(maxlen=self._maxlen())))
        out = await asyncio.to_thread(self._collect, ids, gone)
        layer = get_channel_layer()
        self.ticks += 1
        for cid, evs, msgs in out:
            w = self.state[cid]
            for ev in evs:                        # history is touched on the loop only
                if ev["type"] == events.SAMPLE:
                    w.points.append(ev["point"])
            if layer is not None:
                for msg in msgs:
                    await layer.group_send(events.group(cid), msg)
        return [ev for _, evs, _ in out for ev in evs]

    # ----------------------------------------------- blocking part (thread)
    def _collect(self, ids: list[str], gone: list[str] = ()) -> list[tuple[str, list[dict], list[dict]]]:
        """Read, compute and encode (all off the event loop).  → (id, events, wire messages)."""
        with self._reader_lock:
            for cid in gone:
                self.reader.forget(cid)
            # (one who left since the tick began was released: do not reopen it)
            ids = [cid for cid in ids if cid in self.subscribers]
            mono, wall = time.monotonic(), time.time()
            got = self.reader.read_many(ids) if ids else {}
            taken = getattr(self.reader, "taken", None) if ids else None
            self._paced = taken[0] if taken is not None else None
            if taken is not None:                 # a subscription's frame: when the agent read
                mono, wall = taken
            read = [(cid, self._sample_one(cid, got[cid], mono, wall)) for cid in ids]
        out = []
        for cid, evs in read:
            out.append((cid, evs, [wire(ev) for ev in evs]))
            if self.record is not None and evs[0]["type"] == events.SAMPLE:
                self.record(cid, evs[0]["point"])      # the down-sampled DB history
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
        src = raw.get("sources")
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
        # The tree: unchanged processes (the same forest object from runtime.stats)
        # used no CPU since last tick; once their shares read 0 the payload is
        # the same as last tick's and is not sent again.
        if forest is w.forest and w.idle:
            return out
        tree, w.prev_ticks = metrics.tree_payload(forest, w.prev_ticks, seconds)
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


def get_sampler() -> Sampler:
    """The process's one sampler."""
    global _sampler
    if _sampler is None:
        _sampler = Sampler()
    return _sampler


def reset_sampler() -> None:
    """Forget the sampler (tests change settings between runs)."""
    global _sampler
    _sampler = None
