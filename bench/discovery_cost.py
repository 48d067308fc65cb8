"""What one pass of the kernel's discovery sources costs on this host
(runtime/discovery/cgrouptree.py and bare.py), next to real peers doing
the same reads, interleaved, medians.

    .venv/bin/python bench/discovery_cost.py [--n 30]

rows (each round runs every row once, in a rotating order):
  tree pass        CgroupTree.walk() + every TreeSource's Found records
  os.walk          os.walk of the same hierarchies, nothing read (the
                   stdlib's plain listing, for scale)
  bare pass        BareSource.list(): one readlink per process, status reads
                   for the processes outside the host's PID namespace
  lsns -t pid      util-linux's lsns listing PID namespaces (a fresh process:
                   exec included; the peer a person would run)
  lsns in-process  procs.namespaces(): our lsns-like pass over every type,
                   in this process

Prints µs per cgroup directory and per process, and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import summary  # noqa: E402
from runtime import procs  # noqa: E402
from runtime.discovery.bare import BareSource  # noqa: E402
from runtime.discovery.cgrouptree import CgroupTree, TreeSource, TREE_ENGINES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    tree = CgroupTree()
    sources = [TreeSource(e, tree) for e in TREE_ENGINES]
    bare = BareSource()
    roots = tree.roots()[1]
    ndirs = sum(len(list(os.walk(r))) for r in roots)
    nprocs = len([p for p in os.listdir("/proc") if p.isdigit()])

    def tree_pass():
        tree.entries(fresh=True)
        for s in sources:
            s.list()

    def floor():
        for r in roots:
            for _ in os.walk(r):
                pass

    def lsns():
        subprocess.run(["lsns", "-t", "pid", "--json"], stdout=subprocess.DEVNULL, check=True)

    rows = {"tree pass": tree_pass, "os.walk": floor, "bare pass": bare.list,
            "lsns -t pid": lsns, "lsns in-process": procs.namespaces}
    times: dict[str, list[float]] = {k: [] for k in rows}
    names = list(rows)
    for i in range(args.n):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            rows[name]()
            times[name].append((time.perf_counter() - t0) * 1e6)
    med = {k: summary(v)["median"] for k, v in times.items()}
    out = {
        "host": {"cgroup dirs walked": ndirs, "processes": nprocs, "hierarchies": roots},
        "median µs": {k: round(v) for k, v in med.items()},
        "tree pass µs per cgroup dir": round(med["tree pass"] / max(ndirs, 1), 2),
        "bare pass µs per process": round(med["bare pass"] / max(nprocs, 1), 2),
        "tree pass / os.walk": round(med["tree pass"] / med["os.walk"], 2),
        "bare pass / lsns -t pid": round(med["bare pass"] / med["lsns -t pid"], 3),
        "bare pass / lsns in-process": round(med["bare pass"] / med["lsns in-process"], 3),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
