"""Importing docker-archive and OCI layouts, and exporting OCI layouts.

The OCI side is checked against real peers from Debian: layouts built by
`umoci` are imported, and `save` output is read back by `skopeo inspect`
and `umoci stat`.  Docker archives are built here by hand, in both the
classic (`<id>/layer.tar`) and the Docker 25 (`blobs/sha256/<hex>`) shapes.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from runtime.errors import InvalidArgument, NotFound
from runtime.images import ImageStore, importers

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod whiteouts)")
needs_umoci = pytest.mark.skipif(not shutil.which("umoci"), reason="apt-get install umoci")
needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="apt-get install skopeo")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(*files) -> bytes:
    """files: (name, bytes) regular files, or (name, None) for an OCI whiteout name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime, ti.size = 0o644, 1_600_000_000, len(data or b"")
            tf.addfile(ti, io.BytesIO(data or b""))
    return buf.getvalue()


def add_bytes(tf, name, data):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    tf.addfile(ti, io.BytesIO(data))


def docker_archive(path, layers, *, tags=("app:1",), modern=False, gzip_layers=(),
                   diff_ids=None, config_extra=None, corrupt_config=False):
    """Write a `docker save`-style tar; returns the config dict."""
    diff_ids = diff_ids or [sha(l) for l in layers]
    config = {"architecture": "amd64", "os": "linux", "created": "2024-05-06T07:08:09.123456789Z",
              "config": {"Entrypoint": ["/bin/echo"], "Cmd": ["hello"], "Env": ["A=1"],
                         "WorkingDir": "/srv"},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": "ADD base"}, {"created_by": "ENV A=1", "empty_layer": True},
                          {"created_by": "RUN rm x"}][: len(layers) + 1]}
    config.update(config_extra or {})
    cfg = json.dumps(config).encode()
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    if corrupt_config:
        cfg = cfg.replace(b"hello", b"HELLO")
    with tarfile.open(path, "w") as tf:
        paths = []
        for i, data in enumerate(layers):
            blob = gzip.compress(data, mtime=0) if i in gzip_layers else data
            p = f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}" if modern else f"{i:064x}/layer.tar"
            add_bytes(tf, p, blob)
            paths.append(p)
        cfg_path = f"blobs/sha256/{cfg_hex}" if modern else f"{cfg_hex}.json"
        add_bytes(tf, cfg_path, cfg)
        add_bytes(tf, "manifest.json", json.dumps(
            [{"Config": cfg_path, "RepoTags": list(tags), "Layers": paths}]).encode())
    return config


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "root")


def assert_empty(store):
    for d in (store.layers_dir, store.images_dir, store.tmp_dir):
        assert not os.path.exists(d) or os.listdir(d) == [], d


# --- docker save archives ---------------------------------------------------

@root_only
@pytest.mark.parametrize("modern", [False, True])
def test_docker_archive_import(store, tmp_path, modern):
    base = layer_tar(("x", b"xx"), ("etc/conf", b"c"))
    top = layer_tar((".wh.x", None), ("etc/new", b"n"))
    docker_archive(tmp_path / "a.tar", [base, top], tags=("app:1", "app:latest"),
                   modern=modern, gzip_layers={1})
    images = importers.load(store, tmp_path / "a.tar")
    assert [i.name for i in images] == ["app:1", "app"]
    img = store.get("app:1")
    assert [l.digest for l in img.layers] == [sha(base), sha(top)]
    assert img.config.cmd == ("/bin/echo", "hello")
    assert img.config.workdir == "/srv"
    assert "A=1" in img.config.env and any(e.startswith("PATH=") for e in img.config.env)
    assert img.history == ("ADD base", "RUN rm x")
    assert img.layers[1].created_by == "RUN rm x"
    assert int(img.created) == 1714979289
    wo = os.lstat(os.path.join(img.layers[1].path, "x"))
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0


def test_docker_archive_diff_id_mismatch_leaves_nothing(store, tmp_path):
    good, bad = layer_tar(("a", b"1")), layer_tar(("b", b"2"))
    docker_archive(tmp_path / "a.tar", [good, bad], diff_ids=[sha(good), "sha256:" + "1" * 64])
    with pytest.raises(InvalidArgument, match=r"blob 0{63}1/layer.tar.*mismatch"):
        importers.load(store, tmp_path / "a.tar")
    assert_empty(store)


def test_docker_archive_modern_blob_mismatch_leaves_nothing(store, tmp_path):
    good = layer_tar(("a", b"1"))
    docker_archive(tmp_path / "a.tar", [good], modern=True)
    # rewrite the archive with the layer blob's content changed but its name kept
    with tarfile.open(tmp_path / "a.tar") as src, tarfile.open(tmp_path / "b.tar", "w") as dst:
        for m in src:
            data = src.extractfile(m).read()
            if data == good:
                data = layer_tar(("a", b"2"))
                m.size = len(data)
                bad_name = m.name
            dst.addfile(m, io.BytesIO(data))
    # an uncompressed blob is its diff_id: checked by the unpack's own hash
    with pytest.raises(InvalidArgument, match=f"blob {bad_name}: layer digest mismatch"):
        importers.load(store, tmp_path / "b.tar")
    assert_empty(store)


def test_docker_archive_config_mismatch(store, tmp_path):
    docker_archive(tmp_path / "a.tar", [layer_tar(("a", b"1"))], corrupt_config=True)
    with pytest.raises(InvalidArgument, match=r"blob [0-9a-f]{64}\.json does not match"):
        importers.load(store, tmp_path / "a.tar")
    assert_empty(store)


def test_hostile_layer_in_archive_is_refused(store, tmp_path):
    docker_archive(tmp_path / "a.tar", [layer_tar(("ok", b"1")), layer_tar(("../escape", b"2"))])
    with pytest.raises(InvalidArgument, match=r"\.\./escape"):
        importers.load(store, tmp_path / "a.tar")
    assert_empty(store)
    assert not (tmp_path / "escape").exists()


def test_an_archive_with_a_huge_extended_header_is_refused(store, tmp_path):
    """tarfile would read the whole header into memory before the member."""
    with tarfile.open(tmp_path / "a.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("manifest.json")
        ti.pax_headers = {"comment": "x" * (2 << 20)}
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match=r"extended header .* of 2097\d\d\d bytes; at most 1048576"):
        importers.load(store, tmp_path / "a.tar")
    assert_empty(store)


def test_not_an_archive(store, tmp_path):
    (tmp_path / "x.tar").write_bytes(layer_tar(("hello", b"1")))
    with pytest.raises(InvalidArgument, match="neither a docker save archive"):
        importers.load(store, tmp_path / "x.tar")
    with pytest.raises(NotFound):
        importers.load(store, tmp_path / "missing.tar")


# --- OCI layouts from umoci -------------------------------------------------

@pytest.fixture
def umoci_layout(tmp_path):
    """A layout with tag 't': layer 1 adds a and d/b, layer 2 deletes a (whiteout)."""
    if not shutil.which("umoci"):
        pytest.skip("apt-get install umoci")
    lay, bundle = tmp_path / "layout", tmp_path / "bundle"

    def umoci(*args):
        subprocess.run(["umoci", *args], check=True, capture_output=True)

    umoci("init", "--layout", str(lay))
    umoci("new", "--image", f"{lay}:t")
    umoci("unpack", "--image", f"{lay}:t", str(bundle))
    (bundle / "rootfs/a").write_text("a\n")
    (bundle / "rootfs/d").mkdir()
    (bundle / "rootfs/d/b").write_text("b\n")
    umoci("repack", "--image", f"{lay}:t", str(bundle))
    shutil.rmtree(bundle)     # repacking the same bundle twice does not stack a second layer
    umoci("unpack", "--image", f"{lay}:t", str(bundle))
    (bundle / "rootfs/a").unlink()
    umoci("repack", "--image", f"{lay}:t", str(bundle))
    umoci("config", "--image", f"{lay}:t", "--config.entrypoint=/bin/echo", "--config.cmd=hi",
          "--config.workingdir=/d", "--config.env=FOO=1")
    shutil.rmtree(bundle)
    return lay


@root_only
@needs_umoci
@pytest.mark.parametrize("as_tar", [False, True])
def test_oci_layout_from_umoci(store, tmp_path, umoci_layout, as_tar):
    src = umoci_layout
    if as_tar:
        src = tmp_path / "layout.tar"
        with tarfile.open(src, "w") as tf:
            tf.add(umoci_layout, arcname=".")
    [img] = importers.load(store, src)
    assert img.name == "t"
    assert len(img.layers) == 2
    lower, upper = (l.path for l in img.layers)
    assert open(os.path.join(lower, "a")).read() == "a\n"
    assert open(os.path.join(lower, "d/b")).read() == "b\n"
    wo = os.lstat(os.path.join(upper, "a"))
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0
    assert img.config.cmd == ("/bin/echo", "hi") and img.config.workdir == "/d"
    assert "FOO=1" in img.config.env
    assert img.history == ("umoci repack", "umoci repack")
    # a second load reuses the layers
    assert importers.load(store, src, name="again")[0].layers == img.layers


@needs_umoci
def test_oci_blob_mismatch_names_the_blob_and_leaves_nothing(store, umoci_layout):
    index = json.loads((umoci_layout / "index.json").read_text())
    manifest = json.loads((umoci_layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    victim = umoci_layout / "blobs/sha256" / manifest["layers"][1]["digest"][7:]
    data = bytearray(victim.read_bytes())
    data[-12] ^= 0xFF                      # inside the gzip trailer: still the same size
    victim.write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match=f"blob blobs/sha256/{victim.name} does not match"):
        importers.load(store, umoci_layout)
    assert_empty(store)


# --- export -----------------------------------------------------------------

@pytest.fixture
def built(tmp_path):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("apt-get install busybox-static")
    s = ImageStore(tmp_path / "root")
    s.ensure_builtin()
    return s


@root_only
def test_save_round_trips_with_the_same_digests(built, tmp_path):
    out = tmp_path / "lab.tar"
    manifest_digest = importers.save(built, "lab", out)
    again = importers.save(built, "lab", tmp_path / "lab2.tar")
    assert manifest_digest == again and out.read_bytes() == (tmp_path / "lab2.tar").read_bytes()
    other = ImageStore(tmp_path / "other")
    [img] = importers.load(other, out)
    lab = built.get("lab")
    assert img.name == "lab"
    assert [l.digest for l in img.layers] == [l.digest for l in lab.layers]
    assert img.config == lab.config and img.history == lab.history
    assert [n for n in os.listdir(tmp_path) if n.startswith(".save-")] == []


@root_only
@needs_skopeo
def test_skopeo_accepts_saved_archive(built, tmp_path):
    out = tmp_path / "busybox.tar"
    importers.save(built, "busybox", out)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    res = subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["Layers"] == [built.get("busybox").layers[0].digest]
    assert info["Os"] == "linux"


@root_only
@needs_umoci
def test_umoci_accepts_saved_layout(built, tmp_path):
    out = tmp_path / "lab.tar"
    importers.save(built, "lab", out)
    lay = tmp_path / "lay"
    lay.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(lay)], check=True)
    res = subprocess.run(["umoci", "stat", "--json", "--image", f"{lay}:latest"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    history = json.loads(res.stdout)["history"]
    assert [h["created_by"] for h in history] == list(built.get("lab").history)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{lay}:latest", str(bundle)],
                   check=True, capture_output=True)
    assert os.readlink(bundle / "rootfs/bin/sh") == "/bin/busybox"
    assert os.access(bundle / "rootfs/usr/local/bin/memhog", os.X_OK)


@root_only
@needs_umoci
def test_file_capabilities_go_out_as_they_came_in(store, tmp_path):
    """docker-archive in, OCI layout out: the PAX record is in the saved
    layer, a new store loads it back, and umoci unpacks it onto the file."""
    from tests.runtime.test_tarsafe import CAP_SETUID_EP, xattr_tar
    caps = {"security.capability": CAP_SETUID_EP, "user.note": b"n"}
    docker_archive(tmp_path / "a.tar", [xattr_tar(("bin", "dir", {}, 0), ("bin/su", "file", caps, 0))])
    importers.load(store, tmp_path / "a.tar")
    out = tmp_path / "out.tar"
    importers.save(store, "app:1", out)
    lay = tmp_path / "lay"
    lay.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(lay)], check=True)
    [digest] = [l["digest"] for l in _manifest_of(lay)["layers"]]
    with tarfile.open(lay / "blobs/sha256" / digest[7:]) as tf:
        su = tf.getmember("bin/su").pax_headers
    assert {k: v.encode("utf-8", "surrogateescape") for k, v in su.items() if "xattr" in k} == \
        {"SCHILY.xattr.security.capability": CAP_SETUID_EP, "SCHILY.xattr.user.note": b"n"}
    [img] = importers.load(ImageStore(tmp_path / "other"), out)
    assert os.getxattr(os.path.join(img.layers[0].path, "bin/su"), "security.capability") == CAP_SETUID_EP
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{lay}:1", str(bundle)], check=True,
                   capture_output=True)
    assert os.getxattr(bundle / "rootfs/bin/su", "security.capability") == CAP_SETUID_EP


@root_only
def test_save_of_an_image_pulled_by_digest_alone_names_no_tag(built, tmp_path):
    """Its store key is repo@digest, with no tag: the archive must not invent
    one (a null ref.name, a "null" tag in repositories, a digest in RepoTags,
    which docker load and our own load refuse); it loads back untagged."""
    busybox = built.get("busybox")
    key = "localhost:5000/x@sha256:" + "ab" * 32
    built.add_images([(key, [l.digest for l in busybox.layers], busybox.config, busybox.history,
                       busybox.created)], by_digest=True)
    out = tmp_path / "x.tar"
    importers.save(built, key, out)
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))
        [entry] = json.load(tf.extractfile("manifest.json"))
        assert "repositories" not in tf.getnames()
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": key}
    assert entry["RepoTags"] == []
    [img] = importers.load(ImageStore(tmp_path / "other"), out)
    assert img.id == busybox.id and [l.digest for l in img.layers] == [l.digest for l in busybox.layers]


def _manifest_of(layout) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    return json.loads((layout / "blobs/sha256" / digest[7:]).read_text())


def test_save_unknown_image(store, tmp_path):
    with pytest.raises(NotFound, match="image 'nope' not found"):
        importers.save(store, "nope", tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


# --- lock, rollback, killed imports, full disks ------------------------------------

_PAUSING_IMPORT = """
import sys, time
from runtime.images import ImageStore, importers, tarsafe
member = tarsafe._Unpacker.member
seen = []
def pausing(self, tf, m):
    member(self, tf, m)
    seen.append(m.name)
    if len(seen) == 3:
        print("unpacking", flush=True)
        time.sleep(600)
tarsafe._Unpacker.member = pausing
importers.load(ImageStore(sys.argv[1]), sys.argv[2])
"""


def many_files_layer(tag: bytes) -> bytes:
    return layer_tar(*[(f"d/f{i}", tag * 1000) for i in range(20)])


def entries(store) -> dict[str, list]:
    return {d: sorted(os.listdir(d)) if os.path.exists(d) else []
            for d in (store.layers_dir, store.images_dir, store.tmp_dir)}


def test_import_holds_the_lock_and_a_killed_one_leaves_nothing(store, tmp_path):
    import signal
    import sys
    from runtime.fsutil import locked
    killed, good = many_files_layer(b"k"), many_files_layer(b"g")
    docker_archive(tmp_path / "killed.tar", [killed], tags=("killed:1",))
    (tmp_path / "killed.tar.gz").write_bytes(gzip.compress((tmp_path / "killed.tar").read_bytes()))
    docker_archive(tmp_path / "good.tar", [good], tags=("good:1",))
    p = subprocess.Popen([sys.executable, "-c", _PAUSING_IMPORT, store.root,
                          str(tmp_path / "killed.tar.gz")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "unpacking\n"
        with locked(os.path.join(store.root, "images.lock"), blocking=False) as free:
            assert free is False                     # held across the unpack
        assert [n for n in os.listdir(store.tmp_dir) if n.startswith("layer-")]
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    importers.load(store, tmp_path / "good.tar")
    assert entries(store) == {store.layers_dir: [sha(good)[7:]], store.images_dir: ["good:1.json"],
                              store.tmp_dir: []}


def test_gc_sweeps_what_a_killed_import_left(store, tmp_path):
    import signal
    import sys
    docker_archive(tmp_path / "a.tar", [many_files_layer(b"a")])
    p = subprocess.Popen([sys.executable, "-c", _PAUSING_IMPORT, store.root, str(tmp_path / "a.tar")],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "unpacking\n"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert os.listdir(store.tmp_dir)
    with store.lock():
        store.gc()
    assert_empty(store)


def test_rollback_keeps_a_layer_someone_else_put_in_place(store, tmp_path):
    """A layer that appeared while this import unpacked it is theirs: import_layer says
    it did not create it, so a failed load does not remove it."""
    data = layer_tar(("same", b"1"))
    other = ImageStore(store.root)
    layer, created = store.import_layer(io.BytesIO(data), _before_commit=lambda: other.add_layer_from_tar(
        io.BytesIO(data)))
    assert created is False and store.has_layer(layer.digest)
    assert store.import_layer(io.BytesIO(layer_tar(("new", b"2"))))[1] is True


def test_records_are_all_or_none(store, monkeypatch):
    layer = store.add_layer_from_tar(io.BytesIO(layer_tar(("a", b"1"))))
    store.add_image("keep", [layer.digest], history=["old"])
    real = os.replace
    calls = []

    def failing_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OSError):
        store.add_images([("keep", [layer.digest], None, ["new"], None),
                          ("other", [layer.digest], None, ["new"], None)])
    monkeypatch.setattr(os, "replace", real)
    assert store.get("keep").history == ("old",)
    with pytest.raises(NotFound):
        store.get("other")
    assert os.listdir(store.tmp_dir) == []


@root_only
@pytest.mark.parametrize("budgeted", [True, False])
def test_a_full_disk_fails_with_one_sentence_and_leaves_nothing(tmp_path, budgeted):
    """16 MiB tmpfs as the state root, a 32 MiB layer: refused before writing
    (the budget's free-space check), or by the kernel's ENOSPC when the check is
    out of date (someone else filled the disk meanwhile)."""
    from runtime.errors import KernelError
    from runtime.images import tarsafe
    big = layer_tar(("zeros", bytes(32 << 20)))
    docker_archive(tmp_path / "big.tar", [big], gzip_layers={0})
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "terrarium-test-full",
                    str(mnt)], check=True)
    try:
        store = ImageStore(str(mnt / "root"))
        store._make_dirs()
        budget = tarsafe.Budget(store.root)
        if not budgeted:
            budget.free_bytes = 1 << 50
        with pytest.raises(KernelError) as e:
            importers.load(store, tmp_path / "big.tar", budget=budget)
        assert e.value.code == 28 and "\n" not in str(e.value)
        assert ("bytes free under" if budgeted else "No space left on device") in str(e.value)
        assert_empty(store)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
