"""Docker containers sampled from the kernel's files, against Docker's own stats.

    sudo .venv/bin/python bench/docker_bench.py [N_DOCKER] [N_OURS] [TICKS] [ROUNDS]

A private dockerd (tests/dockerd.py, vfs, its own cgroup parent) runs N_DOCKER
(default 50) busybox containers `sleep 3600`; this runtime runs N_OURS
(default 20) of the same under a throwaway root.  Measured, rounds
interleaved, medians reported:

1. tick: the cost per container per tick of a kept-open sampling reader
   (runtime.stats via Runtime.stats_reader(), as the agent's ``sample`` verb
   runs it), TICKS ticks back to back, this thread's CPU (time.thread_time),
   for the Docker containers (discovery keys: their cgroups found from their
   init's /proc/<pid>/cgroup) and for ours.  Goal (issue 12): the same, at
   most 100 µs per container per tick.
2. once: the CPU to sample all N_DOCKER once -- ask dockerd who they are
   (one discover(["docker"]) through the Engine API), then one reading of each with a
   fresh reader (keep=False) -- against `docker stats --no-stream` for the
   same containers.  Discovery asks Docker alone (discover(["docker"]), as
   `docker stats` asks dockerd alone).  "cold": from nothing (a new
   Discovery: the list, each init found in its cgroup, no inspect; a new
   reader; "cold_no_tree": the same without the process tree: what `docker
   stats` shows, figures and a PIDS count (the list page's usage columns
   among them), and no more; "cold_discovery": the
   cold pass's discovery alone, the reading left
   out; "cold_engine": dockerd's and containerd's CPU in that discovery;
   "cold_floor": what the cold pass cannot do without, whatever its code:
   opening, reading and closing once each file it read, parsing nothing,
   and dockerd's CPU answering its list); "warm": as the dashboard has it
   after its first look (the list,
   nothing looked for again for a container the list shows unchanged with
   the same init; its one-off reader, which closes every file after a pass
   but keeps where each cgroup is and each file's last bytes, so a pass
   reads what a live tick reads, plus the limits); "warm_no_tree": warm
   without the process tree (what `docker stats` shows: figures and a PIDS
   count, no processes); "warm_all_engines": warm, but discovery asks every source (the
   cgroup tree and every bare PID namespace on the host too: what the
   unfiltered list page pays, and it grows with the host, not with Docker);
   "kept_open_tick": one tick of the kept-open reader over all N (what the
   live sampler pays each tick).  Both sides count this process's or
   the CLI's CPU *and* dockerd's and its containerd's (every thread's
   schedstat run time, in ns), since each asks dockerd.  Goal: under one
   tenth.  What the containers' shims spend while `docker stats` runs is
   printed beside it (docker_stats_shims_cpu_s; dockerd has each shim read
   its container's cgroup files, the work our passes do themselves), with
   the shims' idle CPU over as long a window after it (shims_idle_cpu_s);
   once_ratio_host divides by `docker stats` plus what it made the shims
   spend beyond idle: the host's whole cost of the same figures.

Prints a JSON summary; TERRARIUM_BENCH_JSON=path also writes it.
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import Runtime, Spec  # noqa: E402
from runtime.discovery import registry  # noqa: E402
from tests import dockerd  # noqa: E402

TICK_HZ = os.sysconf("SC_CLK_TCK")


def _cpu_of(pids) -> float:
    """CPU seconds of these processes, all their threads: the sum of each
    thread's /proc/<pid>/task/<tid>/schedstat run time (nanoseconds; utime +
    stime in /proc/<pid>/stat move in 10 ms ticks, as much as a whole warm
    pass costs dockerd), else that."""
    total = 0.0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / TICK_HZ
                except OSError:
                    continue
    return total


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children (getrusage: µs, not os.times()'s ticks)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _engine_pids(base: str, shims: bool = False) -> list[int]:
    """dockerd and its containerd: the processes whose command line names its
    dir, not shims (with ``shims``: only the containers' containerd-shims)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if base.encode() in cmd and (b"shim" in cmd) == shims:
                out.append(int(pid))
    return out


def _floor(reader, found, once, engine_s: float) -> float:
    """The cold pass's floor, into once["terrarium_cold_floor"]: the CPU of
    only opening, reading and closing each file it read (the reader's, kept
    by path in its one-off state: cgroup files, cgroup.procs, each
    process's stat, status and cmdline, net/dev; discovery's: cgroup.procs,
    the init's status and cgroup, its 8 ns links), nothing parsed, plus what
    dockerd spent answering its list (engine_s).  → the CPU this took, for
    the caller to leave out of the cold row."""
    t0 = time.process_time()
    paths, links = [], []
    for c, _ in reader._once.values():
        paths += [f.path for _, f in c.cgroup.files if f is not None and hasattr(f, "path")]
        paths.append(c.cgroup.procs.path)
        for p in c.table.by_pid.values():
            paths += [p.stat.path, p.status.path, p.cmdline.path]
        if c.cgroup.net.dir:
            paths.append(f"{c.cgroup.net.dir}/net/dev")
    for f in found:
        if f.engine == "docker" and f.pid:
            paths += [reader._once[f.key][0].cgroup.procs.path, f"/proc/{f.pid}/status",
                      f"/proc/{f.pid}/cgroup"]
            links += [f"/proc/{f.pid}/ns/{ns}" for ns in f.namespaces]
    t1 = time.process_time()
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.pread(fd, 65536, 0)
        finally:
            os.close(fd)
    for link in links:
        os.readlink(link)
    t2 = time.process_time()
    once["terrarium_cold_floor"].append(t2 - t1 + engine_s)
    return t2 - t0


def main(n_docker=50, n_ours=20, ticks=20, rounds=5) -> dict:
    if not dockerd.available():
        sys.exit("needs root and Debian's docker.io")
    root = tempfile.mkdtemp(prefix="terrarium-bench-")
    parent = f"terrarium-bench-{secrets.token_hex(3)}"
    rt = Runtime(root, parent)
    rt.images.ensure_builtin()
    ours = []
    try:
        with dockerd.private_dockerd(f"{parent}-dockerd") as docker:
            os.environ["TERRARIUM_DOCKER_HOST"] = docker.env["DOCKER_HOST"]
            dockerd.load_image(docker, rt)
            ids = [docker("run", "-d", "--network", "none", "busybox", "sleep", "3600").stdout.strip()
                   for _ in range(n_docker)]
            ours = [rt.run(Spec(image="busybox", name=f"b{i}-{secrets.token_hex(2)}",
                                cmd=("sleep", "3600"))).id for i in range(n_ours)]
            keys = [f"docker-{cid}" for cid in ids]
            rt.discovery().discover()
            engine = _engine_pids(docker.base)
            shims = _engine_pids(docker.base, shims=True)
            once_reader = rt.stats_reader()
            once_reader.read_many(keys, keep=False)

            tick = {"docker": [], "ours": []}
            once = {f"terrarium_{k}": [] for k in ("cold", "cold_no_tree", "warm", "warm_no_tree",
                                                   "warm_all_engines", "cold_discovery", "cold_engine",
                                                   "cold_floor")}
            once["docker_stats"] = []
            shim_cpu, shim_idle = [], []
            for _ in range(rounds):
                for what, names in (("docker", keys), ("ours", ours)):
                    reader = rt.stats_reader()
                    reader.read_many(names)                     # open everything first
                    t0 = time.thread_time()
                    for _ in range(ticks):
                        reader.read_many(names)
                    tick[what].append((time.thread_time() - t0) / ticks / len(names) * 1e6)
                    reader.close()
                # once: who they are (the Engine API), then one reading each; cold: from
                # nothing (a new Discovery: 1 list, each init from its cgroup, a new
                # reader); warm: as the dashboard has it after its first look (1 list,
                # the unchanged ones not looked for again; its one-off reader, every
                # file closed between passes, their last bytes kept)
                for what in ("cold", "cold_no_tree", "warm", "warm_no_tree", "warm_all_engines"):
                    cold = what.startswith("cold")
                    if cold:
                        registry._shared.clear()
                    e0, c0 = _cpu_of(engine), time.process_time()
                    found, _ = rt.discovery().discover(None if what == "warm_all_engines" else ["docker"])
                    skip = 0.0                          # the CPU of looking at dockerd's midway
                    if what == "cold":                  # its discovery alone, then the reading
                        c1 = time.process_time()
                        e1 = _cpu_of(engine)
                        skip = time.process_time() - c1
                        once["terrarium_cold_discovery"].append(c1 - c0 + e1 - e0)
                        once["terrarium_cold_engine"].append(e1 - e0)
                    reader = rt.stats_reader() if cold else once_reader
                    got = reader.read_many([f.key for f in found if f.engine == "docker"],
                                           tree=not what.endswith("no_tree"), keep=False)
                    if what == "cold":
                        skip += _floor(reader, found, once, e1 - e0)
                    if cold:
                        reader.close()
                    once[f"terrarium_{what}"].append(time.process_time() - c0 - skip + _cpu_of(engine) - e0)
                    assert len(got) == n_docker and not [v for v in got.values() if isinstance(v, Exception)]
                ch0, e0, s0, w0 = _children_cpu(), _cpu_of(engine), _cpu_of(shims), time.monotonic()
                subprocess.run([dockerd.DOCKER, "stats", "--no-stream", *ids], env=docker.env,
                               capture_output=True, check=True, timeout=120)
                once["docker_stats"].append(_children_cpu() - ch0 + _cpu_of(engine) - e0)
                shim_cpu.append(_cpu_of(shims) - s0)
                # the shims' own idle CPU over as long a window, nothing asking them
                wall, s1 = time.monotonic() - w0, _cpu_of(shims)
                time.sleep(wall)
                shim_idle.append(_cpu_of(shims) - s1)
            once_reader.close()
            for cid in ours:
                rt.remove(cid, force=True)
            ours = []
    finally:
        for cid in ours:
            rt.remove(cid, force=True)
        rt.shutdown_servers()
        rt.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in {**tick, **once}.items()}
    out = {
        "n_docker": n_docker, "n_ours": n_ours, "ticks": ticks, "rounds": rounds,
        "tick_us_per_container": {"docker": round(med["docker"], 1), "ours": round(med["ours"], 1)},
        "once_cpu_s": {k: round(med[k], 4) for k in once},
        # not in docker_stats: what the containers' containerd-shims spent meanwhile
        # (dockerd asks each for its cgroup's figures)
        "docker_stats_shims_cpu_s": round(statistics.median(shim_cpu), 4),
        "shims_idle_cpu_s": round(statistics.median(shim_idle), 4),
        # what `docker stats` costs the host: the CLI, dockerd and containerd, and the
        # cgroup reads it makes each shim do (less what the shims spend idle in as
        # long); our passes read those same files themselves and count it
        "once_ratio_host": {k: round(med[k] / (med["docker_stats"] + max(statistics.median(
            [a - b for a, b in zip(shim_cpu, shim_idle)]), 0.0)), 4) for k in once if k != "docker_stats"},
        "once_ratio": {**{k: round(med[k] / med["docker_stats"], 4) for k in once if k != "docker_stats"},
                       # the sampler's steady state: one tick of the kept-open reader over all N
                       "kept_open_tick": round(med["docker"] * n_docker / 1e6 / med["docker_stats"], 5)},
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "raw": {**tick, **once},
    }
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:5]]
    result = main(*args)
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("TERRARIUM_BENCH_JSON"):
        with open(os.environ["TERRARIUM_BENCH_JSON"], "w") as f:
            f.write(text)
