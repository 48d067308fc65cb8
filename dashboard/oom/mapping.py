"""Pure decisions of the OOM watcher: which container a kernel report is about,
and which detections (kmsg report, cgroup counter) are the same kill.

No I/O, no Django: tested on recorded kmsg reports and synthetic counter events.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from runtime.oom import OomReport

SCOPE_CONTAINER, SCOPE_HOST = "container", "host"


# --------------------------------------------------------------- attribution
def container_id_for_memcg(memcg: str | None, parent: str) -> str | None:
    """``/<parent>/<id>[/...]`` → ``<id>``; None for any other cgroup (or None)."""
    if not memcg:
        return None
    parts = [p for p in memcg.split("/") if p]
    head = [p for p in parent.split("/") if p]
    if len(parts) <= len(head) or parts[:len(head)] != head:
        return None
    return parts[len(head)]


@dataclass(frozen=True)
class Attribution:
    """Whom a report blames: a Terrarium container, or the host."""
    scope: str                         # SCOPE_CONTAINER / SCOPE_HOST
    container_id: str | None
    memcg: str | None                  # the cgroup whose limit was hit (None: global)


def attribute(report: OomReport, parent: str) -> Attribution:
    """A global OOM is the host's, whichever cgroup the victim lived in; a memcg
    OOM belongs to the container whose cgroup hit its limit (oom_memcg), or to
    the host when that cgroup is not one of ours."""
    if report.is_global:
        return Attribution(SCOPE_HOST, None, None)
    memcg = report.oom_memcg or report.task_memcg
    cid = container_id_for_memcg(memcg, parent)
    return Attribution(SCOPE_CONTAINER if cid else SCOPE_HOST, cid, memcg)


def is_bare(report: OomReport) -> bool:
    """A memcg kill whose report names no cgroup.

    mm/oom_kill.c prints the report's header and its ``oom-kill:`` line under a
    ratelimit (``oom_rs``: DEFAULT_RATELIMIT_BURST = 10 reports per
    DEFAULT_RATELIMIT_INTERVAL = 5 s); the "Memory cgroup out of memory:
    Killed process N" line is printed always.  The 11th kill within 5 s
    therefore arrives as that one line.
    """
    return not report.is_global and not report.oom_memcg and not report.task_memcg


def attribute_bare(report: OomReport, parent: str, *, proc_memcg: str | None = None,
                   tree_owner: str | None = None, waiting=()) -> Attribution:
    """Whom a bare report (is_bare) blames, from what else is known, in order:
    the victim's /proc/<pid>/cgroup if it was still there, the container whose
    recent process tree held the pid, the one container with a counter kill
    waiting for its report.  Else the host, with no cgroup."""
    cid = container_id_for_memcg(proc_memcg, parent) if proc_memcg else None
    if cid is None and tree_owner is not None:
        cid = tree_owner
    if cid is None and len(waiting) == 1:
        cid = waiting[0]
    if cid is None:
        return Attribution(SCOPE_HOST, None, proc_memcg)
    return Attribution(SCOPE_CONTAINER, cid, f"/{parent.strip('/')}/{cid}")


# --------------------------------------------------------------------- dedupe
# What the correlator asks the watcher to do.
NEW = "new"                   # record a kill seen in the kernel log (maybe with counters)
CONFIRM = "confirm"           # a counter rise matches a kill already recorded from kmsg
COUNTER_ONLY = "counter"      # the counter rose and no kmsg report came: record it bare


@dataclass(frozen=True)
class Action:
    kind: str
    key: Hashable | None              # container id (None: host)
    report: OomReport | None = None
    counts: object = None             # runtime.oom.OomCounts when a counter saw it
    token: tuple | None = None        # (kernel usec, pid) of the kmsg report


def report_token(report: OomReport) -> tuple:
    return (report.usec, report.pid)


@dataclass
class _Pending:
    since: float
    counts: object


@dataclass
class _Key:
    counters: deque = field(default_factory=deque)   # counter kills waiting for their report
    reports: deque = field(default_factory=deque)    # (since, token) reports waiting for a counter


class Correlator:
    """Pairs the two sightings of one kill in one cgroup, in order.

    The v1 eventfd fires first (≈0 ms), the kmsg report follows (≈4 ms): a
    counter kill waits up to ``window`` seconds for its report, which then
    becomes one event seen by both.  A report with no counter kill waiting is
    recorded at once and keeps a credit, so a later counter rise only confirms
    it.  A counter kill whose report never comes (kmsg unreadable, overrun) is
    recorded bare when the window ends.  Kills outside our cgroups (key None)
    have no counter watch and are recorded from kmsg alone.
    """

    def __init__(self, window: float = 0.25, credit_ttl: float = 10.0):
        self.window = window
        self.credit_ttl = credit_ttl
        self._keys: dict[Hashable, _Key] = {}

    def on_report(self, key: Hashable | None, report: OomReport, now: float) -> list[Action]:
        token = report_token(report)
        if key is None:
            return [Action(NEW, None, report, None, token)]
        k = self._keys.setdefault(key, _Key())
        if k.counters:
            pending = k.counters.popleft()
            return [Action(NEW, key, report, pending.counts, token)]
        k.reports.append((now, token))
        return [Action(NEW, key, report, None, token)]

    def on_counter(self, key: Hashable, new_kills: int, counts, now: float) -> list[Action]:
        out = []
        k = self._keys.setdefault(key, _Key())
        for _ in range(max(new_kills, 0)):
            if k.reports:
                _, token = k.reports.popleft()
                out.append(Action(CONFIRM, key, None, counts, token))
            else:
                k.counters.append(_Pending(now, counts))
        return out

    def waiting(self, now: float | None = None, within: float = 0.1) -> list[Hashable]:
        """Keys with a counter kill waiting for its kernel-log report (with ``now``:
        only those seen in the last ``within`` s — the report follows its counter
        by ~4 ms, so an older one is another kill's)."""
        return [key for key, k in self._keys.items()
                if k.counters and (now is None or now - k.counters[-1].since <= within)]

    def expire(self, now: float) -> list[Action]:
        """Counter kills whose report is overdue; forgets stale credits."""
        out = []
        for key, k in list(self._keys.items()):
            while k.counters and now - k.counters[0].since >= self.window:
                out.append(Action(COUNTER_ONLY, key, None, k.counters.popleft().counts))
            while k.reports and now - k.reports[0][0] >= self.credit_ttl:
                k.reports.popleft()
            if not k.counters and not k.reports:
                del self._keys[key]
        return out

    def next_deadline(self) -> float | None:
        """When expire() next has something to do (for call_later), or None."""
        times = [k.counters[0].since + self.window for k in self._keys.values() if k.counters]
        times += [k.reports[0][0] + self.credit_ttl for k in self._keys.values() if k.reports]
        return min(times) if times else None
