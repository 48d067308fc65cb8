"""Layer tests reuse the dashboard's users and clients and the browser tier's
Daphne + Chromium; `busybox_tar` is a real `terrarium save` of busybox."""
import io
import os
import subprocess
import tarfile

import pytest

from tests.conftest import CLI
from tests.dashboard.conftest import (_fresh_runtime_handle, administrator, idle_container,  # noqa: F401
                                      operator, operator_client, viewer, viewer_client)


@pytest.fixture(scope="session")
def busybox_tar(rt, tmp_path_factory):
    """busybox as an OCI layout tar, written by the CLI."""
    path = str(tmp_path_factory.mktemp("save") / "busybox.oci.tar")
    r = subprocess.run([CLI, "save", "-o", path, "busybox"], capture_output=True, text=True,
                       timeout=60, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    return path


def store_leftovers(rt) -> tuple[set, set]:
    """(layer dirs, tmp entries) of the store, to compare before and after."""
    def ls(d):
        try:
            return set(os.listdir(d))
        except FileNotFoundError:
            return set()
    return ls(rt.images.layers_dir), ls(rt.images.tmp_dir)



@pytest.fixture(scope="session")
def fresh_tar(rt, tmp_path_factory):
    """An OCI tar whose one layer the store does not hold (so an import unpacks it),
    and the marker bytes inside that layer's file."""
    from runtime.images import importers
    marker = b"TERRARIUM-LAYER-TEST-" + os.urandom(8).hex().encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = marker + b"\n" + os.urandom(4096).hex().encode()
        ti = tarfile.TarInfo("hello.txt")
        ti.size, ti.mode = len(data), 0o644
        tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    layer = rt.images.add_layer_from_tar(buf, "test layer")
    rt.images.add_image("layertest/fresh", [layer.digest])
    path = str(tmp_path_factory.mktemp("fresh") / "fresh.oci.tar")
    importers.save(rt.images, "layertest/fresh", path)
    rt.images.remove_image("layertest/fresh")
    rt.images.remove_layer(layer.digest)
    return path, marker, layer.digest
