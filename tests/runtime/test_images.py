"""The image store: layers, image records, gc, and the built-in images."""
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.images import ImageStore, builtin
from runtime.model import ImageConfig

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")
needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"),
                                   reason="apt-get install busybox-static")


def small_tar(content: bytes = b"hi\n", name: str = "hello") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(content), 0o644, 1_600_000_000
        tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "root")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("apt-get install busybox-static")
    s = ImageStore(tmp_path_factory.mktemp("builtin") / "root")
    s.ensure_builtin()
    return s


# --- layers -----------------------------------------------------------------

def test_layer_digest_is_sha256_of_the_uncompressed_tar_plain_and_gzip(store, tmp_path):
    data = small_tar()
    want = "sha256:" + hashlib.sha256(data).hexdigest()
    plain = store.add_layer_from_tar(io.BytesIO(data), created_by="plain")
    assert plain.digest == want
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(gzip.compress(data))
    again = store.add_layer_from_tar(str(path), created_by="gz")
    assert again == plain                              # reused, first created_by kept
    assert [l.digest for l in store.layers()] == [want]
    assert os.listdir(store.tmp_dir) == []
    assert open(os.path.join(plain.path, "hello"), "rb").read() == b"hi\n"
    assert plain.path == os.path.join(store.layers_dir, want[7:], "fs")
    with open(os.path.join(store.layers_dir, want[7:], "meta.json")) as f:
        meta = json.load(f)
    assert meta["digest"] == want and meta["size"] == 3 and meta["files"] == 1
    assert meta["created_by"] == "plain" and meta["created"] > 0


def test_layers_unpack_in_a_tmp_dir_whose_subdirs_are_spread(store, tmp_path):
    """tmp/ carries FS_TOPDIR_FL (`chattr +T`) where the file system has it
    (ext2/3/4), so each layer's unpack dir gets a block group of its own."""
    import fcntl
    import struct

    from runtime import fsutil
    store.add_layer_from_tar(io.BytesIO(b"\0" * 1024))
    fd = os.open(store.tmp_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            flags = struct.unpack("i", fcntl.ioctl(fd, fsutil.FS_IOC_GETFLAGS, bytes(4)))[0]
        except OSError:
            pytest.skip("no inode flags on this file system")
    finally:
        os.close(fd)
    with open("/proc/self/mountinfo") as f:         # the file system tmp_path is on
        mounts = [line.split(" - ")[1].split()[0] for line in f
                  if str(tmp_path).startswith(line.split()[4].rstrip("/") + "/")]
    if not mounts or not mounts[-1].startswith("ext"):
        pytest.skip("FS_TOPDIR_FL is ext2/3/4's")
    assert flags & fsutil.FS_TOPDIR_FL


def test_gzip_layer_digest(store):
    data = small_tar(b"zipped\n")
    layer = store.add_layer_from_tar(io.BytesIO(gzip.compress(data)))
    assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer.size == 7


def test_expect_digest_mismatch_leaves_nothing(store):
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        store.add_layer_from_tar(io.BytesIO(small_tar()), expect_digest="sha256:" + "0" * 64)
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.tmp_dir) == []


def test_layer_lookup_errors(store):
    with pytest.raises(NotFound, match="layer 'sha256:" + "a" * 64):
        store.layer("sha256:" + "a" * 64)
    with pytest.raises(InvalidArgument):
        store.layer("sha256:../../etc")


def test_half_made_layer_dir_is_not_a_layer(store):
    os.makedirs(os.path.join(store.layers_dir, "b" * 64, "fs"))       # no meta.json
    assert store.layers() == []
    with pytest.raises(NotFound):
        store.layer("b" * 64)


# --- images -----------------------------------------------------------------

def test_add_get_list_remove_image(store):
    a = store.add_layer_from_tar(io.BytesIO(small_tar(b"a")), created_by="layer a")
    b = store.add_layer_from_tar(io.BytesIO(small_tar(b"b", "other")))
    cfg = ImageConfig(cmd=("echo", "hi"), env=("PATH=/bin", "X=1"), workdir="/tmp")
    img = store.add_image("demo/app:1.0", [a.digest, b.digest], cfg, ["made a", "made b"])
    assert img.name == "demo/app:1.0" and img.layers == (a, b) and img.config == cfg
    assert store.get("demo/app:1.0") == img
    base = store.add_image("base:latest", [a.digest], cfg)
    assert base.name == "base" and base.history == ("layer a",)
    assert store.get("base") == store.get("base:latest") == base
    assert [i.name for i in store.list()] == ["base", "demo/app:1.0"]
    with open(os.path.join(store.images_dir, "base.json")) as f:
        rec = json.load(f)
    assert rec["layers"] == [a.digest] and rec["config"]["cmd"] == ["echo", "hi"]
    assert os.listdir(store.tmp_dir) == []

    with pytest.raises(Conflict, match="'base' is in use"):
        store.remove_image("base", in_use={"base:latest"})
    store.remove_image("base:latest", in_use={"other"})
    with pytest.raises(NotFound, match="image 'base' not found"):
        store.get("base")
    with pytest.raises(NotFound, match="image 'x' not found"):
        store.remove_image("x")


@pytest.mark.parametrize("name", ["Busybox", "-x", "a/../b", "../x", "a:b:c", "a b", "", "a/", "x:" + "t" * 200])
def test_bad_image_names(store, name):
    layer = store.add_layer_from_tar(io.BytesIO(small_tar()))
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        store.add_image(name, [layer.digest])


def test_add_image_needs_its_layers(store):
    with pytest.raises(NotFound, match="layer 'sha256:" + "c" * 64):
        store.add_image("x", ["sha256:" + "c" * 64])
    assert store.list() == []


def test_gc_keeps_used_layers(store):
    a = store.add_layer_from_tar(io.BytesIO(small_tar(b"a")))
    b = store.add_layer_from_tar(io.BytesIO(small_tar(b"b")))
    c = store.add_layer_from_tar(io.BytesIO(small_tar(b"c")))
    store.add_image("keep", [a.digest])
    assert store.gc(used_layers={c.digest}) == [b.digest]
    assert {l.digest for l in store.layers()} == {a.digest, c.digest}
    assert store.gc(set()) == [c.digest]
    store.remove_image("keep")
    assert store.gc(set()) == [a.digest]
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.tmp_dir) == []


# --- built-in images --------------------------------------------------------

@needs_busybox
def test_builtin_images_share_the_busybox_layer(built):
    bb, lab = built.get("busybox"), built.get("lab")
    assert len(bb.layers) == 1 and len(lab.layers) == 2
    assert lab.layers[0] == bb.layers[0]
    assert lab.layers[0].path == bb.layers[0].path and os.path.isdir(bb.layers[0].path)
    assert len(built.layers()) == 2
    assert bb.config.cmd == ("sh",) and bb.config.workdir == "/"
    assert any(e.startswith("PATH=") for e in bb.config.env)
    assert bb.layers[0].created_by.startswith("busybox-static ")
    assert bb.layers[0].created_by.endswith(" from Debian")


@needs_busybox
@root_only
def test_busybox_layer_contents(built):
    fs = built.get("busybox").layers[0].path
    st = os.lstat(f"{fs}/bin/busybox")
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 and st.st_uid == 0
    assert os.readlink(f"{fs}/bin/sh") == "/bin/busybox"
    assert os.readlink(f"{fs}/usr/bin/env") == "/bin/busybox"
    assert any(os.path.islink(f"{fs}/sbin/{n}") for n in os.listdir(f"{fs}/sbin"))
    assert stat.S_IMODE(os.lstat(f"{fs}/tmp").st_mode) == 0o1777
    for d in ("etc", "root", "home", "proc", "sys", "dev", "var", "usr/local/bin", "run"):
        assert os.path.isdir(f"{fs}/{d}"), d
    passwd = open(f"{fs}/etc/passwd").read()
    assert passwd.startswith("root:x:0:0:") and "\nnobody:" in passwd
    assert os.path.getsize(f"{fs}/etc/hostname") == 0
    assert "localhost" in open(f"{fs}/etc/hosts").read()
    assert os.path.isfile(f"{fs}/etc/group")
    assert os.lstat(f"{fs}/etc/passwd").st_mtime == builtin.MTIME
    lab = built.get("lab").layers[1].path
    for tool in ("memhog", "cpuburn", "spawn"):
        st = os.stat(f"{lab}/usr/local/bin/{tool}")
        assert st.st_mode & 0o111, tool
        assert open(f"{lab}/usr/local/bin/{tool}").read().startswith("#!/bin/sh\n")
    assert os.path.isfile(f"{lab}/etc/motd")


@needs_busybox
def test_builtin_digests_are_deterministic(built, tmp_path):
    other = ImageStore(tmp_path / "other")
    other.ensure_builtin()
    assert [l.digest for l in other.get("lab").layers] == [l.digest for l in built.get("lab").layers]
    applets = builtin._read_busybox("/bin/busybox")[1]
    assert builtin.busybox_tar(b"x", applets) == builtin.busybox_tar(b"x", applets)


@needs_busybox
def test_ensure_builtin_is_cheap_when_present_and_rebuilds_what_is_missing(built, monkeypatch):
    calls = []
    monkeypatch.setattr(builtin, "build", lambda *a, **kw: calls.append(kw))
    built.ensure_builtin()
    assert calls == []
    monkeypatch.undo()
    lab = built.get("lab")
    built.remove_image("lab")
    built.ensure_builtin()
    assert [l.digest for l in built.get("lab").layers] == [l.digest for l in lab.layers]


@needs_busybox
def test_memhog_script_parses(built):
    import subprocess
    lab = built.get("lab").layers[1].path
    for tool in ("memhog", "cpuburn", "spawn"):
        subprocess.run(["/bin/busybox", "sh", "-n", f"{lab}/usr/local/bin/{tool}"], check=True)


def test_missing_busybox_says_how_to_install(store, tmp_path):
    with pytest.raises(NotFound, match="apt-get install busybox-static"):
        builtin.ensure(store, busybox=str(tmp_path / "nope"))
    assert store.list() == []


def test_dynamic_busybox_is_refused(store):
    with pytest.raises(InvalidArgument, match="dynamically linked.*busybox-static"):
        builtin.ensure(store, busybox="/bin/ls")


@needs_busybox
def test_memhog_really_holds_memory(built, tmp_path):
    """Run the lab's memhog with busybox applets on the host; its tail must grow to 12 MB."""
    import signal
    import subprocess
    import time
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in ("head", "tail", "sleep", "kill", "echo", "["):
        os.symlink("/bin/busybox", bindir / applet)
    memhog = os.path.join(built.get("lab").layers[1].path, "usr/local/bin/memhog")
    p = subprocess.Popen(["/bin/busybox", "sh", memhog, "4", "3", "0.1"], env={"PATH": str(bindir)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, rss = time.monotonic() + 10, 0
        while time.monotonic() < deadline and rss < 12 << 20:
            time.sleep(0.1)
            for pid in os.listdir("/proc"):
                try:
                    status = open(f"/proc/{pid}/status").read()
                    if os.getsid(int(pid)) == p.pid and status.startswith("Name:\ttail\n"):
                        rss = int(status.split("VmRSS:")[1].split()[0]) * 1024
                except (OSError, ValueError, IndexError):
                    continue
        assert rss >= 12 << 20
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
