"""The one description of what a container's sample reads: a table per cgroup
version, one row per kernel file.

Both readers walk these tables: the driver's ``sample()`` (open, read, close:
runtime/cgroups/v1.py and v2.py) and the kept-open fast reader of
runtime/stats.py.  A row names the file, its controller (the v1 hierarchy, or
"unified" on v2), how often the fast reader re-reads it, and what it yields:
one or more *figures* (the sample's keys), each with the source label a page
shows on hover.  Adding a cgroup file is adding one row here: the sample and
the live page's "kernel files" panel take every figure the table yields;
``/metrics`` (dashboard/live/exporter.py) exports the row's ``metrics``.  A
row's metrics default to cAdvisor's for its figures (``CADVISOR``: one list
for both versions' tables); a row of a new file names its own with
``metrics=`` (``Metric``), so the row is still the one edit.  Not one series
per figure: a scrape of 1,000 containers must stay cheap.  A reading is a
runtime/cgroups/record.py ``Sample``, made from the figures in one place
(``Sample.of``).

Cadence (``when``), for the fast reader:

    "tick"    every tick; a change in one marks the tick *active* (the container
              ran, charged or freed memory, or gained/lost a task);
    "always"  every tick, not a sign of activity (writeback is charged without
              the container running; pressure averages decay while it sleeps);
    "active"  only on active ticks (and slow ones): what cannot move while usage,
              CPU time and the task count stand still -- memory.stat's LRU sizes,
              failcnt and OOM kills, CFS throttling;
    "slow"    every ``slow_every`` ticks: figures no graph plots (v1's
              max_usage, memsw usage and failcnt);
    "limit"   a limit (what ``docker update`` or ``terrarium update`` changes):
              on every slow tick of a kept-open reader, and on every pass of a
              one-off one (``read_many(keep=False)``), whose passes are far
              apart and whose next pass must show a limit just changed.

``WHEN`` lists them.

One row is not a cgroup file: ``NET_DEV``, /proc/<pid>/net/dev of a process
of the cgroup (the first cgroup.procs lists), whose "controller" is NETNS:
the counters of the network namespace the container's processes are in,
summed over every interface but lo (rx/tx bytes, packets, errors, drops).
Its source label names the file with that pid ("/proc/4242/net/dev Receive
bytes ..."); a container in the reader's own namespace (``--network host``)
has none, as cAdvisor gives none, and its figures are None.  It is read every
tick ("always": packets arrive while the container sleeps).  One read of one
file and no setns: procfs answers for the namespace of the process named in
the path (pyroute2 in the namespace would be a netlink socket made in it,
i.e. a setns, per tick).

A row's ``parse`` takes the file's bytes and returns {figure: value}; a file
that is absent (a controller not mounted, a knob this kernel does not offer)
gives None for each of its figures.  Values are ints, floats (PSI averages),
None, or (for ``memory_events``) the whole flat-keyed dict: record.Figure.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from . import parse
from .record import Figure, Sample

Parse = Callable[[bytes], dict[str, Figure]]
NS, US = 1e-9, 1e-6                 # raw unit -> seconds


class Metric(NamedTuple):
    """One Prometheus metric of a figure: the sample's ``figure`` (or
    ``derive(sample)`` for a computed one) times ``scale``; ``unset`` stands
    for a None (cAdvisor's 0 for "no limit"; None: no series); ``needs`` a
    figure that must be set for the metric to appear (cAdvisor shows CFS
    figures only with a quota); fixed extra ``labels``."""
    name: str                       # a counter's ends in _total
    kind: str                       # "counter" | "gauge"
    help: str
    figure: str = ""                # "": the row's (only) figure
    scale: float = 1.0
    unset: float | None = None
    needs: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    derive: Callable[[Sample], int | float | None] | None = None

    def value(self, sample: Sample) -> float | None:
        get = sample.figures.get
        if self.needs is not None and get(self.needs) is None:
            return None
        v = self.derive(sample) if self.derive is not None else get(self.figure)
        if v is None:
            return self.unset
        if not isinstance(v, (int, float)):
            return None                     # a dict figure (memory_events) is no series
        return v * self.scale if self.scale != 1.0 else v


WHEN = ("tick", "always", "active", "slow", "limit")     # a row's cadence (see above)


class Row(NamedTuple):
    file: str                       # the file's name in the cgroup directory
    controller: str                 # v1 hierarchy, or "unified"
    when: str                       # one of WHEN
    parse: Parse                    # bytes -> {figure: value}
    sources: Mapping[str, str]      # figure -> label ("memory.stat total_cache")
    metrics: tuple[Metric, ...] = ()   # what /metrics exports of it

    @property
    def figures(self) -> tuple[str, ...]:
        return tuple(self.sources)


class Table(NamedTuple):
    kind: str                       # "v1" | "v2"
    rows: tuple[Row, ...]
    constants: Mapping[str, Figure]     # figures this version never has (v2's failcnt)

    def figures(self) -> tuple[str, ...]:
        """Every figure a sample of this kind carries (the keys of Sample.figures)."""
        return tuple(f for r in self.rows for f in r.figures) + tuple(self.constants)


# --- row builders -------------------------------------------------------------

def one(figure: str, file: str, controller: str, when: str, conv: Callable[[str], int | None] = parse.integer,
        metrics: Metric | tuple[Metric, ...] | None = None) -> Row:
    """A file holding one value."""
    def read(data: bytes) -> dict[str, Figure]:
        return {figure: conv(data.decode())}
    if isinstance(metrics, Metric):
        metrics = (metrics,)
    if metrics is not None:
        metrics = tuple(m if m.figure else m._replace(figure=figure) for m in metrics)
    return _row(file, controller, when, read, {figure: file}, metrics)


def _row(file: str, controller: str, when: str, read: Parse, sources: Mapping[str, str],
         metrics: tuple[Metric, ...] | None) -> Row:
    """The row, with cAdvisor's metrics of its figures unless it names its own."""
    if metrics is None:
        metrics = tuple(m for m in CADVISOR if m.figure in sources)
    return Row(file, controller, when, read, sources, tuple(metrics))


def picker(keys: tuple[str, ...]) -> Callable[[bytes], tuple[int | None, ...]]:
    """A parser of ``key value`` lines (memory.stat, cpu.stat) on bytes → the
    integer values of ``keys`` as a tuple, None for a key not there.  bytes.find
    with precomputed needles: ~3 µs on a 750-byte v1 memory.stat (a regex: 6)."""
    needles = tuple((k.encode() + b" ", b"\n" + k.encode() + b" ") for k in keys)

    def pick(data: bytes) -> tuple[int | None, ...]:
        out: list[int | None] = []
        for head, needle in needles:
            if data.startswith(head):
                i = len(head)
            else:
                i = data.find(needle)
                if i < 0:
                    out.append(None)
                    continue
                i += len(needle)
            j = data.find(b"\n", i)
            try:
                out.append(int(data[i:j] if j >= 0 else data[i:]))
            except ValueError:
                out.append(None)
        return tuple(out)
    return pick


def keyed(file: str, controller: str, when: str, fields: Mapping[str, str | tuple[str, int]],
          metrics: tuple[Metric, ...] | None = None) -> Row:
    """A ``key value`` file: {figure: field} or {figure: (field, scale)}
    (scale: v2's microseconds become the nanoseconds v1 reports)."""
    spec = {fig: (f, 1) if isinstance(f, str) else f for fig, f in fields.items()}
    figs = tuple(spec)
    scales = tuple(s for _, s in spec.values())
    pick = picker(tuple(f for f, _ in spec.values()))

    def read(data: bytes) -> dict[str, Figure]:
        return {fig: None if v is None else v * s for fig, v, s in zip(figs, pick(data), scales)}
    return _row(file, controller, when, read, {fig: f"{file} {f}" for fig, (f, _) in spec.items()}, metrics)


def events(file: str, controller: str, when: str) -> Row:
    """memory.oom_control (v1) / memory.events (v2): the whole dict, and its oom_kill."""
    def read(data: bytes) -> dict[str, Figure]:
        d = parse.flat_keyed(data.decode())
        return {"memory_events": d, "oom_kills": d.get("oom_kill")}
    return _row(file, controller, when, read, {"memory_events": file, "oom_kills": f"{file} oom_kill"}, None)


def pair(file: str, controller: str, when: str, conv: Callable[[str], tuple[int | None, int | None]],
         figures: tuple[str, str], labels: tuple[str, str], metrics: tuple[Metric, ...] | None = None) -> Row:
    """A file parsed into two figures (io read/write; cpu.max quota/period)."""
    a, b = figures

    def read(data: bytes) -> dict[str, Figure]:
        x, y = conv(data.decode())
        return {a: x, b: y}
    return _row(file, controller, when, read, {a: labels[0], b: labels[1]}, metrics)


def pressure(resource: str) -> Row:
    """v2 <resource>.pressure: some/full avg10/avg60/avg300 (percent) and total (µs)."""
    file = f"{resource}.pressure"
    names = [(f"psi_{resource}_{kind}_{field}", kind, field)
             for kind in ("some", "full") for field in ("avg10", "avg60", "avg300", "total")]

    def read(data: bytes) -> dict[str, Figure]:
        got = parse.pressure(data.decode())
        return {fig: got.get(kind, {}).get(field) for fig, kind, field in names}
    return _row(file, "unified", "always", read,
                {fig: f"{file} {kind} {field}" for fig, kind, field in names}, None)


# --- cAdvisor's metrics ---------------------------------------------------------
# Its names, help texts and units, so Grafana dashboards made for cAdvisor work
# unchanged; a row gets those of its figures (both tables share them).

def working_set(s: Sample) -> int | None:
    """usage - inactive file cache, as kubelet and cAdvisor count it (never negative)."""
    usage = s.memory_usage
    return None if usage is None else max(usage - (s.memory_inactive_file or 0), 0)


def _psi(resource: str) -> tuple[Metric, Metric]:
    """PSI totals (µs) as cAdvisor names them: ``some`` = waiting, ``full`` = stalled."""
    return (
        Metric(f"container_pressure_{resource}_waiting_seconds_total", "counter",
               f"Total time duration tasks in the container have waited due to {resource} congestion.",
               f"psi_{resource}_some_total", US),
        Metric(f"container_pressure_{resource}_stalled_seconds_total", "counter",
               f"Total time duration no tasks in the container could make progress due to {resource} congestion.",
               f"psi_{resource}_full_total", US),
    )


CADVISOR: tuple[Metric, ...] = (
    Metric("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.",
           "cpu_usage_ns", NS, labels=(("cpu", "total"),)),
    Metric("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.",
           "cpu_nr_periods", needs="cpu_quota_us"),
    Metric("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.",
           "cpu_nr_throttled", needs="cpu_quota_us"),
    Metric("container_cpu_cfs_throttled_seconds_total", "counter",
           "Total time duration the container has been throttled.", "cpu_throttled_ns", NS,
           needs="cpu_quota_us"),
    Metric("container_spec_cpu_quota", "gauge", "CPU quota of the container.", "cpu_quota_us"),
    Metric("container_spec_cpu_period", "gauge", "CPU period of the container.", "cpu_period_us"),
    Metric("container_memory_usage_bytes", "gauge",
           "Current memory usage in bytes, including all memory regardless of when it was accessed",
           "memory_usage"),
    Metric("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", "memory_usage",
           derive=working_set),
    Metric("container_memory_cache", "gauge", "Number of bytes of page cache memory.", "memory_cache"),
    Metric("container_memory_rss", "gauge", "Size of RSS in bytes.", "memory_rss"),
    Metric("container_memory_swap", "gauge", "Container swap usage in bytes.", "memory_swap"),
    Metric("container_memory_total_inactive_file_bytes", "gauge", "Current total inactive file in bytes.",
           "memory_inactive_file"),
    Metric("container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes",
           "memory_max_usage"),
    # a counter in cAdvisor, but named without _total, which the client library
    # (and OpenMetrics) give every counter: a gauge keeps cAdvisor's name
    Metric("container_memory_failcnt", "gauge", "Number of memory usage hits limits", "memory_failcnt"),
    Metric("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container.",
           "memory_limit", unset=0),
    Metric("container_oom_events_total", "counter",
           "Count of out of memory events observed for the container", "oom_kills"),
    Metric("container_threads", "gauge", "Number of threads running inside the container", "pids_current"),
    Metric("container_threads_max", "gauge",
           "Maximum number of threads allowed inside the container, infinity if value is zero",
           "pids_max", unset=0),
    *_psi("cpu"), *_psi("memory"), *_psi("io"),
)


NETNS = "netns"      # the "controller" of rows read under /proc/<pid> of a process of the cgroup


def net_dev() -> Row:
    """/proc/<pid>/net/dev: net_{rx,tx}_{bytes,packets,errors,dropped}."""
    halves = (("rx", "Receive"), ("tx", "Transmit"))
    names = [(f"net_{d}_{what}", f"{d}_{what}", f"net/dev {head} {what} (every interface but lo)")
             for d, head in halves for what, _ in parse.NET_DEV_FIELDS]

    def read(data: bytes) -> dict[str, Figure]:
        got = parse.net_dev(data.decode())
        return {fig: got[key] for fig, key, _ in names}
    # cAdvisor's container_network_*, summed over the interfaces (no
    # ``interface`` label: one series per container, as `sum by (name)` queries want)
    metrics = tuple(
        Metric(f"container_network_{way}_{what}_total", "counter", f"Cumulative count of {text}", f"net_{d}_{fig}")
        for d, way, past, ing in (("rx", "receive", "received", "receiving"),
                                  ("tx", "transmit", "transmitted", "transmitting"))
        for what, fig, text in (("bytes", "bytes", f"bytes {past}"), ("packets", "packets", f"packets {past}"),
                                ("packets_dropped", "dropped", f"packets dropped while {ing}"),
                                ("errors", "errors", f"errors encountered while {ing}")))
    return Row("net/dev", NETNS, "always", read, {fig: label for fig, _, label in names}, metrics)


NET_DEV = net_dev()

# --- the tables ---------------------------------------------------------------

V1 = Table("v1", (
    one("memory_usage", "memory.usage_in_bytes", "memory", "tick"),
    one("memory_limit", "memory.limit_in_bytes", "memory", "limit", parse.limit_v1),
    one("memory_low", "memory.soft_limit_in_bytes", "memory", "limit", parse.limit_v1),
    one("memory_max_usage", "memory.max_usage_in_bytes", "memory", "slow"),
    # Note: kernel 6.18 left both failcnt at 0 through a real OOM kill here.
    one("memory_failcnt", "memory.failcnt", "memory", "active"),
    one("memsw_usage", "memory.memsw.usage_in_bytes", "memory", "slow"),
    one("memsw_limit", "memory.memsw.limit_in_bytes", "memory", "limit", parse.limit_v1),
    # With memsw == memory the memsw counter is usually the one that hits.
    one("memsw_failcnt", "memory.memsw.failcnt", "memory", "slow"),
    keyed("memory.stat", "memory", "active", {
        "memory_cache": "total_cache", "memory_rss": "total_rss",
        "memory_inactive_file": "total_inactive_file", "memory_swap": "total_swap",
        "memory_active_file": "total_active_file", "memory_anon": "total_rss",
        "memory_shmem": "total_shmem", "memory_mapped_file": "total_mapped_file",
        "memory_active_anon": "total_active_anon", "memory_inactive_anon": "total_inactive_anon",
        "memory_unevictable": "total_unevictable"}),
    one("memory_kernel", "memory.kmem.usage_in_bytes", "memory", "active"),
    one("memory_sock", "memory.kmem.tcp.usage_in_bytes", "memory", "active"),
    events("memory.oom_control", "memory", "active"),
    one("cpu_usage_ns", "cpuacct.usage", "cpuacct", "tick"),
    keyed("cpu.stat", "cpu", "active", {
        "cpu_nr_periods": "nr_periods", "cpu_nr_throttled": "nr_throttled",
        "cpu_throttled_ns": "throttled_time"}),                 # v1 reports ns
    one("cpu_quota_us", "cpu.cfs_quota_us", "cpu", "limit", parse.quota_v1),
    one("cpu_period_us", "cpu.cfs_period_us", "cpu", "limit"),
    one("pids_current", "pids.current", "pids", "tick"),
    one("pids_max", "pids.max", "pids", "limit", parse.max_or_int),
    pair("blkio.throttle.io_service_bytes_recursive", "blkio", "always", parse.blkio_bytes,
         ("io_read_bytes", "io_write_bytes"), ("blkio.throttle.io_service_bytes_recursive",) * 2),
    NET_DEV,
), {})

V2 = Table("v2", (
    one("memory_usage", "memory.current", "unified", "tick"),
    one("memory_limit", "memory.max", "unified", "limit", parse.max_or_int),
    one("memory_high", "memory.high", "unified", "limit", parse.max_or_int),
    one("memory_low", "memory.low", "unified", "limit"),
    one("memory_min", "memory.min", "unified", "limit"),
    one("memory_swap", "memory.swap.current", "unified", "active"),
    one("memory_swap_limit", "memory.swap.max", "unified", "limit", parse.max_or_int),
    keyed("memory.stat", "unified", "active", {
        "memory_cache": "file", "memory_rss": "anon", "memory_inactive_file": "inactive_file",
        "memory_active_file": "active_file", "memory_anon": "anon", "memory_shmem": "shmem",
        "memory_mapped_file": "file_mapped", "memory_active_anon": "active_anon",
        "memory_inactive_anon": "inactive_anon", "memory_unevictable": "unevictable",
        "memory_kernel": "kernel", "memory_slab": "slab", "memory_sock": "sock",
        "memory_pagetables": "pagetables"}),
    events("memory.events", "unified", "active"),
    keyed("cpu.stat", "unified", "tick", {
        "cpu_usage_ns": ("usage_usec", 1000), "cpu_nr_periods": "nr_periods",
        "cpu_nr_throttled": "nr_throttled", "cpu_throttled_ns": ("throttled_usec", 1000)}),
    pair("cpu.max", "unified", "limit", parse.cpu_max, ("cpu_quota_us", "cpu_period_us"), ("cpu.max", "cpu.max")),
    one("pids_current", "pids.current", "unified", "tick"),
    one("pids_max", "pids.max", "unified", "limit", parse.max_or_int),
    pair("io.stat", "unified", "always", parse.io_stat_bytes,
         ("io_read_bytes", "io_write_bytes"), ("io.stat rbytes", "io.stat wbytes")),
    pressure("cpu"),
    pressure("memory"),
    pressure("io"),
    NET_DEV,
), {"memory_failcnt": None})        # v1 only; v2 counts in memory.events max


def table(kind: str) -> Table:
    return V2 if kind == "v2" else V1


def metrics() -> tuple[Metric, ...]:
    """Every metric of both tables' rows, each name once (a v1 and a v2 row of
    the same figure give the same metric), in the tables' order."""
    seen: dict[str, Metric] = {}
    for t in (V1, V2):
        for r in t.rows:
            for m in r.metrics:
                seen.setdefault(m.name, m)
    return tuple(seen.values())


def sources(t: Table, mounted: Collection[str], netns: str | None = None) -> dict[str, str]:
    """{figure: label} of the rows whose controller is there; the NETNS rows'
    labels under ``netns`` ("/proc/<pid>"), when the container has its own."""
    out: dict[str, str] = {}
    for r in t.rows:
        if r.controller == NETNS:
            if netns:
                out.update({f: f"{netns}/{label}" for f, label in r.sources.items()})
        elif r.controller in mounted:
            out.update(r.sources)
    return out


def absent(row: Row) -> dict[str, Figure]:
    return dict.fromkeys(row.sources)


def sample_from(t: Table, read: Callable[[Row], bytes | None], mounted: Collection[str],
                netns: str | None = None) -> Sample:
    """One sample: each row's file through ``read`` (None: absent; a NETNS
    row's file is under ``netns``).  The driver's ``sample()``; the fast
    reader builds the same from kept values."""
    out: dict[str, Figure] = {}
    for row in t.rows:
        there = bool(netns) if row.controller == NETNS else row.controller in mounted
        data = read(row) if there else None
        out.update(absent(row) if data is None else row.parse(data))
    out.update(t.constants)
    return Sample.of(t.kind, out, sources(t, mounted, netns))
