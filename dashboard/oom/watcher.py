"""ONE OOM watcher per process: the kernel log and the cgroup counters → OomEvent
rows → `oom.killed` on the `events` group.

Daphne runs no ASGI lifespan events, so the first consumer of `ws/events/`
starts it (ensure_started), like the containers reconciler; `manage.py
oom_watch` runs the same watcher on its own (for the Redis channel layer).

Everything that waits on the kernel is non-blocking on the event loop:
/dev/kmsg and the counters' epoll descriptor are registered with
loop.add_reader, and both are read only when ready.  The ORM and the
runtime's list run in worker threads.  Counters are read on the loop, at the
moment of detection, because a container's cgroup is removed as soon as it
exits.

Which containers to watch (the scope) is listed once at start, then kept in
step with the runtime's change events (Runtime.changes: inotify on the state
root, through the agent when there is one), one inspect per changed
container; a full list only every TERRARIUM_RECONCILE_FULL seconds (what no
event shows), or every ``refresh`` seconds while events cannot be followed.
The memory record (memrecord.MemRecorder) is a consumer of the dashboard's
one sampler (dashboard/live/sampler.py), given the limited running containers.

When the runtime is the root agent (runtime_client: TERRARIUM_AGENT), this
process reads no kernel file: the agent follows the kernel log and the
counters for it (its `oom-events` stream, runtime/oomfeed.py, also on
loop.add_reader), and the two sources feed the same attribution, correlation
and recording code.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from channels.db import database_sync_to_async
from django.conf import settings

from runtime import TerrariumError
from runtime.agent_client import AgentRuntime
from runtime.oom import CgroupOomWatch, KmsgReader, OomAssembler, monotonic_usec, read_counts
from runtime.oomfeed import counts_from_dict, report_from_dict
from runtime.pidinfo import memory_cgroup_of

from dashboard.containers.reconciler import ALL, ChangeFeed
from dashboard.live.sampler import get_sampler

from . import events, mapping, memrecord, selectors, services

log = logging.getLogger(__name__)
_task: asyncio.Task | None = None
_watcher: "OomWatcher | None" = None


def ensure_started() -> asyncio.Task | None:
    """Start the watcher on the running loop unless it already runs there."""
    global _task, _watcher
    if not getattr(settings, "TERRARIUM_OOM_WATCH", True):
        return None
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _watcher = OomWatcher()
        _task = loop.create_task(_watcher.run(), name="terrarium-oom-watcher")
    return _task


def current() -> "OomWatcher | None":
    return _watcher


async def stop() -> None:
    """Cancel the watcher (tests)."""
    global _task, _watcher
    task, _task, _watcher = _task, None, None
    if task and not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


_record = database_sync_to_async(services.oom_record, thread_sensitive=False)
_confirm = database_sync_to_async(services.oom_confirm, thread_sensitive=False)
_catch_up = database_sync_to_async(services.oom_catch_up, thread_sensitive=False)
_scope = database_sync_to_async(selectors.oom_watch_scope, thread_sensitive=False)
_scope_update = database_sync_to_async(selectors.oom_watch_scope_update, thread_sensitive=False)
_card = database_sync_to_async(services.oom_card_update, thread_sensitive=False)


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, os.environ.get(name, default)))


def pressure_rule() -> memrecord.PressureRule:
    return memrecord.PressureRule(percent=_setting("TERRARIUM_OOM_WARN_PERCENT", 90),
                                  consecutive=int(_setting("TERRARIUM_OOM_WARN_SAMPLES", 3)))


async def _publish_warnings(warnings: list[dict]) -> None:
    await events.apublish([events.warning_event(w) for w in warnings])


class OomWatcher:
    """Follows /dev/kmsg and the OOM counters of Terrarium's running containers:
    itself (LocalReaders) when the runtime is in-process, through the agent's
    ``oom-events`` stream (AgentFeed) when the runtime is the agent.  Either
    hands what it saw to _report_seen / _counters_moved: one attribution,
    correlation and recording path."""

    def __init__(self, *, kmsg_path: str = "/dev/kmsg", refresh: float = 0.5,
                 window: float = 0.25):
        self.kmsg_path = kmsg_path
        self.refresh = refresh
        self.correlator = mapping.Correlator(window=window)
        self.scope: selectors.WatchScope | None = None
        self.source: LocalReaders | AgentFeed | None = None
        self.ready = asyncio.Event()          # set once readers are attached (tests wait on it)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.recorder: memrecord.MemRecorder | None = None
        self.sample_interval = _setting("TERRARIUM_OOM_SAMPLE", 0.5)
        self._snapped: dict = {}              # container id -> loop time of the last OOM-start tree

    # ------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        from dashboard.containers.runtime_client import get_runtime
        self._loop = loop = asyncio.get_running_loop()
        rt = get_runtime()
        self.source = AgentFeed(self, rt) if isinstance(rt, AgentRuntime) else LocalReaders(self)
        drain = loop.create_task(self._drain(), name="terrarium-oom-save")
        sampler = None
        changes = ChangeFeed(loop, engines=False)
        full_every = float(getattr(settings, "TERRARIUM_RECONCILE_FULL", 30.0))
        try:
            await self.source.attach()
            await changes.started()                   # a change from now on is seen
            self.scope = await _scope()
            self.source.sync(self.scope)
            if self.sample_interval > 0:
                sampler = get_sampler()
                self.recorder = memrecord.MemRecorder(
                    interval=self.sample_interval, rule=pressure_rule(),
                    tree_at=_setting("TERRARIUM_OOM_TREE_PERCENT", 80) / 100,
                    read_once=sampler.read_once, publish=_publish_warnings)
                self.recorder.targets = self.scope.limited()
                sampler.add(self.recorder)
                sampler.start()
            await self._catch_up()
            self.ready.set()
            while True:
                if changes.alive:
                    batch = await changes.next(full_every)
                else:                                  # polling until changes can be followed again
                    await asyncio.sleep(self.refresh)
                    changes.close()
                    changes = ChangeFeed(loop, engines=False)
                    await changes.started()
                    batch = ALL
                try:
                    self.scope = await (_scope() if batch is ALL else _scope_update(self.scope, batch))
                    self.source.sync(self.scope)
                    if self.recorder is not None:
                        self.recorder.targets = self.scope.limited()
                        sampler.start()               # a first limited container: the loop runs
                except TerrariumError as e:
                    log.warning("OOM watcher could not list containers: %s", e)
        finally:
            changes.close()
            drain.cancel()
            if sampler is not None and self.recorder is not None:
                sampler.remove(self.recorder)
            self.source.close()
            if self._timer:
                self._timer.cancel()

    async def _catch_up(self) -> None:
        """Record the kills the counters know of and the history does not."""
        await events.apublish([events.killed_event(e) for e in await _catch_up()])

    def _snapshot(self, keys) -> None:
        """An OOM started (eventfd) in these containers: keep their trees now,
        while the victim is most likely still there."""
        if self.recorder is None:
            return
        now = self._loop.time()
        for key in keys:
            if now - self._snapped.get(key, -1.0) > 0.5:
                self._snapped[key] = now
                # In a worker thread: through the agent it is a round trip,
                # which must not hold up the loop (the kill's report is next).
                self._loop.run_in_executor(None, self.recorder.snapshot_tree, key)

    # ------------------------------------------- what the sources saw
    def _report_seen(self, report, *, proc_memcg, counts_of) -> None:
        """A complete kernel report: attribute it, hand it to the correlator.
        ``proc_memcg()``: the victim's memory cgroup from /proc (asked only for a
        report that names none); ``counts_of(memcg)``: that cgroup's counters at
        the moment the report completed (None if gone)."""
        now = self._loop.time()
        parent = self.scope.parent if self.scope else ""
        who = mapping.attribute(report, parent)
        if mapping.is_bare(report):              # ratelimited report: no cgroup lines
            who = mapping.attribute_bare(
                report, parent, proc_memcg=proc_memcg(),
                tree_owner=self.recorder.owner_of(report.pid) if self.recorder else None,
                waiting=self.correlator.waiting(now))
        for action in self.correlator.on_report(who.container_id, report, now):
            counts = counts_of(who.memcg) if who.memcg is not None and self.scope else None
            self._queue.put_nowait((action, who, counts))
        self._arm()

    def _counters_moved(self, moved, pending) -> None:
        """Watched counters moved: ``moved`` is (key, new kills, counts, gone) of
        each, read at detection; ``pending``: keys whose OOM has started."""
        now = self._loop.time()
        try:
            self._snapshot([key for key, new_kills, _, _ in moved if new_kills] + list(pending))
        except Exception:                      # noqa: BLE001 - the kill matters more than its tree
            log.exception("OOM-start process tree not kept")
        for key, new_kills, counts, gone in moved:
            if gone:
                continue
            for action in self.correlator.on_counter(key, new_kills, counts, now):
                self._queue.put_nowait((action, None, None))
        self._arm()

    def _arm(self) -> None:
        """Wake for the correlator's next deadline (a counter kill whose report is late)."""
        deadline = self.correlator.next_deadline()
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for action in self.correlator.expire(self._loop.time()):
            self._queue.put_nowait((action, None, None))
        self._arm()

    # ---------------------------------------------------------------- saving
    async def _drain(self) -> None:
        """Save and publish actions one at a time, in the order they were decided."""
        while True:
            action, who, counts_now = await self._queue.get()
            try:
                ev = await self._save(action, who, counts_now)
                if ev is not None:
                    await events.apublish([events.killed_event(ev)])
                    if ev.container_key and self.recorder is not None:
                        self._loop.call_later(memrecord.AFTER_S, self._finish_card, ev.pk,
                                              ev.container_key, ev.at.timestamp(), ev.killed_pid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record OOM kill %s", action)

    def _card_now(self, cid, report):
        """The card's record at the kill (the window after it is added later)."""
        if self.recorder is None or not cid:
            return None
        if report is not None:
            kill_t = time.time() - max(0, monotonic_usec() - report.usec) / 1e6
        else:
            kill_t = time.time()
        return self.recorder.card(cid, kill_t, report.pid if report else None)

    def _finish_card(self, event_id, cid, kill_t, pid) -> None:
        card = self.recorder.card(cid, kill_t, pid) if self.recorder else None
        if card and card["memory_window"]["points"]:
            task = self._loop.create_task(_card(event_id=event_id, card=card))
            task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                                   or log.warning("OOM card update failed: %s", t.exception()))

    async def _save(self, action: mapping.Action, who, counts_now):
        target = self.scope.targets.get(action.key) if (self.scope and action.key) else None
        if action.kind == mapping.CONFIRM:
            await _confirm(container_id=action.key, token=action.token, counts=action.counts)
            return None              # already published when the kmsg report came
        if action.kind == mapping.NEW and who.scope == mapping.SCOPE_HOST and who.memcg:
            # not one of ours: another owner's container (Docker...) through discovery
            from dashboard.containers.engines import owner_of_memcg
            owner = await asyncio.to_thread(owner_of_memcg, who.memcg)
            if owner is not None:
                return await _record(
                    scope=mapping.SCOPE_CONTAINER, container_id=None, report=action.report,
                    counts=action.counts or counts_now, detected_by="kmsg",
                    name=f"{owner.name} ({owner.engine})", memcg=who.memcg)
        if action.kind == mapping.NEW:
            return await _record(
                scope=who.scope, container_id=who.container_id, report=action.report,
                counts=action.counts or counts_now,
                detected_by="kmsg+counter" if action.counts else "kmsg",
                init_pid=target.pid if target else None, name=target.name if target else "",
                memcg=who.memcg, card=self._card_now(who.container_id, action.report))
        memcg = None
        if self.scope and action.key:
            memcg = f"/{self.scope.parent}/{action.key}"
        return await _record(
            scope=mapping.SCOPE_CONTAINER, container_id=action.key, report=None,
            counts=action.counts, detected_by="counter", name=target.name if target else "",
            memcg=memcg, card=self._card_now(action.key, None))


# -------------------------------------------------------------------- sources
class LocalReaders:
    """In-process (root): /dev/kmsg and the counters' epoll descriptor on the
    loop (add_reader); counters read on the loop, at the moment of detection."""

    def __init__(self, w: OomWatcher):
        self.w = w
        self.assembler = OomAssembler()
        self.kmsg: KmsgReader | None = None
        self.counters = CgroupOomWatch(settle=0.25)
        self._sweeper: asyncio.TimerHandle | None = None

    async def attach(self) -> None:
        loop = self.w._loop
        try:
            self.kmsg = KmsgReader(self.w.kmsg_path)          # at the end: only new records
            loop.add_reader(self.kmsg.fileno(), self._on_kmsg)
        except TerrariumError as e:
            log.warning("kernel log not readable (%s): OOM kills seen from cgroup counters only", e)
        loop.add_reader(self.counters.fileno(), self._on_counters)

    def sync(self, scope: selectors.WatchScope) -> None:
        """Watch the counters of running containers, drop the rest, and read
        those watched without descriptors (runtime/fdbudget.py)."""
        wanted = scope.targets
        for key in self.counters.keys():
            if key not in wanted:
                self.counters.remove(key)
        for cid, t in wanted.items():
            if cid not in self.counters.keys():
                try:
                    self.counters.add(t.memory_dir, cid)
                except TerrariumError as e:   # it exited between the list and now
                    log.debug("no OOM watch on %s: %s", cid[:12], e)
        self._sweep()

    def _sweep(self) -> None:
        """Read the counters watched without a descriptor (over the budget),
        every ``refresh`` seconds while there are any: no event wakes for them."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if not self.counters.polled():
            return
        if self.counters.sweep():
            self._on_counters()
        self._sweeper = self.w._loop.call_later(self.w.refresh, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = self.w._loop
        if self.kmsg is not None:
            loop.remove_reader(self.kmsg.fileno())
            self.kmsg.close()
        loop.remove_reader(self.counters.fileno())
        self.counters.close()

    def _on_kmsg(self) -> None:
        """/dev/kmsg is readable: assemble reports."""
        try:
            records = self.kmsg.read_available()
        except TerrariumError as e:
            log.error("reading the kernel log failed, following counters only: %s", e)
            self.w._loop.remove_reader(self.kmsg.fileno())
            return
        for rec in records:
            report = self.assembler.feed(rec)
            if report is not None:
                self.w._report_seen(report, proc_memcg=lambda pid=report.pid: memory_cgroup_of(pid),
                                    counts_of=self._counts_now)

    def _on_counters(self) -> None:
        """A watched cgroup's eventfd/inotify woke: compare counters."""
        evs = self.counters.read_events()
        self.w._counters_moved([(ev.key, ev.new_kills, ev.counts, ev.gone) for ev in evs],
                               self.counters.pending())
        hint = self.counters.timeout_hint()
        if hint is not None:
            self.w._loop.call_later(hint, self._on_counters)

    def _counts_now(self, memcg: str):
        """The cgroup's counters at the moment its report completed (None if gone)."""
        try:
            return read_counts(os.path.join(self.w.scope.memory_root, memcg.lstrip("/")))
        except TerrariumError:
            return None


class AgentFeed:
    """Through the agent (the web tier is not root): its ``oom-events`` stream
    (runtime/oomfeed.py) on the loop (add_reader).  The agent reads the kernel
    log and the counters, and what attribution needs while it is there; when
    the stream ends (the agent restarted) it is opened again and the kills
    missed meanwhile are caught up from the counters."""

    RETRY_MAX = 5.0                           # seconds between attempts to reach the agent

    def __init__(self, w: OomWatcher, rt: AgentRuntime):
        self.w, self.rt = w, rt
        self.stream = None
        self.connects = 0                     # streams opened (tests: reconnects)
        self._ready: asyncio.Future | None = None
        self._again: asyncio.Task | None = None

    async def attach(self) -> None:
        """Open the stream (waiting for the agent as long as it takes)."""
        delay, told = 0.1, False
        while True:
            try:
                await self._open()
                return
            except (TerrariumError, OSError, ValueError, asyncio.TimeoutError) as e:
                if not told:
                    log.warning("OOM watcher cannot follow the agent's OOM events (%s); retrying", e)
                    told = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MAX)

    async def _open(self) -> None:
        self._drop()
        stream = await asyncio.to_thread(self.rt.oom_events, min(max(self.w.refresh, 0.05), 10))
        self.stream, self._ready = stream, self.w._loop.create_future()
        self.w._loop.add_reader(stream.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(15):         # not wait_for: on 3.11 it can drop a cancel
                note = await asyncio.shield(self._ready)
        except BaseException:
            self._drop()
            raise
        self.connects += 1
        if note:
            log.warning("the agent cannot read the kernel log (%s): OOM kills seen from cgroup "
                        "counters only", note)

    def sync(self, scope) -> None:
        """The agent keeps its counter watches in step with the containers itself."""

    def close(self) -> None:
        if self._again is not None:
            self._again.cancel()
        self._drop()

    def _drop(self) -> None:
        if self.stream is not None:
            self.w._loop.remove_reader(self.stream.fileno())
            self.stream.close()
            self.stream = None

    def _on_readable(self) -> None:
        try:
            items = self.stream.read_available()
        except (TerrariumError, ValueError) as e:
            self._lost(e)
            return
        for item in items:
            kind = item.get("kind")
            if kind == "ready":
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(item.get("kmsg"))
            elif kind == "report":
                seen, counts = item.get("memcg"), counts_from_dict(item.get("counts"))
                self.w._report_seen(report_from_dict(item["report"]),
                                    proc_memcg=lambda m=item.get("proc_memcg"): m,
                                    counts_of=lambda memcg: counts if memcg == seen else None)
            elif kind == "counters":
                self.w._counters_moved([(e["key"], e["new_kills"], counts_from_dict(e["counts"]),
                                         e["gone"]) for e in item["events"]], item["pending"])
            elif kind == "kmsg-lost":
                log.error("the agent stopped reading the kernel log, following counters only: %s",
                          item.get("error"))

    def _lost(self, why: Exception) -> None:
        """The stream ended: open it again, then catch up on what was missed."""
        self._drop()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(why if isinstance(why, TerrariumError) else TerrariumError(str(why)))
            return                            # _open's caller retries
        log.warning("OOM events from the agent ended (%s): reconnecting", why)
        if self._again is None or self._again.done():
            self._again = self.w._loop.create_task(self._reconnect(), name="terrarium-oom-reconnect")

    async def _reconnect(self) -> None:
        await self.attach()
        try:
            await self.w._catch_up()
        except Exception:                      # noqa: BLE001 - keep watching
            log.exception("OOM catch-up after the agent came back failed")
