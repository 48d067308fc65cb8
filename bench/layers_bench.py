#!/usr/bin/env python3
"""Layer import against `tar -x`, and the cost of one diff refresh.

    .venv/bin/python bench/layers_bench.py [--mb 100] [--runs 3] [--files 10000]

(1) A layer tar of about 100 MB of random-ish files (mixed sizes, in
    subdirectories) and its gzip are made in a temp dir.  Then, --runs times
    each, interleaved: ImageStore.add_layer_from_tar(tar) into a fresh store
    (decompress + hash + safe unpack + meta + rename), and `tar -xf` /
    `tar -xzf` of the same file.  Medians, MB/s of uncompressed tar bytes,
    and the ratios import / tar.
(2) A writable layer of --files files (100 per directory; a quarter of them
    over names the lower layer has, plus whiteouts and an opaque directory)
    over a synthetic lower layer; one refresh as the layers page does it:
    overlay.diff + overlay.upper_size; median of --runs, and each part alone.

Root is not needed.  Writes bench/results/layers.json; removes its temp dir.
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

from common import now  # noqa: E402

from runtime import overlay  # noqa: E402
from runtime.images import ImageStore  # noqa: E402


def make_tree(root: str, total: int) -> int:
    """Random-ish files (4 KiB .. 2 MiB, half compressible) until `total` bytes."""
    import random
    rng = random.Random(42)
    written = n = 0
    while written < total:
        d = os.path.join(root, f"d{n // 50:03d}")
        os.makedirs(d, exist_ok=True)
        size = min(rng.choice((4096, 16384, 65536, 262144, 1 << 20, 2 << 20)), total - written)
        body = os.urandom(size // 2) + bytes(size - size // 2)
        with open(os.path.join(d, f"f{n:05d}.bin"), "wb") as f:
            f.write(body)
        written += size
        n += 1
    return n


def make_image(root: str, work: str, mb: int, layers: int, name: str = "benchimg:1") -> None:
    """An image of `layers` layers of make_tree files, `mb` MB together, in the store at root."""
    store = ImageStore(root)
    digests = []
    for i in range(layers):
        src = os.path.join(work, f"src{i}")
        os.mkdir(src)
        make_tree(src, (mb << 20) // layers)
        tar = os.path.join(work, f"layer{i}.tar")
        subprocess.run(["tar", "-cf", tar, "-C", src, "."], check=True)
        shutil.rmtree(src)
        digests.append(store.add_layer_from_tar(tar, f"layer {i}").digest)
        os.unlink(tar)
    store.add_image(name, digests)


def timed(argv: list[str], env: dict) -> float:
    """ms of one fresh process, from spawn to reap; check=True."""
    t0 = now()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return (now() - t0) * 1e3


def bench_import(work: str, mb: int, runs: int) -> dict:
    """The plain tar and its gzip (level 6, as registries hold layers),
    each against tar -x / tar -xzf (tar forks gzip: two processes, as the
    import's two threads), all four interleaved."""
    src = os.path.join(work, "src")
    os.mkdir(src)
    files = make_tree(src, mb << 20)
    tar = os.path.join(work, "layer.tar")
    subprocess.run(["tar", "-cf", tar, "-C", src, "."], check=True)
    shutil.rmtree(src)
    subprocess.run(["gzip", "-6", "-k", tar], check=True)
    tar_bytes = os.path.getsize(tar)
    out = {"tar_bytes": tar_bytes, "gz_bytes": os.path.getsize(tar + ".gz"), "files": files}
    for kind, path, flags in (("plain", tar, "-xf"), ("gzip", tar + ".gz", "-xzf")):
        out[kind] = {"import_ms": [], "tar_x_ms": []}
    for i in range(runs):
        for kind, path, flags in (("plain", tar, "-xf"), ("gzip", tar + ".gz", "-xzf")):
            store = ImageStore(os.path.join(work, f"store{i}"))
            t0 = now()
            layer = store.add_layer_from_tar(path, "bench")
            out[kind]["import_ms"].append((now() - t0) * 1e3)
            out["layer_size"] = layer.size
            x = os.path.join(work, f"x{i}")
            os.mkdir(x)
            t0 = now()
            subprocess.run(["tar", flags, path, "-C", x], check=True)
            out[kind]["tar_x_ms"].append((now() - t0) * 1e3)
            shutil.rmtree(store.root)
            shutil.rmtree(x)
    os.unlink(tar)
    os.unlink(tar + ".gz")
    for kind in ("plain", "gzip"):
        r = out[kind]
        r["import_median_ms"], r["tar_x_median_ms"] = (statistics.median(r["import_ms"]),
                                                       statistics.median(r["tar_x_ms"]))
        r["import_mb_s"] = tar_bytes / (1 << 20) / (r["import_median_ms"] / 1e3)
        r["tar_x_mb_s"] = tar_bytes / (1 << 20) / (r["tar_x_median_ms"] / 1e3)
        r["ratio"] = r["import_median_ms"] / r["tar_x_median_ms"]
    return out


def make_layers(work: str, files: int) -> tuple[str, str]:
    lower, upper = os.path.join(work, "lower"), os.path.join(work, "upper")
    dirs = max(files // 100, 1)
    for d in range(dirs):
        os.makedirs(os.path.join(lower, f"d{d:04d}"))
        os.makedirs(os.path.join(upper, f"d{d:04d}"))
        for f in range(100):
            if f % 4 == 0:            # a quarter of the names exist below: "C"
                with open(os.path.join(lower, f"d{d:04d}", f"f{f:03d}"), "w") as fh:
                    fh.write("lower\n")
            with open(os.path.join(upper, f"d{d:04d}", f"f{f:03d}"), "w") as fh:
                fh.write("upper\n")
    for i in range(20):               # deletions from the lower layer, if root can mknod
        with open(os.path.join(lower, f"gone{i}"), "w") as fh:
            fh.write("x\n")
        try:
            os.mknod(os.path.join(upper, f"gone{i}"), 0o600 | 0o020000, os.makedev(0, 0))
        except PermissionError:
            break
    return upper, lower


def bench_diff(work: str, files: int, runs: int) -> dict:
    upper, lower = make_layers(work, files)
    full, diff_only, size_only = [], [], []
    n = 0
    for _ in range(runs):
        t0 = now()
        changes = overlay.diff(upper, [lower])
        overlay.upper_size(upper)
        full.append((now() - t0) * 1e3)
        t0 = now()
        overlay.diff(upper, [lower])
        diff_only.append((now() - t0) * 1e3)
        t0 = now()
        overlay.upper_size(upper)
        size_only.append((now() - t0) * 1e3)
        n = len(changes)
    kinds = {k: sum(1 for c in changes if c.kind == k) for k in "ACD"}
    return {"files": files, "changes": n, "kinds": kinds, "refresh_ms": full,
            "refresh_median_ms": statistics.median(full),
            "diff_median_ms": statistics.median(diff_only),
            "upper_size_median_ms": statistics.median(size_only)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=10000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="terrarium-layers-bench-")
    try:
        imp = bench_import(work, args.mb, args.runs)
        dif = bench_diff(work, args.files, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = imp["tar_bytes"] / (1 << 20)
    print(f"layers bench ({os.cpu_count()} CPUs, temp dir on {os.path.dirname(work)}; "
          f"medians of {args.runs})")
    print(f"  import of a {mb:.0f} MB layer ({imp['files']} files; gzip {imp['gz_bytes'] / 1e6:.0f} MB), "
          f"load average {open('/proc/loadavg').read().split()[0]}:")
    for kind, peer in (("plain", "tar -xf"), ("gzip", "tar -xzf")):
        r = imp[kind]
        print(f"    {kind:5}  add_layer_from_tar {r['import_median_ms']:6.0f} ms {r['import_mb_s']:5.0f} MB/s   "
              f"{peer:8} {r['tar_x_median_ms']:6.0f} ms {r['tar_x_mb_s']:5.0f} MB/s   ratio {r['ratio']:.2f}x")
    print(f"  one diff refresh, writable layer of {dif['files']} files "
          f"({dif['changes']} changes: {dif['kinds']}):")
    print(f"    diff + upper_size              {dif['refresh_median_ms']:8.1f} ms")
    print(f"    diff alone / upper_size alone  {dif['diff_median_ms']:8.1f} ms / "
          f"{dif['upper_size_median_ms']:.1f} ms")
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    with open(os.path.join(BENCH, "results", "layers.json"), "w") as f:
        json.dump({"import": imp, "diff": dif, "args": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
