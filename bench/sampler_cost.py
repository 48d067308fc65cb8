"""Sampler cost per container per tick, with its process tree (µs).

    sudo .venv/bin/python bench/sampler_cost.py [N_CONTAINERS] [TICKS] [N_BUSY]

Times the sampler's blocking part -- read the cgroup files and the process
tree, compute the point and the tree payload, encode the events to JSON --
in thread CPU, under a throwaway root and cgroup parent:

1. idle: N `lab` containers running `sh -c 'sleep 3600 & sleep 3600 & wait'`
   (3 processes each), TICKS ticks at 20 Hz (0.05 s apart: every reader at the
   same tick rate), rounds alternating (each round's first tick untimed, for
   every reader: a subscription opened again, files warm) between
   - stats:      runtime.stats, the default reader (kept-open descriptors
                 re-read with pread; an idle container -- CPU time, memory
                 usage and task count unchanged -- costs 4 preads, its
                 processes and the other files are re-read every 5th tick);
   - every file: the same reader told to re-read everything every tick
                 (slow_every=1): what a container costs whose figures all move;
   - agent:      the same reader in the root agent, as the live sampler
                 reads it: a subscription (runtime/agent.py ``sample-stream``:
                 the agent ticks at 20 Hz and pushes what changed; the
                 sampler's reads follow its frames): this process's CPU
                 (decode, point, tree payload, events) and the agent's (its
                 threads' schedstat), and the two added, against "stats";
   - agent, a request per tick: the same through the ``sample`` verb, one
                 request per tick for all N (the transport before the
                 subscription; what other one-off readers still use);
   - selectors:  a fresh reader for every read (every file opened, read and
                 closed each tick), the reference path;
   plus the parts of the stats path on their own.
2. busy: N_BUSY containers that use CPU and fork a process every 0.3 s
   (`while :; do sleep 0.3; done`), sampled at real 0.25 s ticks: every tick
   is active, the process set changes on most; in-process and through the
   agent (both transports), rounds alternating.

Target (issue 4): below 100 µs per container per tick with its tree, so 200
containers at 1 Hz cost < 2 % of one core.  Set TERRARIUM_BENCH_JSON=path to
also write the figures as JSON.
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
os.environ["TERRARIUM_WEB_DIR"] = os.path.join(root, "web")   # not /var/lib/terrarium-web

import django  # noqa: E402
django.setup()

from collections import deque  # noqa: E402

from bench.common import save_if_asked  # noqa: E402
from dashboard.containers.runtime_client import get_runtime  # noqa: E402
from dashboard.live import metrics  # noqa: E402
from dashboard.live.sampler import Sampler, SelectorsReader, StatsReader, _Watched, wire  # noqa: E402
from runtime import Spec  # noqa: E402
from runtime import stats as rstats  # noqa: E402
from runtime.agent import stop_agent  # noqa: E402
from runtime.agent_client import AgentRuntime  # noqa: E402

IDLE = ("sh", "-c", "sleep 3600 & sleep 3600 & wait")
BUSY = ("sh", "-c", "sleep 3600 & while :; do sleep 0.3; done")


def _sampler(reader, ids):
    s = Sampler(tick=1.0, reader=reader)
    for cid in ids:
        s.state[cid] = _Watched(points=deque(maxlen=10))
        s.subscribers[cid] = s.tree_viewers[cid] = 1  # one viewer each, with the tree: the sampler reads only those
    s._collect(ids)                                   # warm up: open files, first tree
    return s


def _stats_reader(slow_every=5):
    return StatsReader(rstats.StatsReader(get_runtime().cgroups, slow_every=slow_every))


_agent = None


def _agent_rt():
    global _agent
    if _agent is None:
        _agent = AgentRuntime(root)
    return _agent


def _agent_reader(interval=None):
    """The sampler's reader through this root's agent (started on first use):
    the subscription ticking every interval seconds, or (None) a request per tick."""
    rt = _agent_rt()
    return StatsReader(rt.sample_stream(interval) if interval else rt.stats_reader())


_agent_pid = None


def _agent_cpu() -> float:
    """CPU seconds of the agent's threads so far (schedstat: ns, not ticks).
    The pid is asked once: an "info" request in every round would count too."""
    global _agent_pid
    if _agent_pid is None:
        _agent_pid = _agent.call("info")["pid"]
    pid = _agent_pid
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total / 1e9


TICK = 0.05                                           # idle rounds: every reader at 20 Hz


def _time(fn, ticks, pause=0.0):
    fn()                                              # the round's first tick: untimed
    if pause:
        time.sleep(pause)
    cpu = 0.0
    for _ in range(ticks):
        c0 = time.thread_time()
        fn()
        cpu += time.thread_time() - c0
        if pause:
            time.sleep(pause)
    return cpu / ticks


def _time_agent(fn, ticks, pause=0.0):
    """(this thread's CPU, the agent's CPU) per tick (the untimed first one left out)."""
    a = []

    def first():
        fn()
        a.append(_agent_cpu())
    cpu = 0.0
    first()
    if pause:
        time.sleep(pause)
    for _ in range(ticks):
        c0 = time.thread_time()
        fn()
        cpu += time.thread_time() - c0
        if pause:
            time.sleep(pause)
    return cpu / ticks, (_agent_cpu() - a[0]) / ticks


def _round(s, ids, ticks, pause, agent: bool):
    """One round of a sampler: its CPU per tick (and the agent's); a paced
    reader (a subscription) waits for the agent's frames instead of sleeping,
    and is closed after its round (the agent stops ticking for it)."""
    inner = getattr(s.reader, "_reader", None)
    paced = getattr(inner, "paced", False)
    try:
        if agent:
            return _time_agent(lambda: s._collect(ids), ticks, 0.0 if paced else pause)
        return _time(lambda: s._collect(ids), ticks, pause), None
    finally:
        if paced:
            inner.close()                             # the subscription (opened again on its next read)


def _preads(reader):
    """preads so far of every container in a runtime.stats reader."""
    n = 0
    for c in reader._reader.containers.values():
        t = c.table.reads
        n += c.cgroup.reads + t["stat"] + 2 * t["status"]
    return n


def start(rt, n, cmd, prefix):
    ids = [rt.run(Spec(image="lab", name=f"{prefix}-{i}", cmd=cmd)).id for i in range(n)]
    time.sleep(0.5)
    return ids


def stop(rt, ids):
    for cid in ids:
        rt.remove(cid, force=True)
    if _agent is not None:
        _agent.close()
    stop_agent(root)
    rt.shutdown_servers()
    rt.cgroups.remove_parent()
    shutil.rmtree(root, ignore_errors=True)


def measure_idle(ids, ticks):
    n = len(ids)
    readers = {"stats": _stats_reader(), "agent": _agent_reader(TICK), "agent, request per tick": _agent_reader(),
               "every file": _stats_reader(slow_every=1), "selectors": SelectorsReader()}
    samplers = {k: _sampler(r, ids) for k, r in readers.items()}
    samplers["agent"].reader._reader.close()          # opened again by its first round
    res = {k: [] for k in samplers}
    for k in AGENTS:
        res[f"{k} (agent side)"], res[f"{k} (both)"] = [], []
    pre = {k: _preads(readers[k]) for k in ("stats", "every file")}
    rounds = 5
    for i in range(rounds):                           # alternate, rotating: noise hits all alike
        order = list(samplers)
        for k in order[i % len(order):] + order[:i % len(order)]:
            web, agent = _round(samplers[k], ids, ticks // rounds, TICK, k in AGENTS)
            res[k].append(web)
            if agent is not None:
                res[f"{k} (agent side)"].append(agent)
                res[f"{k} (both)"].append(web + agent)
    per = {k: sorted(v)[len(v) // 2] / n * 1e6 for k, v in res.items()}
    preads = {k: (_preads(readers[k]) - pre[k]) / (n * (ticks // rounds + 1) * rounds)
              for k in ("stats", "every file")}
    # the parts of the default path
    r = readers["stats"]._reader
    cs = [r.containers[c] for c in ids]
    s = samplers["stats"]
    raws = [c.cgroup.sample() for c in cs]
    pts = [metrics.point(raw, raw, 1.0, time.time()) for raw in raws]
    parts = {
        "cgroup files": _time(lambda: [c.cgroup.sample() for c in cs], ticks),
        "cgroup files + processes": _time(lambda: [c.read() for c in cs], ticks),
        "point": _time(lambda: [metrics.point(raw, raw, 1.0, 0.0) for raw in raws], ticks),
        "JSON encoding": _time(lambda: [wire({"type": "container.sample", "id": c, "point": p})
                                        for c, p in zip(ids, pts)], ticks),
        "one pread (memory.usage_in_bytes)": _time(
            lambda: [c.cgroup.knobs["memory_usage"].file.read() for c in cs], ticks),
    }
    parts = {k: v / n * 1e6 for k, v in parts.items()}
    s.reader.forget  # noqa: B018 - samplers and their descriptors go with the process
    return per, preads, parts


def measure_loop(ids, ticks, tick=TICK):
    """The sampler as Daphne runs it (its asyncio loop: timer or the agent's
    frames, the worker thread, the publishing), every thread of this process
    in CPU (process_time) and the agent's: µs per container per tick, rounds
    alternating, for the in-process reader and both agent transports."""
    import asyncio

    def run(reader):
        s = Sampler(tick=tick, reader=reader)
        for cid in ids:
            s.subscribers[cid] = s.tree_viewers[cid] = 1

        async def go():
            task = asyncio.get_running_loop().create_task(s._run())
            while s.ticks < 2:                        # the first ticks (files opened): untimed
                await asyncio.sleep(0.005)
            t0, a0, n0 = time.process_time(), _agent_cpu(), s.ticks
            while s.ticks < n0 + ticks:
                await asyncio.sleep(0.005)
            n = s.ticks - n0
            out = (time.process_time() - t0) / n, (_agent_cpu() - a0) / n
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return out
        try:
            return asyncio.run(go())
        finally:
            inner = getattr(reader, "_reader", None)
            if inner is not None:
                inner.close()
    res = {k: [] for k in ("stats", *AGENTS, *(f"{a} (agent side)" for a in AGENTS),
                           *(f"{a} (both)" for a in AGENTS))}
    makers = {"stats": _stats_reader, "agent": lambda: _agent_reader(tick),
              "agent, request per tick": _agent_reader}
    rounds = 4
    for i in range(rounds):
        order = list(makers)
        for k in order[i % len(order):] + order[:i % len(order)]:
            web, agent = run(makers[k]())
            res[k].append(web)
            if k in AGENTS:
                res[f"{k} (agent side)"].append(agent)
                res[f"{k} (both)"].append(web + agent)
    return {k: sorted(v)[len(v) // 2] / len(ids) * 1e6 for k, v in res.items()}


def measure_busy(ids, ticks, pause=0.25):
    """(µs per container: in-process, and for each agent transport this side,
    the agent's, both; preads in-process)."""
    reader = _stats_reader()
    samplers = {"stats": _sampler(reader, ids), "agent": _sampler(_agent_reader(pause), ids),
                "agent, request per tick": _sampler(_agent_reader(), ids)}
    samplers["agent"].reader._reader.close()
    before = _preads(reader)
    res = {k: [] for k in samplers}
    for k in AGENTS:
        res[f"{k} (agent side)"], res[f"{k} (both)"] = [], []
    rounds = 4
    for i in range(rounds):
        order = list(samplers)
        for k in order[i % len(order):] + order[:i % len(order)]:
            web, agent = _round(samplers[k], ids, ticks // rounds, pause, k in AGENTS)
            res[k].append(web)
            if agent is not None:
                res[f"{k} (agent side)"].append(agent)
                res[f"{k} (both)"].append(web + agent)
    per = {k: sorted(v)[len(v) // 2] / len(ids) * 1e6 for k, v in res.items()}
    return per, (_preads(reader) - before) / (len(ids) * (ticks // rounds + 1) * rounds)


AGENTS = ("agent", "agent, request per tick")


def _agent_rows(per: dict) -> None:
    """Through the agent, against the in-process stats reader of the same rounds."""
    base = per["stats"]
    for a, title in (("agent", "through the agent (subscription)"), ("agent, request per tick",
                                                                     "through the agent, a request per tick")):
        print(f"  {title}")
        for k, label in ((a, "  Daphne"), (f"{a} (agent side)", "  the agent"), (f"{a} (both)", "  both")):
            print(f"  {label:26s} {per[k]:7.0f} µs   ({per[k] / base:.2f}x in-process)")


def main(n: int = 50, ticks: int = 100, n_busy: int = 10) -> dict:
    rt = get_runtime()
    rt.images.ensure_builtin()
    ids = []
    try:
        ids = start(rt, n, IDLE, "bench")
        per, preads, parts = measure_idle(ids, ticks)
        loop = measure_loop(ids, ticks // 2)
        busy_ids = start(rt, n_busy, BUSY, "busy") if n_busy else []
        ids += busy_ids
        busy, busy_preads = measure_busy(busy_ids, 80) if busy_ids else (None, None)
    finally:
        stop(rt, ids)
    print("sampler cost per container per tick, with its process tree (thread CPU; target < 100 µs)")
    print(f"idle: {n} containers x 3 processes, {ticks} ticks at {1 / TICK:.0f} Hz; load average "
          f"{open('/proc/loadavg').read().split()[0]}")
    print(f"  stats reader (default)     {per['stats']:7.0f} µs  {preads['stats']:5.1f} preads"
          f"   -> 200 containers at 1 Hz = {per['stats'] * 200 / 1e4:.2f} % of one core")
    print(f"  every file every tick      {per['every file']:7.0f} µs  {preads['every file']:5.1f} preads"
          f"   -> 200 containers at 1 Hz = {per['every file'] * 200 / 1e4:.2f} % of one core")
    _agent_rows(per)
    print(f"  selectors (open+read)      {per['selectors']:7.0f} µs"
          f"   ({per['selectors'] / per['stats']:.1f}x the default)")
    for k, v in parts.items():
        print(f"    {k:36s} {v:6.1f} µs")
    print(f"idle, the sampler's loop as Daphne runs it ({ticks // 2} ticks at {1 / TICK:.0f} Hz, "
          "every thread of this process and the agent's)")
    print(f"  in-process                 {loop['stats']:7.0f} µs")
    _agent_rows(loop)
    if busy is not None:
        print(f"busy: {n_busy} containers forking every 0.3 s, 80 ticks 0.25 s apart")
        print(f"  stats reader (default)     {busy['stats']:7.0f} µs  {busy_preads:5.1f} preads"
              f"   -> 200 such containers at 1 Hz = {busy['stats'] * 200 / 1e4:.2f} % of one core")
        _agent_rows(busy)
    out = {"n": n, "ticks": ticks, "us_per_container": per, "loop_us_per_container": loop,
           "preads_per_container": preads,
           "parts_us": parts, "busy": {"n": n_busy, "us_per_container": busy, "preads": busy_preads}}
    save_if_asked(out)
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
