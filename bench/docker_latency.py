"""From `docker run -d` to the container in our discovery (issue 12), next
to `docker ps` seeing it.

    sudo .venv/bin/python bench/docker_latency.py [N]

A private dockerd (tests/dockerd.py, vfs, --network none).  This process
keeps one Discovery following dockerd's event stream (Discovery.follow, as
the agent runs it under Runtime.changes(engines=True) for the live list).
2N rounds (N default 20 per side), alternating:

- ours: `docker run -d busybox sleep 3600` returns (t0); wait for the event
  naming its key (it often came while the CLI was still running), then
  Discovery.get(key) -- what the agent's ``discovered`` verb answers the
  list page's live row with -- returns the container with its init pid and
  cgroup: t1.  Wall time t1 - t0.
- docker ps: after the same `docker run -d`, one `docker ps -q --no-trunc
  --filter id=<id>` (a fresh CLI process, as a person or a script would
  ask), repeated until it lists the id: wall time from t0 to its exit.

Medians and p90 of each, and in how many "ours" rounds the event had come
before the CLI returned (event_lead_ms: event time - t0, negative when it
had); the container is removed between rounds, outside the timing.  Prints
JSON.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Runtime  # noqa: E402
from tests import dockerd  # noqa: E402


def _p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def main(n=20) -> dict:
    if not dockerd.available():
        sys.exit("needs root and Debian's docker.io")
    root = tempfile.mkdtemp(prefix="terrarium-bench-")
    parent = f"terrarium-bench-{secrets.token_hex(3)}"
    rt = Runtime(root, parent)
    rt.images.ensure_builtin()
    stop = threading.Event()
    heard: dict[str, float] = {}
    cond = threading.Condition()

    def on_key(key):
        if key is not None:
            with cond:
                heard.setdefault(key, time.monotonic())
                cond.notify_all()

    times = {"ours": [], "docker_ps": []}
    lead = []
    try:
        with dockerd.private_dockerd(f"{parent}-dockerd") as docker:
            os.environ["TERRARIUM_DOCKER_HOST"] = docker.env["DOCKER_HOST"]
            dockerd.load_image(docker, rt)
            disc = rt.discovery()
            disc.discover()
            disc.follow(stop.is_set, on_key)
            time.sleep(0.5)                     # the event stream connected
            run = [dockerd.DOCKER, "run", "-d", "--network", "none", "busybox", "sleep", "3600"]
            for i in range(2 * n + 2):          # two warm-up rounds
                what = ("ours", "docker_ps")[i % 2]
                cid = subprocess.run(run, env=docker.env, capture_output=True, text=True,
                                     check=True).stdout.strip()
                t0 = time.monotonic()
                key = f"docker-{cid}"
                if what == "ours":
                    with cond:
                        if not cond.wait_for(lambda: key in heard, timeout=10):
                            raise AssertionError(f"no event for {cid[:12]} in 10 s")
                    found = disc.get(key)
                    assert found.pid and found.cgroup, found
                    if i >= 2:
                        lead.append((heard[key] - t0) * 1000)
                else:
                    while True:
                        out = subprocess.run([dockerd.DOCKER, "ps", "-q", "--no-trunc", "--filter",
                                              f"id={cid}"], env=docker.env, capture_output=True,
                                             text=True, check=True).stdout
                        if cid in out:
                            break
                dt = time.monotonic() - t0
                if i >= 2:
                    times[what].append(dt * 1000)
                docker("rm", "-f", cid)
    finally:
        stop.set()
        rt.shutdown_servers()
        rt.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": n, "median_ms": {k: round(v, 1) for k, v in med.items()},
            "p90_ms": {k: round(_p90(v), 1) for k, v in times.items()},
            "ours_over_docker_ps": round(med["ours"] / med["docker_ps"], 3),
            "event_before_cli_returned": f"{sum(x < 0 for x in lead)} of {len(lead)}",
            "event_lead_ms_median": round(statistics.median(lead), 1),
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "raw_ms": {k: [round(x, 1) for x in v] for k, v in times.items()}}


if __name__ == "__main__":
    print(json.dumps(main(*[int(a) for a in sys.argv[1:2]]), indent=2))
