"""Prometheus /metrics (dashboard/live/exporter.py, views.metrics): who may
scrape (one status per case), and the figures of a real running container
equal to its cgroup files under cAdvisor's names and labels."""
from __future__ import annotations

import os
import stat

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from dashboard import webstate
from dashboard.live import exporter
from runtime import Limits, Sample, Spec
from runtime.cgroups import figures

TOKEN = "t0ken-for-the-metrics-tests-0123456789"


@pytest.fixture(autouse=True)
def _fresh_exporter():
    exporter.reset()
    yield
    exporter.reset()


def _get(client=None, **headers):
    return (client or Client()).get("/metrics", **headers)


def _series(body: bytes) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a text-format scrape."""
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _of(series, name: str, labels: dict) -> float | None:
    return series.get((name, frozenset(labels.items())))


# --- who may scrape -----------------------------------------------------------

@pytest.mark.django_db
@override_settings(TERRARIUM_METRICS_TOKEN=None, TERRARIUM_METRICS_ALLOW_LOCAL=False)
def test_off_by_default_is_404_for_everyone(operator):
    assert _get().status_code == 404
    assert _get(HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    admin = Client()
    admin.force_login(operator)                 # a session does not open it
    assert _get(admin).status_code == 404


@pytest.mark.django_db
@override_settings(TERRARIUM_METRICS_TOKEN=None, TERRARIUM_METRICS_ALLOW_LOCAL=True)
def test_allow_local_without_token_serves_loopback_only(rt):
    r = _get(REMOTE_ADDR="127.0.0.1")
    assert r.status_code == 200 and b"container_scrape_error" in r.content
    assert _get(REMOTE_ADDR="::1").status_code == 200
    assert _get(REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    assert _get(REMOTE_ADDR="192.0.2.7").status_code == 404
    assert _get(REMOTE_ADDR="::ffff:192.0.2.7").status_code == 404


@pytest.mark.django_db
@override_settings(TERRARIUM_METRICS_TOKEN=TOKEN, TERRARIUM_METRICS_ALLOW_LOCAL=True)
def test_with_a_token_only_the_token_counts(rt, operator):
    r = _get()
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Bearer")
    assert _get(HTTP_AUTHORIZATION="Bearer wrong-token-wrong-token").status_code == 401
    assert _get(HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert _get(HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert _get(HTTP_AUTHORIZATION="Bearer").status_code == 401
    admin = Client()
    admin.force_login(operator)
    assert _get(admin).status_code == 401       # loopback and a session: still the token
    r = _get(HTTP_AUTHORIZATION=f"Bearer {TOKEN}", REMOTE_ADDR="192.0.2.7")
    assert r.status_code == 200 and b"container_scrape_error" in r.content
    assert _get(HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200   # the scheme is case-insensitive
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_token_from_environment_or_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TERRARIUM_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("TERRARIUM_WEB_DIR", str(tmp_path))
    assert webstate.metrics_token() is None                     # no file: no token
    path = tmp_path / "metrics_token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(webstate.WebStateError, match="chmod 600"):
        webstate.metrics_token()
    os.chmod(path, 0o600)
    assert webstate.metrics_token() == TOKEN
    path.write_text("short\n")
    with pytest.raises(webstate.WebStateError, match="at least 16"):
        webstate.metrics_token()
    monkeypatch.setenv("TERRARIUM_METRICS_TOKEN", "from-the-environment-123")
    assert webstate.metrics_token() == "from-the-environment-123"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600          # refused, never changed


# --- the figures ------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _flat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def _files(rt, cid: str) -> dict:
    """The container's cgroup files, read here (v1 paths; v2 in the VM tier)."""
    p = rt.cgroups.paths(cid)
    mem, cpu, acct, pids = p["memory"], p["cpu"], p["cpuacct"], p["pids"]
    return {
        "usage": int(_read(f"{mem}/memory.usage_in_bytes")),
        "limit": int(_read(f"{mem}/memory.limit_in_bytes")),
        "max_usage": int(_read(f"{mem}/memory.max_usage_in_bytes")),
        "failcnt": int(_read(f"{mem}/memory.failcnt")),
        "stat": _flat(_read(f"{mem}/memory.stat")),
        "oom": _flat(_read(f"{mem}/memory.oom_control")),
        "cpu_ns": int(_read(f"{acct}/cpuacct.usage")),
        "cpu_stat": _flat(_read(f"{cpu}/cpu.stat")),
        "quota": int(_read(f"{cpu}/cpu.cfs_quota_us")),
        "period": int(_read(f"{cpu}/cpu.cfs_period_us")),
        "tasks": int(_read(f"{pids}/pids.current")),
        "tasks_max": _read(f"{pids}/pids.max").strip(),
    }


def _scrape_steady(rt, cid: str, client: Client) -> tuple[dict, dict]:
    """A scrape and the files, read before and after it and the same both times
    (an idle `sleep` moves nothing, but a page of cache can still be charged,
    and a CFS period can still end).  Each try is a fresh reader's first read,
    which reads every file (later ones skip what an idle container cannot move)."""
    for _ in range(20):
        exporter.reset()
        before = _files(rt, cid)
        r = _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_ACCEPT="text/plain")
        assert r.status_code == 200
        if _files(rt, cid) == before:
            return _series(r.content), before
    pytest.fail("the container's cgroup files kept changing")


@pytest.mark.root
@pytest.mark.django_db
@override_settings(TERRARIUM_METRICS_TOKEN=TOKEN)
def test_figures_equal_the_cgroup_files(rt, made, name):
    if rt.cgroups.kind == "v2":
        pytest.skip("the v1 files are read here")
    limited = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300"),
                          limits=Limits(memory=64 << 20, cpus=0.5, pids=64)))
    free = rt.run(Spec(image="busybox", name=name + "-free", cmd=("sleep", "300")))
    client = Client()
    series, f = _scrape_steady(rt, limited.id, client)
    labels = {"id": f"/{rt.cgroup_parent}/{limited.id}", "name": name, "image": "busybox"}
    want = {
        "container_memory_usage_bytes": f["usage"],
        "container_memory_working_set_bytes": f["usage"] - f["stat"]["total_inactive_file"],
        "container_memory_cache": f["stat"]["total_cache"],
        "container_memory_rss": f["stat"]["total_rss"],
        "container_memory_total_inactive_file_bytes": f["stat"]["total_inactive_file"],
        "container_memory_max_usage_bytes": f["max_usage"],
        "container_memory_failcnt": f["failcnt"],
        "container_spec_memory_limit_bytes": 64 << 20,
        "container_oom_events_total": f["oom"]["oom_kill"],
        "container_spec_cpu_quota": 50_000,
        "container_spec_cpu_period": f["period"],
        "container_cpu_cfs_periods_total": f["cpu_stat"]["nr_periods"],
        "container_cpu_cfs_throttled_periods_total": f["cpu_stat"]["nr_throttled"],
        "container_cpu_cfs_throttled_seconds_total": f["cpu_stat"]["throttled_time"] / 1e9,
        "container_threads": f["tasks"],
        "container_threads_max": 64,
    }
    if "total_swap" in f["stat"]:
        want["container_memory_swap"] = f["stat"]["total_swap"]
    assert f["limit"] == 64 << 20 and f["quota"] == 50_000 and f["tasks_max"] == "64"
    got = {k: _of(series, k, labels) for k in want}
    assert got == pytest.approx(want), (got, want)
    assert _of(series, "container_cpu_usage_seconds_total", {**labels, "cpu": "total"}) == \
        pytest.approx(f["cpu_ns"] / 1e9)
    assert not [k for k in series if k[0].startswith("container_pressure_")]     # v1: no PSI files

    # no limits: the memory limit reads 0 (cAdvisor), no quota, no CFS counters
    free_labels = {"id": f"/{rt.cgroup_parent}/{free.id}", "name": name + "-free", "image": "busybox"}
    assert _of(series, "container_spec_memory_limit_bytes", free_labels) == 0
    assert _of(series, "container_threads_max", free_labels) == 0
    assert _of(series, "container_memory_usage_bytes", free_labels) > 0
    assert _of(series, "container_spec_cpu_quota", free_labels) is None
    assert _of(series, "container_cpu_cfs_periods_total", free_labels) is None
    assert _of(series, "container_scrape_error", {}) == 0


@pytest.mark.root
@pytest.mark.django_db
@override_settings(TERRARIUM_METRICS_TOKEN=TOKEN)
def test_only_running_containers_and_their_files_are_let_go(rt, made, name):
    def fds():
        return len(os.listdir("/proc/self/fd"))

    created = rt.create(Spec(image="busybox", name=name + "-created", cmd=("sleep", "300")))
    client = Client()
    _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")        # whatever else runs is read now
    base = fds()
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    lists = exporter.collector().lists
    body = _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content
    assert f'name="{name}"'.encode() in body
    assert exporter.collector().lists == lists + 1            # a new cgroup: its labels listed
    assert f'name="{name}"'.encode() in _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content
    assert exporter.collector().lists == lists + 1            # ... once: no state file read again
    assert created.id.encode() not in body                    # never started: no series
    assert fds() > base                                       # the reader keeps its files open
    rt.stop(c.id, timeout=1)
    body = _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content
    assert c.id.encode() not in body
    assert fds() == base                                      # ... and closes them once it stopped


def test_metrics_come_from_the_figure_table(monkeypatch):
    """A row's metric (cAdvisor's for its figures unless it names its own) is
    one more family; a figure the sample lacks gives no series.  The real
    file's way to a scrape: tests/runtime/test_figures.py."""
    row = figures.one("test_knob", "memory.test_knob", "memory", "slow",
                      metrics=figures.Metric("container_test_knob_bytes", "gauge", "A knob."))
    monkeypatch.setattr(figures, "V1", figures.V1._replace(rows=figures.V1.rows + (row,)))
    sample = Sample.of("v2", {"memory_usage": 100, "memory_inactive_file": 40, "test_knob": 7,
                              "psi_cpu_some_total": 2_500_000, "psi_cpu_full_total": 500_000,
                              "psi_io_some_total": None})
    fams = {f.name: f for f in exporter.families([(("/p/x", "busybox", "x"), sample)])}
    assert fams["container_test_knob_bytes"].samples[0].value == 7
    assert fams["container_memory_working_set_bytes"].samples[0].value == 60
    assert fams["container_pressure_cpu_waiting_seconds"].samples[0].value == 2.5
    assert fams["container_pressure_cpu_stalled_seconds"].samples[0].value == 0.5
    assert "container_pressure_io_waiting_seconds" not in fams      # not in the sample: no series
    assert "container_spec_memory_limit_bytes" in fams               # None -> 0, as cAdvisor
    names = [m.name for m in figures.metrics()]
    assert len(names) == len(set(names)) and "container_test_knob_bytes" in names
    assert {m.name for m in figures.CADVISOR} <= set(names)


def test_the_body_is_what_the_client_library_writes(monkeypatch):
    """/metrics writes its body itself (kept series lines: bench/metrics_bench.py);
    it is byte for byte the client library's text and OpenMetrics encoding of
    the same families, awkward label values and help texts included."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    odd = figures.Metric("container_test_odd_total", "counter", 'A "quoted" \\ help\nwith a newline.',
                         "test_odd", labels=(("zone", 'a"b'),))
    row = figures.one("test_odd", "memory.test_odd", "memory", "slow", metrics=odd)
    monkeypatch.setattr(figures, "V1", figures.V1._replace(rows=figures.V1.rows + (row,)))
    s1 = Sample.of("v2", {"memory_usage": 123456789, "memory_inactive_file": 40, "memory_limit": None,
                          "cpu_usage_ns": 5, "cpu_quota_us": 50_000, "cpu_nr_periods": 3,
                          "psi_io_some_total": 1, "test_odd": 2.5})
    s2 = Sample.of("v2", {"memory_usage": 0, "pids_current": 1 << 40, "test_odd": float("inf")})
    rows = [("a" * 64, ("/p/" + "a" * 64, 'img"x\\y', "we\nird"), s1),
            ("b" * 64, ("/p/" + "b" * 64, "busybox", "plain"), s2)]
    col = exporter.ContainerCollector()
    monkeypatch.setattr(col, "scrape", lambda: (rows, 0.0))
    reg = exporter.CollectorRegistry(auto_describe=False)
    reg.register(col)
    assert col.encode() == generate_latest(reg)
    assert col.encode(openmetrics=True) == openmetrics(reg)
    assert col.encode() == generate_latest(reg)               # again, from the kept lines
    assert b'container_test_odd_total{id="/p/' + b"a" * 64 + b'",image="img\\"x\\\\y",name="we\\nird",zone="a\\"b"} 2.5' in col.encode()
