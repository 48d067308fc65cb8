"""One Prometheus scrape of /metrics with N running containers (ms, wall clock).

    sudo .venv/bin/python bench/metrics_bench.py [N ...]      # default: 100 1000

Starts idle busybox containers (`sleep`) under a throwaway root and cgroup
parent, and at each N (cumulative: the first N of the same containers) times,
in interleaved rounds (the order rotates each round; medians):

- scrape:               GET /metrics through Django (Client, the view with its
                        middleware and a bearer token): the running containers
                        from one cgroup directory listing, one read_many of the
                        default reader (runtime.stats, files kept open and
                        re-read with pread), the body written from each
                        container's kept series lines (dashboard/live/exporter.py);
- scrape, OpenMetrics:  the same, asking for OpenMetrics as Prometheus does;
- scrape, all changed:  the text scrape with every container's kept lines
                        made stale first (as if every sample had moved: busy
                        containers, or samples through the agent);
- before:               the collector as it was before (the A of the A/B): the
                        container list (Runtime.list), one read per container
                        (its own kept-open reader), families encoded by
                        prometheus_client's text encoder;
- library encoder:      today's collector (inventory, read_many) encoded by
                        prometheus_client's text encoder instead of its own;
- list only:            Runtime.list(all=False), which a scrape no longer calls
                        while no new container appears;
- encode only:          the metric families built from already-read samples and
                        encoded (prometheus_client's text format).

Wall clock and this process's CPU time (process_time: what the scrape costs
whatever else loads the machine).  Goal (issue 16): <= 100 ms for one
scrape at 1,000 containers.  Also shown:
the descriptors the default reader keeps open per container, and the body's
size.  Set TERRARIUM_BENCH_JSON=path to also write the figures as JSON.
"""
import os
import secrets
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
root = tempfile.mkdtemp(prefix="terrarium-bench-")
os.environ["TERRARIUM_ROOT"] = root
os.environ["TERRARIUM_CGROUP_PARENT"] = f"terrarium-bench-{secrets.token_hex(3)}"
os.environ["TERRARIUM_WEB_DIR"] = os.path.join(root, "web")   # not /var/lib/terrarium-web
TOKEN = secrets.token_urlsafe(32)
os.environ["TERRARIUM_METRICS_TOKEN"] = TOKEN

import django  # noqa: E402
django.setup()

from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402

from bench.common import save_if_asked, summary  # noqa: E402
from dashboard.containers.runtime_client import get_runtime  # noqa: E402
from dashboard.live import exporter, selectors  # noqa: E402
from dashboard.live.sampler import StatsReader  # noqa: E402
from dashboard.rlimits import raise_nofile  # noqa: E402
from runtime import Spec, fdbudget  # noqa: E402
from tests.fds import count as _fds, targets as _fd_targets  # noqa: E402

ROUNDS = 15


class _Rows:
    """A collector of already-read samples: the encoding alone."""

    def __init__(self, rows):
        self.rows = rows

    def collect(self):
        return exporter.families(self.rows)


class _Before:
    """The collector as it was before the kept lines: Runtime.list, one read
    per container (through the same kept-open reader as the scrape: one set
    of descriptors)."""

    def __init__(self, reader):
        self.reader = reader

    def collect(self):
        rows = []
        for c in selectors.running_containers():
            try:
                raw, _ = self.reader.read(c.id, tree=False)
            except selectors.NotSampled:
                continue
            rows.append((exporter.labels_of(c), raw))
        yield from exporter.families(rows)


def _changed() -> None:
    """Make every container's kept lines stale, as a moved sample does (its
    label prefixes stay)."""
    lines = exporter.collector()._lines
    for cid, kept in lines.items():
        lines[cid] = (None, *kept[1:])


def _registry(collector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def measure(client: Client) -> dict:
    """Interleaved rounds over the variants, with every container of the root running."""
    rt = get_runtime()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "HTTP_ACCEPT": "text/plain"}
    om = dict(headers, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5")
    body = client.get("/metrics", **headers).content            # warm: open the files
    reader = StatsReader()                                      # the other variants' own (the
    reader.read_many([c.id for c in selectors.running_containers()], tree=False)   # scrape's: the sampler's)
    before = _Before(reader)
    before_reg = _registry(before)
    library = exporter.ContainerCollector(reader=reader)
    library_reg = _registry(library)
    generate_latest(before_reg), generate_latest(library_reg)
    running = selectors.running_containers()
    rows = [(exporter.labels_of(c), rt.cgroups.sample(c.id)) for c in running]
    encode = _registry(_Rows(rows))
    variants = {
        "scrape": lambda: client.get("/metrics", **headers),
        "scrape, OpenMetrics": lambda: client.get("/metrics", **om),
        "scrape, all changed": lambda: (_changed(), client.get("/metrics", **headers)),
        "before": lambda: generate_latest(before_reg),
        "library encoder": lambda: generate_latest(library_reg),
        "list only": selectors.running_containers,
        "encode only": lambda: generate_latest(encode),
    }
    times = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    names = list(variants)
    for i in range(ROUNDS):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    reader.close()                    # its kept files: what the scrape keeps is counted by the caller
    return {"n": len(running), "bytes": len(body), "series": body.count(b"\ncontainer_"),
            "lists": exporter.collector().lists, "kept_fds": fdbudget.STATS.held,
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "ms": {k: summary(v) for k, v in times.items()},
            "cpu_ms": {k: summary(v) for k, v in cpu.items()}}


def main(sizes=(100, 1000)) -> dict:
    soft, _ = raise_nofile()
    # 1,000 containers' kept-open files (~19 each) are more than the default
    # share of a 20,000 limit (runtime/fdbudget.py: half): all but 1,024 here
    fdbudget.STATS.limit = soft - 1024
    setup_test_environment()
    rt = get_runtime()
    rt.images.ensure_builtin()
    client = Client()
    ids: list[str] = []
    results = []
    base_fds, base_targets = _fds(), _fd_targets()
    try:
        t0 = time.monotonic()
        for n in sorted(sizes):
            while len(ids) < n:
                ids.append(rt.run(Spec(image="busybox", name=f"metrics-{len(ids)}",
                                       cmd=("sleep", "100000"))).id)
            started = time.monotonic() - t0
            exporter.reset()
            before = _fds()
            res = measure(client)
            res["fds_per_container"] = (_fds() - before) / n
            res["start_s"] = started
            results.append(res)
            exporter.reset()
            ms = res["ms"]
            print(f"{res['n']:5d} running containers (started in {started:.0f} s), "
                  f"{res['series']} series, {res['bytes'] / 1024:.0f} KiB, "
                  f"{res['fds_per_container']:.1f} descriptors kept per container; median of {ROUNDS}:")
            for k, s in ms.items():
                print(f"    {k:20s} {s['median']:8.1f} ms   (p90 {s['p90']:.1f})"
                      f"   CPU {res['cpu_ms'][k]['median']:8.1f} ms")
            cpu = res["cpu_ms"]
            print(f"    scrape vs before: {cpu['scrape']['median'] / cpu['before']['median']:.2f}x CPU"
                  f"   goal at 1,000: <= 100 ms   (container lists in {2 * ROUNDS + 1} scrapes: {res['lists']};"
                  f" load average {' '.join(res['loadavg'])})")
    finally:
        exporter.reset()
        for cid in ids:
            rt.remove(cid, force=True)
        rt.shutdown_servers()
        rt.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)
    left = _fd_targets()
    for t in base_targets:
        if t in left:
            left.remove(t)
    assert _fds() <= base_fds + 2, f"descriptors left open: {left[:20]} ({len(left)})"
    out = {"results": results}
    save_if_asked(out)
    return out


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (100, 1000))
