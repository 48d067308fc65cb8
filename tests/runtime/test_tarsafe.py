"""Safe unpacking of layer tars into the store: refusals leave nothing behind.

Every hostile tar is fed through ImageStore.add_layer_from_tar, and the test
checks both the InvalidArgument (naming the member) and that layers/ and
tmp/ are empty afterwards.  A sentinel directory next to the store checks
that nothing was written outside it either.
"""
import io
import os
import stat
import tarfile

import pytest

from runtime.errors import InvalidArgument
from runtime.images import ImageStore
from runtime.images import tarsafe

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.* xattrs)")


def make_tar(*entries) -> bytes:
    """entries: (name, kind, extra) with kind file|dir|symlink|hardlink|chr|blk|fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, *extra in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            ti.mode = 0o644
            data = None
            if kind == "file":
                data = extra[0] if extra else b"hello\n"
                ti.size = len(data)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra[0]
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra[0]
            elif kind in ("chr", "blk"):
                ti.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = extra[0] if extra else (8, 0)
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "root")


def assert_clean(store):
    assert os.listdir(store.layers_dir) == []
    assert os.listdir(store.tmp_dir) == []
    assert store.layers() == []


@pytest.mark.parametrize("entries, culprit", [
    ([("../x", "file")], "../x"),
    ([("a/../../x", "file")], "a/../../x"),
    ([("SENTINEL/x", "file")], "/x"),                                # absolute
    ([("etc", "dir"), ("etc/passwd", "file"), ("evil", "hardlink", "../../etc/passwd")], "evil"),
    ([("evil", "hardlink", "SENTINEL/target")], "evil"),
    ([("evil", "hardlink", "not-here")], "evil"),
    ([("a", "symlink", ".."), ("a/x", "file")], "'a'"),
    ([("d", "dir"), ("d/up", "symlink", "../../..")], "d/up"),
    # an absolute link is fine, writing through it is not (SENTINEL: a dir outside the store,
    # so that a regression writes there and not into the host's /etc)
    ([("a", "symlink", "SENTINEL"), ("a/x", "file")], "a/x"),
    ([("a", "symlink", "b"), ("b", "dir"), ("a/x", "file")], "a/x"),
    ([("d", "dir"), ("d/.wh..", "file")], "d/.wh.."),
    ([("d", "dir"), ("d/.wh...", "file")], "d/.wh..."),
    # device nodes are taken, but confined like every member
    ([("../x", "chr", (1, 3))], "../x"),
    ([("SENTINEL/x", "blk", (8, 0))], "/x"),
    ([("a", "symlink", "SENTINEL"), ("a/null", "chr", (1, 3))], "a/null"),
    ([("a", "symlink", "SENTINEL"), ("a/p", "fifo")], "a/p"),
    ([("dev", "dir"), ("dev/null", "chr", (1, 3)), ("evil", "hardlink", "../dev/null")], "evil"),
    ([("big", "chr", (1 << 12, 0))], "out of Linux's range"),
    ([("x" * 300, "file")], "x" * 64),
    ([("/".join(["d" * 200] * 25), "file")], "d" * 64),
])
def test_hostile_tars_are_refused_and_leave_nothing(store, tmp_path, entries, culprit):
    sentinel = tmp_path / "outside"
    sentinel.mkdir()
    (sentinel / "target").write_text("t")
    fix = lambda x: x.replace("SENTINEL", str(sentinel)) if isinstance(x, str) else x
    entries = [(fix(n), k, *map(fix, extra)) for n, k, *extra in entries]
    with pytest.raises(InvalidArgument) as e:
        store.add_layer_from_tar(io.BytesIO(make_tar(("ok", "file"), *entries)))
    assert culprit in str(e.value)
    assert_clean(store)
    assert os.listdir(sentinel) == ["target"] and os.stat(sentinel / "target").st_nlink == 1
    assert not (tmp_path / "x").exists()


def test_truncated_tar_leaves_no_layer(store):
    data = make_tar(("big", "file", os.urandom(200_000)), ("after", "file"))
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        store.add_layer_from_tar(io.BytesIO(data[:100_000]))
    assert_clean(store)


def test_truncated_gzip_leaves_no_layer(store):
    import gzip
    data = gzip.compress(make_tar(("big", "file", os.urandom(200_000))))
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        store.add_layer_from_tar(io.BytesIO(data[: len(data) // 2]))
    assert_clean(store)


def test_gzip_and_zstd_layers_hash_to_the_plain_tar_and_damage_is_refused(store):
    """Compression is read by its magic; the digest is the uncompressed tar's
    (content crossing 1 MiB chunks included); bytes after the gzip stream
    are refused, not ignored."""
    import gzip

    import zstandard
    content = os.urandom((1 << 20) + 4096)
    data = make_tar(("big", "file", content), ("small", "file"))
    plain = store.add_layer_from_tar(io.BytesIO(data))
    for blob in (gzip.compress(data, compresslevel=1), zstandard.ZstdCompressor().compress(data)):
        store.remove_layer(plain.digest)
        layer = store.add_layer_from_tar(io.BytesIO(blob))
        assert layer.digest == plain.digest
        with open(os.path.join(layer.path, "big"), "rb") as f:
            assert f.read() == content
    store.remove_layer(plain.digest)
    with pytest.raises(InvalidArgument, match="truncated or corrupt: .*incorrect header check"):
        store.add_layer_from_tar(io.BytesIO(gzip.compress(data) + b"trailing"))
    assert_clean(store)


def test_garbage_is_refused(store):
    with pytest.raises(InvalidArgument):
        store.add_layer_from_tar(io.BytesIO(b"this is not a tar file at all" * 40))
    assert_clean(store)


def test_interrupted_unpack_leaves_no_layer(store):
    class Boom:
        def __init__(self, data):
            self.f, self.n = io.BytesIO(data), 0

        def read(self, n=-1):
            self.n += 1
            if self.n > 3:
                raise KeyboardInterrupt
            return self.f.read(min(n, 10240) if n and n > 0 else 10240)

    with pytest.raises(KeyboardInterrupt):
        store.add_layer_from_tar(Boom(make_tar(*[(f"f{i}", "file", b"x" * 4000) for i in range(50)])))
    assert_clean(store)


@root_only
def test_metadata_links_and_whiteouts_are_kept(store):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        def add(name, type_, mode, data=b"", **kw):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.size = type_, mode, 1_500_000_000, len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(data))
        add("./etc/", tarfile.DIRTYPE, 0o750, uid=0, gid=4)
        add("./etc/shadow", tarfile.REGTYPE, 0o4640, b"secret\n", uid=1000, gid=1001)
        add("./etc/hard", tarfile.LNKTYPE, 0o4640, linkname="etc/shadow", uid=1000, gid=1001)
        add("./etc/link", tarfile.SYMTYPE, 0o777, linkname="../bin/sh", uid=7, gid=8)
        add("./abs", tarfile.SYMTYPE, 0o777, linkname="/proc/self/root")
        add("./etc/.wh.gone", tarfile.REGTYPE, 0o600)
        add("./var/cache/", tarfile.DIRTYPE, 0o755)
        add("./var/cache/.wh..wh..opq", tarfile.REGTYPE, 0o600)
        add("./pipe", tarfile.FIFOTYPE, 0o600)
        add("./wo", tarfile.CHRTYPE, 0o600, devmajor=0, devminor=0)
    layer = store.add_layer_from_tar(io.BytesIO(tar.getvalue()), created_by="test")
    fs = layer.path
    st = os.lstat(f"{fs}/etc/shadow")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o4640, 1000, 1001, 1_500_000_000)
    assert os.lstat(f"{fs}/etc/hard").st_ino == st.st_ino
    st = os.lstat(f"{fs}/etc")
    assert (stat.S_IMODE(st.st_mode), st.st_gid, st.st_mtime) == (0o750, 4, 1_500_000_000)
    assert os.readlink(f"{fs}/etc/link") == "../bin/sh"
    assert os.lstat(f"{fs}/etc/link")[stat.ST_UID] == 7
    assert os.readlink(f"{fs}/abs") == "/proc/self/root"
    wo = os.lstat(f"{fs}/etc/gone")
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0
    assert not os.path.lexists(f"{fs}/etc/.wh.gone")
    assert os.getxattr(f"{fs}/var/cache", "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(f"{fs}/var/cache/.wh..wh..opq")
    assert stat.S_ISFIFO(os.lstat(f"{fs}/pipe").st_mode)
    assert stat.S_ISCHR(os.lstat(f"{fs}/wo").st_mode)
    assert layer.size == len(b"secret\n") and layer.files == 10
    assert store.layer(layer.digest).created_by == "test"


def test_later_member_replaces_earlier(store):
    layer = store.add_layer_from_tar(io.BytesIO(make_tar(
        ("a", "symlink", "/etc"), ("a", "dir"), ("a/x", "file", b"1"),
        ("f", "file", b"old"), ("f", "file", b"new"))))
    assert os.path.isdir(f"{layer.path}/a") and not os.path.islink(f"{layer.path}/a")
    with open(f"{layer.path}/f", "rb") as f:
        assert f.read() == b"new"


@root_only
def test_pack_round_trips_a_deterministic_tar(store, tmp_path):
    original = make_tar(("d", "dir"), ("d/a", "file", b"a"), ("d/b", "hardlink", "d/a"),
                        ("d/s", "symlink", "a"), ("d/.wh.gone", "file", b""))
    layer = store.add_layer_from_tar(io.BytesIO(original))
    out = io.BytesIO()
    tarsafe.pack(layer.path, out)
    again = store.add_layer_from_tar(io.BytesIO(out.getvalue()))
    names = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames()
    assert names == ["d", "d/a", "d/b", "d/.wh.gone", "d/s"]      # sorted by the name on disk
    out2 = io.BytesIO()
    tarsafe.pack(again.path, out2)
    assert out2.getvalue() == out.getvalue()      # stable after one round


# --- budget -------------------------------------------------------------------

def test_a_decompression_bomb_is_stopped_by_the_ratio(store):
    import gzip
    bomb = gzip.compress(make_tar(("zeros", "file", bytes(80 << 20))), compresslevel=9, mtime=0)
    store._make_dirs()
    budget = tarsafe.Budget(store.root, environ={})
    with pytest.raises(InvalidArgument, match=r"expands more than 200:1 .*TERRARIUM_UNPACK_MAX_RATIO"):
        store.add_layer_from_tar(io.BytesIO(bomb), budget=budget)
    assert_clean(store)


@pytest.mark.parametrize("limit, entries, message", [
    ({"max_entries": 5}, [(f"f{i}", "file", b"x") for i in range(10)], "more than 5 entries"),
    ({"max_depth": 3}, [("a/b/c/d/deep", "file", b"x")], "more than 3 directories deep"),
    ({"max_bytes": 8192}, [("big", "file", os.urandom(100_000))], "more than 8192 bytes"),
])
def test_budget_limits_refuse_and_leave_nothing(store, limit, entries, message):
    store._make_dirs()
    with pytest.raises(InvalidArgument, match=message):
        store.add_layer_from_tar(io.BytesIO(make_tar(*entries)),
                                 budget=tarsafe.Budget(store.root, **limit))
    assert_clean(store)


def test_budget_defaults_and_environment(tmp_path):
    b = tarsafe.Budget(str(tmp_path), environ={})
    assert (b.max_bytes, b.max_entries, b.max_ratio, b.max_depth) == (64 << 30, 1_000_000, 200, 256)
    b = tarsafe.Budget(str(tmp_path), environ={"TERRARIUM_UNPACK_MAX_BYTES": "1m",
                                               "TERRARIUM_UNPACK_MAX_ENTRIES": "7"})
    assert (b.max_bytes, b.max_entries) == (1 << 20, 7)
    st = os.statvfs(tmp_path)
    assert 0 < b.free_bytes <= st.f_bavail * st.f_frsize
    with pytest.raises(InvalidArgument, match="TERRARIUM_UNPACK_MAX_DEPTH='\\\\u0666'"):
        tarsafe.Budget(str(tmp_path), environ={"TERRARIUM_UNPACK_MAX_DEPTH": "\u0666"})


# --- extended attributes --------------------------------------------------------

CAP_NET_RAW_EP = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
CAP_SETUID_EP = bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000")  # not UTF-8


def xattr_tar(*entries) -> bytes:
    """entries: (name, kind, {xattr: bytes}, owner uid) with kind file|dir|hardlink:TARGET."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, xattrs, uid in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime, ti.uid, ti.gid = 0o755, 1_600_000_000, uid, uid
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                              for k, v in xattrs.items()}
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind.startswith("hardlink:"):
                ti.type, ti.linkname = tarfile.LNKTYPE, kind.partition(":")[2]
            else:
                ti.size = 5
            tf.addfile(ti, io.BytesIO(b"hello") if ti.size else None)
    return buf.getvalue()


def xattrs_of(path: str) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in sorted(os.listxattr(path, follow_symlinks=False))}


@root_only
def test_file_capabilities_and_user_xattrs_are_applied_after_chown(store):
    """chown clears security.capability, so a file owned by uid 1000 keeps
    its capability only if the xattr is set after the owner."""
    layer = store.add_layer_from_tar(io.BytesIO(xattr_tar(
        ("bin", "dir", {"user.dir": b"d"}, 0),
        ("bin/ping", "file", {"security.capability": CAP_NET_RAW_EP, "user.note": b"n"}, 1000),
        ("bin/su", "file", {"security.capability": CAP_SETUID_EP}, 0),
        ("bin/ping2", "hardlink:bin/ping", {}, 0))))
    fs = layer.path
    assert os.stat(f"{fs}/bin/ping").st_uid == 1000
    assert xattrs_of(f"{fs}/bin/ping") == {"security.capability": CAP_NET_RAW_EP, "user.note": b"n"}
    assert xattrs_of(f"{fs}/bin/su") == {"security.capability": CAP_SETUID_EP}
    assert xattrs_of(f"{fs}/bin") == {"user.dir": b"d"}
    assert os.stat(f"{fs}/bin/ping2").st_ino == os.stat(f"{fs}/bin/ping").st_ino


@root_only
def test_overlay_markers_and_host_labels_in_an_archive_are_not_applied(store):
    """trusted.overlay.* on a lower layer would forge an opaque directory or
    a whiteout; security.selinux and other trusted.* are the host's."""
    layer = store.add_layer_from_tar(io.BytesIO(xattr_tar(
        ("d", "dir", {"trusted.overlay.opaque": b"y", "user.overlay.opaque": b"y",
                      "trusted.overlay.redirect": b"/etc"}, 0),
        ("d/f", "file", {"trusted.overlay.whiteout": b"y", "security.selinux": b"system_u:object_r:shadow_t:s0",
                         "trusted.other": b"x", "user.kept": b"k"}, 0))))
    assert xattrs_of(f"{layer.path}/d") == {}
    assert xattrs_of(f"{layer.path}/d/f") == {"user.kept": b"k"}


@root_only
@pytest.mark.parametrize("order", ["marker first", "marker last", "dot-slash"])
def test_opaque_and_whiteouts_in_either_order_and_spelling(store, order):
    """`.wh..wh..opq` before or after its siblings (the OCI spec allows both),
    with or without './'; a whiteout as `.wh.NAME` or as overlay's 0/0 device."""
    pre = "./" if order == "dot-slash" else ""
    entries = [(f"{pre}d", "dir"), (f"{pre}d/kept", "file"), (f"{pre}d/.wh.gone", "file"),
               (f"{pre}d/wo", "chr", (0, 0))]
    marker = (f"{pre}d/.wh..wh..opq", "file")
    entries = [entries[0], marker, *entries[1:]] if order == "marker first" else [*entries, marker]
    fs = store.add_layer_from_tar(io.BytesIO(make_tar(*entries))).path
    assert os.getxattr(f"{fs}/d", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(f"{fs}/d")) == ["gone", "kept", "wo"]
    for n in ("gone", "wo"):
        st = os.lstat(f"{fs}/d/{n}")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@root_only
@pytest.mark.parametrize("xattrs, message", [
    ({f"user.n{i}": b"v" for i in range(33)}, "carries 33 extended attributes; at most 32"),
    ({"user.big": bytes(40_000), "user.big2": bytes(40_000)}, "80017 bytes of extended attributes; at most 65536"),
    ({"": b"v"}, "an extended attribute of no valid name"),
    ({"user." + "n" * 300: b"v"}, "an extended attribute of no valid name"),
    ({"security.capability": b"not a capability"}, "the kernel refuses its extended attribute "
                                                   "'security.capability': Invalid argument"),
])
def test_xattrs_beyond_the_caps_or_refused_by_the_kernel_fail_and_leave_nothing(store, xattrs, message):
    with pytest.raises(InvalidArgument, match=message) as e:
        store.add_layer_from_tar(io.BytesIO(xattr_tar(("ok", "file", {}, 0), ("bad", "file", xattrs, 0))))
    assert "'bad'" in str(e.value)
    assert_clean(store)


def test_an_extended_header_over_a_mebibyte_is_refused_before_it_is_read(store):
    ti = tarfile.TarInfo("f")
    ti.pax_headers = {"comment": "x" * (1 << 20)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match=r"extended header .* of 1048\d\d\d bytes; at most 1048576"):
        store.add_layer_from_tar(io.BytesIO(buf.getvalue()))
    assert_clean(store)


@root_only
def test_pack_records_the_kept_xattrs_by_fd_and_round_trips(store, tmp_path):
    layer = store.add_layer_from_tar(io.BytesIO(xattr_tar(
        ("bin", "dir", {"user.dir": b"d"}, 0),
        ("bin/ping", "file", {"security.capability": CAP_NET_RAW_EP}, 1000),
        ("bin/su", "file", {"security.capability": CAP_SETUID_EP, "user.a": b"1"}, 0))))
    # what overlay writes on an upper dir stays out of the tar
    os.setxattr(f"{layer.path}/bin/su", "trusted.overlay.origin", b"\0\xfb", follow_symlinks=False)
    out = io.BytesIO()
    tarsafe.pack(layer.path, out)
    got = {m.name: {k: v.encode("utf-8", "surrogateescape") for k, v in m.pax_headers.items()
                    if k.startswith("SCHILY.xattr.")}
           for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))}
    assert got == {"bin": {"SCHILY.xattr.user.dir": b"d"},
                   "bin/ping": {"SCHILY.xattr.security.capability": CAP_NET_RAW_EP},
                   "bin/su": {"SCHILY.xattr.security.capability": CAP_SETUID_EP,
                              "SCHILY.xattr.user.a": b"1"}}
    again = ImageStore(tmp_path / "other").add_layer_from_tar(io.BytesIO(out.getvalue()))
    assert xattrs_of(f"{again.path}/bin/su") == {"security.capability": CAP_SETUID_EP, "user.a": b"1"}
    assert xattrs_of(f"{again.path}/bin/ping") == {"security.capability": CAP_NET_RAW_EP}
    out2 = io.BytesIO()
    tarsafe.pack(again.path, out2)
    assert out2.getvalue() == out.getvalue()      # deterministic, xattrs included
