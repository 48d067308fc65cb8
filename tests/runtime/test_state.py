"""On-disk state (runtime/state.py) on the real kernel: a torn config.json
shows the container as broken, never absent; the sweep removes what a crash
left and nothing else; the cgroup path is the one the container was made
with; create/start/stop/rm cycles leave nothing behind."""
from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from runtime import Conflict, Limits, Runtime, Spec
from tests.conftest import cli

pytestmark = pytest.mark.root

OLD = time.time() - 3600          # an mtime the sweep counts as a leftover


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(7)             # '{"id":"' : a config cut short


def test_write_config_is_durable_and_leaves_no_temp_file(rt, name, cleanup):
    cleanup.append(name)
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    cdir = os.path.dirname(c.upperdir)
    with open(os.path.join(cdir, "config.json")) as f:
        assert json.load(f)["cgroup_parent"] == rt.cgroup_parent
    assert sorted(n for n in os.listdir(cdir) if ".tmp" in n) == []


def test_torn_config_shows_broken_keeps_layers_and_rm_f_frees_the_name(rt, name, cleanup):
    from tests.runtime.test_commit import remove_images, run_to_end
    image = f"torn-{name.rsplit('-', 1)[-1]}"
    src = f"{name}-src"
    c, _ = run_to_end(rt, src, "busybox", ["sh", "-c", "echo only-here > /only"], cleanup)
    made = rt.commit(src, image)
    top = made.layers[-1].digest                    # used by nothing but this image...
    cleanup.append(name)
    victim = rt.create(Spec(image=image, name=name, cmd=("true",)))
    rt.remove(src)
    remove_images(rt, image)                        # ...then by nothing but the container
    _truncate(os.path.join(os.path.dirname(victim.upperdir), "config.json"))

    assert rt.inspect(name).status == "broken"
    ps = cli("ps", "-a")
    row = [line for line in ps.stdout.splitlines() if line.startswith(victim.id[:12])]
    assert len(row) == 1 and name in row[0] and "Broken: config.json is not valid JSON" in row[0]
    with pytest.raises(Conflict, match="broken"):
        rt.start(name)
    assert top not in cli("image-gc").stdout        # its layer is kept
    assert os.path.isdir(os.path.join(rt.root, "layers", top[7:]))
    with pytest.raises(Conflict, match="name .* already in use"):
        rt.create(Spec(image="busybox", name=name, cmd=("true",)))

    assert cli("rm", "-f", name).returncode == 0
    assert not os.path.exists(os.path.dirname(victim.upperdir))
    again = rt.create(Spec(image="busybox", name=name, cmd=("true",)))      # the name is free
    assert again.status == "created"
    assert f"Deleted: {top}" in cli("image-gc").stdout                      # now unused


def test_sweep_removes_leftovers_and_leaves_live_containers_alone(rt, name, cleanup):
    cleanup.append(name)
    live = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    live_dir = os.path.dirname(live.upperdir)
    os.utime(live_dir, (OLD, OLD))                  # old, but it has a config: not a leftover
    half = os.path.join(rt.containers_dir, secrets.token_hex(32))
    os.makedirs(os.path.join(half, "upper"))        # a create cut short before config.json
    os.utime(half, (OLD, OLD))
    fresh = os.path.join(rt.containers_dir, secrets.token_hex(32))
    os.makedirs(fresh)                              # a create under way right now
    tmp = os.path.join(live_dir, "config.json.tmp99999")
    with open(tmp, "w") as f:
        f.write("{")
    os.utime(tmp, (OLD, OLD))
    orphan = secrets.token_hex(32)                  # a cgroup whose container is gone
    rt.cgroups.create(orphan, Limits())
    for d in set(rt.cgroups.paths(orphan).values()):
        os.utime(d, (OLD, OLD))
    spare = "spare-999999999"                       # a spare shim's, its shim long gone
    rt.cgroups.create(spare, Limits())
    for d in set(rt.cgroups.paths(live.id).values()):
        os.utime(d, (OLD, OLD))                     # old, but its container exists

    try:
        removed = rt.sweep()
    finally:
        os.rmdir(fresh)
    assert sorted(removed) == sorted([
        f"half-made container directory {half}", f"temp file {tmp}",
        f"cgroup {rt.cgroup_parent}/{orphan}", f"cgroup {rt.cgroup_parent}/{spare}"])
    assert not os.path.exists(half) and not os.path.exists(tmp)
    assert not rt.cgroups.exists(orphan) and not rt.cgroups.exists(spare)
    assert rt.inspect(name).status == "running" and rt.cgroups.exists(live.id)
    assert os.path.exists(os.path.join(live_dir, "config.json"))


def test_sweep_runs_when_the_fork_server_starts(rt, name, cleanup):
    half = os.path.join(rt.containers_dir, secrets.token_hex(32))
    os.makedirs(half)
    os.utime(half, (OLD, OLD))
    rt.shutdown_servers()
    cleanup.append(name)
    rt.run(Spec(image="busybox", name=name, cmd=("true",)))
    assert not os.path.exists(half)
    with open(os.path.join(rt.run_dir, "sweep.log")) as f:
        assert f"removed half-made container directory {half}\n" in [
            line.split(" ", 1)[1] for line in f]


def test_inspect_reports_the_cgroup_it_was_made_with(rt, name, cleanup):
    other = Runtime(rt.root, f"{rt.cgroup_parent}/other")
    cleanup.append(name)
    try:
        c = other.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
        assert rt.inspect(name).cgroup == f"{rt.cgroup_parent}/other/{c.id}"
        freezer = other.cgroups.paths(c.id).get("freezer")
        rt.pause(name)                              # every cgroup op uses the stored parent
        if freezer:
            with open(os.path.join(freezer, "freezer.state")) as f:
                assert f.read().strip() == "FROZEN"
        rt.update(name, Limits(pids=50))
        assert rt.cgroup_driver(rt.inspect(name)).procs(c.id) == [c.pid]
        rt.resume(name)
        joined = cli("exec", name, "cat", "/proc/self/cgroup")     # this env's parent differs
        assert (joined.returncode, joined.stderr) == (0, "")
        assert f":pids:/{rt.cgroup_parent}/other/{c.id}" in joined.stdout
        rt.remove(name, force=True)
        assert not other.cgroups.exists(c.id)
    finally:
        cleanup.remove(name)
        try:
            rt.remove(name, force=True)
        except Exception:  # noqa: BLE001 - removed above
            pass
        rt.shutdown_servers()           # its spare shims wait under the last parent used
        deadline = time.monotonic() + 10           # and remove their cgroups on the way out
        while not other.cgroups.remove_parent() and time.monotonic() < deadline:
            time.sleep(0.05)


def _leftovers(rt) -> dict[str, int]:
    cgroups = set()
    for d in set(rt.cgroups.parent_paths().values()):
        if os.path.isdir(d):
            cgroups.update(n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n))
                           and not n.startswith("spare-"))
    with open("/proc/self/mountinfo") as f:
        mounts = sum(rt.root in line for line in f)
    tmp = os.path.join(rt.root, "tmp")
    return {"cgroups": len(cgroups), "mounts": mounts,
            "tmp": len(os.listdir(tmp)) if os.path.isdir(tmp) else 0,
            "containers": len(os.listdir(rt.containers_dir)), "names": len(os.listdir(rt.names_dir))}


def _cycle(rt, name: str) -> str:
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    rt.start(c.id)
    rt.stop(c.id)
    rt.remove(c.id)
    return c.id


def test_a_lock_taken_during_a_removal_does_not_make_its_file_again(rt, name, cleanup):
    """A removal empties the directory with rmtree after unlinking config.json;
    a command queued for the container (it resolved the id before) that
    opened the lock with O_CREAT in between made "lock" again, and the
    directory was left behind (two of 200 in a loaded full run)."""
    from runtime import NotFound
    from runtime import state as disk
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    cleanup.append(c.id)
    cdir = os.path.join(rt.containers_dir, c.id)
    assert os.path.isfile(os.path.join(cdir, disk.LOCK))         # made with the container
    os.unlink(os.path.join(cdir, disk.LOCK))                      # as a container made before that was
    rt.stop(c.id)                                                 # its lock is made while config is there
    assert os.path.isfile(os.path.join(cdir, disk.LOCK))
    # the removal midway: config.json and the lock gone, rmtree not yet at the end
    os.unlink(os.path.join(cdir, disk.CONFIG))
    os.unlink(os.path.join(cdir, disk.LOCK))
    os.unlink(os.path.join(rt.names_dir, name))
    with pytest.raises(NotFound):
        rt.remove(c.id, force=True)
    assert disk.LOCK not in os.listdir(cdir)
    disk.remove(rt.containers_dir, rt.names_dir, c.id)    # (no config: nothing to do, as for a gone one)
    import shutil
    shutil.rmtree(cdir)


def test_a_state_read_racing_a_removal_does_not_make_the_lock_again(rt, name, cleanup):
    """A list() or inspect that read config.json just before a removal
    unlinked it, then found run.json already gone under rmtree, took the
    container for a start under way and opened its lock with O_CREAT:
    "lock" was made again and the directory left (one of 200 cycles in CI)."""
    from runtime import state as disk
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    cleanup.append(c.id)
    rt.start(c.id)
    rt.wait(c.id, timeout=10)
    cdir = os.path.join(rt.containers_dir, c.id)
    config = disk.read_config(cdir)
    for f in (disk.RUN, disk.EXIT, disk.LOCK):           # what rmtree may have taken so far
        os.unlink(os.path.join(cdir, f))
    state = rt._state(c.id, config)
    assert state.status == "created"
    assert disk.LOCK not in os.listdir(cdir)


def _left(rt, ids) -> dict[str, list[str]]:
    """What is in the directories of ids still there (the clue when one is)."""
    out = {}
    for cid in ids:
        d = os.path.join(rt.containers_dir, cid)
        if os.path.exists(d):
            out[cid[:12]] = sorted(os.path.relpath(os.path.join(p, n), d)
                                   for p, ds, fs in os.walk(d) for n in ds + fs)
    return out


def test_200_cycles_leave_nothing_behind(rt, name):
    _cycle(rt, f"{name}-warm")       # the servers (and their _daemons cgroup) up, as after
    before = _leftovers(rt)
    made = [_cycle(rt, f"{name}-{i}") for i in range(200)]
    after = _leftovers(rt)
    # The session's root is shared: a container of another test may come or go
    # meanwhile (one did, in a full run); this test's own must all be gone.
    assert not set(made) & set(os.listdir(rt.containers_dir)), _left(rt, made)
    assert not [n for n in os.listdir(rt.names_dir) if n.startswith(f"{name}-")]
    for key in ("containers", "names"):
        before.pop(key), after.pop(key)
    assert after == before
