"""The helpers' own cgroup (runtime.daemons, cgroups' join/leave_daemons): the
fork server, the CLI server and the shims leave the cgroup of whoever started
them, so killing that cgroup -- what `systemctl stop` of a unit does -- leaves
the containers running and supervised; and the parent cgroup goes with the
last container and the last helper, never before."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest

from runtime import Runtime
from runtime.errors import NotFound
from runtime.pidinfo import parse_cgroup
from runtime.spec import make_spec
from tests.conftest import CLI

pytestmark = pytest.mark.root


def parent_dirs(parent: str) -> list[str]:
    """<hierarchy>/<parent> of every hierarchy that has it."""
    return [d for d in (os.path.join("/sys/fs/cgroup", h, parent) for h in os.listdir("/sys/fs/cgroup"))
            if os.path.isdir(d)]


def pids_in(directory: str) -> set[int]:
    with open(os.path.join(directory, "cgroup.procs")) as f:
        return {int(p) for p in f.read().split()}


def own_cgroup(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return parse_cgroup(f.read())


def server_pids(root: str) -> dict[str, int]:
    out = {}
    for name in ("cli", "forkserver"):
        try:
            with open(os.path.join(root, "run", f"{name}.pid")) as f:
                out[name] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def wait_until(check, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.02)


@pytest.fixture
def fresh(session_root, cgroup_parent):
    """A state root and cgroup parent of this test's own (so their servers start
    here), both removed after it, whatever happened."""
    tag = secrets.token_hex(3)
    root = os.path.join(session_root, f"fresh-{tag}")
    parent = f"{cgroup_parent}-{tag}"
    rt = Runtime(root, parent)
    rt.images.ensure_builtin()
    yield rt
    for c in rt.list(all=True):
        rt.remove(c.id, force=True)
    rt.shutdown_servers()
    rt.cgroups.remove_parent()


def test_servers_and_shims_live_in_the_parents_daemons_cgroup(fresh):
    c = fresh.run(make_spec(image="busybox", cmd=["sleep", "300"]))
    want = f"/{fresh.cgroup_parent}/_daemons"
    for pid in (server_pids(fresh.root)["forkserver"], c.shim_pid):
        mine = own_cgroup(pid)
        # every hierarchy but cpuset (a new v1 cpuset has no cpus to run on),
        # name=systemd and the hybrid cgroup2 tree included: there systemd
        # finds the processes of a unit it stops
        assert {k for k, v in mine.items() if v != want} == {"cpuset"}, (pid, mine)
    assert own_cgroup(c.pid)["memory"] == f"/{fresh.cgroup_parent}/{c.id}"


def test_the_parent_cgroup_stays_while_a_container_remains(fresh):
    c = fresh.run(make_spec(image="busybox", cmd=["sleep", "300"]))
    fresh.shutdown_servers()
    # the shim is still in _daemons and the container in its cgroup: all stays
    assert fresh.cgroups.remove_parent() is False
    assert fresh.inspect(c.id).status == "running"
    assert pids_in(f"/sys/fs/cgroup/memory/{fresh.cgroup_parent}/_daemons") == {c.shim_pid}
    # The container goes; its shim, the last helper, takes the parent along.
    fresh.remove(c.id, force=True)
    wait_until(lambda: parent_dirs(fresh.cgroup_parent) == [], what="the parent's removal")


def test_the_last_server_out_removes_the_empty_parent(fresh):
    c = fresh.run(make_spec(image="busybox", cmd=["true"], auto_remove=True))
    wait_until(lambda: not os.path.exists(os.path.join(fresh.root, "containers", c.id)), what="--rm")
    assert parent_dirs(fresh.cgroup_parent) != []      # the fork server is still in it
    fresh.shutdown_servers()
    # (the container's shim may still be on its way out: the last one out removes)
    wait_until(lambda: parent_dirs(fresh.cgroup_parent) == [], what="the parent's removal")


def test_killing_the_starters_cgroup_leaves_containers_supervised(fresh, cgroup_parent):
    """Security-confirm section 9: a fresh root started from inside a cgroup of
    our own, then every process in that cgroup SIGKILLed (as systemd stops a
    unit).  The containers run on; their exits are recorded by their shims and
    --rm is honoured; no spare cgroup is left."""
    rt, root, parent = fresh, fresh.root, fresh.cgroup_parent
    starter = [os.path.join("/sys/fs/cgroup", h, f"{cgroup_parent}-starter-{secrets.token_hex(3)}")
               for h in ("memory", "pids")]
    env = dict(os.environ, TERRARIUM_ROOT=root, TERRARIUM_CGROUP_PARENT=parent)
    # the unit: two commands, then its main process stays, as a service's would
    script = (
        'for d in "$@"; do echo $$ > "$d/cgroup.procs"; done\n'
        f'"{CLI}" run -d --name keep busybox sh -c \'trap "exit 7" TERM; sleep 300 & wait\' >/dev/null &&\n'
        f'"{CLI}" run -d --rm --name gone busybox sleep 300 >/dev/null &&\n'
        'echo ready && exec sleep 300\n')
    for d in starter:
        os.mkdir(d)
    unit = None
    try:
        unit = subprocess.Popen(["sh", "-c", script, "starter", *starter], env=env, text=True,
                                stdout=subprocess.PIPE)
        assert unit.stdout.readline() == "ready\n"
        keep, gone = rt.inspect("keep"), rt.inspect("gone")
        helpers = {*server_pids(root).values(), keep.shim_pid, gone.shim_pid}
        assert len(helpers) == 4
        listed = set().union(*(pids_in(d) for d in starter))
        assert listed == {unit.pid}, (listed, helpers)      # the helpers have left it
        for pid in listed:                  # the unit's stop: exactly what its cgroup holds
            os.kill(pid, signal.SIGKILL)
        unit.wait(timeout=10)
        wait_until(lambda: not any(pids_in(d) for d in starter), what="the starter's cgroup to empty")

        assert rt.inspect("keep").status == "running" and rt.inspect("gone").status == "running"
        # gone's init dies by itself: its shim records it and removes it (--rm)
        os.kill(gone.pid, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(os.path.join(root, "containers", gone.id)),
                   what="--rm of 'gone'")
        with pytest.raises(NotFound):
            rt.inspect("gone")
        # keep is stopped by a fresh command; its init exits 7 on SIGTERM
        stop = subprocess.run([CLI, "stop", "keep"], env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        after = rt.inspect("keep")
        assert (after.status, after.exit_code, after.error) == ("exited", 7, None)

        rt.remove("keep")
        rt.shutdown_servers()
        # No spare's cgroup, no container's, no helpers': the last helper out
        # (a server, the worker that ran `stop`, a shim) removes the parent.
        wait_until(lambda: parent_dirs(parent) == [], what="the parent's removal")
    finally:
        if unit is not None and unit.poll() is None:
            unit.kill()
            unit.wait()
        for d in starter:
            for pid in pids_in(d):          # only if a check above failed
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pids_in(d), what=f"{d} to empty")
            os.rmdir(d)

