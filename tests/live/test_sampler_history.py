"""The sampler's once-a-minute history pass over the containers nobody
watches: the folding (pure, from numbers), the pass's DB rows, and the
sampler loop running it once a minute and skipping the watched ones."""
import asyncio

import pytest

from dashboard.live import history, sampler, wiring
from dashboard.live.models import MinutePoint
from dashboard.live.sampler import Sampler
from runtime import Sample

A, B = "a" * 64, "b" * 64
T0 = 1_700_000_040          # a minute boundary


def raw(mem=64 << 20, cpu_ns=0, io_r=0, io_w=0, pids=3, limit=128 << 20, inactive=0):
    return Sample.of("v1", {"memory_usage": mem, "memory_inactive_file": inactive, "memory_limit": limit,
                            "cpu_usage_ns": cpu_ns, "io_read_bytes": io_r, "io_write_bytes": io_w,
                            "pids_current": pids, "pids_max": 100})


def test_first_pass_has_levels_and_no_rates_for_the_minute_that_ended():
    (m,), state = history.fold_pass({}, {A: raw(mem=10 << 20, cpu_ns=5_000_000_000)}, T0 + 61)
    assert (m.container_id, m.minute, m.samples) == (A, T0, 1)   # the pass at T0+61 ends minute T0
    assert (m.mem_avg, m.mem_max, m.mem_limit, m.pids_max) == (10 << 20, 10 << 20, 128 << 20, 3)
    assert (m.cpu_avg, m.io_r, m.io_w) == (None, None, None)
    assert state == {A: (T0 + 61, raw(mem=10 << 20, cpu_ns=5_000_000_000))}


def test_next_pass_averages_cpu_and_io_over_the_whole_interval():
    state = {A: (T0 + 1, raw(cpu_ns=1_000_000_000, io_r=0, io_w=600)),
             B: (T0 + 1, raw(cpu_ns=9_000_000_000))}
    minutes, state = history.fold_pass(state, {A: raw(cpu_ns=31_000_000_000, io_r=6000, io_w=600),
                                               B: raw(cpu_ns=1_000)}, T0 + 61)
    a, b = sorted(minutes, key=lambda m: m.container_id)
    assert a.minute == T0 and a.cpu_avg == pytest.approx(0.5)   # 30 s of CPU in 60 s: half a core
    assert (a.io_r, a.io_w) == (100.0, 0.0)
    assert b.cpu_avg == 0                                      # counter went back (cgroup made again)
    assert set(state) == {A, B}


def test_gone_containers_leave_the_state_and_a_long_gap_has_no_rates():
    state = {A: (T0 + 1, raw(cpu_ns=0)), B: (T0 + 1, raw())}
    (m,), state = history.fold_pass(state, {A: raw(cpu_ns=60_000_000_000)}, T0 + 1 + 5 * 60)
    assert set(state) == {A}                                   # B is not running any more
    assert m.cpu_avg is None and m.minute == T0 + 4 * 60       # watched meanwhile: no average
    assert history.fold_pass(state, {}, T0 + 1000) == ([], {})


def test_a_pass_minute_merges_with_the_ticks_of_the_same_minute():
    ticks = history.aggregate(A, T0, [{"t": T0 + i, "mem": 100, "cpu": 0.2, "pids": 2} for i in range(30)])
    (p,), _ = history.fold_pass({}, {A: raw(mem=400, pids=5)}, T0 + 61)
    m = history.merge(ticks, p)
    assert (m.samples, m.mem_avg, m.mem_max, m.pids_max, m.cpu_avg) == (31, 110, 400, 5, 0.2)


@pytest.mark.django_db
def test_minute_pass_writes_rows_for_the_unwatched_and_flushes_pending_ticks():
    history.reset()
    try:
        history.record(B, {"t": T0 + 30, "mem": 7, "cpu": 0.1, "pids": 1})    # B watched, then left
        sampled = []

        def sample(cid):
            sampled.append(cid)
            if cid == "gone":
                raise FileNotFoundError(cid)
            return raw(mem=1 << 20, cpu_ns=len(sampled) * 10**9)
        out = history.minute_pass({A}, now=T0 + 61, running=lambda: [A, B, "gone"], sample=sample)
        assert sampled == [B, "gone"]                          # A is watched: its ticks record it
        rows = {r.container_id: r for r in MinutePoint.objects.all()}
        assert set(rows) == {B} and {m.container_id for m in out} == {B}
        assert rows[B].samples == 2 and rows[B].mem_max == 1 << 20   # the pass merged with B's tick
        # a failing listing is logged, never raised
        assert history.minute_pass(running=lambda: 1 / 0, now=T0 + 121) == []
    finally:
        history.reset()


class _Reader(sampler.Reader):
    def read(self, cid, tree=True):
        return raw(), []


def test_the_sampler_runs_a_pass_on_start_and_then_once_a_minute(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    calls = []

    async def main():
        s = Sampler(tick=0.01, reader=_Reader(), once=_Reader)
        s.add(history.MinuteHistory(pass_=lambda skip, **kw: calls.append((skip, set(kw["samples"]))),
                                    running=lambda: [A, B]))
        await s.subscribe(A)
        await asyncio.sleep(0.2)                               # ~20 ticks, one pass
        await s.unsubscribe(A)
        return s
    s = asyncio.run(main())
    assert s.ticks >= 5 and calls == [({A}, {B})]              # the watched one is skipped
    assert not s.running
    assert wiring.make_sampler(keep_history=False).consumers == []   # no history: none declared
    assert [c.name for c in wiring.make_sampler(keep_history=True).consumers] == ["history"]
