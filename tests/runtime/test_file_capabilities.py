"""File capabilities in image layers (runtime/images/tarsafe.py): an imported
layer's `security.capability` reaches the file, the kernel honours it inside
a container, and no local user reaches the file from the host.  Under the
containers' no_new_privs, neither a file capability nor a setuid bit lifts
a process that holds nothing; with --security-opt no-new-privileges=false
both do, in run and in exec.  A forged overlay marker in an archive is not
applied.

The image is built here: busybox, a static probe (tests/fixtures/
keepcaps_probe.c, see there why it keeps its permitted set) and a copy of
busybox carrying cap_net_raw+ep as a PAX `SCHILY.xattr.security.capability`
record, as `docker save` writes it; the top layer marks /data opaque with
`trusted.overlay.opaque`, which must not hide the lower layer's file."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile

import pytest

from runtime import Runtime
from tests.conftest import CLI, REPO
from tests.runtime.test_import import docker_archive
from tests.unprivileged import as_user, euid_probe, reach, run, throwaway_user

pytestmark = pytest.mark.root

PROBE_SRC = os.path.join(REPO, "tests", "fixtures", "keepcaps_probe.c")
CAP_NET_RAW = 13
VFS_CAP_REVISION_2, VFS_CAP_FLAGS_EFFECTIVE = 0x02000000, 0x000001


def cap_v2(*caps: int) -> bytes:
    """A `security.capability` value (struct vfs_cap_data, revision 2):
    these capabilities permitted and effective (`setcap cap_x+ep`)."""
    mask = sum(1 << c for c in caps)
    return struct.pack("<IIIII", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
                       mask & 0xFFFFFFFF, 0, mask >> 32, 0)


def layer(*entries) -> bytes:
    """entries: (name, bytes | "dir" | ("symlink", target), mode, xattrs dict)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode, xattrs in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime = mode, 1_700_000_000
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                              for k, v in xattrs.items()}
            if data == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif isinstance(data, tuple):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[1]
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("probe") / "keepcaps_probe"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), PROBE_SRC], check=True)
    return out.read_bytes()


def cap_image(path: str, probe: bytes) -> None:
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    base = layer(("bin/busybox", busybox, 0o755, {}),
                 *((f"bin/{a}", ("symlink", "busybox"), 0o777, {}) for a in ("sh", "ls", "grep")),
                 ("bin/keepcaps", probe, 0o755, {}),
                 ("bin/euid", euid_probe(), 0o4755, {}),                 # setuid root
                 ("opt/capped/busybox", busybox, 0o755,
                  {"security.capability": cap_v2(CAP_NET_RAW), "user.origin": b"image"}),
                 ("data/kept", b"from the lower layer\n", 0o644, {}))
    top = layer(("data", "dir", 0o755, {"trusted.overlay.opaque": b"y", "user.overlay.opaque": b"y"}),
                ("data/new", b"from the top layer\n", 0o644, {}))
    docker_archive(path, [base, top], tags=("caps:1",),
                   config_extra={"config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}})


STATUS = "grep CapEff /proc/self/status"
INSIDE = ("grep NoNewPrivs /proc/self/status; "
          f"/bin/keepcaps 1000 /opt/capped/busybox {STATUS}; "     # the capable file
          f"/bin/keepcaps 1000 /bin/busybox {STATUS}; "            # the same bytes without it
          f"/bin/keepcaps -d 1000 /opt/capped/busybox {STATUS}; "  # dropped as su does: nothing
          "/bin/keepcaps -d 1000 /bin/euid; echo euid=$?; "          # no_new_privs: no setuid either
          "ls /data")


def _terrarium(root: str, *args: str) -> str:
    """The CLI on a root of the test's own; its stdout, or the test fails with stderr."""
    r = subprocess.run([CLI, *args], env=dict(os.environ, TERRARIUM_ROOT=root),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_file_capability_from_an_imported_layer_works_inside_and_no_user_reaches_it(
        open_dir, probe):
    root = os.path.join(open_dir, "root")
    rt = Runtime(root)
    archive = os.path.join(open_dir, "caps.tar")
    cap_image(archive, probe)

    _terrarium(root, "load", "-i", archive)
    base, top = (l.path for l in rt.images.get("caps:1").layers)
    capped = os.path.join(base, "opt", "capped", "busybox")
    assert os.getxattr(capped, "security.capability", follow_symlinks=False) == cap_v2(CAP_NET_RAW)
    assert os.getxattr(capped, "user.origin", follow_symlinks=False) == b"image"
    assert os.listxattr(os.path.join(top, "data"), follow_symlinks=False) == []   # no forged marker

    out = _terrarium(root, "run", "--rm", "caps:1", "sh", "-c", INSIDE)
    assert out.split("\n") == ["NoNewPrivs:\t1",
                               "CapEff:\t0000000000002000",     # cap_net_raw, from the file
                               "CapEff:\t0000000000000000",
                               "CapEff:\t0000000000000000",
                               f"euid={1000 % 256}",
                               "kept", "new", ""]               # /data not made opaque

    with throwaway_user() as user:
        seen = as_user(user, lambda: {"read": reach(capped), "run": run(capped)})
    assert seen == {"read": "EACCES", "run": "EACCES"}


LIFT = ("grep NoNewPrivs /proc/self/status; "
        f"/bin/keepcaps -d 1000 /opt/capped/busybox {STATUS}; "    # dropped as su does
        "/bin/keepcaps -d 1000 /bin/euid; echo euid=$?")


def test_without_no_new_privs_setuid_and_file_capabilities_lift_a_user_in_run_and_exec(
        open_dir, probe):
    root = os.path.join(open_dir, "root")
    archive = os.path.join(open_dir, "caps.tar")
    cap_image(archive, probe)

    _terrarium(root, "load", "-i", archive)
    off = ("--security-opt", "no-new-privileges=false")
    lifted = ["NoNewPrivs:\t0",
              "CapEff:\t0000000000002000",      # cap_net_raw, from the file, for uid 1000
              "euid=0",                         # the setuid-root file
              ""]
    assert _terrarium(root, "run", "--rm", *off, "caps:1", "sh", "-c", LIFT).split("\n") == lifted
    cid = _terrarium(root, "run", "-d", *off, "caps:1", "/bin/busybox", "sleep", "600").strip()
    assert _terrarium(root, "exec", cid, "sh", "-c", LIFT).split("\n") == lifted
