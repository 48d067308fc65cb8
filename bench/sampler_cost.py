"""Sampler cost per container per tick, with its process tree (µs).

    sudo .venv/bin/python bench/sampler_cost.py [N_CONTAINERS] [TICKS]

Starts N `lab` containers running `sh -c 'sleep 100 & sleep 100 & wait'`
(3 processes each) under a throwaway root and cgroup parent, and times the
sampler's blocking part -- read the cgroup files and the process tree,
compute the point and the tree payload, encode the events to JSON -- over
TICKS ticks, then removes them.  Two readers are timed, rounds alternating:

- stats:     runtime.stats (kept-open descriptors re-read with pread,
             unchanged process sets and processes skipped) -- the default;
- selectors: driver.sample() + procs.container_tree() (open+read every file).

Plus the parts of the stats path on their own.  Target (issue 4): below
100 µs per container per tick (200 containers at 1 Hz < 2 % of one core).
Set TERRARIUM_BENCH_JSON=path to also write the figures as JSON.
"""
import json
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

import django  # noqa: E402
django.setup()

from collections import deque  # noqa: E402

from dashboard.containers.runtime_client import get_runtime  # noqa: E402
from dashboard.live.sampler import Sampler, SelectorsReader, StatsReader, _Watched  # noqa: E402
from runtime import Spec  # noqa: E402


def _sampler(reader, ids):
    s = Sampler(tick=1.0, reader=reader, record=False)
    for cid in ids:
        s.state[cid] = _Watched(points=deque(maxlen=10))
    s._collect(ids)                                   # warm up: open files, first tree
    return s


def _time(fn, ticks):
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(ticks):
        fn()
    return (time.perf_counter() - t0) / ticks, (time.thread_time() - c0) / ticks


def start(rt, n):
    ids = []
    for i in range(n):
        ids.append(rt.run(Spec(image="lab", name=f"bench-{i}",
                               cmd=("sh", "-c", "sleep 100 & sleep 100 & wait"))).id)
    time.sleep(0.5)
    return ids


def stop(rt, ids):
    for cid in ids:
        rt.remove(cid, force=True)
    rt.shutdown_forkserver()
    rt.cgroups.remove_parent()
    shutil.rmtree(root, ignore_errors=True)


def measure(ids, ticks):
    n = len(ids)
    fast, slow = _sampler(StatsReader(), ids), _sampler(SelectorsReader(), ids)
    res = {"stats": [], "selectors": []}
    rounds = 5
    for _ in range(rounds):                           # alternate: noise hits both alike
        res["stats"].append(_time(lambda: fast._collect(ids), ticks // rounds)[1])
        res["selectors"].append(_time(lambda: slow._collect(ids), ticks // rounds)[1])
    per = {k: sorted(v)[len(v) // 2] / n * 1e6 for k, v in res.items()}
    # the parts of the stats path
    r = fast.reader._reader
    cs = [r.containers[c] for c in ids]
    parts = {
        "cgroup files (pread + parse)": _time(lambda: [c.cgroup.sample() for c in cs], ticks)[1],
        "cgroup.procs + process stat": _time(lambda: [c.table.forest(c.cgroup.procs_bytes()) for c in cs], ticks)[1],
        "pread syscalls alone": _time(lambda: [f.read() for c in cs for _, f, _ in c.cgroup.files if f], ticks)[1],
    }
    parts = {k: v / n * 1e6 for k, v in parts.items()}
    return per, parts


def main(n: int = 50, ticks: int = 100) -> dict:
    rt = get_runtime()
    rt.images.ensure_builtin()
    ids = []
    try:
        ids = start(rt, n)
        per, parts = measure(ids, ticks)
    finally:
        stop(rt, ids)
    print(f"sampler cost ({n} containers x 3 processes, {ticks} ticks, thread CPU; target < 100 µs):")
    print(f"  stats reader (default)     {per['stats']:7.0f} µs per container per tick"
          f"   -> 200 containers at 1 Hz = {per['stats'] * 200 / 1e4:.1f} % of one core")
    print(f"  selectors (open+read)      {per['selectors']:7.0f} µs per container per tick"
          f"   ({per['selectors'] / per['stats']:.1f}x)")
    for k, v in parts.items():
        print(f"    {k:28s} {v:6.0f} µs")
    out = {"n": n, "ticks": ticks, "us_per_container": per, "parts_us": parts}
    if os.environ.get("TERRARIUM_BENCH_JSON"):
        with open(os.environ["TERRARIUM_BENCH_JSON"], "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
