"""Archives against the real Docker: Debian's docker.io 20.10, run privately
(tests/dockerd.py: its own data root, exec root, socket and cgroup parent;
no network set-up), reads `terrarium save` output and runs it; `docker save`
output of several images loads into Terrarium and runs; skopeo reads the same
saved tar both as a docker-archive and as an OCI archive."""
import json
import os
import secrets
import shutil
import subprocess

import pytest

from runtime.errors import NotFound
from tests.conftest import cli
from tests.dockerd import private_dockerd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def docker():
    with private_dockerd() as d:
        yield d


def _forget(rt, *names):
    for n in names:
        try:
            rt.remove_image(n, force=True)
        except NotFound:
            pass


def test_docker_load_reads_terrarium_save_and_runs_it(rt, docker, tmp_path):
    out = tmp_path / "lab.tar"
    res = cli("save", "-o", str(out), "lab")
    assert res.returncode == 0, res.stderr
    res = docker("load", "-i", str(out))
    assert res.stdout.strip() == "Loaded image: lab:latest"
    try:
        lab = rt.images.get("lab")
        # the config Terrarium writes is the image: Docker's id is Terrarium's
        assert docker("inspect", "--format", "{{.Id}}", "lab").stdout.strip() == lab.id
        layers = json.loads(docker("inspect", "--format", "{{json .RootFS.Layers}}", "lab").stdout)
        assert layers == [layer.digest for layer in lab.layers]
        res = docker("run", "--rm", "--network", "none", "lab", "sh", "-c",
                     "echo from docker; test -x /usr/local/bin/memhog && echo memhog")
        assert res.stdout.split() == ["from", "docker", "memhog"]
    finally:
        docker("rmi", "lab", check=False)


@pytest.mark.skipif(not shutil.which("skopeo"), reason="apt-get install skopeo")
def test_one_saved_tar_is_both_a_docker_archive_and_an_oci_archive(rt, tmp_path):
    out = tmp_path / "busybox.tar"
    assert cli("save", "-o", str(out), "busybox").returncode == 0
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    digests = [layer.digest for layer in rt.images.get("busybox").layers]
    for transport in ("docker-archive", "oci-archive"):
        res = subprocess.run(["skopeo", "inspect", f"{transport}:{out}"], capture_output=True,
                             text=True, env=env)
        assert res.returncode == 0, (transport, res.stderr)
        assert json.loads(res.stdout)["Layers"] == digests, transport
    names = subprocess.run(["tar", "-tf", str(out)], capture_output=True, text=True).stdout.split()
    assert {"manifest.json", "repositories", "index.json", "oci-layout"} <= set(names)


def test_docker_save_of_several_images_loads_and_runs(rt, docker, tmp_path, name, cleanup):
    seed = secrets.token_hex(3)
    mine, other = f"dk-{seed}/mine:v1", f"dk-{seed}-bb:2"
    bb = tmp_path / "bb.tar"
    assert cli("save", "-o", str(bb), "busybox").returncode == 0
    docker("load", "-i", str(bb))
    maker = f"maker-{seed}"
    docker("run", "--name", maker, "--network", "none", "busybox", "sh", "-c",
           "echo made in docker > /hi && mkdir -p /srv/d && ln /hi /srv/d/hard && mkfifo /srv/p")
    docker("commit", "-c", 'CMD ["cat", "/hi"]', maker, mine)
    docker("rm", maker)
    docker("tag", "busybox", other)
    multi = tmp_path / "multi.tar"
    docker("save", "-o", str(multi), mine, other)
    try:
        res = cli("load", "-i", str(multi))
        assert res.returncode == 0, res.stderr
        assert sorted(res.stdout.splitlines()) == sorted([f"Loaded image: {mine}",
                                                          f"Loaded image: {other}"])
        image = rt.images.get(mine)
        assert len(image.layers) == 2 and image.config.cmd == ("cat", "/hi")
        cleanup.append(name)
        res = cli("run", "--name", name, mine)
        assert (res.returncode, res.stdout) == (0, "made in docker\n"), res.stderr
        res = cli("run", "--rm", other, "echo", "the other one")
        assert (res.returncode, res.stdout) == (0, "the other one\n"), res.stderr
        top = image.layers[-1].path
        assert os.stat(os.path.join(top, "hi")).st_ino == os.stat(os.path.join(top, "srv/d/hard")).st_ino
        assert os.path.exists(os.path.join(top, "srv/p"))
    finally:
        if any(c.name == name for c in rt.list(all=True)):
            rt.remove(name, force=True)
        _forget(rt, mine, other)
        docker("rmi", mine, other, "busybox", check=False)
