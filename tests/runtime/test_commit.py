"""Commit, save, load, rmi and image-gc on the real kernel, checked against peers
from Debian: `skopeo inspect` reads what `terrarium save` writes, and an
image built by `umoci` (second layer deletes a file of the first) loads
through `terrarium load -i` and runs without the deleted file.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import time

import pytest

from runtime import Conflict, Spec, overlay
from tests.conftest import cli

pytestmark = pytest.mark.root
needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="apt-get install skopeo")
needs_umoci = pytest.mark.skipif(not shutil.which("umoci"), reason="apt-get install umoci")

CHANGES = ("echo me:x:1000:1000::/home/me:/bin/sh >> /etc/passwd; rm /etc/motd; "
           "rm -rf /usr/local/bin && mkdir /usr/local/bin && echo x > /usr/local/bin/new; "
           "echo hello > /hello")
CHECK = ("test ! -e /etc/motd && echo motd-gone; cat /hello; ls -A /usr/local/bin; "
         "grep -c ^me: /etc/passwd")


def run_to_end(rt, name, image, cmd, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image=image, name=name, cmd=tuple(cmd)))
    c = rt.wait(c.id, timeout=60)
    return c, rt.logs(c.id).decode()


def wait_for(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def remove_images(rt, *names):
    for n in names:
        try:
            rt.remove_image(n, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture
def committed(rt, name, cleanup):
    """A running `lab` container with the four kinds of change, committed as an image."""
    cleanup.append(name)
    image = f"committed-{name.rsplit('-', 1)[-1]}"
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", CHANGES + "; exec sleep 300")))
    wait_for(os.path.join(c.upperdir, "hello"))
    yield name, image
    remove_images(rt, image)


def test_commit_running_container_makes_a_third_layer(rt, committed, cleanup):
    name, image_name = committed
    lab = rt.images.get("lab")
    image = rt.commit(name, image_name, message="four changes")
    assert rt.inspect(name).status == "running"             # paused for the pack, then resumed
    assert [l.digest for l in image.layers[:2]] == [l.digest for l in lab.layers]
    assert len(image.layers) == 3
    assert image.history == (*lab.history, f"terrarium commit {name}: four changes")
    assert image.config.cmd == ("sh", "-c", CHANGES + "; exec sleep 300")
    assert not any(e.startswith("HOSTNAME=") for e in image.config.env)
    top = image.layers[2].path
    wo = os.lstat(os.path.join(top, "etc/motd"))
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0       # OCI .wh. back to overlay form
    assert os.getxattr(os.path.join(top, "usr/local/bin"), overlay.OPAQUE_XATTR) == b"y"
    # committing again gives the very same layer (deterministic tar)
    again = rt.commit(name, image_name)
    assert again.layers[2].digest == image.layers[2].digest

    c, out = run_to_end(rt, f"{name}-run", image_name, ["sh", "-c", CHECK], cleanup)
    assert c.exit_code == 0, out
    assert out.split() == ["motd-gone", "hello", "new", "1"]
    assert rt.diff(c.id) == []


def test_commit_stopped_container_and_cli(rt, name, cleanup):
    c, _ = run_to_end(rt, name, "lab", ["sh", "-c", CHANGES], cleanup)
    image_name = f"cli-{name.rsplit('-', 1)[-1]}"
    try:
        res = cli("commit", "-m", "from the cli", name, image_name)
        assert res.returncode == 0, res.stderr
        got, digest = res.stdout.split()
        assert got == image_name and digest.startswith("sha256:")
        image = rt.images.get(image_name)
        assert image.layers[-1].digest == digest
        assert image.history[-1] == f"terrarium commit {name}: from the cli"
        assert rt.inspect(name).status == "exited"
        _, out = run_to_end(rt, f"{name}-run", image_name, ["sh", "-c", CHECK], cleanup)
        assert out.split() == ["motd-gone", "hello", "new", "1"]
    finally:
        remove_images(rt, image_name)


def test_commit_records_file_capabilities_of_the_writable_layer(rt, name, cleanup):
    """A capability set on a file the container wrote (here from the host, on
    the upper dir: the image has no setcap) is in the committed layer; what
    only the host or overlay may set is not."""
    from tests.runtime.test_tarsafe import CAP_SETUID_EP
    c, out = run_to_end(rt, name, "lab", ["sh", "-c", "mkdir -p /opt/tools && cp /bin/busybox /opt/tools/"],
                        cleanup)
    assert c.exit_code == 0, out
    upper_file = os.path.join(c.upperdir, "opt", "tools", "busybox")
    for key, value in (("security.capability", CAP_SETUID_EP), ("user.note", b"n"),
                       ("trusted.note", b"host only")):
        os.setxattr(upper_file, key, value)
    image_name = f"caps-{name.rsplit('-', 1)[-1]}"
    try:
        image = rt.commit(name, image_name)
        top = os.path.join(image.layers[-1].path, "opt", "tools", "busybox")
        assert {n: os.getxattr(top, n) for n in sorted(os.listxattr(top))} == \
            {"security.capability": CAP_SETUID_EP, "user.note": b"n"}
    finally:
        remove_images(rt, image_name)


@needs_skopeo
def test_saved_commit_is_read_by_skopeo(rt, committed, tmp_path):
    name, image_name = committed
    image = rt.commit(name, image_name)
    out = tmp_path / "c.tar"
    res = cli("save", "-o", str(out), image_name)
    assert res.returncode == 0, res.stderr
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    res = subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["Layers"] == [l.digest for l in image.layers]
    assert len(info["Layers"]) == 3


# --- load an image made by umoci -------------------------------------------------

def umoci_image(tmp_path) -> str:
    """An OCI layout tar: layer 1 = busybox, /keep and /gone; layer 2 deletes /gone."""
    lay, bundle = tmp_path / "layout", tmp_path / "bundle"

    def umoci(*args):
        subprocess.run(["umoci", *args], check=True, capture_output=True, timeout=120)

    umoci("init", "--layout", str(lay))
    umoci("new", "--image", f"{lay}:u")
    umoci("unpack", "--image", f"{lay}:u", str(bundle))
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
    for applet in ("sh", "cat", "test", "ls"):
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "keep").write_text("kept\n")
    (rootfs / "gone").write_text("deleted in layer 2\n")
    umoci("repack", "--image", f"{lay}:u", str(bundle))
    shutil.rmtree(bundle)
    umoci("unpack", "--image", f"{lay}:u", str(bundle))
    (bundle / "rootfs/gone").unlink()
    umoci("repack", "--image", f"{lay}:u", str(bundle))
    umoci("config", "--image", f"{lay}:u", "--config.cmd=/bin/sh")
    shutil.rmtree(bundle)
    out = tmp_path / "u.tar"
    with tarfile.open(out, "w") as tf:
        tf.add(lay, arcname=".")
    return str(out)


@needs_umoci
def test_umoci_image_loads_runs_and_hides_the_deleted_file(rt, name, cleanup, tmp_path):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("apt-get install busybox-static")
    archive = umoci_image(tmp_path)
    image_name = f"umoci-{name.rsplit('-', 1)[-1]}"
    try:
        res = cli("load", "-i", archive, "--name", image_name)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == [f"Loaded image: {image_name}"]
        image = rt.images.get(image_name)
        assert len(image.layers) == 2
        lower, upper = (l.path for l in image.layers)
        assert os.path.exists(os.path.join(lower, "gone"))
        c, out = run_to_end(rt, name, image_name,
                            ["sh", "-c", "cat /keep; test -e /gone && echo present || echo absent; ls /"],
                            cleanup)
        assert c.exit_code == 0, out
        lines = out.split()
        assert lines[:2] == ["kept", "absent"] and "gone" not in lines[2:]
        assert rt.layer_of(name, "/gone") == (None, [0])
        assert rt.layer_of(name, "/keep") == (0, [])
    finally:
        remove_images(rt, image_name)


def test_load_errors_are_one_line(tmp_path):
    res = cli("load", "-i", str(tmp_path / "missing.tar"))
    assert res.returncode == 125 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("terrarium: error:")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    res = cli("load", "-i", str(junk))
    assert res.returncode == 125 and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr


# --- rmi and image-gc ----------------------------------------------------------------

def test_rmi_refuses_an_image_in_use(rt, committed, cleanup):
    name, image_name = committed
    rt.commit(name, image_name)
    user = f"{name}-user"
    cleanup.append(user)
    rt.create(Spec(image=image_name, name=user, cmd=("true",)))
    res = cli("rmi", image_name)
    assert res.returncode == 125 and res.stderr.count("\n") == 1, res.stderr
    assert "in use" in res.stderr and user in res.stderr
    with pytest.raises(Conflict):
        rt.remove_image(image_name)
    assert rt.images.get(image_name)
    rt.remove(user)
    res = cli("rmi", image_name)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"Untagged: {image_name}\n"


def test_image_gc_keeps_layers_in_use(rt, committed, cleanup):
    name, image_name = committed
    image = rt.commit(name, image_name, message="for gc")
    top = image.layers[-1]
    user = f"{name}-user"
    cleanup.append(user)
    rt.create(Spec(image=image_name, name=user, cmd=("cat", "/hello")))
    rt.remove_image(image_name, force=True)             # no image holds the layer now
    res = cli("image-gc")
    assert res.returncode == 0, res.stderr
    assert top.digest not in res.stdout
    assert rt.images.has_layer(top.digest)
    for layer in rt.images.get("lab").layers:           # an image's layers stay too
        assert rt.images.has_layer(layer.digest)
    c = rt.wait(rt.start(user).id, timeout=30)
    assert (c.exit_code, rt.logs(user)) == (0, b"hello\n")
    rt.remove(user)
    assert top.digest in rt.image_gc()
    assert not rt.images.has_layer(top.digest)


def test_replace_false_refuses_a_taken_name_saying_what_uses_it(rt, name, cleanup, tmp_path):
    """What the dashboard asks for (the CLI keeps Docker's moving names): a
    commit or load onto a taken name is refused, naming the containers that
    use the image, before anything is packed or unpacked."""
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    cleanup.append(c.id)
    img = rt.commit(c.id, f"{name.lower()}-img")
    user = rt.create(Spec(image=img.name, name=name + "-user", cmd=("true",)))
    cleanup.append(user.id)
    layers = {layer.digest for layer in rt.images.layers()}
    with pytest.raises(Conflict, match=rf"^image name already taken: '{img.name}' \({img.id[:19]}, used by 1 "
                                       rf"container: {user.name}\)\. Replacing moves the name"):
        rt.commit(c.id, img.name, replace=False)
    archive = tmp_path / "img.tar"
    with open(archive, "wb") as f:
        rt.save_image(img.name, f)
    with pytest.raises(Conflict, match=f"'{img.name}'"):
        rt.load_image(str(archive), replace=False)
    assert rt.images.get(img.name).id == img.id
    assert {layer.digest for layer in rt.images.layers()} == layers
    assert [i.name for i in rt.load_image(str(archive))] == [img.name]        # the default moves it
    rt.remove(user.id)
    rt.remove_image(img.name)
    rt.image_gc()
