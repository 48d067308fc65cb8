"""Attribution and dedupe of the OOM watcher, as pure functions on real kmsg reports."""
from pathlib import Path

import pytest

from dashboard.oom import mapping
from runtime.oom import OomCounts, parse_oom_reports, split_kmsg_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kmsg"
PARENT = "terrarium-test-f6666b89"          # the cgroup parent when memcg_oom_v1.txt was captured


def report(name: str):
    (r,) = parse_oom_reports(split_kmsg_records((FIXTURES / name).read_bytes()))
    return r


def counts(n: int) -> OomCounts:
    return OomCounts(version=1, oom_kill=n, under_oom=False)


@pytest.mark.parametrize("memcg, parent, expected", [
    ("/terrarium/abc", "terrarium", "abc"),
    ("/terrarium/abc/sub", "terrarium", "abc"),
    ("/a/b/abc", "a/b", "abc"),
    ("/terrarium", "terrarium", None),
    ("/terrarium-other/abc", "terrarium", None),
    ("/user.slice/x", "terrarium", None),
    (None, "terrarium", None),
    ("", "terrarium", None),
])
def test_container_id_for_memcg(memcg, parent, expected):
    assert mapping.container_id_for_memcg(memcg, parent) == expected


def test_real_memcg_kill_is_the_containers():
    r = report("memcg_oom_v1.txt")
    who = mapping.attribute(r, PARENT)
    assert who == mapping.Attribution("container", "oomcap", f"/{PARENT}/oomcap")
    assert (r.pid, r.comm, r.limit_kb) == (10310, "tail", 20480)


def test_memcg_kill_in_a_cgroup_not_ours_is_the_hosts():
    who = mapping.attribute(report("memcg_oom_v1.txt"), "terrarium")
    assert (who.scope, who.container_id, who.memcg) == ("host", None, f"/{PARENT}/oomcap")


def test_global_oom_is_the_hosts_not_the_victims_cgroup():
    r = report("global_oom.txt")
    assert r.task_memcg                      # the victim lived in a cgroup ...
    who = mapping.attribute(r, "user.slice")  # ... even one that would match the parent
    assert who == mapping.Attribution("host", None, None)


def test_old_kernel_format_maps_by_task_in_line():
    who = mapping.attribute(report("memcg_oom_old.txt"), "docker")
    assert (who.scope, who.container_id) == ("container", "4f2a9c")


# --------------------------------------------------------------------- dedupe
def test_counter_then_report_is_one_event_seen_by_both():
    r, c = report("memcg_oom_v1.txt"), mapping.Correlator(window=0.25)
    assert c.on_counter("oomcap", 1, counts(1), now=10.0) == []
    (a,) = c.on_report("oomcap", r, now=10.004)
    assert (a.kind, a.key, a.report, a.counts) == (mapping.NEW, "oomcap", r, counts(1))
    assert c.expire(now=11.0) == [] and c.next_deadline() is None


def test_report_then_counter_confirms_the_recorded_event():
    r, c = report("memcg_oom_v1.txt"), mapping.Correlator(window=0.25)
    (a,) = c.on_report("oomcap", r, now=10.0)
    assert a.kind == mapping.NEW and a.counts is None
    (b,) = c.on_counter("oomcap", 1, counts(1), now=10.01)
    assert (b.kind, b.token, b.counts) == (mapping.CONFIRM, (r.usec, r.pid), counts(1))
    assert c.expire(now=20.0) == []


def test_counter_without_report_is_recorded_bare_after_the_window():
    c = mapping.Correlator(window=0.25)
    c.on_counter("x", 2, counts(2), now=10.0)
    assert c.next_deadline() == pytest.approx(10.25)
    assert c.expire(now=10.1) == []
    out = c.expire(now=10.3)
    assert [a.kind for a in out] == [mapping.COUNTER_ONLY] * 2 and out[0].key == "x"


def test_host_reports_never_wait_for_counters():
    c = mapping.Correlator()
    (a,) = c.on_report(None, report("global_oom.txt"), now=1.0)
    assert (a.kind, a.key) == (mapping.NEW, None) and c.next_deadline() is None


def test_kills_in_two_containers_do_not_pair_across():
    r, c = report("memcg_oom_v1.txt"), mapping.Correlator(window=0.25)
    c.on_counter("a", 1, counts(1), now=10.0)
    (x,) = c.on_report("b", r, now=10.004)
    assert x.counts is None                      # b's report does not take a's counter
    (y,) = c.expire(now=10.3)
    assert (y.kind, y.key) == (mapping.COUNTER_ONLY, "a")


def test_stale_credits_are_forgotten():
    c = mapping.Correlator(window=0.25, credit_ttl=5)
    c.on_report("a", report("memcg_oom_v1.txt"), now=0.0)
    c.expire(now=6.0)
    assert c.on_counter("a", 1, counts(1), now=6.0) == []    # pending, not a confirm
