#!/usr/bin/env python3
"""The log relay's CPU per MB, against Docker's json-file and `cat > file`.

    .venv/bin/python bench/log_relay.py [--mb 300] [--runs 3] [--no-docker]

For 100-byte lines (--mb MB of them) and 2-byte `y` lines (the worst case, a
record per two bytes; --mb / 3 MB of them), --runs rounds each, alternating:

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
(c) Docker, 100-byte lines only, when dockerd is installed (Debian's
    docker.io): a private dockerd (its own data and exec roots and socket, no
    bridge, no iptables, cgroups under /<parent>-docker) runs the same
    command in a container made from the same busybox layer (`docker
    import`), json-file driver with max-size=10m, max-file=3.  Measured: the
    CPU time of dockerd (which encodes and writes the records) and of the
    container's containerd-shim (which copies the pipe to dockerd), from
    /proc/<pid>/stat, all threads, in clock ticks.

Reported: medians of CPU ms per MB of container output, the ratio (a)/(b),
and the largest log on disk seen.  As root.  Writes
bench/results/log_relay.json; removes its state root, cgroups, files and
(if it started one) its dockerd.
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

from common import machine_info, now, remove_cgroup_tree  # noqa: E402

from runtime import Runtime, Spec  # noqa: E402
from runtime.logs import log_files  # noqa: E402

LINES = {"100-byte lines": ("x" * 99, 1), "2-byte lines": ("y", 3)}     # line, --mb divided by
BUSYBOX = "/bin/busybox"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s_all_threads(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


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


class Docker:
    """A private dockerd for the json-file row; stopped and cleaned up by close()."""

    def __init__(self, work: str, cgroup_parent: str, layer_dir: str):
        self.dir = os.path.join(work, "docker")
        os.makedirs(self.dir)
        self.sock = f"unix://{self.dir}/docker.sock"
        self.cgroup_parent = cgroup_parent
        self.log = open(os.path.join(self.dir, "dockerd.log"), "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", f"{self.dir}/data", "--exec-root", f"{self.dir}/exec",
             "--pidfile", f"{self.dir}/docker.pid", "-H", self.sock, "--bridge=none", "--iptables=false",
             "--ip-forward=false", "--ip-masq=false", f"--cgroup-parent=/{cgroup_parent}"],
            stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.cli("version").returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"dockerd did not start; see {self.dir}/dockerd.log")
            time.sleep(0.2)
        tar = subprocess.Popen(["tar", "-C", layer_dir, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.sock, "import", "-", "bench-busybox"], stdin=tar.stdout,
                       check=True, capture_output=True)
        tar.wait()

    def cli(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.sock, *args], capture_output=True, text=True)

    def run(self, line: str, nbytes: int) -> dict:
        before = cpu_s_all_threads(self.proc.pid)
        t0 = now()
        r = self.cli("run", "-d", "--log-driver", "json-file", "--log-opt", "max-size=10m",
                     "--log-opt", "max-file=3", "bench-busybox", "sh", "-c",
                     f"yes {line} | head -c {nbytes}; exec sleep 600")
        cid = r.stdout.strip()
        if r.returncode != 0 or not cid:
            raise RuntimeError(f"docker run: {r.stderr.strip()}")
        try:
            pid = int(self.cli("inspect", "-f", "{{.State.Pid}}", cid).stdout)
            shim = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, cid, "containerd-shim"))
            while True:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        break
                time.sleep(0.02)
            wall = now() - t0
            last = None
            while True:                     # until dockerd has written the last of it
                cur = cpu_s_all_threads(self.proc.pid)
                if cur == last:
                    break
                last = cur
                time.sleep(0.1)
            return {"cpu_s": last - before + cpu_s_all_threads(shim), "dockerd_cpu_s": last - before,
                    "shim_cpu_s": cpu_s_all_threads(shim), "wall_s": wall}
        finally:
            self.cli("rm", "-f", cid)

    def close(self) -> list[str]:
        """Stop dockerd (SIGTERM, it stops its containerd); what is left of its cgroups."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return remove_cgroup_tree(self.cgroup_parent)


def _cmdline_has(pid: str, cid: str, prog: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return prog.encode() in argv[0] and cid.encode() in b" ".join(argv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="container output per run, MB (default 300)")
    ap.add_argument("--runs", type=int, default=3, help="rounds per line length (default 3)")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker's json-file row")
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "log_relay.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("log_relay: run as root (containers need it)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="terrarium-bench-logs-")
    parent = f"terrarium-bench-logs-{secrets.token_hex(4)}"
    rt = Runtime(os.path.join(work, "root"), parent)
    results = {"machine": machine_info(None, None), "mb": args.mb, "runs": args.runs, "rows": {}}
    docker, left = None, []
    try:
        rt.images.ensure_builtin()
        run_terrarium(rt, "y", 1 << 20)     # warm-up: the fork server and a spare
        if not args.no_docker and shutil.which("dockerd") and shutil.which("docker"):
            docker = Docker(work, f"{parent}-docker", rt.images.get("busybox").layers[0].path)
        for label, (line, div) in LINES.items():
            mb = max(args.mb // div, 1)
            nbytes = mb << 20
            samples = {"terrarium": [], "cat": []}
            runners = {"terrarium": lambda: run_terrarium(rt, line, nbytes), "cat": lambda: run_cat(work, line, nbytes)}
            if docker and div == 1:
                samples["docker"] = []
                runners["docker"] = lambda: docker.run(line, nbytes)
            names = list(runners)
            for i in range(args.runs):
                for name in names[i % len(names):] + names[:i % len(names)]:     # rotate the order
                    samples[name].append(runners[name]())
            ms = {k: statistics.median(r["cpu_s"] for r in v) * 1e3 / mb for k, v in samples.items()}
            row = {f"{k}_cpu_ms_per_mb": v for k, v in ms.items()}
            row.update({f"{k}_wall_mb_s": mb / statistics.median(r["wall_s"] for r in v) for k, v in samples.items()})
            row.update(mb=mb, max_log_on_disk=max(r["max_on_disk"] for r in samples["terrarium"]),
                       log_cap=samples["terrarium"][0]["log_cap"], samples=samples)
            results["rows"][label] = row
            peers = "   ".join(f"{k} {v:6.2f} ms/MB ({ms['terrarium'] / v:.2f}x)" for k, v in ms.items()
                               if k != "terrarium")
            print(f"{label} x {mb} MB: relay {ms['terrarium']:6.2f} ms CPU/MB   {peers}   relay "
                  f"{row['terrarium_wall_mb_s']:.0f} MB/s   largest log on disk "
                  f"{row['max_log_on_disk'] / 2**20:.1f} MiB of a {row['log_cap'] / 2**20:.0f} MiB cap")
    finally:
        for c in rt.list(all=True):
            rt.remove(c.id, force=True)
        rt.shutdown_servers()
        rt.cgroups.remove_parent()
        if docker:
            left = docker.close()
        shutil.rmtree(work, ignore_errors=True)
    if left:
        print(f"log_relay: cgroups left: {left}", file=sys.stderr)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
