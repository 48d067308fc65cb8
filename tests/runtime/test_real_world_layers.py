"""Layers as real base images have them: device nodes, FIFOs, hard links, long
names, file capabilities, setuid bits, sparse files; sockets skipped when
packing; a Debian minbase image.

The round trip is the issue's: an image with all of these loads, runs (the
device nodes are there and inert: the root is nodev), commits, and saves
with its layer byte for byte as it came in."""
import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile

import pytest

from runtime.images import ImageStore, importers, tarsafe
from tests.conftest import cli
from tests.runtime.test_import import docker_archive
from tests.runtime.test_tarsafe import CAP_NET_RAW_EP

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, xattrs)")

LONG = "deep/" + "/".join(["n" * 60] * 3)          # a 200-character path
LONG = LONG + "/" + "f" * (200 - len(LONG) - 1)


def real_world_tree(root) -> None:
    """A small root with what base images carry, made on disk."""
    os.makedirs(f"{root}/bin")
    shutil.copy2("/bin/busybox", f"{root}/bin/busybox")
    for applet in ("sh", "cat", "stat", "echo", "test"):
        os.symlink("busybox", f"{root}/bin/{applet}")
    os.makedirs(f"{root}/devs")
    for name, kind, major, minor, mode in [("null", stat.S_IFCHR, 1, 3, 0o666),
                                           ("console", stat.S_IFCHR, 5, 1, 0o600),
                                           ("loop0", stat.S_IFBLK, 7, 0, 0o660)]:
        os.mknod(f"{root}/devs/{name}", mode | kind, os.makedev(major, minor))
        os.chmod(f"{root}/devs/{name}", mode)
    os.chown(f"{root}/devs/loop0", 0, 6)
    os.mkfifo(f"{root}/devs/initctl", 0o600)
    os.makedirs(f"{root}/etc")
    with open(f"{root}/etc/a", "w") as f:
        f.write("linked\n")
    os.makedirs(f"{root}/usr/share")
    os.link(f"{root}/etc/a", f"{root}/usr/share/b")            # across directories
    with open(f"{root}/bin/ping", "wb") as f:
        f.write(b"#!/bin/sh\necho ping\n")
    os.chmod(f"{root}/bin/ping", 0o755)
    os.setxattr(f"{root}/bin/ping", "security.capability", CAP_NET_RAW_EP)
    with open(f"{root}/bin/su", "wb") as f:
        f.write(b"#!/bin/sh\necho su\n")
    os.chmod(f"{root}/bin/su", 0o4755)
    os.makedirs(os.path.dirname(f"{root}/{LONG}"))
    with open(f"{root}/{LONG}", "w") as f:
        f.write("long\n")
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files + [""]:
            os.utime(os.path.join(dirpath, n), (1_600_000_000, 1_600_000_000), follow_symlinks=False)


def packed(root) -> bytes:
    out = io.BytesIO()
    tarsafe.pack(str(root), out)
    return out.getvalue()


def test_device_nodes_fifo_hardlink_long_path_and_capability_round_trip_unchanged(
        rt, name, cleanup, tmp_path):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("apt-get install busybox-static")
    tree = tmp_path / "tree"
    real_world_tree(tree)
    layer = packed(tree)
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(layer))}
    assert members["devs/loop0"].isblk() and members["devs/null"].ischr()
    assert members["usr/share/b"].islnk() and members[LONG].isreg() and len(LONG) == 200
    assert members["bin/su"].mode == 0o4755
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    tag = f"realworld-{name.rsplit('-', 1)[-1]}"
    docker_archive(tmp_path / "in.tar", [layer], tags=(f"{tag}:1",))
    try:
        res = cli("load", "-i", str(tmp_path / "in.tar"))
        assert res.returncode == 0, res.stderr
        image = rt.images.get(f"{tag}:1")
        assert [l.digest for l in image.layers] == [digest]
        fs = image.layers[0].path
        st = os.lstat(f"{fs}/devs/loop0")
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0) and st.st_gid == 6
        assert stat.S_IMODE(os.lstat(f"{fs}/bin/su").st_mode) == 0o4755
        assert os.getxattr(f"{fs}/bin/ping", "security.capability") == CAP_NET_RAW_EP

        cleanup.append(name)
        script = ("stat -c '%F %t:%T' /devs/null /devs/loop0 /devs/initctl; "
                  "cat /devs/null; echo cat=$?; "
                  "test /etc/a -ef /usr/share/b && echo hardlinked; cat /" + LONG)
        res = cli("run", "--name", name, f"{tag}:1", "sh", "-c", script)
        lines = res.stdout.splitlines()
        assert lines[:3] == ["character special file 1:3", "block special file 7:0", "fifo 0:0"], res
        assert "Permission denied" in res.stderr and "cat=1" in lines    # nodev: inert
        assert lines[-2:] == ["hardlinked", "long"]

        res = cli("commit", name, f"{tag}:2")
        assert res.returncode == 0, res.stderr
        res = cli("save", "-o", str(tmp_path / "out.tar"), f"{tag}:2")
        assert res.returncode == 0, res.stderr
        with tarfile.open(tmp_path / "out.tar") as tf:
            [entry] = json.load(tf.extractfile("manifest.json"))
            first = tf.extractfile(entry["Layers"][0]).read()
        assert first == layer                                   # byte for byte as it came in
        [again] = importers.load(ImageStore(tmp_path / "other"), tmp_path / "out.tar")
        assert again.layers[0].digest == digest
        assert packed(again.layers[0].path) == layer
    finally:
        for n in (f"{tag}:1", f"{tag}:2"):
            try:
                rt.remove_image(n, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def test_sparse_members_keep_their_holes(tmp_path):
    store = ImageStore(tmp_path / "root")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
        f.seek(1 << 20)
        f.write(b"middle")
    for fmt in ("gnu", "posix"):
        tar = tmp_path / f"{fmt}.tar"
        subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", str(tar), "-C", str(src),
                        "sparse"], check=True)
        with tarfile.open(tar) as tf:
            assert tf.getmember("sparse").issparse(), fmt
        layer = store.add_layer_from_tar(str(tar))
        path = os.path.join(layer.path, "sparse")
        st = os.stat(path)
        assert st.st_size == (64 << 20) + 3
        assert st.st_blocks * 512 < 256 << 10, fmt                # holes, not 64 MiB of zeros
        with open(path, "rb") as f:
            f.seek(1 << 20)
            assert f.read(6) == b"middle"
            f.seek(64 << 20)
            assert f.read() == b"end"


def test_long_names_in_gnu_and_pax_headers(tmp_path):
    store = ImageStore(tmp_path / "root")
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            ti = tarfile.TarInfo(LONG)
            ti.size = 4
            tf.addfile(ti, io.BytesIO(b"long"))
            ln = tarfile.TarInfo("link-" + "l" * 150)
            ln.type, ln.linkname = tarfile.SYMTYPE, "/" + "t" * 150
            tf.addfile(ln)
        layer = store.add_layer_from_tar(io.BytesIO(buf.getvalue()))
        with open(os.path.join(layer.path, LONG)) as f:
            assert f.read() == "long"
        assert os.readlink(os.path.join(layer.path, "link-" + "l" * 150)) == "/" + "t" * 150


def test_pack_skips_sockets_as_docker_does(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kept").write_text("k")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree / "sock"))
    s.close()
    names = tarfile.open(fileobj=io.BytesIO(packed(tree))).getnames()
    assert names == ["kept"]


# --- a Debian minbase image ----------------------------------------------------

CACHE = os.environ.get("TERRARIUM_TEST_CACHE", "/var/cache/terrarium-tests")


def debian_minbase_layer() -> str:
    """A Debian bookworm minbase root from debootstrap, as a GNU tar with
    xattrs and numeric owners: the layer a build of it would have.

    debootstrap's first stage only (--foreign: the packages fetched from the
    apt mirror and unpacked, device nodes made, no maintainer scripts run),
    which is enough for `apt-get --version`: ~2 minutes on a busy 2-core
    machine, where the full minbase takes ~4.  Cached in CACHE, keyed by ISO
    week (older ones removed), with the .debs kept for the next week's build,
    so a CI run pays for it at most once a week.  Skipped when the mirror is
    unreachable."""
    if not shutil.which("debootstrap"):
        pytest.skip("apt-get install debootstrap")
    os.makedirs(f"{CACHE}/debs", mode=0o700, exist_ok=True)
    year, week, _ = datetime.date.today().isocalendar()
    key = f"debian-bookworm-minbase-{year}w{week:02d}-v2.tar"
    path = os.path.join(CACHE, key)
    if os.path.exists(path):
        return path
    work = os.path.join(CACHE, "build")
    shutil.rmtree(work, ignore_errors=True)
    mirror = "http://deb.debian.org/debian"
    try:
        res = subprocess.run(["debootstrap", "--foreign", "--variant=minbase", f"--cache-dir={CACHE}/debs",
                              "bookworm", f"{work}/rootfs", mirror],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            pytest.skip(f"debootstrap failed (mirror unreachable?): {res.stdout[-300:]}{res.stderr[-300:]}")
        # On some hosts (this machine kind, 2026-12) the first stage leaves
        # `proc -> /proc`, a link to itself inside the root; the second stage
        # and Debian's own images have a directory there, which is what
        # runtimes mount on (runc refuses anything else; ours says it loops).
        proc = f"{work}/rootfs/proc"
        if os.path.islink(proc):
            os.unlink(proc)
            os.mkdir(proc, 0o555)
        partial = path + ".partial"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf", partial,
                        "-C", f"{work}/rootfs", "."], check=True)
        for old in os.listdir(CACHE):
            if old.startswith("debian-bookworm-minbase-") and old not in (key, os.path.basename(partial)):
                os.unlink(os.path.join(CACHE, old))
        os.rename(partial, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def test_debian_minbase_loads_and_runs_apt(rt, name, cleanup, tmp_path):
    layer_path = debian_minbase_layer()
    with open(layer_path, "rb") as f:
        layer = f.read()
    with tarfile.open(layer_path) as tf:
        console = tf.getmember("./dev/console")
    assert console.ischr() and (console.devmajor, console.devminor) == (5, 1)
    tag = f"minbase-{name.rsplit('-', 1)[-1]}"
    docker_archive(tmp_path / "deb.tar", [layer], tags=(f"{tag}:bookworm",))
    del layer
    try:
        res = cli("load", "-i", str(tmp_path / "deb.tar"), timeout=300)
        assert res.returncode == 0, res.stderr
        cleanup.append(name)
        res = cli("run", "--name", name, f"{tag}:bookworm", "apt-get", "--version", timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("apt 2.6"), res.stdout
    finally:
        try:
            rt.remove_image(f"{tag}:bookworm", force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
