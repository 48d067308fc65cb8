#!/usr/bin/env python3
"""The log relay's CPU per MB, against `cat` copying the same stream to a file.

    .venv/bin/python bench/log_relay.py [--mb 300] [--runs 3]

For two line lengths (2-byte `y` lines, the worst case: a record per two
bytes, and 100-byte lines), --runs rounds each, alternating:

(a) Terrarium: a busybox container runs `yes LINE | head -c MB` and then
    `exec sleep`; its shim relays the output into the log (CRI records,
    10m x 3 rotation).  Measured: the shim's CPU time (`/proc/<shim>/schedstat`,
    ns on CPU) from the start until the output is all relayed (the init has
    exec'd sleep and the shim's CPU stops moving), and the log's size on disk,
    sampled every 20 ms.
(b) cat: on the host, `busybox yes LINE | busybox head -c MB | cat > FILE`:
    cat's CPU time (wait4 rusage).  This is the floor: a copy from a pipe
    into a file, no records, no rotation.  It is what the runtime did before
    the relay (the container wrote its log file itself, without cap).

Reported: medians of CPU ms per MB of container output, the ratio (a)/(b),
and the largest log on disk seen.  As root.  Writes
bench/results/log_relay.json; removes its state root, cgroups and files.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
if PROJECT not in sys.path:
    sys.path.insert(1, PROJECT)

from common import machine_info, now  # noqa: E402

from runtime import Runtime, Spec  # noqa: E402
from runtime.logs import log_files  # noqa: E402

LINES = {"2-byte lines": "y", "100-byte lines": "x" * 99}
BUSYBOX = "/bin/busybox"


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def on_disk(path: str) -> int:
    total = 0
    for name in log_files(path):
        try:
            total += os.stat(name).st_size
        except FileNotFoundError:
            pass
    return total


def run_terrarium(rt: Runtime, line: str, nbytes: int) -> dict:
    cmd = f"yes {line} | head -c {nbytes}; exec sleep 600"
    t0 = now()
    c = rt.run(Spec(image="busybox", cmd=("sh", "-c", cmd)))
    try:
        start = cpu_ns(c.shim_pid)
        biggest = 0
        while True:
            biggest = max(biggest, on_disk(c.log_path))
            with open(f"/proc/{c.pid}/comm") as f:
                if f.read().strip() == "sleep":
                    break
            time.sleep(0.02)
        wall = now() - t0
        last = cpu_ns(c.shim_pid)
        while True:                         # the pipe's last chunks
            time.sleep(0.05)
            cur = cpu_ns(c.shim_pid)
            if cur == last:
                break
            last = cur
        biggest = max(biggest, on_disk(c.log_path))
        return {"cpu_s": (last - start) / 1e9, "wall_s": wall, "max_on_disk": biggest,
                "log_cap": c.log_config.max_size * c.log_config.max_file}
    finally:
        rt.remove(c.id, force=True)


def run_cat(work: str, line: str, nbytes: int) -> dict:
    out = os.path.join(work, "cat.out")
    t0 = now()
    yes = subprocess.Popen([BUSYBOX, "yes", line], stdout=subprocess.PIPE)
    head = subprocess.Popen([BUSYBOX, "head", "-c", str(nbytes)], stdin=yes.stdout, stdout=subprocess.PIPE)
    yes.stdout.close()
    with open(out, "wb") as f:
        cat = subprocess.Popen(["cat"], stdin=head.stdout, stdout=f)
    head.stdout.close()
    _, _, usage = os.wait4(cat.pid, 0)
    cat.returncode = 0
    head.wait()
    yes.wait()
    wall = now() - t0
    size = os.path.getsize(out)
    os.unlink(out)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="container output per run, MB (default 300)")
    ap.add_argument("--runs", type=int, default=3, help="rounds per line length (default 3)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "log_relay.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("log_relay: run as root (containers need it)", file=sys.stderr)
        return 1
    nbytes = args.mb << 20
    work = tempfile.mkdtemp(prefix="terrarium-bench-logs-")
    parent = f"terrarium-bench-logs-{secrets.token_hex(4)}"
    rt = Runtime(os.path.join(work, "root"), parent)
    results = {"machine": machine_info(None, None), "mb": args.mb, "runs": args.runs, "rows": {}}
    try:
        rt.images.ensure_builtin()
        run_terrarium(rt, "y", 1 << 20)     # warm-up: the fork server and a spare
        for label, line in LINES.items():
            ours, theirs = [], []
            for i in range(args.runs):
                pair = [lambda: ours.append(run_terrarium(rt, line, nbytes)),
                        lambda: theirs.append(run_cat(work, line, nbytes))]
                for fn in (pair if i % 2 == 0 else pair[::-1]):
                    fn()
            o = statistics.median(r["cpu_s"] for r in ours) * 1e3 / args.mb
            t = statistics.median(r["cpu_s"] for r in theirs) * 1e3 / args.mb
            row = {"terrarium_cpu_ms_per_mb": o, "cat_cpu_ms_per_mb": t, "ratio": o / t if t else None,
                   "terrarium_wall_mb_s": args.mb / statistics.median(r["wall_s"] for r in ours),
                   "cat_wall_mb_s": args.mb / statistics.median(r["wall_s"] for r in theirs),
                   "max_log_on_disk": max(r["max_on_disk"] for r in ours),
                   "log_cap": ours[0]["log_cap"], "samples": {"terrarium": ours, "cat": theirs}}
            results["rows"][label] = row
            print(f"{label:>15}: relay {o:6.2f} ms CPU/MB   cat > file {t:6.2f} ms CPU/MB   "
                  f"ratio {row['ratio']:.1f}   relay wall {row['terrarium_wall_mb_s']:.0f} MB/s "
                  f"(cat {row['cat_wall_mb_s']:.0f})   largest log on disk "
                  f"{row['max_log_on_disk'] / 2**20:.1f} MiB of a {row['log_cap'] / 2**20:.0f} MiB cap")
    finally:
        for c in rt.list(all=True):
            rt.remove(c.id, force=True)
        rt.shutdown_servers()
        rt.cgroups.remove_parent()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
