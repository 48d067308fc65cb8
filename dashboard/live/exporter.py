"""Prometheus ``/metrics``: the running containers' cgroup figures under
cAdvisor's metric names and labels, so Grafana dashboards made for cAdvisor
work unchanged.

Read on scrape, nothing in the background: a scrape lists the running (and
paused) containers, reads each one's raw cgroup sample with ``tree=False``
(no process is read) through the process's one sampler
(``Sampler.read_now``: a container one of its ticks read less than half a
tick ago is not read again; the files stay open between scrapes) and walks the metrics of the figure table's rows
(runtime/cgroups/figures.py: each row carries its metrics, cAdvisor's by
default), so a new cgroup file is one row there and nothing here.  A figure
the sample lacks (v1 has no PSI, v2 no failcnt) or holds as None yields no
series for that container, as cAdvisor leaves them out.

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
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from runtime import Sample
from runtime.cgroups import figures

from . import sampler, selectors

log = logging.getLogger(__name__)

LABELS = ("id", "image", "name")
HOLDER = "metrics"          # what the sampler knows /metrics' kept files by


def labels_of(c) -> tuple[str, str, str]:
    """(id, image, name) of a runtime Container, in LABELS' order."""
    return ("/" + (c.cgroup or c.id), c.image or "", c.name)


def families(rows: Iterable[tuple[tuple[str, ...], Sample]], table: tuple[figures.Metric, ...] | None = None):
    """The metric families of (labels, raw sample) pairs, one per metric
    (figures.metrics() unless given) that any container has a value for.

    Built with the client library's Metric.add_sample rather than
    Counter/GaugeMetricFamily.add_metric: each container's label dict is made
    once per scrape and shared by its samples, not once per sample (at 1,000
    containers that is 1,000 dicts instead of 18,000)."""
    pairs = [(dict(zip(LABELS, labels)), sample) for labels, sample in rows]
    with_extra: dict[tuple, list[dict]] = {}
    for m in figures.metrics() if table is None else table:
        if m.labels:
            if m.labels not in with_extra:
                with_extra[m.labels] = [{**d, **dict(m.labels)} for d, _ in pairs]
            dicts = with_extra[m.labels]
        else:
            dicts = [d for d, _ in pairs]
        fam = None
        for d, (_, sample) in zip(dicts, pairs):
            v = m.value(sample)
            if v is None:
                continue
            if fam is None:
                # a counter family is named without _total; its samples with it
                fam = Metric(m.name[:-6] if m.kind == "counter" else m.name, m.help, m.kind)
            fam.add_sample(m.name, d, v)
        if fam is not None:
            yield fam


ERROR_HELP = "1 if there was an error while getting container metrics, 0 otherwise"


def _escape(v: str) -> str:
    """A label value as both text formats write it (backslash, newline, quote)."""
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class ContainerCollector(Collector):
    """Reads on scrape through the sampler (``read_now``, as holder
    "metrics"), or through ``reader`` if one is given (tests, bench/), under a
    lock: a reader is not thread-safe.  Containers that stopped since the
    last scrape are forgotten (their kept-open files closed).

    What a scrape costs at 1,000 containers (bench/metrics_bench.py) is kept
    down three ways:

    - the running containers are the container cgroups under the runtime's
      parent (one directory listing, selectors.live_cgroup_ids); their labels
      come from Runtime.list(), called only when a cgroup appears that has
      none yet (a container's name and image do not change while it runs);
    - every container is read with one read_many(tree=False);
    - ``encode`` writes the text (or OpenMetrics) body itself, from each
      container's series lines, kept between scrapes and made again only when
      its sample changed (runtime.stats returns the very same record while none
      of a container's files changed: an idle container costs no formatting).
      Its output is byte for byte what the client library's encoders write
      for ``collect()``'s families (tests/live/test_exporter.py); the client
      library still negotiates the format (views.metrics, render)."""

    def __init__(self, reader=None):
        self._reader = reader
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._labels: dict[str, tuple[str, str, str]] = {}     # id -> labels_of()
        self._strays: set[str] = set()       # container cgroups the list did not show running
        self._backoff, self._retry_at = 0.5, 0.0
        self._metrics: tuple = ()
        self._lines: dict[str, tuple] = {}   # id -> (raw, labels, ((metric index, line), ...), prefixes)
        self.lists = 0                       # Runtime.list() calls, for tests and bench/

    def _running(self) -> list[tuple[str, tuple[str, str, str]]]:
        """(id, labels) of the running (and paused) containers.  A cgroup the
        list does not show running (one being started or removed right then,
        or left behind) is a stray: listed again after 1, 2, 4 ... 300 s."""
        ids = selectors.live_cgroup_ids()
        now = time.monotonic()
        if (ids is None or any(c not in self._labels and c not in self._strays for c in ids)
                or (self._strays and now >= self._retry_at)):
            self.lists += 1
            listed = {c.id: labels_of(c) for c in selectors.running_containers()}
            if ids is None:
                return list(listed.items())
            self._labels = listed
            self._strays = set(ids) - set(listed)
            self._backoff = min(self._backoff * 2, 300.0) if self._strays else 0.5
            self._retry_at = now + self._backoff
        else:
            self._strays &= set(ids)
        return [(c, self._labels[c]) for c in ids if c in self._labels]

    def scrape(self) -> tuple[list[tuple[str, tuple, Sample]], float]:
        """([(id, labels, raw sample)], container_scrape_error's value)."""
        rows: list = []
        with self._lock:
            try:
                running = self._running()
            except selectors.NotListed as e:
                log.warning("/metrics: cannot list the containers: %s", e)
                return rows, 1.0
            ids = [c for c, _ in running]
            if self._reader is None:
                got = sampler.get_sampler().read_now(HOLDER, ids)
            else:
                got = self._reader.read_many(ids, tree=False) if ids else {}
            now = set()
            for cid, labels in running:
                r = got.get(cid)
                if r is None or isinstance(r, BaseException):
                    continue                      # stopped since the cgroup was listed
                now.add(cid)
                rows.append((cid, labels, r[0]))
            for cid in self._seen - now:
                if self._reader is not None:
                    self._reader.forget(cid)
                self._lines.pop(cid, None)
            self._seen = now
        return rows, 0.0

    def collect(self):
        """The client library's metric families (any registry, any encoder)."""
        rows, error = self.scrape()
        yield from families((labels, raw) for _, labels, raw in rows)
        fam = GaugeMetricFamily("container_scrape_error", ERROR_HELP)
        fam.add_metric((), error)
        yield fam

    def encode(self, openmetrics: bool = False) -> bytes:
        """One scrape's body: the text format 0.0.4, or OpenMetrics 1.0."""
        rows, error = self.scrape()
        with self._lock:
            metrics = figures.metrics()
            if metrics != self._metrics:
                self._metrics, self._lines = metrics, {}
            columns: list[list[str]] = [[] for _ in metrics]
            for cid, labels, raw in rows:
                kept = self._lines.get(cid)
                if kept is None or kept[1] != labels:
                    prefixes = _prefixes(metrics, labels)
                elif kept[0] is not raw:
                    prefixes = kept[3]
                else:
                    prefixes = None                   # the same sample: the same lines
                if prefixes is not None:
                    kept = self._lines[cid] = (raw, labels, _series_lines(metrics, prefixes, raw), prefixes)
                for i, line in kept[2]:
                    columns[i].append(line)
        out = []
        for m, lines in zip(metrics, columns):
            if lines:
                out.append(_header(m.name[:-6] if m.kind == "counter" else m.name, m.name, m.help,
                                   m.kind, openmetrics))
                out.extend(lines)
        out.append(_header("container_scrape_error", "container_scrape_error", ERROR_HELP, "gauge",
                           openmetrics))
        out.append(f"container_scrape_error {_go(error)}\n")
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out).encode()

    def close(self) -> None:
        """Forget every container (tests; a reader keeps files open)."""
        with self._lock:
            if self._reader is not None:
                for cid in self._seen:
                    self._reader.forget(cid)
            else:
                sampler.get_sampler().release_holder(HOLDER)
            self._seen, self._lines = set(), {}


def _header(family: str, sample: str, help_: str, kind: str, openmetrics: bool) -> str:
    """HELP and TYPE as the client library writes them: OpenMetrics names the
    family (a counter without _total) and escapes quotes in the help too."""
    if openmetrics:
        return f"# HELP {family} {_escape(help_)}\n# TYPE {family} {kind}\n"
    help_ = help_.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {sample} {help_}\n# TYPE {sample} {kind}\n"


def _prefixes(metrics, labels: tuple[str, str, str]) -> tuple[str, ...]:
    """Each metric's ``name{labels} `` for one container (made once per container)."""
    pairs = dict(zip(LABELS, labels))
    base = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items()))
    out = []
    for m in metrics:
        lab = base
        if m.labels:
            lab = ",".join(f'{k}="{_escape(x)}"' for k, x in sorted({**pairs, **dict(m.labels)}.items()))
        out.append(f"{m.name}{{{lab}}} ")
    return tuple(out)


def _series_lines(metrics, prefixes: tuple[str, ...], raw: Sample) -> tuple[tuple[int, str], ...]:
    """One container's sample lines, (metric index, line), of the metrics it
    has a value for (Metric.value, inlined for the plain ones)."""
    get = raw.figures.get
    out = []
    for i, m in enumerate(metrics):
        if m.derive is None and m.needs is None:
            v = get(m.figure)
            if v is None:
                v = m.unset
                if v is None:
                    continue
            elif m.scale != 1.0:
                v = v * m.scale
        else:
            v = m.value(raw)
            if v is None:
                continue
        out.append((i, f"{prefixes[i]}{_go(v)}\n"))
    return tuple(out)


def _go(v) -> str:
    """floatToGoString (the client library's value format), without the float
    round trip for the integers most figures are: 7 -> "7.0", 12345678 ->
    "1.2345678e+07" (Go's exponent from 7 digits on)."""
    if type(v) is int and -10**15 < v < 10**15:
        s = str(v)
        if v > 0 and len(s) > 6:
            return f"{(s[0] + '.' + s[1:]).rstrip('0.')}e+{len(s) - 1:02d}"
        return s + ".0"
    return floatToGoString(v)


_lock = threading.Lock()
_registry: CollectorRegistry | None = None
_collector: ContainerCollector | None = None


def collector() -> ContainerCollector:
    """The process's collector (one reader and its kept-open files for all scrapes)."""
    global _registry, _collector
    with _lock:
        if _collector is None:
            _collector = ContainerCollector()
            _registry = CollectorRegistry(auto_describe=False)
            _registry.register(_collector)
        return _collector


def registry() -> CollectorRegistry:
    """The collector in a registry of its own (not the client library's default
    process and platform collectors), for the client library's encoders."""
    collector()
    return _registry


def render(accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of one scrape, in the format the client asked for
    (OpenMetrics for a Prometheus that asks for it, else the text format),
    as the client library negotiates it."""
    _, content_type = choose_encoder(accept or "")
    return collector().encode(content_type.startswith("application/openmetrics-text")), content_type


def reset() -> None:
    """Drop the collector and its reader's open files (tests change the runtime)."""
    global _registry, _collector
    with _lock:
        if _collector is not None:
            _collector.close()
        _registry = _collector = None
