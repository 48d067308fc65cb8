#!/usr/bin/env python3
"""Throughput container → container through a bridge, against host loopback.

Run as root:  .venv/bin/python bench/network_bench.py [--n 5] [--mib 256]

Both sides run the same programs, Debian's static busybox: `nc -l` into
`wc -c` (its stdin held open: busybox nc stops at EOF there), and
`dd if=/dev/zero | nc` sending MIB MiB; every round checks that all bytes arrived, timed with /proc/uptime
around the sender (the figure includes nc's start and close, the same on
both sides).  The two paths alternate, N rounds, and the report gives the
medians and their ratio:

  bridge    a server container and a client container on a user network of
            this run (veth → bridge → veth)
  loopback  the same two commands on the host, over 127.0.0.1

Everything it makes (a temp state root, its network, bridge and nftables
table, the containers, the cgroups) is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(1, os.path.dirname(BENCH))

from common import summary  # noqa: E402

# busybox date has no %N: /proc/uptime's centiseconds (a round takes ~0.1 s or more)
SEND = "s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null | nc {addr} {port}; " \
       "echo $s $(cut -d' ' -f1 /proc/uptime)"


def mib_per_s(mib: int, output: str) -> float:
    start, end = (float(x) for x in output.strip().splitlines()[-1].split())
    return mib / max(end - start, 0.01)


def _received(read, timeout: float = 30.0) -> int:
    """The byte count the server's `wc -c` printed (once its nc has seen EOF)."""
    deadline = time.monotonic() + timeout
    while not (text := read().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(text.splitlines()[-1]) if text else -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--mib", type=int, default=256, help="MiB sent per round (default 256)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("network_bench: run as root", file=sys.stderr)
        return 2
    busybox = shutil.which("busybox") or "/bin/busybox"
    from runtime import Runtime, Spec
    root = tempfile.mkdtemp(prefix="terrarium-bench-net-")
    rt = Runtime(root, f"terrarium-bench-net-{secrets.token_hex(3)}")
    net = "bench"
    blocks = args.mib * 16
    out = {"bridge": [], "loopback": []}
    try:
        rt.images.ensure_builtin()
        rt.networks.create(net)
        for i in range(args.n):
            # bridge: a fresh server each round (nc -l takes one connection)
            srv = rt.run(Spec(image="busybox", name=f"srv{i}", network=net,
                              cmd=("sh", "-c", "sleep 600 | nc -l -p 5001 | wc -c")))
            time.sleep(0.3)
            cl = rt.run(Spec(image="busybox", name=f"cl{i}", network=net,
                             cmd=("sh", "-c", SEND.format(blocks=blocks, addr=srv.address, port=5001))))
            rt.wait(cl.id, timeout=300)
            got = _received(lambda: rt.logs(srv.id).decode())
            if got != args.mib << 20:
                raise SystemExit(f"network_bench: the server container got {got} bytes, not {args.mib} MiB")
            out["bridge"].append(mib_per_s(args.mib, rt.logs(cl.id).decode()))
            for c in (cl, srv):
                rt.remove(c.id, force=True)
            # loopback: the same on the host
            port = 20000 + secrets.randbelow(20000)
            server = subprocess.Popen([busybox, "sh", "-c", f"{busybox} nc -l -p {port} | {busybox} wc -c"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            r = subprocess.run([busybox, "sh", "-c", SEND.format(blocks=blocks, addr="127.0.0.1", port=port)],
                               capture_output=True, text=True, timeout=300)
            got = int(server.stdout.readline())
            server.stdin.close()
            server.wait(timeout=30)
            if got != args.mib << 20:
                raise SystemExit(f"network_bench: the host's nc got {got} bytes, not {args.mib} MiB")
            out["loopback"].append(mib_per_s(args.mib, r.stdout))
    finally:
        for c in rt.list():
            rt.remove(c.id, force=True)
        rt.networks.remove_all()
        rt.shutdown_servers()
        deadline = time.monotonic() + 10
        while not rt.cgroups.remove_parent() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
    b, lo = summary(out["bridge"]), summary(out["loopback"])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"network_bench: {args.n} rounds of {args.mib} MiB, busybox nc, load {load}")
    print(f"  container → container through the bridge  median {b['median']:8.1f} MiB/s  "
          f"(min {b['min']:.1f}, max {b['max']:.1f})")
    print(f"  host → host over 127.0.0.1                median {lo['median']:8.1f} MiB/s  "
          f"(min {lo['min']:.1f}, max {lo['max']:.1f})")
    print(f"  bridge ÷ loopback = {b['median'] / lo['median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
