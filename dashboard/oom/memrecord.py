"""A short rolling memory record of the running containers that have a memory
limit: what the OOM card shows around a kill, and what the near-OOM warning
watches.

The OOM watcher owns one ``MemRecorder``, a consumer of the dashboard's one
sampler (dashboard/live/sampler.py) while the watcher runs: every
``interval`` seconds (TERRARIUM_OOM_SAMPLE, default 0.5) the sampler reads
the memory counters of the running containers with a memory limit (the
watcher's ``targets``, kept in step with the runtime's change events) into
a ring of the last ``keep`` seconds -- a container a viewer watches too is
read once for both.  The process tree is kept on a container's first
sample, then every ``tree_every``-th sample (default: each) while usage is
at or above ``tree_at`` of the limit (TERRARIUM_OOM_TREE_PERCENT, default
80) or rising fast enough to be there by the next sample, or an OOM is
under way, and at once when the OOM counter's eventfd fires (the start
of an OOM, before the kill: ``snapshot_tree``, a one-off read).  When a kill
is recorded, the ~60 s before it go into the event row, and ~10 s later the
seconds after it.

Pure parts (no I/O, tested directly): ``point_from_sample``,
``PressureTracker`` (the warning rule) and ``swap_verdict``; the tree's JSON
is the live page's (dashboard/live/metrics.forest_json).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from dashboard.live.metrics import forest_json
from runtime import Sample

log = logging.getLogger(__name__)

BEFORE_S = 60.0               # graph window stored before the kill
AFTER_S = 10.0                # ... and after it


# ------------------------------------------------------------------- pure parts
def point_from_sample(raw: Sample, t: float) -> dict | None:
    """One ring point from ``rt.cgroups.sample()`` (v1 or v2); None without a limit.

    ``ws`` is the working set as cAdvisor/Docker count it: usage minus
    inactive file pages (what the kernel can drop without swap).
    """
    limit = raw.memory_limit
    usage = raw.memory_usage
    if not limit or usage is None:
        return None
    ev = raw.memory_events or {}
    inactive = raw.memory_inactive_file or 0
    swap = raw.memory_swap
    if swap is None and raw.memsw_usage is not None:
        swap = max(raw.memsw_usage - usage, 0)
    return {
        "t": round(t, 3), "usage": usage, "limit": limit, "ws": max(usage - inactive, 0),
        "max_usage": raw.memory_max_usage,
        "failcnt": raw.memory_failcnt, "memsw_failcnt": raw.memsw_failcnt,
        "swap": swap, "memsw_usage": raw.memsw_usage, "memsw_limit": raw.memsw_limit,
        "swap_limit": raw.memory_swap_limit,
        "under_oom": bool(ev.get("under_oom", 0)), "oom_kill": ev.get("oom_kill", 0),
        "high": ev.get("high"), "max": ev.get("max"),
        "anatomy": anatomy(raw),
    }


def anatomy(raw: Sample) -> dict:
    """{part: bytes} of the parts the sample has, from memory.stat (v1 total_*,
    v2) and the kmem counters: where the charged memory was, what "why was I
    OOM-killed when usage looked low?" needs.  ``file`` is the page cache
    and includes shmem (tmpfs pages live in it), as the kernel counts both."""
    parts = {"anon": raw.memory_anon, "shmem": raw.memory_shmem, "file": raw.memory_cache,
             "kernel": raw.memory_kernel, "sock": raw.memory_sock}
    return {part: v for part, v in parts.items() if v is not None}


def largest_part(anat: dict, limit: int | None) -> str | None:
    """A sentence naming where most of the memory was: "14.0 MiB of the 20.0 MiB
    limit was shmem (tmpfs)"; None without figures."""
    parts = {k: v for k, v in anat.items() if k != "file"}
    if anat.get("file") is not None:                 # page cache other than tmpfs
        parts["file"] = max(anat["file"] - (anat.get("shmem") or 0), 0)
    if not parts:
        return None
    part, v = max(parts.items(), key=lambda kv: kv[1])
    label = {"anon": "anonymous memory (heap, stacks)", "shmem": "shmem (tmpfs, shared memory)",
             "file": "page cache (files)", "kernel": "kernel memory (slab, page tables, stacks)",
             "sock": "socket buffers"}[part]
    of = f" of the {_mib(limit)} limit" if limit else ""
    return f"{_mib(v)}{of} was {label}"


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def walk_json(tree: list[dict]):
    """(depth, node) of a JSON tree in display order."""
    stack = [(0, n) for n in reversed(tree or [])]
    while stack:
        depth, n = stack.pop()
        yield depth, n
        stack.extend((depth + 1, c) for c in reversed(n.get("children", [])))


def mark_victim(tree: list[dict], pid: int | None) -> tuple[list[dict], dict | None]:
    """A copy of a JSON tree with the node of ``pid`` marked; → (tree, that node or None)."""
    import copy
    tree = copy.deepcopy(tree or [])
    found = None
    for _, n in walk_json(tree):
        n.pop("victim", None)
        if pid is not None and n["pid"] == pid:
            n["victim"] = True
            found = n
    return tree, found


@dataclass
class PressureRule:
    """When to warn before a kill.

    ``percent``: usage at or above this share of the limit for ``consecutive``
    samples in a row (TERRARIUM_OOM_WARN_PERCENT, default 90;
    TERRARIUM_OOM_WARN_SAMPLES, default 3).  Also, at once: v1 ``under_oom``
    (an OOM in progress), and any rise of ``failcnt`` / ``memsw failcnt`` or of
    v2 ``memory.events`` ``high`` / ``max``.  A reason fires again only after
    ``quiet`` seconds (near-limit: after usage went back under the threshold).
    """
    percent: float = 90.0
    consecutive: int = 3
    quiet: float = 15.0


@dataclass
class _Pressure:
    above: int = 0
    armed: bool = True
    prev: dict | None = None
    last_fired: dict = field(default_factory=dict)


class PressureTracker:
    """Feed points per container; → the warnings to publish now.  Pure."""

    def __init__(self, rule: PressureRule | None = None):
        self.rule = rule or PressureRule()
        self._state: dict[str, _Pressure] = {}

    def forget(self, key: str) -> None:
        self._state.pop(key, None)

    def feed(self, key: str, p: dict) -> list[dict]:
        r, s = self.rule, self._state.setdefault(key, _Pressure())
        out = []
        pct = 100.0 * p["usage"] / p["limit"] if p["limit"] else 0.0
        if pct >= r.percent:
            s.above += 1
            if s.above >= r.consecutive and s.armed:
                s.armed = False
                out.append(self._warning("near-limit", p, pct,
                                         f"memory at {pct:.0f}% of the limit for {s.above} samples"))
        else:
            s.above, s.armed = 0, True
        prev = s.prev
        if p.get("under_oom") and not (prev and prev.get("under_oom")):
            out.append(self._warning("under-oom", p, pct, "the kernel is in an OOM for this cgroup"))
        if prev is not None:
            for k, what in (("failcnt", "failcnt"), ("memsw_failcnt", "memory+swap failcnt"),
                            ("max", "memory.events max"), ("high", "memory.events high")):
                a, b = prev.get(k), p.get(k)
                if a is not None and b is not None and b > a:
                    out.append(self._warning(f"{k}-rising", p, pct, f"{what} rose {a} → {b}"))
        s.prev = p
        now = p["t"]
        fired = []
        for w in out:
            if w["reason"] != "near-limit" and now - s.last_fired.get(w["reason"], -1e18) < r.quiet:
                continue
            s.last_fired[w["reason"]] = now
            fired.append(w)
        return fired

    @staticmethod
    def _warning(reason, p, pct, text) -> dict:
        return {"reason": reason, "text": text, "usage": p["usage"], "limit": p["limit"],
                "percent": round(pct, 1), "t": p["t"]}


def swap_verdict(points: list[dict], *, host_swap_total: int | None = None) -> dict | None:
    """Did this container reach its memory limit and get swapped instead of killed?

    From a container's ring of points (oldest first): the limit was reached
    (peak usage within one page-ish of the limit, or failcnt > 0), the OOM
    counter did not move, and swap in use rose above zero.  → a dict with the
    figures to show (bytes), or None when that is not what happened.  On a host
    with no swap (``host_swap_total`` 0) the kernel cannot swap: None.
    """
    pts = [p for p in points or [] if p.get("limit")]
    if not pts or host_swap_total == 0:
        return None
    limit = pts[-1]["limit"]
    peak = max(max(p["usage"], p.get("max_usage") or 0) for p in pts)
    reached = peak >= limit - 64 * 1024 or any((p.get("failcnt") or 0) > 0 for p in pts)
    kills = (pts[-1].get("oom_kill") or 0) - (pts[0].get("oom_kill") or 0)
    swaps = [p.get("swap") or 0 for p in pts]
    if not reached or kills > 0 or max(swaps) <= 0:
        return None
    return {"limit": limit, "peak_usage": peak, "swap_now": swaps[-1], "swap_peak": max(swaps),
            "swap_limit": pts[-1].get("swap_limit") or (
                (pts[-1]["memsw_limit"] - limit) if pts[-1].get("memsw_limit") else None),
            "host_swap_total": host_swap_total, "t": pts[-1]["t"]}


def host_swap_total(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------- recorder
@dataclass
class _Ring:
    points: deque
    trees: deque                      # (t, JSON tree)
    name: str = ""
    n: int = 0
    last_seen: float = 0.0


class MemRecorder:
    """The rings of every limited running container (thread-safe: fed in the
    sampler's worker thread, read on the loop), and a consumer of the
    sampler (dashboard/live/sampler.Consumer's protocol).  ``targets``: {id:
    WatchTarget} of the limited running containers (the watcher sets it);
    ``read_once(ids, tree)``: a one-off reading (the sampler's), for the
    tree at an OOM's start; ``publish(warnings)``: an async callable, after
    each reading that raised warnings."""

    name = "oom-record"
    keep = True
    passive = False

    def __init__(self, *, interval: float = 0.5, keep: float = 75.0, tree_every: int = 1,
                 tree_at: float = 0.8, rule: PressureRule | None = None, read_once=None, publish=None):
        self.interval = self.every = interval
        self.keep_s = keep
        self.tree_every = max(1, tree_every)
        self.tree_at = tree_at
        self.read_once = read_once
        self.publish = publish
        self.targets: dict = {}
        self.pressure = PressureTracker(rule)
        self.swap_total = host_swap_total()
        self.verdicts: dict[str, dict] = {}          # container id → swap_verdict()
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()
        self._warnings: list[dict] = []
        self._trees_asked: set[str] = set()

    # -- the sampler's consumer
    def holds(self) -> set[str]:
        return set(self.targets)

    def next_after(self, now: float) -> float:
        return now + self.every

    def wants(self, watched=()) -> dict[str, bool]:
        """{id: with the tree} of every target: the tree on the first sample,
        then every tree_every-th while near the limit -- at ``tree_at`` of it,
        or rising fast enough to be there by the next sample -- or while an
        OOM is under way."""
        with self._lock:
            out = {}
            for cid in self.targets:
                ring = self._rings.get(cid)
                if ring is None or ring.n == 0 or not ring.points:
                    out[cid] = True
                    continue
                out[cid] = self._near(ring.points) and ring.n % self.tree_every == 0
        self._trees_asked = {cid for cid, t in out.items() if t}
        return out

    def _near(self, points) -> bool:
        last = points[-1]
        at = self.tree_at * last["limit"]
        if last["under_oom"] or last["usage"] >= at:
            return True
        if len(points) < 2:
            return False
        return 2 * last["usage"] - points[-2]["usage"] >= at     # where it will be next sample

    def take(self, got: dict, mono: float, wall: float) -> None:
        """The sampler's readings of the targets: points, trees asked for, warnings."""
        readings = {cid: r for cid, r in got.items() if not isinstance(r, BaseException)}
        self._warnings.extend(self.tick(readings, wall))

    async def after(self) -> None:
        warnings, self._warnings = self._warnings, []
        if warnings and self.publish is not None:
            await self.publish(warnings)

    def tick(self, readings: dict, t: float | None = None) -> list[dict]:
        """Fold one reading of each target ({id: (raw, forest)}); → warnings
        (each with container_id and name)."""
        now = time.time() if t is None else t
        warnings = []
        targets = self.targets
        for cid, (raw, forest) in readings.items():
            target = targets.get(cid)
            name = target.name if target is not None else ""
            p = point_from_sample(raw, now)
            if p is None:
                continue
            with self._lock:
                ring = self._rings.get(cid)
                if ring is None:
                    ring = self._rings[cid] = _Ring(deque(maxlen=int(self.keep_s / self.interval) + 20),
                                                    deque(maxlen=int(self.keep_s / self.interval) + 20))
                ring.name, ring.last_seen = name, now
                ring.points.append(p)
                ring.n += 1
            if forest is not None and cid in self._trees_asked:
                self._keep_tree(cid, forest_json(forest)[0])
            for w in self.pressure.feed(cid, p):
                warnings.append(dict(w, container_id=cid, container_name=name))
            # The verdict needs swap in use: a container that never swapped
            # costs no walk of its ring every sample.
            if self.swap_total != 0 and (p["swap"] or cid in self.verdicts):
                v = swap_verdict(list(ring.points), host_swap_total=self.swap_total)
                if v is not None:
                    self.verdicts[cid] = dict(v, container_name=name)
        with self._lock:                             # forget containers gone for a whole window
            for cid in [c for c, r in self._rings.items() if now - r.last_seen > self.keep_s]:
                del self._rings[cid]
                self.pressure.forget(cid)
        return warnings

    def snapshot_tree(self, cid: str) -> list[dict] | None:
        """Keep the container's process tree now (a few /proc reads: ~1 ms),
        a one-off reading (files opened for it and closed again) beside the
        sampler's ticks."""
        if self.read_once is None:
            return None
        got = self.read_once([cid], True).get(cid)
        if got is None or isinstance(got, BaseException) or got[1] is None:
            return None
        tree = forest_json(got[1])[0]
        self._keep_tree(cid, tree)
        return tree

    def _keep_tree(self, cid: str, tree: list[dict]) -> None:
        with self._lock:
            ring = self._rings.get(cid)
            if ring is not None and tree:
                ring.trees.append((round(time.time(), 3), tree))

    # -- reading
    def tracked(self) -> list[str]:
        with self._lock:
            return list(self._rings)

    def points(self, cid: str, t0: float = float("-inf"), t1: float = float("inf")) -> list[dict]:
        with self._lock:
            ring = self._rings.get(cid)
            return [p for p in ring.points if t0 <= p["t"] <= t1] if ring else []

    def tree_before(self, cid: str, t: float, victim_pid: int | None = None):
        """The last tree kept at or before ``t`` (+50 ms of slack) that holds the
        victim, else the last one before ``t``; → (t, tree) or (None, None)."""
        with self._lock:
            ring = self._rings.get(cid)
            trees = [x for x in ring.trees if x[0] <= t + 0.05] if ring else []
        if victim_pid is not None:
            for ts, tree in reversed(trees):
                if any(n["pid"] == victim_pid for _, n in walk_json(tree)):
                    return ts, tree
        return trees[-1] if trees else (None, None)

    def owner_of(self, pid: int) -> str | None:
        """The container whose most recent tree holds ``pid`` (a bare kmsg report)."""
        with self._lock:
            rings = list(self._rings.items())
        for cid, ring in rings:
            for _, tree in reversed(list(ring.trees)[-3:]):
                if any(n["pid"] == pid for _, n in walk_json(tree)):
                    return cid
        return None

    def card(self, cid: str, kill_t: float, victim_pid: int | None) -> dict:
        """What the OOM card stores at the kill: the window before, the figures
        just before, the tree just before with the victim marked."""
        pts = self.points(cid, kill_t - BEFORE_S, kill_t + AFTER_S)
        before = [p for p in pts if p["t"] <= kill_t + 0.05]
        last = before[-1] if before else None
        tree_t, tree = self.tree_before(cid, kill_t, victim_pid)
        tree, victim = mark_victim(tree or [], victim_pid)
        return {
            "memory_window": {"kill_t": kill_t, "limit": last["limit"] if last else
                              (pts[0]["limit"] if pts else None),
                              "points": [[p["t"], p["usage"], p["ws"]] for p in pts]},
            "before": ({**{k: last[k] for k in ("t", "usage", "ws", "limit", "failcnt", "memsw_failcnt",
                                                 "swap", "under_oom", "oom_kill", "high", "max")},
                        "anatomy": last.get("anatomy") or {},
                        "largest": largest_part(last.get("anatomy") or {}, last["limit"])}
                       if last else {}),
            "procs_before": {"t": tree_t, "tree": tree} if tree else {},
            "victim_ns_pid": victim["ns_pid"] if victim else None,
        }
