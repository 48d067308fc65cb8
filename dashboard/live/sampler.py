"""ONE sampler per process: samples the containers someone watches, once per
tick, and publishes to their `container.<id>` groups.  Viewers cost a send,
not a sample.

With the in-memory channel layer it runs inside the Daphne process: the first
subscriber starts it on the running loop, the last one to leave stops it.
Blocking reads (cgroup files, /proc through runtime.procs) run in a worker
thread, never on the event loop.  The last ``TERRARIUM_LIVE_HISTORY`` seconds
(default 15 min) per container stay in memory, so a reload or a new tab gets
the recent past on connect.

Settings: TERRARIUM_LIVE_TICK (seconds, default 1.0), TERRARIUM_LIVE_HISTORY
(seconds, default 900).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings

from . import events, metrics, selectors

log = logging.getLogger(__name__)


def tick_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_LIVE_TICK", 1.0))


def history_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_LIVE_HISTORY", 900.0))


@dataclass
class _Watched:
    """What the sampler keeps for one container."""
    points: deque
    sources: dict = field(default_factory=dict)
    tree: list | None = None
    prev_raw: dict | None = None
    prev_mono: float | None = None
    prev_ticks: dict = field(default_factory=dict)


class Sampler:
    """Subscriptions (reference-counted per container), history and the tick loop."""

    def __init__(self, *, tick: float | None = None, keep: float | None = None):
        self.tick = tick or tick_seconds()
        self.keep = keep or history_seconds()
        self.subscribers: dict[str, int] = {}
        self.state: dict[str, _Watched] = {}
        self.samples_taken = 0               # raw samples read, for tests and bench/
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------- subscriptions
    async def subscribe(self, container_id: str) -> dict:
        """Count one more viewer; start the loop if it was idle.  → the history event."""
        self.subscribers[container_id] = self.subscribers.get(container_id, 0) + 1
        self._ensure_running()
        return self.history(container_id)

    async def unsubscribe(self, container_id: str) -> None:
        """One viewer fewer; the loop stops when nobody watches anything."""
        n = self.subscribers.get(container_id, 0) - 1
        if n > 0:
            self.subscribers[container_id] = n
        else:
            self.subscribers.pop(container_id, None)
        if not self.subscribers:
            await self.stop()

    def history(self, container_id: str) -> dict:
        w = self.state.get(container_id)
        if w is None:
            return events.history_event(container_id, [], {}, None)
        self._prune(w, time.time())
        return events.history_event(container_id, list(w.points), w.sources, w.tree)

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

    # ----------------------------------------------------------- the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.subscribers:
            try:
                await self.tick_once()
            except Exception:                      # noqa: BLE001 - keep the feed alive, say why
                log.exception("sampler tick failed")
            next_at += self.tick
            delay = next_at - loop.time()
            if delay < 0:                          # fell behind: skip, don't burst
                next_at, delay = loop.time(), 0
            await asyncio.sleep(delay)

    async def tick_once(self) -> list[dict]:
        """Sample every watched container once (in a thread) and publish."""
        ids = list(self.subscribers)
        if not ids:
            return []
        for cid in ids:
            self.state.setdefault(cid, _Watched(points=deque(maxlen=self._maxlen())))
        out = await asyncio.to_thread(self._collect, ids)
        layer = get_channel_layer()
        now = time.time()
        for cid, evs in out:
            w = self.state[cid]
            for ev in evs:
                if ev["type"] == events.SAMPLE:
                    w.points.append(ev["point"])
                    w.sources = ev["sources"]
                elif ev["type"] == events.PROCS:
                    w.tree = ev["tree"]
                if layer is not None:
                    await layer.group_send(events.group(cid), ev)
        for cid in [c for c, w in self.state.items() if c not in self.subscribers]:
            if not self._prune(self.state[cid], now):
                del self.state[cid]               # nobody watched it for the whole window
        return [ev for _, evs in out for ev in evs]

    # ----------------------------------------------- blocking part (thread)
    def _collect(self, ids: list[str]) -> list[tuple[str, list[dict]]]:
        return [(cid, self._sample_one(cid)) for cid in ids]

    def _sample_one(self, cid: str) -> list[dict]:
        w = self.state[cid]
        try:
            raw = selectors.container_raw_sample(container_id=cid)
            self.samples_taken += 1
            forest = selectors.container_process_forest(container_id=cid)
        except selectors.NotSampled as e:
            w.prev_raw = w.prev_mono = None
            w.prev_ticks = {}
            return [events.gone_event(cid, str(e))]
        mono, wall = time.monotonic(), time.time()
        seconds = mono - w.prev_mono if w.prev_mono is not None else 0.0
        pt = metrics.point(w.prev_raw if seconds > 0 else None, raw, seconds, wall)
        tree, w.prev_ticks = metrics.tree_payload(forest, w.prev_ticks, seconds)
        w.prev_raw, w.prev_mono = raw, mono
        return [events.sample_event(cid, pt, metrics.point_sources(raw)),
                events.procs_event(cid, tree)]

    # -------------------------------------------------------------- helpers
    def _maxlen(self) -> int:
        return int(self.keep / self.tick) + 5

    def _prune(self, w: _Watched, now: float) -> bool:
        """Drop points older than the window; → whether any are left."""
        while w.points and w.points[0]["t"] < now - self.keep:
            w.points.popleft()
        return bool(w.points)


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
