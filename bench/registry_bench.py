#!/usr/bin/env python3
"""`terrarium pull` against `skopeo copy` from the same local registry.

    .venv/bin/python bench/registry_bench.py [--mb 100] [--layers 4] [--runs 5]

An image of --layers layers, about --mb MB together (random-ish files, half
compressible, as in layers_bench.py), is made in a temp Terrarium root, saved
and pushed by skopeo (`--dest-compress`: gzip layers, as registries hold them)
to a private Debian docker-registry on 127.0.0.1 (tests/registry.py).  Then
--runs times, interleaved:
- terrarium: `terrarium pull` into a second root, after `rmi` + `image-gc`
  of the previous run's image (a fresh CLI process; its CLI server is warm,
  as on a machine in use; downloads in parallel, verifies every digest,
  un-gzips and unpacks each layer into the store);
- peer: bench/pull_peer.sh into an emptied dir: `skopeo copy docker://...
  oci:DIR:img` (downloads and verifies the blobs in parallel, writes them as
  they are) then `umoci raw unpack` (un-gzips and applies the layers in
  order into one rootfs): the same work a pull must do, by Debian's tools;
- skopeo alone (the copy step), for where the time goes.
The emptying is not timed.  Medians and the ratios terrarium / peer (the
goal: <= 1) and terrarium / skopeo alone.  Also the CPU each one used (the
commands' own, as reaped, and for terrarium its CLI server's worker, read
from the helpers' cgroup <parent>/_daemons): on a loaded machine wall times
follow how the scheduler shares the cores out (the worker runs in a cgroup
of its own, the peers as plain tasks), CPU time much less so.  Root needed.
Writes bench/results/registry.json; removes its temp dirs and stops its
registry.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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

from runtime.images import ImageStore, importers  # noqa: E402
from tests import registry  # noqa: E402

CLI = os.path.join(PROJECT, ".venv", "bin", "terrarium")
SKOPEO = "/usr/bin/skopeo"
UMOCI = "/usr/bin/umoci"
PEER = os.path.join(BENCH, "pull_peer.sh")


def children_cpu_ms() -> float:
    """User + system CPU of the reaped children (and what they reaped) so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1e3


def daemons_cpu_ms(parent: str) -> float | None:
    """CPU used so far in <parent>/_daemons (the CLI server and its workers):
    cpuacct.usage on cgroup v1, cpu.stat usage_usec on v2; None if neither."""
    try:
        with open(f"/sys/fs/cgroup/cpuacct/{parent}/_daemons/cpuacct.usage") as f:
            return int(f.read()) / 1e6
    except OSError:
        pass
    try:
        with open(f"/sys/fs/cgroup/{parent}/_daemons/cpu.stat") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("usage_usec")) / 1e3
    except (OSError, StopIteration):
        return None


def timed_cpu(argv: list[str], env: dict, parent: str | None = None) -> tuple[float, float | None]:
    """(wall ms, CPU ms) of one command: its own CPU, plus with `parent` the
    CPU its CLI server's worker used meanwhile."""
    c0 = children_cpu_ms()
    d0 = (daemons_cpu_ms(parent) or 0.0) if parent else 0.0     # none yet: the command starts the server
    wall = timed(argv, env)
    cpu = children_cpu_ms() - c0
    if parent:
        d1 = daemons_cpu_ms(parent)
        if d1 is None:
            return wall, None
        cpu += d1 - d0
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0 or not registry.available() or not all(map(os.path.exists, (SKOPEO, UMOCI))):
        print("registry_bench: needs root, docker-registry, skopeo and umoci (scripts/setup.sh); skipped")
        return 0
    work = tempfile.mkdtemp(prefix="tregistry-bench-")
    src_root, dst_root = os.path.join(work, "src-root"), os.path.join(work, "dst-root")
    env = {**os.environ, "TERRARIUM_ROOT": dst_root, "TERRARIUM_CGROUP_PARENT": "terrarium-bench-registry"}
    ours, peer, theirs = [], [], []
    cpu: dict[str, list] = {"terrarium": [], "peer": [], "skopeo": []}
    try:
        make_image(src_root, work, args.mb, args.layers)
        load = []
        archive = os.path.join(work, "img.tar")
        importers.save(ImageStore(src_root), "benchimg:1", archive)
        shutil.rmtree(src_root)
        with registry.private_registry() as reg:
            ref = f"{reg.addr}/bench/img:1"
            subprocess.run([SKOPEO, "copy", "--quiet", "--dest-compress", "--dest-tls-verify=false",
                            f"oci-archive:{archive}", f"docker://{ref}"], check=True)
            os.unlink(archive)
            blobs = os.path.join(reg.storage, "docker/registry/v2/blobs")
            pushed = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(blobs) for f in fs)
            oci = os.path.join(work, "oci")
            peer_dir = os.path.join(work, "peer")
            for _ in range(args.runs):
                with open("/proc/loadavg") as f:
                    load.append(float(f.read().split()[0]))
                if os.path.isdir(dst_root):        # the image and its layers gone; the CLI server stays
                    subprocess.run([CLI, "rmi", ref], check=True, env=env, capture_output=True)
                    subprocess.run([CLI, "image-gc"], check=True, env=env, capture_output=True)
                for name, rows, argv, parent in (
                        ("terrarium", ours, [CLI, "pull", "-q", ref], env["TERRARIUM_CGROUP_PARENT"]),
                        ("peer", peer, [PEER, ref, peer_dir], None),
                        ("skopeo", theirs, [SKOPEO, "copy", "--quiet", "--src-tls-verify=false",
                                            f"docker://{ref}", f"oci:{oci}:img"], None)):
                    if name == "peer":
                        shutil.rmtree(peer_dir, ignore_errors=True)
                        os.mkdir(peer_dir)
                    elif name == "skopeo":
                        shutil.rmtree(oci, ignore_errors=True)
                    wall, used = timed_cpu(argv, env, parent)
                    rows.append(wall)
                    cpu[name].append(used)
    finally:
        from runtime import Runtime
        if os.path.isdir(dst_root):
            Runtime(dst_root, env["TERRARIUM_CGROUP_PARENT"]).shutdown_servers()
        shutil.rmtree(work, ignore_errors=True)
    m_ours, m_peer, m_theirs = (statistics.median(x) for x in (ours, peer, theirs))
    m_cpu = {k: statistics.median(v) if None not in v else None for k, v in cpu.items()}
    result = {"mb": args.mb, "layers": args.layers, "runs": args.runs, "registry_bytes": pushed,
              "loadavg": load, "terrarium_ms": ours, "peer_ms": peer, "skopeo_ms": theirs,
              "terrarium_median_ms": m_ours, "peer_median_ms": m_peer, "skopeo_median_ms": m_theirs,
              "ratio": m_ours / m_peer, "ratio_skopeo_alone": m_ours / m_theirs,
              "cpu_ms": cpu, "cpu_median_ms": m_cpu}
    print(f"registry_bench: {args.layers} gzip layers, {pushed / 1e6:.0f} MB in the registry "
          f"({args.mb} MB unpacked); medians of {args.runs}, interleaved; load average "
          f"{statistics.median(load):.1f}")
    print(f"  terrarium pull                       {m_ours:6.0f} ms (download + verify + unpack)")
    print(f"  skopeo copy + umoci raw unpack (peer) {m_peer:5.0f} ms   ratio {m_ours / m_peer:.2f}x")
    print(f"  skopeo copy alone                    {m_theirs:6.0f} ms   ratio {m_ours / m_theirs:.2f}x")
    if None not in m_cpu.values():
        print(f"  CPU: terrarium {m_cpu['terrarium']:.0f} ms, peer {m_cpu['peer']:.0f} ms "
              f"(ratio {m_cpu['terrarium'] / m_cpu['peer']:.2f}x), skopeo alone {m_cpu['skopeo']:.0f} ms "
              f"(ratio {m_cpu['terrarium'] / m_cpu['skopeo']:.2f}x)")
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    with open(os.path.join(BENCH, "results", "registry.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
