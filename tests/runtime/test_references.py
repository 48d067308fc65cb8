"""Image references as Docker parses them, and names that move instead of
being overwritten.

The parser's table is Docker's (`distribution/reference`); the end-to-end
cases use real peers: skopeo writes a docker-archive tagged the long way
(`docker.io/library/NAME:v2`) and the CLI runs it by its short name.
"""
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from runtime.errors import InvalidArgument, NotFound
from runtime.images import ImageStore, importers, reference
from runtime.model import ImageConfig
from tests.conftest import cli

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="apt-get install skopeo")


@pytest.mark.parametrize("ref, full, key", [
    ("busybox", "docker.io/library/busybox:latest", "busybox"),
    ("busybox:latest", "docker.io/library/busybox:latest", "busybox"),
    ("barsumoci:v2", "docker.io/library/barsumoci:v2", "barsumoci:v2"),
    ("docker.io/library/barsumoci:v2", "docker.io/library/barsumoci:v2", "barsumoci:v2"),
    ("index.docker.io/library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox"),
    ("user/app:1.0", "docker.io/user/app:1.0", "user/app:1.0"),
    ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x"),
    ("localhost/x:v1", "localhost/x:v1", "localhost/x:v1"),
    ("registry.example.com:443/team/app:v1.2_3", "registry.example.com:443/team/app:v1.2_3",
     "registry.example.com:443/team/app:v1.2_3"),
    ("ghcr.io/a/b__c-d.e", "ghcr.io/a/b__c-d.e:latest", "ghcr.io/a/b__c-d.e"),
    ("a--b", "docker.io/library/a--b:latest", "a--b"),
    ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64,
     "busybox@sha256:" + "a" * 64),                     # a pull by digest alone: stored so
    ("busybox:1@sha256:" + "b" * 64, "docker.io/library/busybox:1@sha256:" + "b" * 64, "busybox:1"),
])
def test_references_parse_as_docker_does(ref, full, key):
    r = reference.parse(ref)
    assert (r.full, r.key) == (full, key)
    assert reference.parse(r.full) == r          # the long form reads back the same


def test_short_forms_are_the_ones_docker_shows():
    assert reference.parse("docker.io/library/busybox").familiar == "busybox:latest"
    assert reference.parse("docker.io/user/app:1").familiar == "user/app:1"
    assert reference.parse("localhost:5000/x").familiar == "localhost:5000/x:latest"
    assert reference.shown("busybox") == "busybox:latest"


@pytest.mark.parametrize("ref, message", [
    ("Busybox", r"invalid reference format: repository name \(Busybox\) must be lowercase"),
    ("user/App:1", r"repository name \(user/App\) must be lowercase"),
    ("-x", "invalid reference format"),
    ("a/../b", "invalid reference format"),
    ("../x", "invalid reference format"),
    ("a:b:c", "invalid reference format"),
    ("a b", "invalid reference format"),
    ("a/", "invalid reference format"),
    ("a_", "invalid reference format"),
    ("x:" + "t" * 129, "invalid reference format"),
    ("x:-tag", "invalid reference format"),
    ("x@sha256:abc", "invalid reference format"),
    ("x@md5:" + "a" * 32, "only sha256"),
    ("ünï", "invalid reference format"),
    ("x\0y", "invalid reference format"),
    ("", "invalid reference format: the image reference is empty"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("a/" * 127 + "abc", "must not be more than 255 characters"),
    ("-bad.host:5000/x", "invalid reference format"),
])
def test_invalid_references_get_dockers_kind_of_message(ref, message):
    with pytest.raises(InvalidArgument, match=message):
        reference.parse(ref)


def test_a_digest_reference_names_no_image():
    with pytest.raises(InvalidArgument, match="refusing to create a tag with a digest reference"):
        reference.parse_name("x@sha256:" + "c" * 64)


# --- the store -------------------------------------------------------------

def layer_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("f")
        ti.size, ti.mode, ti.mtime = len(content), 0o644, 1_600_000_000
        tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "root")


@root_only
def test_every_spelling_finds_the_one_image(store):
    layer = store.add_layer_from_tar(io.BytesIO(layer_tar(b"x")))
    img = store.add_image("docker.io/library/app:v2", [layer.digest])
    assert img.name == "app:v2" and img.id.startswith("sha256:")
    for ref in ("app:v2", "docker.io/library/app:v2", "index.docker.io/library/app:v2",
                "docker.io/app:v2", img.id, img.id[7:19], img.id[7:], f"app@{img.id}"):
        assert store.get(ref) == img, ref
    assert os.path.exists(os.path.join(store.images_dir, "app:v2.json"))
    with pytest.raises(NotFound, match="image 'app' not found"):
        store.get("app")                           # :latest is another name
    reg = store.add_image("localhost:5000/team/app", [layer.digest])
    assert store.get("localhost:5000/team/app:latest") == reg
    assert [i.name for i in store.list()] == ["app:v2", "localhost:5000/team/app"]


@root_only
def test_records_written_under_the_old_names_still_work(store):
    """Before the parser, an archive's RepoTags were kept as written: such a
    record is read under its short name (normalised on read), and the next
    write of that name replaces it."""
    layer = store.add_layer_from_tar(io.BytesIO(layer_tar(b"old")))
    rec = store._record("olds:v2", [layer.digest])
    legacy = os.path.join(store.images_dir, "docker.io/library/olds:v2.json")
    os.makedirs(os.path.dirname(legacy))
    with open(legacy, "w") as f:
        json.dump({k: v for k, v in rec.items() if k not in ("id", "name")}
                  | {"name": "docker.io/library/olds:v2"}, f)
    img = store.get("olds:v2")
    assert img.name == "olds:v2" and img.id == rec["id"]
    assert [i.name for i in store.list()] == ["olds:v2"]
    other = store.add_layer_from_tar(io.BytesIO(layer_tar(b"new")))
    moved = store.add_image("docker.io/library/olds:v2", [other.digest])
    assert moved.replaced == rec["id"]
    assert not os.path.exists(legacy)
    assert [i.name for i in store.list()] == ["olds:v2"]
    assert store.get(rec["id"]).layers == (layer,)   # the old one, by id


@root_only
def test_a_moved_name_keeps_the_old_image_by_id_until_gc(store):
    a = store.add_layer_from_tar(io.BytesIO(layer_tar(b"a")))
    b = store.add_layer_from_tar(io.BytesIO(layer_tar(b"b")))
    first = store.add_image("app", [a.digest], ImageConfig(cmd=("one",)))
    assert first.replaced == ""
    again = store.add_image("app", [a.digest], ImageConfig(cmd=("one",)), created=first.created)
    assert again.replaced == "" and again.id == first.id     # the same image: nothing moves
    second = store.add_image("app", [b.digest], ImageConfig(cmd=("two",)))
    assert second.replaced == first.id != second.id
    assert store.get("app") == second._replace(replaced="")
    old = store.get(first.id[7:19])
    assert (old.name, old.id, old.config.cmd) == ("", first.id, ("one",))
    assert [i.id for i in store.dangling()] == [first.id]
    assert store.gc(used_layers={a.digest}) == []          # a container runs its layers: kept
    assert store.gc() == [first.id, a.digest]
    with pytest.raises(NotFound):
        store.get(first.id)
    assert store.get("app").id == second.id


@root_only
def test_a_name_moved_off_an_image_another_name_holds_leaves_no_dangling_copy(store):
    a = store.add_layer_from_tar(io.BytesIO(layer_tar(b"a")))
    b = store.add_layer_from_tar(io.BytesIO(layer_tar(b"b")))
    first = store.add_image("app", [a.digest], created=1.0)
    store.add_image("keep", [a.digest], created=1.0)
    assert store.get("keep").id == first.id
    moved = store.add_image("app", [b.digest])
    assert moved.replaced == first.id and store.dangling() == []
    assert store.get(first.id).name == "keep"


@root_only
def test_an_ambiguous_id_prefix_is_refused(store):
    """Two images whose ids share a prefix (records written with those ids):
    the shared prefix is refused, a longer one finds each."""
    layer = store.add_layer_from_tar(io.BytesIO(layer_tar(b"x")))
    ids = ["sha256:abcd1" + "0" * 59, "sha256:abcd2" + "0" * 59]
    for i, image_id in enumerate(ids):
        rec = store._record(f"amb{i}", [layer.digest]) | {"id": image_id}
        with open(store._image_path(f"amb{i}"), "w") as f:
            json.dump(rec, f)
    with pytest.raises(InvalidArgument, match="image id prefix 'abcd' is ambiguous: it matches 2"):
        store.get("abcd")
    assert store.get("abcd2").name == "amb1" and store.get("sha256:abcd1").name == "amb0"


# --- end to end ------------------------------------------------------------

@root_only
@needs_skopeo
def test_a_long_named_archive_runs_by_its_short_name(rt, name, cleanup, tmp_path):
    """The issue's case: skopeo's docker-archive says docker.io/library/NAME:v2;
    `terrarium run NAME:v2` runs it.  Loading it again with other content
    moves the name: the CLI says so, the old image runs by id, and image-gc
    collects it.  (The agent's audit of a move: test_agent.py.)"""
    repo = f"barsum-{name.rsplit('-', 1)[-1]}"
    bb = tmp_path / "busybox.tar"
    importers.save(rt.images, "busybox", bb)
    side = ImageStore(tmp_path / "side")        # busybox's layer, a config of its own
    [loaded] = importers.load(side, bb)
    side.add_image("src", [layer.digest for layer in loaded.layers], ImageConfig(cmd=("sh",)),
                   created=1_700_000_000.0)
    oci = tmp_path / "src.tar"
    importers.save(side, "src", oci)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    arch = tmp_path / "d.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{oci}",
                    f"docker-archive:{arch}:docker.io/library/{repo}:v2"],
                   check=True, env=env, capture_output=True)
    manifest = json.loads(subprocess.run(["tar", "-xOf", str(arch), "manifest.json"],
                                         check=True, capture_output=True).stdout)
    assert manifest[0]["RepoTags"] == [f"docker.io/library/{repo}:v2"]
    try:
        res = cli("load", "-i", str(arch))
        assert (res.returncode, res.stdout) == (0, f"Loaded image: {repo}:v2\n"), res.stderr
        cleanup.append(name)
        res = cli("run", "--name", name, f"{repo}:v2", "echo", "short name runs")
        assert (res.returncode, res.stdout) == (0, "short name runs\n"), res.stderr
        first = rt.images.get(f"{repo}:v2")
        res = cli("images")
        assert any(line.split()[:2] == [f"{repo}:v2", first.id[7:19]]
                   for line in res.stdout.splitlines()), res.stdout

        # commit onto the name: it moves, the old image stays by id
        res = cli("commit", name, f"docker.io/library/{repo}:v2")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == (
            f"The image {repo}:v2 already exists, renaming the old one with ID {first.id} "
            "to empty string (kept by id until image-gc)")
        second = rt.images.get(f"{repo}:v2")
        assert second.id != first.id and len(second.layers) == 2
        res = cli("images")
        assert any(line.split()[:2] == ["<none>", first.id[7:19]]
                   for line in res.stdout.splitlines()), res.stdout
        cleanup.append(f"{name}-old")
        res = cli("run", "--name", f"{name}-old", first.id[7:19], "echo", "by id")
        assert (res.returncode, res.stdout) == (0, "by id\n"), res.stderr
        rt.remove(f"{name}-old", force=True)
        rt.remove(name, force=True)
        # load the first archive again: the name moves back
        res = cli("load", "-i", str(arch))
        assert res.stdout.splitlines() == [
            f"The image {repo}:v2 already exists, renaming the old one with ID {second.id} "
            "to empty string (kept by id until image-gc)", f"Loaded image: {repo}:v2"], res.stderr
        assert rt.images.get(f"{repo}:v2").id == first.id
        assert rt.images.get(second.id).name == ""
        res = cli("image-gc")
        assert f"Deleted: {second.id}" in res.stdout.splitlines(), res.stdout
        with pytest.raises(NotFound):
            rt.images.get(second.id)
        res = cli("run", "--rm", "Barsum:v2", "true")
        assert (res.returncode, res.stderr.strip()) == (
            125, "terrarium: error: invalid reference format: repository name (Barsum) must be lowercase")
    finally:
        for ref in (f"{repo}:v2",):
            try:
                rt.remove_image(ref, force=True)
            except NotFound:
                pass
