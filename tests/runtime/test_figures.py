"""runtime/cgroups/figures.py: the one table of cgroup files, the parsers of
its new rows (PSI), the typed record both readers return
(runtime/cgroups/record.py), and on the real kernel (v1 here; v2 in the VM
tier) the memory anatomy of a container whose tmpfs holds most of its limit."""
import time
import typing

import pytest

from runtime import Spec, stats
from runtime.cgroups import figures, parse
from runtime.cgroups.record import TYPED, Sample
from runtime.model import Limits

PRESSURE = ("some avg10=1.25 avg60=0.40 avg300=0.08 total=123456\n"
            "full avg10=0.50 avg60=0.10 avg300=0.00 total=7890\n")


def test_pressure_parses_some_and_full():
    p = parse.pressure(PRESSURE)
    assert p["some"] == {"avg10": 1.25, "avg60": 0.40, "avg300": 0.08, "total": 123456}
    assert p["full"]["total"] == 7890 and p["full"]["avg300"] == 0.0
    assert parse.pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n") == {
        "some": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}}


def test_pressure_row_names_every_figure_and_its_source():
    row = figures.pressure("memory")
    got = row.parse(PRESSURE.encode())
    assert set(got) == set(row.figures)
    assert got["psi_memory_some_avg10"] == 1.25 and got["psi_memory_full_total"] == 7890
    assert row.sources["psi_memory_full_avg60"] == "memory.pressure full avg60"


@pytest.mark.parametrize("table", [figures.V1, figures.V2], ids=["v1", "v2"])
def test_a_figure_comes_from_one_row_only(table):
    names = [f for r in table.rows for f in r.figures]
    assert len(names) == len(set(names))
    assert not set(names) & {"kind", "sources"}
    assert all(r.when in figures.WHEN for r in table.rows)


def test_each_typed_field_of_the_record_is_a_figure_of_a_table():
    """A field names a figure some table yields (a misspelt one would read None
    for ever); the mapping carries every figure, the fields copy theirs."""
    assert set(TYPED) <= set(figures.V1.figures()) | set(figures.V2.figures())
    s = Sample.of("v2", {"memory_usage": 5, "psi_cpu_some_avg10": 0.5, "new_knob": 7}, {"memory_usage": "memory.current"})
    assert (s.memory_usage, s.memory_limit, s.get("psi_cpu_some_avg10"), s.get("new_knob")) == (5, None, 0.5, 7)
    t = s.updated({"memory_usage": 6, "new_knob": 8})
    assert (t.memory_usage, t.get("new_knob"), s.memory_usage) == (6, 8, 5) and t.sources is s.sources
    assert t.changes(s) == {"memory_usage": 6, "new_knob": 8} and s.changes(s) == {}
    assert Sample.of("v2", {"memory_usage": 5}).changes(s) is None           # not the same figures


def _holds(value, hint) -> bool:
    """Whether value is of a field's declared type (int | None, Mapping[str, int] | None)."""
    kinds = tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def test_a_real_reading_fills_the_typed_fields_with_their_declared_types(rt, cleanup, name):
    """Both readers' records: each typed field is the mapping's figure, of the
    type mypy is told it has, and the limits read back as set."""
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100"),
                    limits=Limits(memory=64 << 20, cpus=0.5, pids=50)))
    cleanup.append(c.id)
    hints = typing.get_type_hints(Sample)
    r = stats.StatsReader(rt.cgroups)
    try:
        for s in (rt.cgroups.sample(c.id), r.read(c.id, tree=False)[0]):
            assert s.kind == rt.cgroups.kind and set(s.figures) == set(figures.table(s.kind).figures())
            for f in TYPED:
                v = getattr(s, f)
                assert v == s.figures.get(f) and _holds(v, hints[f]), (f, v)
            assert (s.memory_limit, s.cpu_quota_us, s.pids_max) == (64 << 20, 50_000, 50)
            assert s.memory_usage > 0 and s.cpu_usage_ns > 0 and s.pids_current == 1
            assert isinstance(s.memory_events, dict) and s.oom_kills == s.memory_events.get("oom_kill")
    finally:
        r.close()


def test_every_v1_row_parses_its_real_file_into_its_figures(rt, cleanup, name):
    """Each row's parser, fed the file as this kernel writes it, yields exactly
    the figures the row declares (the sources and the values cannot drift)."""
    if rt.cgroups.kind == "v2":
        pytest.skip("v1 host; the v2 rows are checked in the VM tier")
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100"), limits=Limits(memory=64 << 20)))
    cleanup.append(c.id)
    paths = rt.cgroups.paths(c.id)
    seen = 0
    for row in figures.V1.rows:
        if row.controller not in paths:
            continue
        try:
            with open(f"{paths[row.controller]}/{row.file}", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        assert set(row.parse(data)) == set(row.figures), row.file
        seen += 1
    cgroup_rows = [r for r in figures.V1.rows if r.controller != figures.NETNS]   # net/dev: test_network_figures
    assert seen >= len(cgroup_rows) - 2              # at most the kmem files may be missing


def _fill_shm(rt, name, mib):
    """A container limited to 40 MiB whose /dev/shm (tmpfs) holds ``mib`` MiB."""
    return rt.run(Spec(image="lab", name=name, limits=Limits(memory=40 << 20),
                       cmd=("sh", "-c", f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={mib} 2>/dev/null;"
                                        " touch /dev/shm/done; sleep 100")))


def _until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_memory_anatomy_shows_a_tmpfs_filled_to_most_of_the_limit(rt, cleanup, name):
    """The container's charged memory is mostly tmpfs: both readers say shmem,
    and the OOM card's sentence names it."""
    from dashboard.oom import memrecord
    c = _fill_shm(rt, name, 28)
    cleanup.append(c.id)
    raw = _until(lambda: (s := rt.cgroups.sample(c.id)).memory_shmem >= 28 << 20 and s)
    assert raw.sources["memory_shmem"] in ("memory.stat total_shmem", "memory.stat shmem")
    assert raw.memory_cache >= raw.memory_shmem           # tmpfs pages are page cache
    assert raw.memory_anon < 8 << 20                          # sh, dd and sleep: little anon
    r = stats.StatsReader(rt.cgroups)
    try:
        fast, _ = r.read(c.id, tree=False)
        assert abs(fast.memory_shmem - raw.memory_shmem) < 1 << 20
    finally:
        r.close()
    point = memrecord.point_from_sample(raw, time.time())
    assert point["anatomy"]["shmem"] >= 28 << 20
    sentence = memrecord.largest_part(point["anatomy"], point["limit"])
    assert sentence.startswith("28.") and "of the 40.0 MiB limit was shmem (tmpfs" in sentence


@pytest.mark.django_db
def test_a_row_added_to_the_table_reaches_both_readers_the_live_figures_and_metrics(
        rt, cleanup, name, monkeypatch, settings):
    """Adding a cgroup file is one row: the driver's sample, the fast reader,
    the live feed's figures (with its source) and a /metrics scrape (the
    metric the row names) carry it with no other edit."""
    from collections import deque

    from django.test import Client

    from dashboard.live import exporter, sampler
    kind = rt.cgroups.kind
    table = figures.table(kind)
    ctl, file = ("memory", "memory.swappiness") if kind != "v2" else ("unified", "cgroup.freeze")
    extra = figures.one("extra_knob", file, ctl, "slow",
                        metrics=figures.Metric("container_test_extra_knob", "gauge", "A knob of the test."))
    monkeypatch.setattr(figures, "V2" if kind == "v2" else "V1", table._replace(rows=table.rows + (extra,)))
    c = rt.run(Spec(image="lab", name=name, cmd=("sleep", "100")))
    cleanup.append(c.id)
    with open(f"{rt.cgroups.paths(c.id)[ctl]}/{file}") as f:
        want = int(f.read())
    raw = rt.cgroups.sample(c.id)
    assert raw.figures["extra_knob"] == want and raw.sources["extra_knob"] == file
    r = stats.StatsReader(rt.cgroups)
    try:
        fast, _ = r.read(c.id, tree=False)
    finally:
        r.close()
    assert fast.figures["extra_knob"] == want
    # what the live page gets: the sampler's sample event, its "kernel files" figures
    s = sampler.Sampler(tick=1.0, keep=10.0, reader=sampler.Reader())
    s.state[c.id] = sampler._Watched(points=deque())
    ev = s._sample_one(c.id, (fast, []), time.monotonic(), time.time())[0]
    assert ev["figures"]["extra_knob"] == want and ev["figure_sources"]["extra_knob"] == file
    # a scrape
    token = "t0ken-for-the-figure-table-test-0123"
    settings.TERRARIUM_METRICS_TOKEN = token
    exporter.reset()
    try:
        body = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="text/plain")
    finally:
        exporter.reset()
    assert body.status_code == 200
    assert "# HELP container_test_extra_knob A knob of the test." in body.content.decode()
    line = f'container_test_extra_knob{{id="/{rt.cgroup_parent}/{c.id}",image="lab",name="{name}"}} {want:.1f}'
    assert line in body.content.decode().splitlines()
