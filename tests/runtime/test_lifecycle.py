"""Restart policies, health checks and the "stopping" state (runtime/lifecycle.py)
on the real kernel, plus the checks of what people type for them."""
from __future__ import annotations

import threading
import time

import pytest

from runtime import Healthcheck, InvalidArgument, Spec
from runtime.cli import status_text
from runtime.lifecycle import (BACKOFF_FIRST, check_healthcheck, check_restart, healthcheck_from_options,
                               parse_duration, restart_delay)
from tests.conftest import _our_processes, cli, is_root

root = pytest.mark.skipif(not is_root(), reason="needs root")


def until(rt, ref, pred, timeout: float = 20.0):
    """The container's state once pred(state) holds, woken by its records
    changing on disk (runtime/changes.py), not by a poll."""
    from runtime.changes import StateWatch
    deadline = time.monotonic() + timeout
    with StateWatch(rt.containers_dir) as watch:
        while True:
            c = rt.inspect(ref)
            if pred(c):
                return c
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting; last state: {c}"
            watch.read(int(min(left, 0.5) * 1000))


def helpers(kind: str) -> set:
    """Our restarters or health checkers still alive (comm is cut at 15 bytes)."""
    return {p for p in _our_processes() if p[1].startswith(f"terrarium-{kind}"[:15])}


# ------------------------------------------------------------------ checks

def test_restart_policies_and_durations_are_checked():
    assert [check_restart(p) for p in ("no", "always", "unless-stopped", "on-failure", "on-failure:3",
                                       "on-failure:0")] == \
        ["no", "always", "unless-stopped", "on-failure", "on-failure:3", "on-failure"]
    for bad in ("sometimes", "always:3", "on-failure:-1", "on-failure:x", "", None, 3, "no\n"):
        with pytest.raises(InvalidArgument, match="restart policy"):
            check_restart(bad)
    assert [parse_duration(t) for t in ("30s", "1m30s", "500ms", "2", "0.25", "1h")] == \
        [30.0, 90.0, 0.5, 2.0, 0.25, 3600.0]
    for bad in ("-1s", "1d", "nan", "1e3", "٣s", "2 days"):
        with pytest.raises(InvalidArgument, match="use e.g. 30s"):
            parse_duration(bad)
    with pytest.raises(InvalidArgument, match="from 0 to"):
        parse_duration("48h")
    # Docker's backoff: 100 ms, doubled, at most a minute; afresh after a 10 s run
    cfg = {"generation": 5}
    assert restart_delay("always", 0, 0.5, cfg) == BACKOFF_FIRST
    assert restart_delay("always", 0, 0.5, {**cfg, "backoff": 0.4}) == 0.8
    assert restart_delay("always", 0, 0.5, {**cfg, "backoff": 40.0}) == 60.0
    assert restart_delay("always", 0, 10.0, {**cfg, "backoff": 40.0}) == BACKOFF_FIRST
    assert restart_delay("on-failure", 0, 0.5, cfg) is None
    assert restart_delay("on-failure:2", 1, 0.5, {**cfg, "policy_restarts": 2}) is None
    assert restart_delay("unless-stopped", 1, 0.5, {**cfg, "manual_stop": 5}) is None
    assert restart_delay("always", 1, 0.5, {**cfg, "manual_stop": 4}) == BACKOFF_FIRST


def test_health_options_are_checked():
    hc = healthcheck_from_options("wget -q localhost", "5s", "2s", "4", "1m")
    assert hc == Healthcheck(test=("/bin/sh", "-c", "wget -q localhost"), interval=5.0, timeout=2.0,
                             retries=4, start_period=60.0)
    assert healthcheck_from_options() is None
    assert healthcheck_from_options(disabled=True) == Healthcheck(test=())
    for args, message in ((("", "5s"), "need --health-cmd"), (("true", "soon"), "interval"),
                          (("true", None, None, "0"), "retries"), (("true", None, None, "x"), "retries"),
                          (("true", "0s"), "at least 10ms")):
        with pytest.raises(InvalidArgument, match=message):
            healthcheck_from_options(*args)
    with pytest.raises(InvalidArgument, match="conflicts"):
        healthcheck_from_options("true", disabled=True)
    with pytest.raises(InvalidArgument, match="unknown fields"):
        check_healthcheck({"test": ["true"], "shell": True})
    with pytest.raises(InvalidArgument, match="list of arguments"):
        check_healthcheck({"test": "true"})
    with pytest.raises(InvalidArgument, match="NUL"):
        check_healthcheck(Healthcheck(test=("sh", "-c", "true\0")))


def test_the_agent_checks_lifecycle_fields_of_a_spec():
    from runtime.agent import _spec
    spec = _spec({"image": "busybox", "restart": "on-failure:2",
                  "healthcheck": {"test": ["true"], "interval": 1, "timeout": 1, "retries": 2, "start_period": 0}})
    assert spec.restart == "on-failure:2" and spec.healthcheck.test == ("true",)
    for bad, message in (({"restart": 5}, "restart must be a string"),
                         ({"restart": "twice"}, "restart policy"),
                         ({"healthcheck": "true"}, "healthcheck must be an object"),
                         ({"healthcheck": {"test": ["true"], "retries": True}}, "retries"),
                         ({"restart": "always", "auto_remove": True}, "cannot have a restart policy")):
        with pytest.raises(InvalidArgument, match=message):
            _spec({"image": "busybox", **bad})


# ------------------------------------------------------------- on the kernel

@root
def test_on_failure_restarts_n_times_with_growing_delays_then_stays_exited(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "exit 1"), restart="on-failure:3"))
    assert c.restart_policy == "on-failure:3"
    c = until(rt, name, lambda c: c.status == "exited" and c.restart_count == 3 and not c.restarting)
    history = c.restart_history
    assert [h["exit_code"] for h in history] == [1, 1, 1]
    assert [h["delay"] for h in history] == [0.1, 0.2, 0.4]          # Docker's doubling from 100 ms
    gaps = [h["restarted_at"] - h["finished_at"] for h in history]   # measured from the records
    assert all(gap >= delay for gap, delay in zip(gaps, (0.1, 0.2, 0.4))), gaps
    assert gaps[2] > gaps[0], gaps
    # the fourth exit is the last: once its shim is gone, no restarter waits
    rt._settle(c.id)
    assert not helpers("restart")
    c = rt.inspect(name)
    assert (c.status, c.exit_code, c.restart_count, c.restarting) == ("exited", 1, 3, None)
    assert status_text(c).startswith("Exited (1)")
    # a person's start begins the count afresh
    c = rt.start(name)
    assert c.restart_history == ()


@root
def test_always_restarts_after_exit_0_but_never_after_a_manual_stop(rt, name, cleanup):
    cleanup.append(name)
    rt.run(Spec(image="busybox", name=name, restart="always",
                cmd=("sh", "-c", "test -e /again || { touch /again; exit 0; }; exec sleep 60")))
    c = until(rt, name, lambda c: c.status == "running" and c.restart_count == 1)
    assert c.restart_history[0]["exit_code"] == 0
    c = rt.stop(name, timeout=5)
    assert c.status == "exited"
    rt._settle(c.id)
    assert not helpers("restart")
    c = rt.inspect(name)
    assert (c.status, c.restart_count, c.restarting) == ("exited", 1, None)


@root
def test_a_stop_cancels_the_pending_restart_and_update_changes_the_policy(rt, name, cleanup):
    cleanup.append(name)
    rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "exit 3"), restart="unless-stopped"))
    c = until(rt, name, lambda c: c.restarting and c.restarting["delay"] >= 0.4)
    assert status_text(c).startswith("Restarting (3)")
    rt.stop(name)
    assert not helpers("restart")                          # the waiting restarter was ended
    c = rt.inspect(name)
    assert c.restarting is None and c.status == "exited"
    count = c.restart_count
    r = cli("update", "--restart", "on-failure:1", name)
    assert r.returncode == 0, r.stderr
    assert rt.inspect(name).restart_policy == "on-failure:1"
    r = cli("update", "--restart", "sometimes", name)
    assert r.returncode == 125 and "invalid restart policy" in r.stderr
    c = rt.start(name)                                     # one more exit 3, one restart, then no more
    c = until(rt, name, lambda c: c.restart_count == count + 2 and c.status == "exited" and not c.restarting)
    rt._settle(c.id)
    assert rt.inspect(name).restart_count == count + 2


def test_a_cancelled_restarter_is_gone_when_the_cancel_returns(tmp_path):
    """A SIGKILL takes effect when its process next runs: the restarter was
    still alive when a stop returned (seen in CI as a restarter left after
    the stop).  Here a child stands in for it (a child of ours: it stays a
    zombie, state Z, once it has exited)."""
    import json
    import subprocess

    from runtime import lifecycle, pidinfo
    for _ in range(20):
        waiter = subprocess.Popen(["sleep", "60"])
        try:
            (tmp_path / lifecycle.PENDING).write_text(json.dumps(
                {"pid": waiter.pid, "pid_start": pidinfo.process_start_time(waiter.pid)}))
            lifecycle.cancel_pending(str(tmp_path))
            assert pidinfo.parse_stat(pidinfo.read_text(f"/proc/{waiter.pid}/stat") or "").state == "Z"
            assert not (tmp_path / lifecycle.PENDING).exists()
        finally:
            waiter.kill()
            waiter.wait()


@root
def test_health_checks_healthy_unhealthy_and_timed_out(rt, name, cleanup):
    checks = {
        "ok": healthcheck_from_options("echo fine", "0.2s", "5s"),
        "bad": healthcheck_from_options("echo broken >&2; exit 3", "50ms", "5s", "2"),
        "slow": healthcheck_from_options("sleep 30", "0.2s", "0.3s", "1"),
    }
    for key, hc in checks.items():
        cleanup.append(f"{name}-{key}")
        rt.run(Spec(image="busybox", name=f"{name}-{key}", cmd=("sleep", "60"), healthcheck=hc))
    ok = until(rt, f"{name}-ok", lambda c: c.health and c.health["status"] == "healthy")
    bad = until(rt, f"{name}-bad", lambda c: c.health and c.health["status"] == "unhealthy")
    slow = until(rt, f"{name}-slow", lambda c: c.health and c.health["status"] == "unhealthy")
    assert ok.health["log"][-1]["exit_code"] == 0 and ok.health["log"][-1]["output"] == "fine\n"
    assert bad.health["failing_streak"] >= 2
    last = bad.health["log"][-1]
    assert (last["exit_code"], last["output"]) == (3, "broken\n") and last["end"] >= last["start"]
    assert slow.health["log"][-1]["exit_code"] == -1 and "exceeded timeout" in slow.health["log"][-1]["output"]
    assert ok.healthcheck["test"] == ["/bin/sh", "-c", "echo fine"]
    bad = until(rt, f"{name}-bad", lambda c: c.health["failing_streak"] >= 6)
    assert len(bad.health["log"]) == 5                     # bounded: the last five
    r = cli("ps")
    line = {ln.split()[-1]: ln for ln in r.stdout.splitlines()[1:]}
    assert "(healthy)" in line[f"{name}-ok"] and "(unhealthy)" in line[f"{name}-bad"]
    for key in checks:
        rt.stop(f"{name}-{key}", timeout=0)
    assert not helpers("health")                           # each checker ends with its container
    assert rt.inspect(f"{name}-bad").health["status"] == "unhealthy"   # the last word is kept


@root
def test_a_stop_reads_stopping_until_kill_cuts_it_short(rt, name, cleanup):
    cleanup.append(name)
    rt.run(Spec(image="busybox", name=name,
                cmd=("sh", "-c", "trap 'echo term' TERM; echo ready; while :; do sleep 0.1; done")))
    deadline = time.monotonic() + 20                       # the trap is set before the stop comes
    while b"ready" not in rt.logs(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    stopper = threading.Thread(target=rt.stop, args=(name,), kwargs={"timeout": 60})
    stopper.start()
    try:
        c = until(rt, name, lambda c: c.stopping)
        assert c.status == "running" and c.stopping["timeout"] == 60
        assert status_text(c).startswith("Stopping (SIGKILL in")
        began = time.monotonic()
        c = rt.kill(name)
    finally:
        stopper.join(30)
    assert time.monotonic() - began < 30                   # not the stop's 60 s
    assert (c.status, c.exit_code, c.stopping) == ("exited", 137, None)
    assert rt.inspect(name).stopping is None


@root
def test_an_images_healthcheck_applies_unless_the_container_says_otherwise(rt, name, cleanup, tmp_path):
    from tests.runtime.test_import import docker_archive, layer_tar
    docker_archive(tmp_path / "hc.tar", [layer_tar(("srv/ok", b"1"))], tags=(f"{name}:1",), config_extra={
        "config": {"Cmd": ["sleep", "60"], "Env": [], "WorkingDir": "/",
                   "Healthcheck": {"Test": ["CMD-SHELL", "test -e /srv/ok"], "Interval": 2_000_000_000,
                                   "Retries": 5}}})
    rt.load_image(str(tmp_path / "hc.tar"))
    try:
        image = rt.images.get(f"{name}:1")
        assert image.config.healthcheck == Healthcheck(test=("/bin/sh", "-c", "test -e /srv/ok"),
                                                       interval=2.0, timeout=30.0, retries=5)
        cleanup.extend([f"{name}-a", f"{name}-b"])
        a = rt.create(Spec(image=f"{name}:1", name=f"{name}-a"))
        b = rt.create(Spec(image=f"{name}:1", name=f"{name}-b", healthcheck=healthcheck_from_options(disabled=True)))
        assert a.healthcheck["test"] == ["/bin/sh", "-c", "test -e /srv/ok"] and a.healthcheck["retries"] == 5
        assert b.healthcheck["test"] == []                   # --no-healthcheck
        r = cli("run", "--name", f"{name}-c", "--health-cmd", "x", "--no-healthcheck", "busybox", "true")
        assert r.returncode == 125 and "conflicts" in r.stderr
    finally:
        for n in (f"{name}-a", f"{name}-b"):
            rt.remove(n, force=True)
        rt.remove_image(f"{name}:1")
