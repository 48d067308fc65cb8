"""Volumes, bind mounts, tmpfs and a read-only root (runtime/mounts.py,
runtime/volumes.py) on the real kernel: what a container sees, what the host
keeps, and what is refused."""
from __future__ import annotations

import json
import os
import secrets
import select

import pytest

from runtime import Conflict, InvalidArgument, NotFound, Spec, TerrariumError
from runtime.errors import Forbidden
from runtime.model import Mount
from runtime.mounts import parse_tmpfs, parse_volume
from tests.conftest import cli

pytestmark = pytest.mark.root


@pytest.fixture
def volume(rt):
    """A volume name unique to this test; removed after it (with its containers gone)."""
    name = f"tv-{secrets.token_hex(4)}"
    yield name
    try:
        for user in rt.volumes.inspect(name, size=False)["containers"]:   # a test that failed midway
            rt.remove(user["id"], force=True)
        rt.volumes.remove(name)
    except NotFound:
        pass


def _run(rt, name, cmd, cleanup, mounts=(), **kw):
    cleanup.append(name)
    c = rt.run(Spec(image=kw.pop("image", "busybox"), name=name, cmd=("sh", "-c", cmd),
                    mounts=tuple(mounts), **kw), allow_bind_mounts=kw.pop("binds", False))
    c = rt.wait(c.id, timeout=60)
    return c, rt.logs(c.id).decode()


def _wait_log(rt, cid, text):
    """The container's output up to the line `text` (its command says it is
    ready), read as it comes; ends early if the container stops."""
    out = ""
    for _, data in rt.log_output(cid, follow=True):
        out += data.decode()
        if text in out:
            return out
    raise AssertionError(f"{text!r} never came: {out}")


# ------------------------------------------------------------ named volumes

def test_a_volume_outlives_its_container_and_reaches_the_next_read_only(rt, name, cleanup, volume):
    c, out = _run(rt, f"{name}-w", "echo kept > /data/note && cat /data/note", cleanup,
                  [parse_volume(f"{volume}:/data")])
    assert (c.exit_code, out) == (0, "kept\n")
    assert c.mounts == (Mount("volume", volume, "/data"),)
    rt.remove(c.id)                                  # never takes its named volume along
    assert rt.volumes.inspect(volume)["containers"] == []
    c2, out2 = _run(rt, f"{name}-r", "cat /data/note; echo x > /data/other || echo refused", cleanup,
                    [parse_volume(f"{volume}:/data:ro")])
    stdout = [r.content.decode() for r in rt.log_records(c2.id) if r.stream == "stdout"]
    assert stdout == ["kept", "refused"] and "Read-only file system" in out2, out2
    assert sorted(os.listdir(rt.volumes.data_path(volume))) == ["note"]
    rt.remove(c2.id)


def test_a_new_volume_is_filled_from_the_image_once(rt, name, cleanup, volume):
    """Docker's rule: an empty volume gets what the image has at the target
    (with its owner and mode); one with content is left as it is."""
    c, out = _run(rt, f"{name}-a", "ls /usr/local/bin; rm /usr/local/bin/spawn; echo mine > "
                  "/usr/local/bin/mine", cleanup, [parse_volume(f"{volume}:/usr/local/bin")], image="lab")
    assert out.split() == ["cpuburn", "memhog", "spawn"]
    c2, out2 = _run(rt, f"{name}-b", "ls /usr/local/bin", cleanup,
                    [parse_volume(f"{volume}:/usr/local/bin")], image="lab")
    assert out2.split() == ["cpuburn", "memhog", "mine"]
    rt.remove(c.id)
    rt.remove(c2.id)


def test_a_volume_in_use_is_not_removed_forced_or_not(rt, name, cleanup, volume):
    cleanup.append(name)
    rt.create(Spec(image="busybox", name=name, mounts=(parse_volume(f"{volume}:/v"),)))
    with pytest.raises(Conflict, match=f"volume '{volume}' is in use by container '{name}'"):
        rt.volumes.remove(volume)
    r = cli("volume", "rm", "-f", volume)
    assert r.returncode == 125 and "is in use by container" in r.stderr, r
    assert rt.volumes.inspect(volume)["containers"] == [{"id": rt.inspect(name).id, "name": name}]
    rt.remove(name)
    assert cli("volume", "rm", volume).returncode == 0
    with pytest.raises(NotFound):
        rt.volumes.inspect(volume)
    with open(os.path.join(rt.root, "audit.log")) as f:             # the CLI's changes are audited
        records = [json.loads(line) for line in f]
    assert [r["result"] for r in records if (r["verb"], r["target"]) == ("volume-remove", volume)] \
        == ["error", "ok"]


def test_anonymous_volumes_go_with_rm_but_named_ones_stay(rt, name, volume):
    before = {v["name"] for v in rt.volumes.list()}
    r = cli("run", "--rm", "--name", name, "-v", "/scratch", "-v", f"{volume}:/named", "busybox",
            "sh", "-c", "echo a > /scratch/f && echo b > /named/f")
    assert r.returncode == 0, r.stderr
    assert {v["name"] for v in rt.volumes.list()} - before == {volume}
    with pytest.raises(NotFound):
        rt.inspect(name)
    # run -d --rm: the shim removes the container when it exits, and its anonymous volume
    c = rt.run(Spec(image="busybox", name=name, cmd=("true",), auto_remove=True,
                    mounts=(parse_volume("/scratch"),)))
    shim = os.pidfd_open(c.shim_pid)
    try:
        _poll(shim)
    finally:
        os.close(shim)
    with pytest.raises(NotFound):
        rt.inspect(name)
    assert {v["name"] for v in rt.volumes.list()} - before == {volume}


def _poll(fd: int, timeout_ms: int = 30_000) -> None:
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(timeout_ms), "the shim did not exit"


# ------------------------------------------------------------ bind, tmpfs, ro

def test_binds_tmpfs_and_read_only_root_stay_inside_the_container(rt, name, cleanup, volume, tmp_path):
    """One running container with each kind of mount: what it sees, what its
    mount table says (nosuid,nodev added to the source's flags; the tmpfs's
    size holds), and that the host's own mount table gains nothing."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("hello\n")
    host_before = open("/proc/self/mountinfo").read()
    cleanup.append(name)
    script = ("cat /host/from-host; echo back > /host/from-container; "
              "dd if=/dev/zero of=/scratch/fill bs=64k count=64 2>&1 | grep -o 'No space left on device'; "
              "du -k /scratch/fill; "
              "touch /on-root 2>&1; echo ready; exec sleep 60")
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", script), read_only=True,
                    mounts=(parse_volume(f"{shared}:/host"), parse_tmpfs("/scratch:size=1m,mode=700"),
                            parse_volume(f"{volume}:/data"))), allow_bind_mounts=True)
    try:
        out = _wait_log(rt, c.id, "ready")
        assert out.startswith("hello\n")
        assert (shared / "from-container").read_text() == "back\n"
        assert "No space left on device" in out and "1024\t/scratch/fill" in out, out
        assert "Read-only file system" in out
        inside = {line.split()[4]: line for line in open(f"/proc/{c.pid}/mountinfo")}
        for target in ("/host", "/scratch", "/data"):
            opts = inside[target].split()[5].split(",")
            assert {"nosuid", "nodev"} <= set(opts), inside[target]
        assert "noexec" in inside["/scratch"].split()[5] and "size=1024k" in inside["/scratch"]
        assert "mode=700" in inside["/scratch"]
        assert inside["/"].split()[5].startswith("ro,"), inside["/"]
        host_now = open("/proc/self/mountinfo").read()
        for path in (str(shared), rt.volumes.data_path(volume), c.rootfs, " /scratch "):
            assert path not in host_now and path not in host_before
    finally:
        rt.remove(c.id, force=True)


def test_a_symlink_in_the_image_cannot_point_a_mount_outside_the_root(rt, name, cleanup):
    """The target is resolved inside the container's root: /link -> / in the
    writable layer makes /link/x the container's /x, never the host's."""
    cleanup.append(name)
    escape = f"terrarium-escape-{secrets.token_hex(4)}"
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", f"grep -c ' /{escape} ' /proc/self/mountinfo"),
                       mounts=(parse_tmpfs(f"/link/{escape}"),)))
    os.symlink("/", os.path.join(c.upperdir, "link"))
    rt.start(c.id)
    c = rt.wait(c.id, timeout=30)
    assert (c.exit_code, rt.logs(c.id).decode()) == (0, "1\n")
    assert not os.path.lexists(f"/{escape}")


def test_a_symlinked_etc_cannot_point_the_hosts_file_outside_the_root(rt, name, cleanup):
    """The same for the runtime's own files: /etc -> /somewhere in the image
    puts /etc/hosts at the container's /somewhere/hosts; the host's
    /somewhere is never made."""
    cleanup.append(name)
    escape = f"terrarium-escape-{secrets.token_hex(4)}"
    c = rt.create(Spec(image="busybox", name=name, network="host", cmd=("sh", "-c", f"ls /{escape}")),
                  allow_host_network=True)
    os.symlink(f"/{escape}", os.path.join(c.upperdir, "etc"))
    rt.start(c.id)
    c = rt.wait(c.id, timeout=30)
    assert (c.exit_code, rt.logs(c.id).decode().split()) == (0, ["hosts", "resolv.conf"])
    assert not os.path.lexists(f"/{escape}")


@pytest.mark.parametrize("source", ["/", "/proc", "/etc/ssl", "/var", "/run", "ROOT", "ROOT/layers",
                                    "ROOT-PARENT", "LINK-TO-ETC"])
def test_sensitive_host_paths_are_refused(rt, session_root, tmp_path, source):
    if source == "LINK-TO-ETC":
        os.symlink("/etc", tmp_path / "innocent")
        source = str(tmp_path / "innocent")
    source = source.replace("ROOT-PARENT", os.path.dirname(session_root)).replace("ROOT", session_root)
    with pytest.raises(Forbidden, match="bind mount of .* refused"):
        rt.create(Spec(image="busybox", mounts=(parse_volume(f"{source}:/mnt"),)), allow_bind_mounts=True)


def test_bind_mounts_need_consent_and_sane_input(rt, tmp_path):
    with pytest.raises(Forbidden, match="must be allowed explicitly"):
        rt.create(Spec(image="busybox", mounts=(parse_volume(f"{tmp_path}:/mnt"),)))
    for bad, message in (("rel/dir:/mnt", "invalid volume name"), ("v1:/", "the root is the image's"),
                         ("v1:/proc/x", "mounts there are refused"), ("v1:/a:rw,ro", "both ro and rw"),
                         ("v1:/a:z", "invalid mount option"), ("v1:relative", "must be an absolute")):
        with pytest.raises(InvalidArgument, match=message):
            parse_volume(bad)
    with pytest.raises(InvalidArgument, match="duplicate mount point /a"):
        rt.create(Spec(image="busybox", mounts=(parse_volume("v1:/a"), parse_tmpfs("/a/"))))
    with pytest.raises(InvalidArgument, match="does not exist"):
        rt.create(Spec(image="busybox", mounts=(parse_volume(f"{tmp_path}/nope:/a"),)), allow_bind_mounts=True)
    r = cli("run", "--tmpfs", "/t:size=lots", "busybox", "true")
    assert r.returncode == 125 and "invalid tmpfs size" in r.stderr


def test_mounts_through_the_agent(rt, session_root, cgroup_parent, name, cleanup, volume, tmp_path):
    """The agent's create checks the mounts as make_spec does and refuses a bind
    mount unless the request allows it (the dashboard: administrators)."""
    from runtime.agent_client import AgentRuntime
    a = AgentRuntime(session_root, cgroup_parent, user="tester")
    try:
        with pytest.raises(Forbidden, match="must be allowed explicitly"):
            a.create(Spec(image="busybox", mounts=(parse_volume(f"{tmp_path}:/mnt"),)))
        with pytest.raises(InvalidArgument, match="invalid mount type"):
            a.call("create", spec={"image": "busybox", "mounts": [{"type": "overlay", "target": "/x"}]})
        cleanup.append(name)
        c = a.create(Spec(image="busybox", name=name, read_only=True,
                          mounts=(parse_volume(f"{volume}:/v:ro"), parse_tmpfs("/t:size=64k"))))
        assert c == rt.inspect(name) and c.read_only
        assert c.mounts == (Mount("volume", volume, "/v", True), Mount("tmpfs", "", "/t", False, 65536))
        assert [v["name"] for v in a.volumes.list() if v["name"] == volume] == [volume]
        with pytest.raises(Conflict, match="in use"):
            a.volumes.remove(volume)
        a.remove(name)
    finally:
        a.close()


def test_an_images_symlinked_proc_and_dev_are_mounted_inside_its_root(rt, name, cleanup, tmp_path):
    """/proc an absolute symlink to a host directory, /dev a relative one that
    climbs out of the root (runtime/init.py _mount_system): both resolve
    inside the container's root, where the mounts land; the host's
    directories stay empty and unmounted."""
    host_proc, host_dev = tmp_path / "host-proc", tmp_path / "host-dev"
    host_proc.mkdir()
    host_dev.mkdir()
    cleanup.append(name)
    c = rt.create(Spec(image="busybox", name=name, cmd=(
        "sh", "-c", "cat /proc/1/comm; readlink /proc; readlink /dev; echo hi > /dev/null && test -c /dev/null "
                    "&& test -d /dev/pts && echo devices-ok; grep -c ' - devpts ' /proc/self/mountinfo")))
    upper = c.upperdir
    os.symlink(str(host_proc), os.path.join(upper, "proc"))
    os.symlink("../" * 40 + str(host_dev).lstrip("/"), os.path.join(upper, "dev"))
    rt.start(c.id)
    c = rt.wait(c.id, timeout=60)
    out = rt.logs(c.id).decode().split("\n")
    assert c.exit_code == 0, out
    assert out[:5] == ["sh", str(host_proc), "../" * 40 + str(host_dev).lstrip("/"), "devices-ok", "1"]
    # the mount points were made inside the root (in its writable layer), not on the host
    assert os.listdir(host_proc) == [] and os.listdir(host_dev) == []
    assert os.path.isdir(upper + str(host_proc)) and os.path.isdir(upper + str(host_dev))
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()


def test_an_images_proc_that_links_to_itself_fails_the_start_saying_so(rt, name, cleanup):
    """`proc -> /proc` (what debootstrap's first stage leaves on some hosts) is
    a link to itself inside the root: the start fails naming the loop, and the
    host's /proc is not mounted over."""
    cleanup.append(name)
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    os.symlink("/proc", os.path.join(c.upperdir, "proc"))
    with pytest.raises(TerrariumError, match=r"mount target /proc: a symlink in the image at /proc loops"):
        rt.start(c.id)


def test_telling_an_init_that_has_gone_is_no_error_of_its_own():
    """runtime.shim._tell_init: a pipe whose reader (init) has ended is
    reported as False, not raised, so that the shim reads init's own error
    instead of reporting "Broken pipe" and leaving the container's cgroup
    behind (seen under load in the test above: init's mount failed before the
    shim told it that it was in its cgroup)."""
    from runtime.shim import _tell_init
    r, w = os.pipe()
    try:
        assert _tell_init(w, b"1") is True and os.read(r, 1) == b"1"
        os.close(r)
        r = -1
        assert _tell_init(w, b"1") is False
    finally:
        os.close(w)
        if r >= 0:
            os.close(r)
