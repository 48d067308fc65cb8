"""Prometheus ``/metrics``: the running containers' cgroup figures under
cAdvisor's metric names and labels, so Grafana dashboards made for cAdvisor
work unchanged.

Read on scrape, nothing in the background: a scrape lists the running (and
paused) containers, reads each one's raw cgroup sample with ``tree=False``
(no process is read) and walks ``METRICS`` once.  ``METRICS`` is the one
table from the runtime's raw sample keys (runtime/cgroups v1.py / v2.py
``sample()``) to metric names: a new cgroup file in the sample is one more
row here.  A key the sample lacks (v1 has no PSI, v2 no failcnt) or holds as
None yields no series for that container, as cAdvisor leaves them out.

Labels, as cAdvisor's defaults: ``id`` the container's cgroup path
(``/terrarium/<id>``, as cAdvisor's ``id="/docker/<id>"``), ``name`` and
``image``; ``container_cpu_usage_seconds_total`` also carries ``cpu="total"``
(cAdvisor's label when it has no per-CPU figures).  Limits follow cAdvisor:
no memory limit reads 0, and the CFS counters and the quota appear only for
a container that has a CPU quota.

Who may scrape is decided in views.metrics (README, Configuration).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from . import metrics as _metrics
from . import sampler, selectors

log = logging.getLogger(__name__)

LABELS = ("id", "image", "name")
NS, US = 1e-9, 1e-6                    # raw unit -> seconds


@dataclass(frozen=True)
class Row:
    """One metric: the raw sample ``key`` (a figure of runtime/cgroups/figures.py;
    a callable for a derived one), ``scale`` to the metric's unit, ``unset``
    for a None (cAdvisor's 0 for "no limit"; None: no series), ``needs`` a key
    that must be set for the metric to appear (cAdvisor shows CFS figures only
    with a quota), fixed extra ``labels``."""
    metric: str                         # a counter's ends in _total
    kind: str                           # "counter" | "gauge"
    help: str
    key: str | Callable[[Mapping], float | None]
    scale: float = 1.0
    unset: float | None = None
    needs: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def value(self, sample: Mapping) -> float | None:
        if self.needs is not None and sample.get(self.needs) is None:
            return None
        v = self.key(sample) if callable(self.key) else sample.get(self.key)
        if v is None:
            return self.unset
        return v * self.scale if self.scale != 1.0 else v


def _working_set(s: Mapping) -> int | None:
    return _metrics.working_set(s.get("memory_usage"), s.get("memory_inactive_file"))


def _psi(resource: str) -> tuple[Row, Row]:
    """PSI totals (µs) as cAdvisor names them: ``some`` = waiting, ``full`` = stalled."""
    return (
        Row(f"container_pressure_{resource}_waiting_seconds_total", "counter",
            f"Total time duration tasks in the container have waited due to {resource} congestion.",
            f"psi_{resource}_some_total", US),
        Row(f"container_pressure_{resource}_stalled_seconds_total", "counter",
            f"Total time duration no tasks in the container could make progress due to {resource} congestion.",
            f"psi_{resource}_full_total", US),
    )


METRICS: tuple[Row, ...] = (
    Row("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.",
        "cpu_usage_ns", NS, labels=(("cpu", "total"),)),
    Row("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.",
        "cpu_nr_periods", needs="cpu_quota_us"),
    Row("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.",
        "cpu_nr_throttled", needs="cpu_quota_us"),
    Row("container_cpu_cfs_throttled_seconds_total", "counter",
        "Total time duration the container has been throttled.", "cpu_throttled_ns", NS, needs="cpu_quota_us"),
    Row("container_spec_cpu_quota", "gauge", "CPU quota of the container.", "cpu_quota_us"),
    Row("container_spec_cpu_period", "gauge", "CPU period of the container.", "cpu_period_us"),
    Row("container_memory_usage_bytes", "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "memory_usage"),
    Row("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", _working_set),
    Row("container_memory_cache", "gauge", "Number of bytes of page cache memory.", "memory_cache"),
    Row("container_memory_rss", "gauge", "Size of RSS in bytes.", "memory_rss"),
    Row("container_memory_swap", "gauge", "Container swap usage in bytes.", "memory_swap"),
    Row("container_memory_total_inactive_file_bytes", "gauge", "Current total inactive file in bytes.",
        "memory_inactive_file"),
    Row("container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes",
        "memory_max_usage"),
    # a counter in cAdvisor, but named without _total, which the client library
    # (and OpenMetrics) give every counter: a gauge keeps cAdvisor's name
    Row("container_memory_failcnt", "gauge", "Number of memory usage hits limits", "memory_failcnt"),
    Row("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container.",
        "memory_limit", unset=0),
    Row("container_oom_events_total", "counter", "Count of out of memory events observed for the container",
        "oom_kills"),
    Row("container_threads", "gauge", "Number of threads running inside the container", "pids_current"),
    Row("container_threads_max", "gauge",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        "pids_max", unset=0),
    *_psi("cpu"), *_psi("memory"), *_psi("io"),
    # /proc/<pid>/net/dev summed over every interface but lo (no ``interface``
    # label: one series per container, as `sum by (name)` queries want)
    *(Row(f"container_network_{way}_{what}_total", "counter", f"Cumulative count of {text}", f"net_{d}_{fig}")
      for d, way, past, ing in (("rx", "receive", "received", "receiving"),
                                ("tx", "transmit", "transmitted", "transmitting"))
      for what, fig, text in (("bytes", "bytes", f"bytes {past}"), ("packets", "packets", f"packets {past}"),
                              ("packets_dropped", "dropped", f"packets dropped while {ing}"),
                              ("errors", "errors", f"errors encountered while {ing}"))),
)


def labels_of(c) -> tuple[str, str, str]:
    """(id, image, name) of a runtime Container, in LABELS' order."""
    return ("/" + (c.cgroup or c.id), c.image or "", c.name)


def families(rows: Iterable[tuple[tuple[str, ...], Mapping]], table: tuple[Row, ...] | None = None):
    """The metric families of (labels, raw sample) pairs, one per table row
    (of METRICS unless given) that any container has a value for.

    Built with the client library's Metric.add_sample rather than
    Counter/GaugeMetricFamily.add_metric: each container's label dict is made
    once per scrape and shared by its samples, not once per sample (at 1,000
    containers that is 1,000 dicts instead of 18,000)."""
    pairs = [(dict(zip(LABELS, labels)), sample) for labels, sample in rows]
    with_extra: dict[tuple, list[dict]] = {}
    for row in METRICS if table is None else table:
        if row.labels:
            if row.labels not in with_extra:
                with_extra[row.labels] = [{**d, **dict(row.labels)} for d, _ in pairs]
            dicts = with_extra[row.labels]
        else:
            dicts = [d for d, _ in pairs]
        fam = None
        for d, (_, sample) in zip(dicts, pairs):
            v = row.value(sample)
            if v is None:
                continue
            if fam is None:
                # a counter family is named without _total; its samples with it
                name = row.metric[:-6] if row.kind == "counter" else row.metric
                fam = Metric(name, row.help, row.kind)
            fam.add_sample(row.metric, d, v)
        if fam is not None:
            yield fam


class ContainerCollector(Collector):
    """Reads on collect(); one reader (see sampler.make_reader) for all scrapes,
    under a lock: a reader is not thread-safe.  Containers that stopped since
    the last scrape are forgotten (their kept-open files closed)."""

    def __init__(self, reader=None):
        self._reader = reader
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def collect(self):
        error = 0.0
        try:
            containers = selectors.running_containers()
        except selectors.NotListed as e:
            log.warning("/metrics: cannot list the containers: %s", e)
            containers, error = [], 1.0
        rows = []
        with self._lock:
            if self._reader is None:
                self._reader = sampler.make_reader()
            now = set()
            for c in containers:
                try:
                    raw, _ = self._reader.read(c.id, tree=False)
                except selectors.NotSampled:
                    continue                      # stopped since the list was read
                now.add(c.id)
                rows.append((labels_of(c), raw))
            for cid in self._seen - now:
                self._reader.forget(cid)
            self._seen = now
        yield from families(rows)
        fam = GaugeMetricFamily("container_scrape_error",
                                "1 if there was an error while getting container metrics, 0 otherwise")
        fam.add_metric((), error)
        yield fam

    def close(self) -> None:
        """Forget every container (tests; a reader keeps files open)."""
        with self._lock:
            if self._reader is not None:
                for cid in self._seen:
                    self._reader.forget(cid)
            self._seen = set()


_lock = threading.Lock()
_registry: CollectorRegistry | None = None
_collector: ContainerCollector | None = None


def registry() -> CollectorRegistry:
    """The registry /metrics serves: only the containers' collector (not the
    client library's default process and platform collectors)."""
    global _registry, _collector
    with _lock:
        if _registry is None:
            _collector = ContainerCollector()
            _registry = CollectorRegistry(auto_describe=False)
            _registry.register(_collector)
        return _registry


def render(accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of one scrape, in the format the client asked for
    (OpenMetrics for a Prometheus that asks for it, else the text format)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry()), content_type


def reset() -> None:
    """Drop the collector and its reader's open files (tests change the runtime)."""
    global _registry, _collector
    with _lock:
        if _collector is not None:
            _collector.close()
        _registry = _collector = None
