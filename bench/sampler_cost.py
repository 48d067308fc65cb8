"""Sampler cost per container per tick, with its process tree (µs).

    sudo .venv/bin/python bench/sampler_cost.py [N_CONTAINERS] [TICKS]

Starts N `lab` containers running `sh -c 'sleep 100 & sleep 100 & wait'`
under a throwaway root and cgroup parent, times the sampler's blocking part
(cgroup sample + process tree + arithmetic) over TICKS ticks, removes them.
Target (issue 4): below 100 µs per container per tick.
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

import django  # noqa: E402
django.setup()

from dashboard.live.sampler import Sampler, _Watched  # noqa: E402
from dashboard.containers.runtime_client import get_runtime  # noqa: E402
from collections import deque  # noqa: E402
from runtime import Spec  # noqa: E402


def main(n: int = 5, ticks: int = 200) -> None:
    rt = get_runtime()
    rt.images.ensure_builtin()
    ids = []
    try:
        for i in range(n):
            ids.append(rt.run(Spec(image="lab", name=f"bench-{i}",
                                   cmd=("sh", "-c", "sleep 100 & sleep 100 & wait"))).id)
        time.sleep(0.5)
        s = Sampler(tick=1.0)
        for cid in ids:
            s.state[cid] = _Watched(points=deque(maxlen=10))
        s._collect(ids)                                  # warm up
        t0 = time.perf_counter()
        for _ in range(ticks):
            s._collect(ids)
        per = (time.perf_counter() - t0) / ticks / n * 1e6
        print(f"sampler cost: {per:.0f} µs per container per tick "
              f"({n} containers x 3 processes, {ticks} ticks; target < 100 µs)")
        print(f"200 containers at 1 Hz ≈ {per * 200 / 1e4:.1f} % of one core")
    finally:
        for cid in ids:
            rt.remove(cid, force=True)
        rt.shutdown_forkserver()
        rt.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
