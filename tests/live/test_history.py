"""Down-sampled history: folding ticks into minutes (pure), and the DB rows
the detail page reads (save, merge, prune, the JSON view)."""
import time

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.live import history
from dashboard.live.models import MinutePoint

CID = "d" * 64
T0 = 1_700_000_040          # a minute boundary


def pt(t, mem=None, cpu=None, pids=None, io_r=None, limit=64 << 20):
    return {"t": t, "mem": mem, "cpu": cpu, "pids": pids, "io_r": io_r, "io_w": None,
            "mem_limit": limit}


def test_minute_of():
    assert history.minute_of(T0) == T0
    assert history.minute_of(T0 + 59.999) == T0
    assert history.minute_of(T0 + 60) == T0 + 60


def test_downsample_averages_and_peaks_per_minute():
    points = [pt(T0 + 1, 100, None, 1), pt(T0 + 2, 300, 0.5, 3, 10.0), pt(T0 + 3, 200, 0.25, 2, 30.0),
              pt(T0 + 61, 1000, 1.0, 7)]
    a, b = history.downsample(CID, reversed(points))
    assert (a.minute, a.samples, a.mem_avg, a.mem_max, a.cpu_avg, a.pids_max, a.io_r, a.io_w) == \
        (T0, 3, 200, 300, 0.375, 3, 20.0, None)     # the first tick has no CPU share yet
    assert (b.minute, b.samples, b.mem_avg, b.cpu_avg, b.mem_limit) == (T0 + 60, 1, 1000, 1.0, 64 << 20)


def test_recorder_completes_a_minute_when_the_next_begins():
    r = history.Recorder()
    assert r.add(CID, pt(T0 + 1, 10)) == [] and r.add(CID, pt(T0 + 59, 30)) == []
    (done,) = r.add(CID, pt(T0 + 60, 99))
    assert (done.minute, done.samples, done.mem_avg) == (T0, 2, 20)
    r.add("e" * 64, pt(T0 + 61, 5))
    assert r.flush_before(T0 + 60) == []                       # both are in the current minute
    assert {m.container_id for m in r.flush_before(T0 + 120)} == {CID, "e" * 64}
    assert r.pending == {}


def test_merge_weights_by_samples():
    a = history.aggregate(CID, T0, [pt(T0, 100, 0.1, 1)] * 3)
    b = history.aggregate(CID, T0, [pt(T0 + 30, 500, None, 4, limit=None)])
    m = history.merge(a, b)
    assert (m.samples, m.mem_avg, m.mem_max, m.cpu_avg, m.pids_max, m.mem_limit) == \
        (4, 200, 500, 0.1, 4, 64 << 20)


@pytest.mark.django_db
def test_rows_saved_merged_pruned_and_served(viewer):
    history.reset()
    for t, mem in ((T0 + 1, 10), (T0 + 2, 30), (T0 + 61, 50)):
        history.record(CID, pt(t, mem, 0.5, 2))                 # the first minute is written
    row = MinutePoint.objects.get()
    assert (row.container_id, int(row.minute.timestamp()), row.samples, row.mem_avg, row.mem_max) == \
        (CID, T0, 2, 20, 30)
    history.save([history.aggregate(CID, T0, [pt(T0 + 5, 80, 0.5, 9)])])    # a late piece merges
    row.refresh_from_db()
    assert (row.samples, row.mem_avg, row.mem_max, row.pids_max) == (3, 40, 80, 9)

    history.save([history.aggregate(CID, T0 + 24 * 3600 + 120, [pt(T0 + 24 * 3600 + 125, 1)])])
    assert history.prune(now=T0 + 24 * 3600 + 130) == 1         # older than 24 h
    assert MinutePoint.objects.count() == 1

    recent = history.minute_of(time.time()) - 120
    history.save([history.aggregate(CID, recent, [pt(recent + 1, 4 << 20, 0.25, 3)])])
    url = reverse("live:history", args=[CID])
    assert Client().get(url).status_code == 302                  # anonymous: to the login page
    client = Client()
    client.force_login(viewer)
    d = client.get(url).json()                            # only the last 24 h
    assert (d["t"], d["mem_avg"], d["cpu_avg"], d["pids_max"]) == ([recent], [4 << 20], [0.25], [3])


def test_a_pass_is_written_in_one_transaction_and_merged(viewer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    history.reset()
    ids = [f"{i:064x}" for i in range(300)]
    stored = history.aggregate(ids[0], T0, [pt(T0 + 1, 10, 0.5, 2), pt(T0 + 2, 30, 0.5, 2)])
    history.save([stored])                                  # a watched container's minute
    batch = [history.aggregate(cid, T0, [pt(T0 + 59, 100 + i, 0.25, 4)]) for i, cid in enumerate(ids)]
    batch.append(history.aggregate(ids[1], T0, [pt(T0 + 30, 300, None, 9)]))  # the same key twice
    batch.append(history.aggregate(ids[2], T0 + 60, [pt(T0 + 61, 5)]))        # another minute
    with CaptureQueriesContext(connection) as q:
        history.save(batch)
    sql = [x["sql"].split()[0].upper() for x in q.captured_queries]
    # one transaction: one read of the stored rows, then inserts and one update batched
    # (SQLite: at most 999 parameters a statement, so 300 rows are a few INSERTs), not 300
    assert sql.count("SELECT") == 1 and sql.count("UPDATE") == 1 and sql.count("INSERT") <= 6, sql
    # (inside the test's own transaction the one atomic block is a savepoint)
    assert sql[0] in ("BEGIN", "SAVEPOINT") and sql.count("BEGIN") + sql.count("SAVEPOINT") == 1, sql
    assert MinutePoint.objects.count() == 301
    rows = {(r.container_id, int(r.minute.timestamp())): r for r in MinutePoint.objects.all()}
    a = rows[(ids[0], T0)]                                  # merged with the stored one
    assert (a.samples, a.mem_avg, a.mem_max, a.cpu_avg, a.pids_max) == (3, 47, 100, 0.4167, 4)
    b = rows[(ids[1], T0)]                                  # merged within the batch
    assert (b.samples, b.mem_avg, b.mem_max, b.cpu_avg, b.pids_max) == (2, 200, 300, 0.25, 9)
    assert rows[(ids[2], T0 + 60)].mem_max == 5 and rows[(ids[2], T0)].mem_max == 102
    history.save([])                                        # nothing: no query
