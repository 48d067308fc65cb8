"""runtime.overlay: the writable layer's changes, where a path comes from, the mount.

Unit tests build layer directories by hand (whiteouts and the trusted.*
opaque xattr need root); the real-kernel test makes the changes inside a
container from `lab` and checks diff against an independent walk of the
upper directory.
"""
from __future__ import annotations

import os
import stat
import statistics
import time

import pytest

from runtime import Spec, overlay
from runtime.errors import InvalidArgument, NotFound

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod whiteouts, trusted xattrs)")


def make_tree(root, spec: dict) -> str:
    """spec: {"a/b": "text" | None (dir) | "WH" (whiteout) | "OPQ" (opaque dir)}."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    for rel, what in sorted(spec.items()):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if what is None:
            os.makedirs(path, exist_ok=True)
        elif what == "OPQ":
            os.makedirs(path, exist_ok=True)
            os.setxattr(path, overlay.OPAQUE_XATTR, b"y")
        elif what == "WH":
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        else:
            with open(path, "w") as f:
                f.write(what)
    return root


def kinds(changes) -> dict[str, str]:
    return {c.path: c.kind for c in changes}


# --- diff on hand-made layers -------------------------------------------------

@root_only
def test_diff_added_changed_deleted_opaque(tmp_path):
    base = make_tree(tmp_path / "l0", {"etc/passwd": "root", "etc/group": "g", "bin/sh": "sh",
                                       "opt/x/a": "a", "opt/x/b": "b"})
    mid = make_tree(tmp_path / "l1", {"etc/motd": "hi", "opt/x/c": "c", "bin/sh": "sh2"})
    upper = make_tree(tmp_path / "up", {"etc/passwd": "root\nme", "etc/motd": "WH",
                                        "opt/x": "OPQ", "opt/x/new": "n", "opt/x/a": "again",
                                        "new/file": "12345", "bin/gone": "WH"})
    ch = {c.path: c for c in overlay.diff(upper, [base, mid])}
    assert kinds(ch.values()) == {
        "/bin": "C", "/etc": "C", "/etc/passwd": "C", "/etc/motd": "D", "/new": "A",
        "/new/file": "A", "/opt": "C", "/opt/x": "C", "/opt/x/a": "C", "/opt/x/new": "A",
        "/opt/x/b": "D", "/opt/x/c": "D"}
    assert (ch["/etc/passwd"].from_layer, ch["/etc/passwd"].from_dir) == (0, base)
    assert ch["/etc/motd"].whiteout and ch["/etc/motd"].from_layer == 1
    assert ch["/etc"].from_layer == 1 and ch["/etc"].is_dir       # the topmost copy
    assert ch["/opt/x"].opaque and not ch["/opt"].opaque
    assert not ch["/opt/x/b"].whiteout and ch["/opt/x/b"].from_layer == 0   # hidden by opaque
    assert ch["/opt/x/c"].from_layer == 1
    assert ch["/new/file"].size == 5 and ch["/new/file"].from_layer is None
    # a whiteout of a name no lower layer has is no change
    assert "/bin/gone" not in ch
    assert [c.path for c in overlay.diff(upper, [base, mid])] == sorted(ch, key=lambda p: p.split("/"))
    assert "/opt/x/b" not in kinds(overlay.diff(upper, [base, mid], implicit=False))


@root_only
def test_diff_respects_whiteouts_and_opaque_dirs_in_lower_layers(tmp_path):
    base = make_tree(tmp_path / "l0", {"a/f": "1", "d/old": "o", "g": "file"})
    mid = make_tree(tmp_path / "l1", {"a/f": "WH", "d": "OPQ", "d/mid": "m", "g": None})
    upper = make_tree(tmp_path / "up", {"a/f": "again", "d/old": "o2", "d/mid": "WH",
                                        "g/inside": "i"})
    ch = {c.path: c for c in overlay.diff(upper, [base, mid])}
    assert ch["/a/f"].kind == "A"               # deleted in layer 1: not in the image
    assert ch["/d/old"].kind == "A"             # hidden by layer 1's opaque /d
    assert ch["/d/mid"].kind == "D" and ch["/d/mid"].from_layer == 1
    assert ch["/g"].kind == "C" and ch["/g"].from_layer == 1
    assert ch["/g/inside"].kind == "A"


def test_diff_of_missing_upper_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        overlay.diff(str(tmp_path / "nope"), [])


# --- layer_of -----------------------------------------------------------------

@root_only
def test_layer_of(tmp_path):
    base = make_tree(tmp_path / "l0", {"etc/passwd": "p", "etc/motd": "m0", "d/a": "a",
                                       "x/y/z": "z", "link": None})
    mid = make_tree(tmp_path / "l1", {"etc/motd": "m1", "d": "OPQ", "d/b": "b", "x": "WH"})
    upper = make_tree(tmp_path / "up", {"etc/passwd": "p2", "etc/motd": "WH", "new": "n"})
    lowers = [base, mid]
    assert overlay.layer_of("/etc/passwd", upper, lowers) == ("upper", [0])
    assert overlay.layer_of("/etc/motd", upper, lowers) == (None, [1, 0])
    assert overlay.layer_of("/etc", upper, lowers) == ("upper", [])          # merged, not hidden
    assert overlay.layer_of("/d", upper, lowers) == (1, [0])                 # opaque in layer 1
    assert overlay.layer_of("/d/a", upper, lowers) == (None, [0])
    assert overlay.layer_of("/d/b", upper, lowers) == (1, [])
    assert overlay.layer_of("/x/y/z", upper, lowers) == (None, [0])          # parent whited out
    assert overlay.layer_of("/new", upper, lowers) == ("upper", [])
    assert overlay.layer_of("/nothing/here", upper, lowers) == (None, [])
    assert overlay.layer_of("/", upper, lowers) == ("upper", [])
    with pytest.raises(InvalidArgument):
        overlay.layer_of("/etc/../x", upper, lowers)


# --- mountinfo ----------------------------------------------------------------

def test_mount_info_parses_the_root_overlay(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "mountinfo").write_text(
        "57 1 8:1 / /old rw - ext4 /dev/sda1 rw\n"
        "87 57 0:40 / / rw,relatime - overlay overlay rw,lowerdir=aa/fs:/abs/with\\072colon/fs,"
        "upperdir=/r/c\\040d/upper,workdir=/r/c\\040d/work,uuid=on\n"
        "88 87 0:41 / /proc rw - proc proc rw\n")
    m = overlay.mount_info(42, lower_base="/r/layers", proc=str(proc))
    assert m["lowerdir"] == ["/r/layers/aa/fs", "/abs/with:colon/fs"]
    assert m["upperdir"] == "/r/c d/upper" and m["workdir"] == "/r/c d/work"
    assert m["options"] == {"rw": "", "uuid": "on"}
    assert m["mount_options"] == "rw,relatime" and m["mount_id"] == 87
    with pytest.raises(NotFound):
        overlay.mount_info(43, proc=str(proc))
    (proc / "44").mkdir()
    (proc / "44" / "mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(NotFound, match="no overlay"):
        overlay.mount_info(44, proc=str(proc))


def test_upper_size(tmp_path):
    make_tree(tmp_path, {"a": "123", "d/b": "4567", "d/e": None})
    os.symlink("a", tmp_path / "s")
    assert overlay.upper_size(str(tmp_path)) == (7, 5)


# --- cost ---------------------------------------------------------------------

def test_diff_cost_for_10000_files(tmp_path):
    """Not a timed assert: prints what one diff refresh costs (issue 6 asks)."""
    base = make_tree(tmp_path / "l0", {f"d{i:02}/keep": "k" for i in range(100)})
    upper = tmp_path / "up"
    for i in range(100):
        d = upper / f"d{i:02}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"f{j:03}").write_bytes(b"x" * 10)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        changes = overlay.diff(str(upper), [base])
        times.append(time.perf_counter() - t0)
    assert len(changes) == 100 + 10_000
    t0 = time.perf_counter()
    size = overlay.upper_size(str(upper))
    t_size = time.perf_counter() - t0
    assert size == (100_000, 10_100)
    print(f"\ndiff of a writable layer of 10,000 files: median {statistics.median(times) * 1e3:.1f} ms "
          f"(min {min(times) * 1e3:.1f}); upper_size {t_size * 1e3:.1f} ms")


# --- the real kernel ----------------------------------------------------------

def walk_upper(upper: str, lowerdirs: list[str]) -> dict[str, str]:
    """Independent of overlay.diff: every upper entry -> A/C/D by a plain lexists in the lowers."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = "/" + os.path.relpath(p, upper)
            st = os.lstat(p)
            in_lower = any(os.path.lexists(d + rel) for d in lowerdirs)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[rel] = "D"
            else:
                out[rel] = "C" if in_lower else "A"
    return out


CHANGES = ("echo me:x:1000:1000::/home/me:/bin/sh >> /etc/passwd; rm /etc/motd; "
           "rm -rf /usr/local/bin && mkdir /usr/local/bin && echo x > /usr/local/bin/new; "
           "echo hello > /hello; exec sleep 300")


def wait_for(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


@pytest.mark.root
def test_container_changes_show_exactly(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", CHANGES)))
    wait_for(os.path.join(c.upperdir, "hello"))
    lab = rt.images.get("lab")
    busybox_layer, lab_layer = (l.path for l in lab.layers)
    assert list(c.layers) == [busybox_layer, lab_layer]

    changes = rt.diff(name)
    by_path = {ch.path: ch for ch in changes}
    explicit = {ch.path: ch.kind for ch in changes if ch.kind != "D" or ch.whiteout}
    assert explicit == walk_upper(c.upperdir, list(c.layers))
    assert explicit == {"/etc": "C", "/etc/passwd": "C", "/etc/motd": "D", "/hello": "A",
                        "/usr": "C", "/usr/local": "C", "/usr/local/bin": "C",
                        "/usr/local/bin/new": "A"}
    assert by_path["/etc/passwd"].from_layer == 0          # busybox
    assert by_path["/etc/motd"].from_layer == 1 and by_path["/etc/motd"].whiteout   # lab
    assert by_path["/usr/local/bin"].opaque and by_path["/usr/local/bin"].from_layer == 1
    assert by_path["/hello"].size == 6
    implicit = {p for p, ch in by_path.items() if ch.kind == "D" and not ch.whiteout}
    assert implicit == {f"/usr/local/bin/{n}" for n in os.listdir(f"{lab_layer}/usr/local/bin")}
    assert all(by_path[p].from_layer == 1 for p in implicit)

    assert rt.layer_of(name, "/etc/passwd") == ("upper", [0])
    assert rt.layer_of(name, "/etc/motd") == (None, [1])
    assert rt.layer_of(name, "/usr/local/bin/memhog") == (None, [1])
    assert rt.layer_of(name, "/usr/local/bin") == ("upper", [1, 0])
    assert rt.layer_of(name, "/bin/busybox") == (0, [])

    m = rt.mount_info(name)
    assert m["fstype"] == "overlay"
    assert m["lowerdir"] == [lab_layer, busybox_layer]          # overlay lists top first
    assert not os.path.isabs(m["lowerdir_raw"].split(":")[0])   # mounted with relative paths
    assert (m["upperdir"], m["workdir"]) == (c.upperdir, c.workdir_overlay)

    size = rt.upper_size(name)
    assert size.files == len(explicit) and size.bytes == sum(
        ch.size for ch in changes if ch.kind != "D")

    rt.stop(name, timeout=0)
    assert rt.diff(name) == changes                             # the same, stopped


@pytest.mark.root
def test_diff_cli(rt, name, cleanup):
    from tests.conftest import cli
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name,
                    cmd=("sh", "-c", "rm /etc/hosts; echo > /new; touch /etc/passwd")))
    rt.wait(c.id, timeout=30)
    res = cli("diff", name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["C /etc", "D /etc/hosts", "C /etc/passwd", "A /new"]
    res = cli("diff", "no-such-container")
    assert res.returncode == 125 and res.stderr.count("\n") == 1 and "not found" in res.stderr
