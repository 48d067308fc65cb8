#!/usr/bin/env python3
"""What a verb costs through the root agent against the same verb in-process.

    .venv/bin/python bench/agent_bench.py [--containers 10] [--rounds 300] [--host-rounds 40]

A temp state root with --containers created busybox containers (`sleep`,
never started: inspect and list read the same files either way).  Each
round times, in an order that rotates every round:

  inspect (in-process)   Runtime.inspect(id)
  inspect (agent)        AgentRuntime.inspect(id): JSON line over the unix
                         socket, the agent's Runtime.inspect, the reply
                         rebuilt into a Container
  list (in-process)      Runtime.list(all=True) of the --containers
  list (agent)           AgentRuntime.list(all=True)

and then, --host-rounds times, the dashboard's three host-page reads (every
process's /proc, the whole cgroup tree): Runtime.host_namespaces,
host_processes and host_cgroups in-process against the agent's
host-namespaces, host-processes and host-cgroups (JSON, records rebuilt).

The agent is started before the rounds (a warm-up of 20 rounds is not
counted) and its connection is pooled, as the dashboard's is.  Reports
medians, p90 and agent / in-process ratios.  As root; removes everything it
made.  Writes bench/results/agent.json.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
if PROJECT not in sys.path:
    sys.path.insert(1, PROJECT)

from common import now, summary  # noqa: E402

from runtime import Runtime, Spec  # noqa: E402
from runtime.agent_client import AgentRuntime  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--host-rounds", type=int, default=40)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("agent_bench: run as root", file=sys.stderr)
        return 1
    root = tempfile.mkdtemp(prefix="terrarium-bench-agent-")
    parent = f"terrarium-bench-agent-{secrets.token_hex(3)}"
    os.environ["TERRARIUM_CGROUP_PARENT"] = parent    # the agent started below inherits it
    os.environ.pop("TERRARIUM_AGENT_SOCKET", None)
    local = Runtime(root, parent)
    agent = AgentRuntime(root, parent, user="bench")
    try:
        local.images.ensure_builtin()
        ids = [local.create(Spec(image="busybox", name=f"bench-{i}", cmd=("sleep", "60"))).id
               for i in range(args.containers)]
        target = ids[0]
        rows = {
            "inspect (in-process)": lambda: local.inspect(target),
            "inspect (agent)": lambda: agent.inspect(target),
            "list (in-process)": lambda: local.list(all=True),
            "list (agent)": lambda: agent.list(all=True),
        }
        assert agent.inspect(target) == local.inspect(target)
        assert agent.list(all=True) == local.list(all=True)
        host = {}
        for what in ("namespaces", "processes", "cgroups"):
            host[f"host_{what} (in-process)"] = getattr(local, f"host_{what}")
            host[f"host_{what} (agent)"] = getattr(agent, f"host_{what}")
        samples: dict[str, list[float]] = {k: [] for k in (*rows, *host)}
        for table, rounds, warmup in ((rows, args.rounds, args.warmup),
                                      (host, args.host_rounds, min(args.warmup, 3))):
            names = list(table)
            for r in range(warmup + rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    t0 = now()
                    table[name]()
                    ms = (now() - t0) * 1e3
                    if r >= warmup:
                        samples[name].append(ms)
        report = {k: summary(v) for k, v in samples.items()}
        print(f"agent_bench: {args.rounds} rounds ({args.host_rounds} of the host reads), "
              f"{args.containers} containers, medians in ms")
        for name, s in report.items():
            print(f"  {name:28s} median {s['median']:8.3f}  p90 {s['p90']:8.3f}")
        ratios = {}
        for verb in ("inspect", "list", "host_namespaces", "host_processes", "host_cgroups"):
            ratios[verb] = report[f"{verb} (agent)"]["median"] / report[f"{verb} (in-process)"]["median"]
            print(f"  {verb}: agent / in-process = {ratios[verb]:.2f}x")
        os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
        with open(os.path.join(BENCH, "results", "agent.json"), "w") as f:
            json.dump({"containers": args.containers, "rounds": args.rounds, "summary": report,
                       "ratios": ratios, "samples": samples}, f)
    finally:
        agent.close()
        for c in local.list(all=True):
            local.remove(c.id, force=True)
        local.shutdown_servers()
        local.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
