"""Walks of a writable layer the container changes meanwhile (runtime/fswalk.py):
a directory swapped for a symlink to the host's / is never followed by
diff, upper_size or commit's pack."""
from __future__ import annotations

import io
import os
import tarfile
import threading
import time

import pytest

from runtime import Conflict, Spec, fswalk, overlay
from runtime.images import tarsafe


def test_walk_lists_a_symlink_to_root_as_a_symlink(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.symlink("/", tmp_path / "x")
    seen = {rel: fd is not None for rel, _st, _dfd, _name, fd in fswalk.walk(str(tmp_path), sort=True)}
    assert seen == {"d": True, "d/f": False, "x": False}


def test_walk_stops_past_max_depth(tmp_path):
    os.makedirs(tmp_path / "/".join("a" * 6))
    with pytest.raises(fswalk.TooDeep):
        list(fswalk.walk(str(tmp_path), max_depth=3))


def test_diff_stops_at_its_limit_and_says_truncated(tmp_path):
    for i in range(50):
        (tmp_path / f"f{i}").write_text("x")
    full = overlay.diff(str(tmp_path), [])
    part = overlay.diff(str(tmp_path), [], limit=10)
    assert (len(full), full.truncated, len(part), part.truncated) == (50, False, 10, True)


@pytest.fixture
def swapped(tmp_path, monkeypatch):
    """upper/x is a directory when its parent is listed, and `x -> host` right
    after: the moment a walk by path would follow it into the host's tree."""
    host, upper, park = tmp_path / "host", tmp_path / "upper", tmp_path / "park"
    host.mkdir()
    (host / "secret").write_text("host-only")
    upper.mkdir()
    (upper / "x").mkdir()
    (upper / "x" / "marker").write_text("mine")
    real = fswalk.entries

    def entries_then_swap(dir_fd, sort=False):
        out = real(dir_fd, sort)
        if any(name == "x" for name, _ in out) and (upper / "x").is_dir() \
                and not (upper / "x").is_symlink():
            os.rename(upper / "x", park)
            os.symlink(host, upper / "x")
        return out
    monkeypatch.setattr(fswalk, "entries", entries_then_swap)
    return upper


def test_pack_skips_a_directory_swapped_for_a_symlink(swapped):
    buf = io.BytesIO()
    tarsafe.pack(str(swapped), buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        assert tf.getnames() == []          # x was a directory, then not: nothing of it


def test_diff_and_size_never_list_through_a_swapped_symlink(swapped):
    assert [(ch.path, ch.is_dir) for ch in overlay.diff(str(swapped), [])] == [("/x", False)]
    assert os.path.islink(swapped / "x")
    assert overlay.upper_size(str(swapped)).files == 1


def test_pack_diff_and_size_never_follow_a_directory_swapped_for_a_symlink(tmp_path):
    """A thread flips upper/x between a directory and `x -> host`, as a running
    container can; every walk sees either the directory or the symlink."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host-only")
    upper, park = tmp_path / "upper", tmp_path / "park"
    upper.mkdir()
    (upper / "x").mkdir()
    (upper / "x" / "marker").write_text("mine")
    stop = threading.Event()

    def flip():
        x = upper / "x"
        while not stop.is_set():
            os.rename(x, park)
            os.symlink(host, x)
            os.unlink(x)
            os.rename(park, x)
    flipper = threading.Thread(target=flip)
    flipper.start()
    names, paths, files = set(), set(), set()
    try:
        for _ in range(300):
            buf = io.BytesIO()
            tarsafe.pack(str(upper), buf)
            buf.seek(0)
            with tarfile.open(fileobj=buf) as tf:
                names.update(tf.getnames())
            paths.update(ch.path for ch in overlay.diff(str(upper), []))
            files.add(overlay.upper_size(str(upper)).files)
    finally:
        stop.set()
        flipper.join()
    assert names <= {"x", "x/marker"}
    assert paths <= {"/x", "/x/marker"}
    assert files <= {0, 1, 2}


@pytest.mark.root
def test_a_container_flipping_x_to_root_never_gets_host_files_listed_or_committed(rt, name, cleanup):
    cleanup.append(name)
    image = f"flip-{name.rsplit('-', 1)[-1]}"
    flip = ("mkdir /d && echo mine > /d/marker && "
            "while :; do mv /d /x; mv /x /d; ln -s / /x; rm /x; done")
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", flip)))
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(c.upperdir, "d")) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open("/etc/hostname", "rb") as f:
        hostname = f.read()
    try:
        seen = set()
        for _ in range(100):
            seen.update(ch.path for ch in rt.diff(name))
            assert rt.upper_size(name).files < 50       # the host's tree has far more
        assert {p for p in seen if p.startswith("/x/")} <= {"/x/marker"}
        with pytest.raises(Conflict, match="running"):
            rt.commit(name, image, pause=False)
        for _ in range(3):
            made = rt.commit(name, image)
            fs = made.layers[-1].path                   # the committed layer, unpacked
            for dirpath, dirnames, filenames in os.walk(fs):
                rel = os.path.relpath(dirpath, fs)
                assert rel in (".", "d", "x", "root"), rel          # never x/etc, x/proc ...
                for f in filenames:
                    p = os.path.join(dirpath, f)
                    if not os.path.islink(p):
                        with open(p, "rb") as fh:
                            assert fh.read() == b"mine\n" != hostname, p
        assert rt.inspect(name).status == "running"     # resumed after each commit
    finally:
        try:
            rt.remove_image(image, force=True)
        except Exception:  # noqa: BLE001 - never made
            pass


def test_layer_of_never_steps_through_a_swapped_symlink(tmp_path, monkeypatch):
    """x is a directory when looked at, `x -> host` when stepped into: the host's
    x/secret must not read as a file of the writable layer."""
    host, upper, park = tmp_path / "host", tmp_path / "upper", tmp_path / "park"
    host.mkdir()
    (host / "secret").write_text("host-only")
    upper.mkdir()
    (upper / "x").mkdir()
    real = fswalk.open_dir

    def swap_then_open(name, dir_fd=None):
        if name == "x" and not (upper / "x").is_symlink():
            os.rename(upper / "x", park)
            os.symlink(host, upper / "x")
        return real(name, dir_fd)
    monkeypatch.setattr(fswalk, "open_dir", swap_then_open)
    assert overlay.layer_of("/x/secret", str(upper), []) == (None, [])
