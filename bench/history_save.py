"""The minute history's write at 1,000 containers: one pass's minutes saved by
history.save (one transaction, bulk insert/update) against a transaction per
container as main had it before (old_save, kept here for the comparison),
interleaved, into a fresh SQLite file (WAL, as the dashboard's settings open it).

    .venv/bin/python bench/history_save.py      # about 15 s; no root needed
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
d = tempfile.mkdtemp(prefix="terrarium-historysave-")
os.environ["TERRARIUM_DB"] = os.path.join(d, "db.sqlite3")
os.environ["TERRARIUM_WEB_DIR"] = d
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)
from django.db import transaction  # noqa: E402

from dashboard.live import history  # noqa: E402
from dashboard.live.history import _VALUE_FIELDS, Minute, _when, merge  # noqa: E402
from dashboard.live.models import MinutePoint  # noqa: E402


def old_save(minutes):
    """main's save() before the bulk write: a transaction per container."""
    for m in minutes:
        with transaction.atomic():
            row = MinutePoint.objects.select_for_update().filter(
                container_id=m.container_id, minute=_when(m.minute)).first()
            if row is not None:
                m = merge(Minute(m.container_id, m.minute, **{k: getattr(row, k) for k in _VALUE_FIELDS}), m)
            MinutePoint.objects.update_or_create(
                container_id=m.container_id, minute=_when(m.minute),
                defaults={k: getattr(m, k) for k in _VALUE_FIELDS})


N = 1000
ids = [f"{i:064x}" for i in range(N)]
T = 1_700_000_040
res: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
for r in range(6):
    order = [("old", old_save), ("new", history.save)]
    for name, fn in order if r % 2 == 0 else order[::-1]:
        m0 = T + 60 * (2 * r + (name == "new")) + (100_000 if name == "new" else 0)
        point = {"t": m0 + 1, "mem": 5 << 20, "cpu": 0.01, "pids": 1, "io_r": 0.0, "io_w": 0.0,
                 "mem_limit": None}
        mins = [history.aggregate(c, m0, [point]) for c in ids]
        c0, w0 = time.process_time(), time.monotonic()
        fn(mins)
        res[name].append((time.process_time() - c0, time.monotonic() - w0))
for k, v in res.items():
    cpu, wall = sorted(x[0] for x in v), sorted(x[1] for x in v)
    print(f"{k}: CPU s per {N}-row pass: median {cpu[len(cpu) // 2]:.3f} (min {cpu[0]:.3f}, "
          f"max {cpu[-1]:.3f}); wall median {wall[len(wall) // 2]:.3f}")
print("load:", " ".join(open("/proc/loadavg").read().split()[:3]))
shutil.rmtree(d, ignore_errors=True)
