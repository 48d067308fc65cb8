"""Pure arithmetic of the live feed: raw cgroup counters and process snapshots
in, the figures a graph shows out.  No I/O here; tested from numbers.

A raw sample is the record ``Runtime.cgroups.sample(id)`` returns
(runtime.Sample: typed fields for the figures read here by name, ``figures``
for every figure of the table, ``sources``); a *point* is one tick of one
container as the browser plots it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from runtime import Sample

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Point key -> the raw key whose ``sources`` entry names its file.
POINT_SOURCES = {
    "mem": "memory_usage", "ws": "memory_usage", "mem_limit": "memory_limit",
    "cache": "memory_cache", "inactive_file": "memory_inactive_file", "swap": "memory_swap",
    "failcnt": "memory_failcnt", "oom_kills": "oom_kills", "cpu": "cpu_usage_ns",
    "cpu_limit": "cpu_quota_us", "throttled": "cpu_nr_throttled",
    "throttled_s": "cpu_throttled_ns", "pids": "pids_current", "pids_max": "pids_max",
    "io_r": "io_read_bytes", "io_w": "io_write_bytes",
    # memory anatomy (memory.stat and friends) and the v2 limits below max
    "anon": "memory_anon", "shmem": "memory_shmem", "active_file": "memory_active_file",
    "kernel": "memory_kernel", "slab": "memory_slab", "sock": "memory_sock",
    "pagetables": "memory_pagetables", "mem_high": "memory_high", "mem_low": "memory_low",
    "mem_min": "memory_min",
    # the network namespace's counters, per second (/proc/<pid>/net/dev, all but lo)
    "net_rx": "net_rx_bytes", "net_tx": "net_tx_bytes", "net_rx_p": "net_rx_packets",
    "net_tx_p": "net_tx_packets", "net_rx_drop": "net_rx_dropped", "net_tx_drop": "net_tx_dropped",
    # pressure stall information, avg10 (v2)
    "psi_cpu": "psi_cpu_some_avg10", "psi_cpu_full": "psi_cpu_full_avg10",
    "psi_mem": "psi_memory_some_avg10", "psi_mem_full": "psi_memory_full_avg10",
    "psi_io": "psi_io_some_avg10", "psi_io_full": "psi_io_full_avg10",
}
# Point keys copied from the raw sample as they are (the rest are computed):
# always, and -- the anatomy, the lower memory limits, PSI -- only when the
# sample has them (a v1 point carries no six null PSI keys every tick).
# Network rates: point key -> raw counter; in a point only when the sample has
# the counter (a --network host container has none).
_NET_RATES = tuple((k, POINT_SOURCES[k]) for k in ("net_rx", "net_tx", "net_rx_p", "net_tx_p",
                                                    "net_rx_drop", "net_tx_drop"))
_COMPUTED = ("mem", "ws", "cpu", "cpu_limit", "throttled", "throttled_s", "io_r", "io_w",
             *(k for k, _ in _NET_RATES))
_ALWAYS = ("mem_limit", "cache", "inactive_file", "swap", "failcnt", "oom_kills", "pids", "pids_max")
_COPIED = tuple((k, POINT_SOURCES[k]) for k in _ALWAYS)
_OPTIONAL = tuple((k, r) for k, r in POINT_SOURCES.items() if k not in _COMPUTED and k not in _ALWAYS)
# A figure that is no number: memory.events / memory.oom_control whole (flattened below).
_NOT_FIGURES = frozenset(("memory_events",))


def working_set(usage: int | None, inactive_file: int | None) -> int | None:
    """usage - inactive file cache, as kubelet and cAdvisor count it: the memory
    the kernel could not simply drop.  Never negative (the two files are read
    at slightly different moments)."""
    if usage is None:
        return None
    return max(usage - (inactive_file or 0), 0)


def cpu_share(prev: int | None, now: int | None, seconds: float, per_second: float = 1e9
              ) -> float | None:
    """CPU used between two cumulative readings as a share of one core (1.0 =
    one core busy): a cgroup's nanoseconds (``per_second`` 1e9) or a process's
    clock ticks (CLK_TCK).  None without a previous reading; a counter that
    went backwards (the cgroup was recreated, the pid reused) counts as no
    use.  The one place the dashboard computes a CPU share: the live point,
    the process tree, the history's passes and the host's cgroup page."""
    if prev is None or now is None or seconds <= 0:
        return None
    return max(now - prev, 0) / per_second / seconds


def rate(prev: int | None, now: int | None, seconds: float) -> float | None:
    """Per-second rate of a cumulative counter; None without two readings."""
    if prev is None or now is None or seconds <= 0:
        return None
    return max(now - prev, 0) / seconds


def delta(prev: int | None, now: int | None) -> int | None:
    if prev is None or now is None:
        return None
    return max(now - prev, 0)


def cpu_limit(quota_us: int | None, period_us: int | None) -> float | None:
    """The CFS quota in cores (0.5 = half a core); None when unlimited."""
    if not quota_us or not period_us or quota_us < 0:
        return None
    return quota_us / period_us


def point(prev: Sample | None, raw: Sample, seconds: float, t: float) -> dict:
    """One graph point from this tick's raw sample and the previous one
    (``seconds`` apart).  Rates and shares are None on the first tick.
    (The same arithmetic as working_set, rate, delta and cpu_limit, inlined:
    it runs once per container per tick.)"""
    g = raw.figures.get
    usage, inactive = raw.memory_usage, raw.memory_inactive_file
    ws = None if usage is None else max(usage - (inactive or 0), 0)
    quota, period = raw.cpu_quota_us, raw.cpu_period_us
    cpu = thr = thr_s = io_r = io_w = None
    if prev:
        ok = seconds > 0
        cpu = cpu_share(prev.cpu_usage_ns, raw.cpu_usage_ns, seconds)
        if cpu is not None:
            cpu = round(cpu, 4)
        a, b = prev.cpu_nr_throttled, raw.cpu_nr_throttled
        if a is not None and b is not None:
            thr = max(b - a, 0)
        a, b = prev.cpu_throttled_ns, raw.cpu_throttled_ns
        if a is not None and b is not None:
            thr_s = round(max(b - a, 0) / 1e9, 4)
        a, b = prev.io_read_bytes, raw.io_read_bytes
        if ok and a is not None and b is not None:
            io_r = round(max(b - a, 0) / seconds, 4)
        a, b = prev.io_write_bytes, raw.io_write_bytes
        if ok and a is not None and b is not None:
            io_w = round(max(b - a, 0) / seconds, 4)
    out = {k: g(r) for k, r in _COPIED}
    if g("net_rx_bytes") is not None:
        pg = prev.figures.get if prev else None
        for k, r in _NET_RATES:
            a, b = pg(r) if pg else None, g(r)
            out[k] = round(max(b - a, 0) / seconds, 2) if a is not None and seconds > 0 else None
    for k, r in _OPTIONAL:
        v = g(r)
        if v is not None:
            out[k] = v
    out.update({
        "t": round(t, 3), "mem": usage, "ws": ws, "cpu": cpu,
        "cpu_limit": quota / period if quota and period and quota > 0 else None,
        "throttled": thr, "throttled_s": thr_s, "io_r": io_r, "io_w": io_w,
    })
    return out


def figures(raw: Sample) -> dict:
    """Every figure of the raw sample as it was read, memory.events (v2) /
    memory.oom_control (v1) flattened to ``memory_events_<key>``: the page's
    "kernel files" panel shows them all, so a row added to
    runtime/cgroups/figures.py reaches it with no other edit."""
    out = {k: v for k, v in raw.figures.items() if k not in _NOT_FIGURES}
    for k, v in (raw.memory_events or {}).items():
        out[f"memory_events_{k}"] = v
    return out


def figure_sources(raw: Sample) -> dict[str, str]:
    src = raw.sources
    out = {k: v for k, v in src.items() if k not in _NOT_FIGURES}
    if "memory_events" in src:
        for k in raw.memory_events or {}:
            out[f"memory_events_{k}"] = f"{src['memory_events']} {k}"
    return out


def point_sources(raw: Sample) -> dict[str, str]:
    """{point key: "file [key]"} from the raw sample's ``sources``."""
    src = raw.sources
    out = {k: src[r] for k, r in POINT_SOURCES.items() if r in src}
    if "memory_usage" in src and "memory_inactive_file" in src:
        out["ws"] = f"{src['memory_usage']} - {src['memory_inactive_file']}"
    return out


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


# --- process trees ------------------------------------------------------------

def forest_json(forest: Iterable, prev_ticks: Mapping[tuple[int, int], int] | None = None,
                seconds: float = 0.0) -> tuple[list[dict], dict[tuple[int, int], int]]:
    """JSON-safe nested nodes from runtime.procs ProcessNodes -- the live
    page's tree and the OOM card's, one payload -- with each process's CPU
    share since ``prev_ticks`` (paired by (pid, start time), so a reused pid
    starts afresh; None without them); and this reading's ticks for the next call."""
    prev_ticks = prev_ticks or {}
    now_ticks: dict[tuple[int, int], int] = {}
    out: list[dict] = []
    stack = [(node, out) for node in reversed(list(forest))]
    while stack:                                   # iterative: trees can be deep
        node, siblings = stack.pop()
        i = node.info
        now_ticks[i.key] = i.cpu_ticks
        cpu = cpu_share(prev_ticks.get(i.key), i.cpu_ticks, seconds, CLK_TCK)
        entry = {"pid": i.pid, "ns_pid": i.ns_pid, "ppid": i.ppid, "uid": i.uid,
                 "user": i.user, "state": i.state, "comm": i.comm,
                 "cmdline": " ".join(i.cmdline) or f"[{i.comm}]", "rss": i.rss,
                 "cpu": None if cpu is None else round(cpu, 4),
                 "threads": i.threads, "sources": dict(i.sources), "children": []}
        siblings.append(entry)
        stack.extend((c, entry["children"]) for c in reversed(node.children))
    return out, now_ticks
