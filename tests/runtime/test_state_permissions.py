"""The state root is private to root (runtime.Runtime, runtime.daemons,
runtime.images.store): 0700 however it was made, so the layers' setuid files
keep their bits for containers but no local user can run them from the host.

The roots here sit in a directory every user can enter, so that the state
root's own mode is all that keeps a user out."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile

import pytest

from runtime import Runtime
from tests.conftest import CLI
from tests.runtime.test_import import docker_archive
from tests.unprivileged import as_user, euid_probe, reach, run, throwaway_user

pytestmark = pytest.mark.root

SUBDIRS = ("containers", "names", "run", "layers", "images", "tmp")


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_runtime_makes_an_existing_loose_root_private(open_dir):
    root = os.path.join(open_dir, "root")
    for d in ("", *SUBDIRS):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, d), 0o755)      # as an older version left it
    Runtime(root)
    assert {d: mode(os.path.join(root, d)) for d in ("", *SUBDIRS)} == \
        {d: 0o700 for d in ("", *SUBDIRS)}


def test_a_server_start_makes_the_root_private(open_dir):
    root = os.path.join(open_dir, "root")
    Runtime(root)
    os.chmod(root, 0o755)
    env = dict(os.environ, TERRARIUM_ROOT=root)
    env.pop("TERRARIUM_CLI_LOCAL", None)
    r = subprocess.run([CLI, "ps"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(root, "run", "cli.pid"))     # served, not local
    assert mode(root) == 0o700


def suid_image(path: str) -> None:
    """A docker-archive whose one layer has busybox and /bin/euid: the euid
    probe, owned by root with the setuid bit (as images ship sudo or su)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, perm in (("bin/busybox", open("/bin/busybox", "rb").read(), 0o755),
                                 ("bin/euid", euid_probe(), 0o4755)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.uid, ti.gid = len(data), perm, 0, 0
            tf.addfile(ti, io.BytesIO(data))
        for applet in ("sh", "ls", "cp", "chmod"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(ti)
    docker_archive(path, [buf.getvalue()], tags=("suid:1",),
                   config_extra={"config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}})


def test_setuid_files_in_layers_work_inside_but_no_user_reaches_them(open_dir):
    """Security-confirm section 5: a setuid-root binary from an imported image,
    and one made inside a container and committed, were run by a local user
    from the layer store and gave euid 0."""
    root = os.path.join(open_dir, "root")
    rt = Runtime(root)
    env = dict(os.environ, TERRARIUM_ROOT=root)
    archive = os.path.join(open_dir, "suid.tar")
    suid_image(archive)
    os.chmod(archive, 0o644)

    def terrarium(*args):
        r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    terrarium("load", "-i", archive)
    imported = os.path.join(rt.images.get("suid:1").layers[-1].path, "bin", "euid")
    assert os.stat(imported).st_mode & stat.S_ISUID and os.stat(imported).st_uid == 0
    # Inside, the file is what the image says: setuid root.
    assert terrarium("run", "--rm", "suid:1", "ls", "-ln", "/bin/euid").startswith("-rwsr-xr-x    1 0        0")
    # Made setuid in a container, then committed.
    terrarium("run", "--name", "maker", "suid:1", "sh", "-c", "cp /bin/euid /bin/euid2 && chmod 4755 /bin/euid2")
    rt.commit("maker", "suid-committed")
    committed = os.path.join(rt.images.get("suid-committed").layers[-1].path, "bin", "euid2")
    assert os.stat(committed).st_mode & stat.S_ISUID and os.stat(committed).st_uid == 0

    layer_file = os.path.join(rt.images.get("suid:1").layers[-1].path, "bin", "busybox")
    record = os.path.join(root, "images", "suid:1.json")
    assert os.path.exists(layer_file) and os.path.exists(record)
    with throwaway_user() as user:
        seen = as_user(user, lambda: {
            "root": reach(root),
            "layer file": reach(layer_file),
            "image record": reach(record),
            "run imported": run(imported),
            "run committed": run(committed),
        })
    # Without the root's 0700 the runs would say "exit 0": euid 0.
    assert seen == {"root": "EACCES", "layer file": "EACCES", "image record": "EACCES",
                    "run imported": "EACCES", "run committed": "EACCES"}
