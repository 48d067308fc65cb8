"""The minute history's one-off pass (read_many(keep=False), no tree) over N
idle containers of ours: through a new reader each pass, as the sampler did
until 2026-12-02, against one reader kept between passes, as
Sampler.read_once does now (no descriptor kept; each container's files and
last bytes remembered).  Interleaved rounds, this thread's CPU, medians.

    sudo .venv/bin/python bench/once_pass.py [N] [ROUNDS]      # 100 11
"""
import os
import secrets
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from common import teardown_runtime  # noqa: E402

from runtime import Runtime, Spec  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 11
tmp = tempfile.mkdtemp(prefix="terrarium-bench-")
rt = Runtime(tmp, f"terrarium-bench-{secrets.token_hex(3)}")
try:
    rt.images.ensure_builtin()
    ids = [rt.run(Spec(image="busybox", name=f"ab-{i}", cmd=("sleep", "3600"))).id for i in range(N)]
    time.sleep(2)
    kept = rt.stats_reader()
    kept.read_many(ids, False, keep=False)
    res = {"fresh": [], "kept": []}
    for r in range(ROUNDS):
        for label in (("fresh", "kept") if r % 2 == 0 else ("kept", "fresh")):
            t0 = time.thread_time()
            if label == "fresh":
                rd = rt.stats_reader()
                rd.read_many(ids, False, keep=False)
                rd.close()
            else:
                kept.read_many(ids, False, keep=False)
            res[label].append((time.thread_time() - t0) * 1000)
    f, k = statistics.median(res["fresh"]), statistics.median(res["kept"])
    load = open("/proc/loadavg").read().split()[0]
    print(f"N={N} load {load}: fresh {f:.1f} ms, kept {k:.1f} ms CPU per pass; kept/fresh {k / f:.2f}")
finally:
    teardown_runtime(rt, tmp, 8)
