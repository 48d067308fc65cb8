#!/usr/bin/env python3
"""`terrarium save` / `terrarium load` against `docker save` / `docker load`.

    .venv/bin/python bench/archive_bench.py [--mb 100] [--runs 3]

An image of two layers, about --mb MB together (random-ish files, half
compressible, as in layers_bench.py), is made in a temp Terrarium root and
loaded into a private dockerd (Debian's docker.io, tests/dockerd.py: its own
data root and socket, vfs driver).  Then --runs times, interleaved:
- save: `terrarium save -o` vs `docker save -o` of that image;
- load: `terrarium load -i` into an emptied root vs `docker load -i` after
  `docker rmi` (both unpack every layer; the removal is not timed).
Both are their CLIs, run as fresh processes.  Medians, and the ratios
terrarium / docker (below 1: Terrarium is faster).  Root needed.  Writes
bench/results/archives.json; removes its temp dirs and stops its dockerd.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
if PROJECT not in sys.path:
    sys.path.insert(1, PROJECT)

from layers_bench import make_image, timed  # noqa: E402

from tests import dockerd  # noqa: E402

CLI = os.path.join(PROJECT, ".venv", "bin", "terrarium")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not dockerd.available():
        print("archive_bench: needs root and Debian's docker.io (scripts/setup.sh); skipped")
        return 0
    work = tempfile.mkdtemp(prefix="tarchive-bench-")
    root = os.path.join(work, "root")
    env = {**os.environ, "TERRARIUM_ROOT": root, "TERRARIUM_CGROUP_PARENT": "terrarium-bench-archive"}
    times = {"save": ([], []), "load": ([], [])}
    try:
        make_image(root, work, args.mb, 2)
        ours_tar, docker_tar = os.path.join(work, "ours.tar"), os.path.join(work, "docker.tar")
        with dockerd.private_dockerd("terrarium-bench-archive-dockerd") as docker:
            subprocess.run([CLI, "save", "-o", ours_tar, "benchimg:1"], check=True, env=env)
            docker("load", "-i", ours_tar)
            denv = docker.env
            for _ in range(args.runs):
                times["save"][0].append(timed([CLI, "save", "-o", ours_tar, "benchimg:1"], env))
                times["save"][1].append(timed([dockerd.DOCKER, "save", "-o", docker_tar, "benchimg:1"],
                                              denv))
            size = os.path.getsize(ours_tar)
            for _ in range(args.runs):
                subprocess.run([CLI, "rmi", "benchimg:1"], check=True, env=env, capture_output=True)
                subprocess.run([CLI, "image-gc"], check=True, env=env, capture_output=True)
                times["load"][0].append(timed([CLI, "load", "-i", ours_tar], env))
                docker("rmi", "benchimg:1")
                times["load"][1].append(timed([dockerd.DOCKER, "load", "-i", docker_tar], denv))
        subprocess.run([CLI, "image-gc"], env=env, capture_output=True)
    finally:
        from runtime import Runtime
        Runtime(root, env["TERRARIUM_CGROUP_PARENT"]).shutdown_servers()
        shutil.rmtree(work, ignore_errors=True)
    result = {"mb": args.mb, "runs": args.runs, "archive_bytes": size}
    print(f"archive_bench: image of 2 layers, {size / 1e6:.0f} MB as a tar; medians of {args.runs}, "
          "interleaved")
    for what, (ours, theirs) in times.items():
        m_ours, m_docker = statistics.median(ours), statistics.median(theirs)
        result[what] = {"terrarium_ms": ours, "docker_ms": theirs, "terrarium_median_ms": m_ours,
                        "docker_median_ms": m_docker, "ratio": m_ours / m_docker}
        print(f"  {what}: terrarium {m_ours:.0f} ms, docker {m_docker:.0f} ms, "
              f"ratio {m_ours / m_docker:.2f}x")
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    with open(os.path.join(BENCH, "results", "archives.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
