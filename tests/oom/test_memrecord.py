"""The OOM card's memory record, the near-OOM warning rule, the swap verdict and
bare (ratelimited) kmsg reports, as pure functions."""
from pathlib import Path

import pytest

from dashboard.oom import mapping, memrecord
from runtime import Sample
from runtime.oom import parse_oom_reports, split_kmsg_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kmsg"
MB = 1 << 20


def pt(t, usage, limit=20 * MB, **kw):
    return dict({"t": t, "usage": usage, "limit": limit, "ws": usage, "failcnt": 0,
                 "memsw_failcnt": 0, "swap": 0, "under_oom": False, "oom_kill": 0,
                 "high": None, "max": None, "max_usage": usage}, **kw)


def test_point_from_a_v1_sample():
    raw = Sample.of("v1", {"memory_usage": 18 * MB, "memory_limit": 20 * MB, "memory_inactive_file": 2 * MB,
                           "memory_failcnt": 3, "memsw_usage": 19 * MB, "memory_swap": None,
                           "memory_events": {"oom_kill_disable": 0, "under_oom": 1, "oom_kill": 2}})
    p = memrecord.point_from_sample(raw, 100.0)
    assert (p["usage"], p["ws"], p["limit"], p["failcnt"]) == (18 * MB, 16 * MB, 20 * MB, 3)
    assert p["under_oom"] and p["oom_kill"] == 2 and p["swap"] == 1 * MB
    assert memrecord.point_from_sample(raw.updated({"memory_limit": None}), 1.0) is None   # unlimited


def test_the_record_wants_the_tree_first_and_then_only_near_the_limit():
    """The sampler reads a limited container's tree on its first sample, then
    only while usage is at 80 % of the limit or rising fast enough to be
    there by the next sample (the process that will be killed is in it)."""
    rec = memrecord.MemRecorder(interval=0.5)
    rec.targets = {"c": None}
    assert rec.wants() == {"c": True}

    def at(mb):
        rec.tick({"c": (Sample.of("v1", {"memory_usage": mb * MB, "memory_limit": 20 * MB}), None)})
        return rec.wants()["c"]
    assert [at(mb) for mb in (2, 3, 10, 4, 17, 12)] == [False, False, True, False, True, False]


def test_near_limit_fires_after_n_samples_once_then_rearms():
    tr = memrecord.PressureTracker(memrecord.PressureRule(percent=90, consecutive=3))
    fired = [tr.feed("c", pt(i, u * MB)) for i, u in enumerate([10, 19, 19, 19, 19, 19, 5, 19, 19, 19])]
    assert [i for i, f in enumerate(fired) if f] == [3, 9]
    assert fired[3][0]["reason"] == "near-limit" and fired[3][0]["percent"] == 95.0


def test_failcnt_rise_and_under_oom_fire_at_once_with_a_quiet_time():
    tr = memrecord.PressureTracker(memrecord.PressureRule(percent=90, consecutive=3, quiet=10))
    assert tr.feed("c", pt(0, 5 * MB)) == []
    assert [w["reason"] for w in tr.feed("c", pt(1, 5 * MB, failcnt=4))] == ["failcnt-rising"]
    assert tr.feed("c", pt(2, 5 * MB, failcnt=9)) == []            # quiet for 10 s
    assert [w["reason"] for w in tr.feed("c", pt(20, 5 * MB, failcnt=12, under_oom=True))] == \
        ["under-oom", "failcnt-rising"]
    assert [w["reason"] for w in tr.feed("c", pt(40, 5 * MB, failcnt=12, max=3))] == []   # first max seen
    assert [w["reason"] for w in tr.feed("c", pt(41, 5 * MB, failcnt=12, max=5))] == ["max-rising"]


def test_swap_verdict_says_swapped_only_when_limit_reached_no_kill_and_swap_used():
    swapped = [pt(0, 10 * MB), pt(1, 20 * MB, swap=3 * MB, failcnt=7), pt(2, 20 * MB, swap=5 * MB)]
    v = memrecord.swap_verdict(swapped, host_swap_total=1024 * MB)
    assert v["swap_peak"] == 5 * MB and v["peak_usage"] == 20 * MB and v["limit"] == 20 * MB
    # the same figures on a host without swap cannot be a swap story; nor with a kill; nor under the limit
    assert memrecord.swap_verdict(swapped, host_swap_total=0) is None
    killed = swapped[:-1] + [pt(2, 20 * MB, swap=5 * MB, oom_kill=1)]
    assert memrecord.swap_verdict(killed, host_swap_total=1024 * MB) is None
    assert memrecord.swap_verdict([pt(0, 5 * MB, swap=MB)], host_swap_total=1024 * MB) is None
    assert memrecord.swap_verdict([pt(0, 20 * MB)], host_swap_total=1024 * MB) is None   # no swap used


def test_mark_victim_gives_the_container_pid():
    tree = [{"pid": 10, "ns_pid": 1, "comm": "sh", "children": [
        {"pid": 11, "ns_pid": 2, "comm": "head", "children": []},
        {"pid": 12, "ns_pid": 3, "comm": "tail", "children": []}]}]
    marked, victim = memrecord.mark_victim(tree, 12)
    assert victim["ns_pid"] == 3 and victim["victim"] and "victim" not in tree[0]["children"][1]
    assert [n["pid"] for d, n in memrecord.walk_json(marked) if n.get("victim")] == [12]
    assert memrecord.mark_victim(tree, 99)[1] is None


# ------------------------------------------------------------- bare reports
def test_ratelimited_report_names_no_cgroup():
    (r,) = parse_oom_reports(split_kmsg_records((FIXTURES / "memcg_oom_ratelimited.txt").read_bytes()))
    assert (r.pid, r.comm, r.is_global, r.oom_memcg) == (532, "tail", False, None)
    assert mapping.is_bare(r)
    assert mapping.attribute(r, "terrarium").scope == "host"       # what the watcher used to record


@pytest.mark.parametrize("proc, owner, waiting, expected", [
    ("/terrarium/abc", None, (), "abc"),                 # the victim's /proc/<pid>/cgroup
    (None, "def", ("xyz",), "def"),                      # the tree that held the pid
    (None, None, ("xyz",), "xyz"),                       # the one counter kill waiting
    (None, None, ("x", "y"), None),                      # ambiguous: the host's, unattributed
    ("/user.slice/x", None, (), None),
])
def test_attribute_bare(proc, owner, waiting, expected):
    (r,) = parse_oom_reports(split_kmsg_records((FIXTURES / "memcg_oom_ratelimited.txt").read_bytes()))
    who = mapping.attribute_bare(r, "terrarium", proc_memcg=proc, tree_owner=owner, waiting=waiting)
    assert who.container_id == expected
    assert who.scope == ("container" if expected else "host")


def test_correlator_lists_keys_waiting_for_a_report():
    c = mapping.Correlator(window=0.25)
    c.on_counter("a", 1, None, now=1.0)
    assert c.waiting() == ["a"] and c.waiting(now=1.004) == ["a"]
    assert c.waiting(now=1.5) == []             # too old to be this report's
