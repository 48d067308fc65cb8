"""Down-sampled history: the sampler's per-tick points folded into one row per
container per minute, kept 24 hours in the database (live.MinutePoint).

The sampler calls ``record(container_id, point)`` for every point it takes
of a watched container (from its worker thread, never the event loop).  A
minute is written once the first point of a later minute arrives; rows older
than ``KEEP`` are pruned at most once a minute.  So that the 24 h view has no
holes for containers nobody watches, ``MinuteHistory`` is one of the
sampler's consumers (dashboard/live/wiring.py declares both): once a minute,
just after the minute turns, while the sampler runs, one cgroup read of
every running container not watched (no process, nothing kept open; the
readings of containers another consumer read that tick are reused), folded
by ``fold_pass``.  While the sampler is stopped the wiring runs
``minute_pass`` from the reconciler's signal instead.  The folding
(``downsample``, ``Recorder``, ``fold_pass``, ``merge``) is pure and tested
from numbers; ``save`` and ``prune`` are the only DB writes.  This module
imports no sampler.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone

from runtime import Sample

from . import metrics

log = logging.getLogger(__name__)

MINUTE = 60
KEEP = 24 * 3600            # seconds of history kept in the database


@dataclass(frozen=True)
class Minute:
    """One container's aggregate over one minute (``minute``: its start, epoch s)."""
    container_id: str
    minute: int
    samples: int
    mem_avg: int | None
    mem_max: int | None
    mem_limit: int | None
    cpu_avg: float | None
    pids_max: int | None
    io_r: float | None
    io_w: float | None


# --- pure folding --------------------------------------------------------------

def minute_of(t: float) -> int:
    """The start of t's minute (epoch seconds)."""
    return int(t // MINUTE) * MINUTE


def _avg(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(values: list):
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def aggregate(container_id: str, minute: int, points: list[Mapping]) -> Minute:
    """Fold the points of one minute (metrics.point dicts).  Figures missing in
    every point stay None; rates and shares are averaged over the ticks that have one."""
    col = lambda k: [p.get(k) for p in points]  # noqa: E731
    mem_avg = _avg(col("mem"))
    cpu, io_r, io_w = _avg(col("cpu")), _avg(col("io_r")), _avg(col("io_w"))
    limits = [v for v in col("mem_limit") if v is not None]
    return Minute(container_id, minute, len(points),
                  None if mem_avg is None else round(mem_avg), _max(col("mem")),
                  limits[-1] if limits else None,
                  None if cpu is None else round(cpu, 4), _max(col("pids")),
                  None if io_r is None else round(io_r, 1), None if io_w is None else round(io_w, 1))


def downsample(container_id: str, points: Iterable[Mapping]) -> list[Minute]:
    """Points (any order) -> one Minute per minute that has any, oldest first."""
    by_minute: dict[int, list] = {}
    for p in points:
        by_minute.setdefault(minute_of(p["t"]), []).append(p)
    return [aggregate(container_id, m, sorted(ps, key=lambda p: p["t"]))
            for m, ps in sorted(by_minute.items())]


def merge(a: Minute, b: Minute) -> Minute:
    """Two aggregates of the same container and minute (say, before and after a
    sampler restart) as one: averages weighted by samples, maxima of maxima."""
    n = a.samples + b.samples

    def wavg(x, y, digits):
        if x is None or y is None:
            return x if y is None else y
        return round((x * a.samples + y * b.samples) / n, digits)
    mem_avg = wavg(a.mem_avg, b.mem_avg, 0)
    return replace(a, samples=n, mem_avg=None if mem_avg is None else int(mem_avg),
                   mem_max=_max([a.mem_max, b.mem_max]), mem_limit=b.mem_limit
                   if b.mem_limit is not None else a.mem_limit,
                   cpu_avg=wavg(a.cpu_avg, b.cpu_avg, 4), pids_max=_max([a.pids_max, b.pids_max]),
                   io_r=wavg(a.io_r, b.io_r, 1), io_w=wavg(a.io_w, b.io_w, 1))


def fold_pass(prev: Mapping[str, tuple[float, Sample]], samples: Mapping[str, Sample], t: float
              ) -> tuple[list[Minute], dict[str, tuple[float, Sample]]]:
    """One minute pass (one raw sample per container, ``Runtime.cgroups.sample``
    records, taken at ``t``) → one Minute per container, and the state for the next pass.

    The sampler runs a pass once a minute, just after the minute turns, over
    the running containers nobody watches (the watched ones get a point every
    tick).  A pass's Minute is the minute its interval since the last pass
    mostly covers -- the one that just ended: memory, pids and limit are the
    reading at ``t``; CPU share and io rates are the counters' change over the
    whole interval (an exact average, where ticks would average ticks).  A
    container's first pass, or one after a gap of more than ``2.5`` minutes
    (it was watched, or the sampler stopped), has no rates.  Containers not
    in ``samples`` are dropped from the state."""
    out, state = [], {}
    for cid, raw in samples.items():
        before = prev.get(cid)
        if before is not None and 0 < t - before[0] <= 2.5 * MINUTE:
            seconds = t - before[0]
            p = metrics.point(before[1], raw, seconds, t)
            minute = minute_of(before[0] + seconds / 2)
        else:
            p = metrics.point(None, raw, 0, t)
            minute = minute_of(t - MINUTE / 2)
        out.append(aggregate(cid, minute, [p]))
        state[cid] = (t, raw)
    return out, state


class Recorder:
    """Per-container points of the minute in progress.  ``add`` returns the
    minutes it completed; ``flush_before`` the minutes of containers no longer
    sampled.  No I/O."""

    def __init__(self):
        self.pending: dict[str, tuple[int, list]] = {}

    def add(self, container_id: str, point: Mapping) -> list[Minute]:
        m = minute_of(point["t"])
        cur = self.pending.get(container_id)
        done = []
        if cur is not None and cur[0] != m:
            done.append(aggregate(container_id, cur[0], cur[1]))
            cur = None
        if cur is None:
            cur = self.pending[container_id] = (m, [])
        cur[1].append(point)
        return done

    def flush_before(self, minute: int) -> list[Minute]:
        """Complete every pending minute that started before ``minute``."""
        done = []
        for cid, (m, pts) in list(self.pending.items()):
            if m < minute:
                done.append(aggregate(cid, m, pts))
                del self.pending[cid]
        return done


# --- the sampler's hook, and the DB --------------------------------------------

_recorder = Recorder()
_lock = threading.Lock()
_last_prune = 0.0


def record(container_id: str, point: Mapping) -> None:
    """The sampler's hook, once per point (blocking: call it from a thread).
    History must never stop the live feed: a failure is logged, not raised."""
    global _last_prune
    if point.get("t") is None:
        return
    with _lock:
        done = _recorder.add(container_id, point)
        done += _recorder.flush_before(minute_of(point["t"]))   # containers no longer sampled
        prune_due = time.time() - _last_prune >= MINUTE
        if prune_due:
            _last_prune = time.time()
    if not done and not prune_due:
        return
    try:
        save(done)
        if prune_due:
            prune(now=point["t"])
    except Exception:                        # noqa: BLE001 - keep sampling, say why
        log.exception("could not write the down-sampled history of %s", container_id)


def reset() -> None:
    """Forget pending minutes and the last pass (tests)."""
    global _recorder, _last_prune, _pass_state
    with _lock:
        _recorder, _last_prune, _pass_state = Recorder(), 0.0, {}


_pass_state: dict[str, tuple[float, Mapping]] = {}


def _running() -> list[str]:
    from dashboard.containers.runtime_client import get_runtime
    return [c.id for c in get_runtime().list(all=True) if c.status in ("running", "paused")]


def _samples(ids: list[str]) -> dict[str, Sample]:
    """One raw sample (no process) of each container, through the runtime's
    reader with nothing kept open (in agent mode: a request per 512
    containers); those gone since they were listed are left out."""
    from dashboard.live.selectors import stats_reader
    reader = stats_reader()
    try:
        got = reader.read_many(ids, False, keep=False)
    finally:
        reader.close()
    return {cid: r[0] for cid, r in got.items() if not isinstance(r, BaseException)}


def minute_pass(skip=(), *, now: float | None = None, running=None, sample=None,
                samples: Mapping[str, Mapping] | None = None) -> list[Minute]:
    """The sampler's once-a-minute pass (blocking: call it from a thread):
    one cgroup read (no process) of every running container not in ``skip``
    (the watched ones), folded by ``fold_pass`` and saved; minutes still
    pending for containers no longer watched are written too, and old rows
    pruned.  ~16 files per container, open+read+close: 200 containers cost a
    few tens of ms a minute.  ``sample(cid)``: read one container another way
    (tests); ``samples``: the raw samples already read (the sampler's
    consumer: nothing is listed or read here).  Never raises (history must
    not stop the feed).  → the minutes written."""
    global _pass_state, _last_prune
    t = time.time() if now is None else now
    try:
        skip = set(skip)
        ids = [] if samples is not None else [cid for cid in (running or _running)() if cid not in skip]
        if samples is not None:
            samples = {cid: raw for cid, raw in samples.items() if cid not in skip}
        elif sample is None:
            samples = _samples(ids)
        else:
            samples = {}
            for cid in ids:
                try:
                    samples[cid] = sample(cid)
                except Exception:                # noqa: BLE001 - gone since listed, say nothing
                    continue
        with _lock:
            minutes, _pass_state = fold_pass(_pass_state, samples, t)
            minutes += _recorder.flush_before(minute_of(t))
            _last_prune = time.time()
        save(minutes)
        prune(now=t)
        return minutes
    except Exception:                            # noqa: BLE001 - keep sampling, say why
        log.exception("the minute pass of the down-sampled history failed")
        return []


def _when(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


_VALUE_FIELDS = [f.name for f in fields(Minute) if f.name not in ("container_id", "minute")]


def _combine(minutes: Iterable[Minute]) -> dict[tuple[str, int], Minute]:
    """Minutes by (container, minute), two of the same key merged in order."""
    out: dict[tuple[str, int], Minute] = {}
    for m in minutes:
        key = (m.container_id, m.minute)
        out[key] = m if key not in out else merge(out[key], m)
    return out


def save(minutes: Iterable[Minute]) -> None:
    """Write minutes in one transaction; one already stored for the same
    container and minute is merged (so is a second of the same key in
    ``minutes``).  A pass of 1,000 containers is one read of the rows of its
    minutes, one bulk insert and, for the few already stored (a container
    watched during that minute), one bulk update: one commit, where a
    transaction per container made 1,000 commits a minute (1.3 s of CPU)."""
    from django.db import IntegrityError, transaction

    from .models import MinutePoint
    todo = _combine(minutes)
    if not todo:
        return
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                _save_once(MinutePoint, todo)
            return
        except IntegrityError:
            # another process inserted one of these rows between our read
            # and our insert (not on SQLite, whose write transactions start
            # IMMEDIATE): read again, it is merged this time
            if attempt == 2:
                raise


def _save_once(model, todo: dict[tuple[str, int], Minute]) -> None:
    when = {m: _when(m) for m in {k[1] for k in todo}}
    ids = {k[0] for k in todo}
    # by minute only (a pass has one or two): no 1,000-name IN list, whose
    # bound parameters some backends cap; rows of containers not in this
    # batch are skipped here
    stored = {(r.container_id, int(r.minute.timestamp())): r
              for r in model.objects.select_for_update().filter(minute__in=list(when.values()))
              if r.container_id in ids}
    new, changed = [], []
    for key, m in todo.items():
        row = stored.get(key)
        if row is None:
            new.append(model(container_id=m.container_id, minute=when[m.minute],
                             **{k: getattr(m, k) for k in _VALUE_FIELDS}))
            continue
        m = merge(Minute(m.container_id, m.minute, **{k: getattr(row, k) for k in _VALUE_FIELDS}), m)
        for k in _VALUE_FIELDS:
            setattr(row, k, getattr(m, k))
        changed.append(row)
    if new:
        model.objects.bulk_create(new)
    if changed:
        model.objects.bulk_update(changed, _VALUE_FIELDS)


def keep_seconds() -> float:
    """How long rows are kept: TERRARIUM_HISTORY_HOURS, else KEEP."""
    from django.conf import settings
    hours = getattr(settings, "TERRARIUM_HISTORY_HOURS", None)
    return hours * 3600 if hours else KEEP


def prune(*, now: float | None = None) -> int:
    """Delete rows older than keep_seconds(); → how many."""
    from .models import MinutePoint
    cutoff = _when(minute_of((now or time.time()) - keep_seconds()))
    return MinutePoint.objects.filter(minute__lt=cutoff).delete()[0]


class MinuteHistory:
    """The minute pass as one of the sampler's consumers (dashboard/live/
    sampler.Consumer's protocol: this module imports no sampler): once a
    minute, just after it turns, every running container no viewer watches,
    no tree, nothing kept open; ``passive``: it reads while the sampler runs
    for someone else.  ``pass_`` folds and saves (minute_pass; tests give
    another); ``running()`` lists the ids."""

    name = "history"
    every = float(MINUTE)
    keep = False
    passive = True

    def __init__(self, pass_=None, running=None):
        self.pass_ = pass_                      # None: minute_pass
        self.running = running or _running
        self.passes = 0                         # passes run, for tests

    def wants(self, watched) -> dict[str, bool]:
        try:
            ids = self.running()
        except Exception:                      # noqa: BLE001 - history must not stop the feed
            log.exception("the minute pass could not list the containers")
            return {}
        self._skip = set(watched)
        return {cid: False for cid in ids if cid not in self._skip}

    def holds(self) -> set[str]:
        return set()

    def take(self, got: Mapping, mono: float, wall: float) -> None:
        self.passes += 1
        (self.pass_ or minute_pass)(self._skip, now=wall,
                   samples={cid: r[0] for cid, r in got.items() if not isinstance(r, BaseException)})

    async def after(self) -> None:
        pass

    def next_after(self, now: float) -> float:
        """Loop time just after the next minute turns."""
        wall = time.time()
        return now + (wall // MINUTE * MINUTE + MINUTE + 1 - wall)


_kept_at = 0.0


def keep_between_viewers(*, now: float | None = None) -> bool:
    """The minute pass while no sampler keeps the history (called by the
    wiring on the reconciler's signal): at most once a minute.  → whether it ran."""
    global _kept_at
    now = time.time() if now is None else now
    with _lock:
        if now - _kept_at < 60:
            return False
        _kept_at = now
    minute_pass(now=now)
    return True
