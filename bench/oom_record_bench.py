"""CPU of the OOM watcher and its memory record with N limited idle containers
and nobody watching, for two checkouts of the code, interleaved.

    sudo .venv/bin/python bench/oom_record_bench.py [N] [SECONDS] [ROUNDS] [--before REV]

Starts N idle busybox containers with a 64 MiB memory limit (under a
throwaway root and cgroup parent, one migrated database), then, ROUNDS times,
runs the dashboard's OomWatcher (in-process reader, default settings: the
record every 0.5 s) in a child process of each checkout in turn -- REV (by
default ``main``, unpacked with ``git archive`` into a temporary directory)
and this working tree -- and measures the child's CPU (every thread) over
SECONDS once the record has every container and a few seconds passed.  The
minute history is left out of the working tree's child (it is one of the
sampler's consumers there, and was not the watcher's before): the figure is
the OOM watcher's.  Prints CPU seconds per minute for each run and the
medians; TERRARIUM_BENCH_JSON=path also writes them.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_if_asked, teardown_runtime  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(code: str, seconds: float, n: int) -> None:
    """In the child: run a watcher from ``code`` and print its CPU as JSON."""
    import asyncio
    sys.path.insert(0, code)
    import django
    django.setup()
    from django.conf import settings
    settings.TERRARIUM_OOM_WATCH = False            # this one runs its own watcher
    try:                                            # the working tree's sampler: no history here
        from dashboard.live import sampler, wiring
        sampler.set_factory(lambda: wiring.make_sampler(keep_history=False))
    except (ImportError, AttributeError):
        pass
    from dashboard.oom.watcher import OomWatcher

    async def run() -> dict:
        w = OomWatcher()
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(w.ready.wait(), 120)
        t0 = time.monotonic()
        while not (w.recorder and len(w.recorder.tracked()) >= n):
            assert time.monotonic() - t0 < 60, "the record never had every container"
            await asyncio.sleep(0.25)
        await asyncio.sleep(3)                      # settled: files open, first trees kept
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        points = sum(len(w.recorder.points(c)) for c in w.recorder.tracked())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return {"cpu_s": cpu, "wall_s": wall, "cpu_s_per_min": cpu / wall * 60, "points": points}
    print(json.dumps(asyncio.run(run())))


def main(n: int = 200, seconds: float = 30.0, rounds: int = 3, before: str = "main") -> dict:
    tmp = tempfile.mkdtemp(prefix="terrarium-bench-")
    env = dict(os.environ, TERRARIUM_ROOT=tmp, TERRARIUM_CGROUP_PARENT=f"terrarium-bench-{secrets.token_hex(3)}",
               TERRARIUM_DB=os.path.join(tmp, "db.sqlite3"), DJANGO_SETTINGS_MODULE="dashboard.settings",
               TERRARIUM_RECONCILE_INTERVAL="0", TERRARIUM_WEB_DIR=os.path.join(tmp, "web"),
               PYTHONDONTWRITEBYTECODE="1")
    os.environ.update(env)
    old = os.path.join(tmp, "before")
    os.makedirs(old)
    archive = subprocess.run(["git", "-C", REPO, "archive", before], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
    sys.path.insert(0, REPO)
    import django
    django.setup()
    from django.core.management import call_command

    from dashboard.containers.runtime_client import get_runtime
    from dashboard.rlimits import raise_nofile
    from runtime import Limits, Spec
    raise_nofile()
    call_command("migrate", verbosity=0)
    rt = get_runtime()
    rt.images.ensure_builtin()
    ids: list[str] = []
    runs: dict[str, list[dict]] = {before: [], "working tree": []}
    try:
        for i in range(n):
            ids.append(rt.run(Spec(image="busybox", name=f"oomrec-{i}", cmd=("sleep", "100000"),
                                   limits=Limits(memory=64 << 20))).id)
        print(f"{n} limited idle containers; {seconds:.0f} s per run, {rounds} rounds, "
              f"load {open('/proc/loadavg').read().split()[0]}")
        for r in range(rounds):
            order = [(before, old), ("working tree", REPO)]
            if r % 2:
                order.reverse()
            for label, code in order:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", code,
                                      str(seconds), str(n)], env=env, cwd=code, capture_output=True,
                                     text=True, check=False)
                if out.returncode != 0:
                    print(out.stderr[-2000:])
                    raise SystemExit(f"{label}: the child failed")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                runs[label].append(got)
                print(f"  round {r + 1} {label:14s} {got['cpu_s_per_min']:6.2f} CPU s/min "
                      f"({got['points']} points kept)")
    finally:
        teardown_runtime(rt, tmp)
    medians = {k: statistics.median(x["cpu_s_per_min"] for x in v) for k, v in runs.items()}
    print("medians: " + ", ".join(f"{k} {v:.2f} CPU s/min" for k, v in medians.items()))
    result = {"n": n, "seconds": seconds, "runs": runs, "median_cpu_s_per_min": medians,
              "loadavg": open("/proc/loadavg").read().split()[:3]}
    save_if_asked(result)
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--child":
        child(args[1], float(args[2]), int(args[3]))
        sys.exit(0)
    rev = "main"
    if "--before" in args:
        i = args.index("--before")
        rev = args[i + 1]
        del args[i:i + 2]
    main(int(args[0]) if args else 200, float(args[1]) if len(args) > 1 else 30.0,
         int(args[2]) if len(args) > 2 else 3, rev)
