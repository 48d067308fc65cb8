"""Where the dashboard's one sampler and its consumers are put together, so
that no consumer module imports another (nor the sampler the history).

- the live viewers: dashboard/live/consumers.py and listusage.py subscribe
  (watched ids, every tick, with the tree);
- the minute history (dashboard/live/history.py): every live point is folded
  (``record``), and ``MinuteHistory`` reads every running container nobody
  watches once a minute while the sampler runs; while it is stopped the
  reconciler's signal runs the same pass at most once a minute.  With an
  external sampler (TERRARIUM_SAMPLER=external) that process keeps the
  history, not Daphne;
- the OOM memory record (dashboard/oom/memrecord.py): its watcher adds it to
  ``get_sampler()`` while it runs (limited running containers, memory
  figures, the tree only near the limit or at an OOM's start);
- /metrics (dashboard/live/exporter.py): reads on scrape through
  ``get_sampler().read_now`` (no tree; a tick's fresh readings reused; its
  files kept open until a scrape no longer names the container).

``wire()`` runs once, from LiveConfig.ready.
"""
from __future__ import annotations

from . import history
from . import sampler as _sampler


def make_sampler(*, tick: float | None = None, keep_history: bool | None = None) -> _sampler.Sampler:
    """A sampler with the history declared (unless ``keep_history`` is False;
    by default not in a Daphne whose sampler is external)."""
    s = _sampler.Sampler(tick=tick)
    if keep_history is None:
        keep_history = not _sampler.external()
    if keep_history:
        s.point_hooks.append(history.record)
        s.add(history.MinuteHistory())
    return s


def keep_history_between_viewers(sender, **kwargs) -> None:
    """Receiver of containers.signals.reconciled: while this process's sampler
    is stopped, the minute pass here, at most once a minute, so the 24 h
    history has no holes.  With an external sampler that process keeps it."""
    if _sampler.external() or _sampler.get_sampler().running:
        return
    history.keep_between_viewers()


def wire() -> None:
    from dashboard.containers.signals import reconciled
    _sampler.set_factory(make_sampler)
    reconciled.connect(keep_history_between_viewers, dispatch_uid="live-history")
