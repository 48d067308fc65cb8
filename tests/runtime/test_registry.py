"""Pull and push with a real registry (Debian's docker-registry on 127.0.0.1,
tests/registry.py): anonymous, htpasswd basic auth and bearer tokens."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import httpx
import pytest

from tests.conftest import cli
from tests.registry import private_registry

pytestmark = [pytest.mark.root]

MT_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
MT_OCI = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class Remote:
    """Blobs and manifests written straight with the distribution API (what
    another tool would have pushed), on top of a busybox pushed by terrarium."""

    def __init__(self, addr: str, base_repo: str, base_blob: dict):
        self.addr, self.base_repo, self.base = addr, base_repo, base_blob
        self.http = httpx.Client(base_url=f"http://{addr}", timeout=30)

    def blob(self, repo: str, data: bytes) -> str:
        d = sha(data)
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        loc = r.headers["location"]
        r = self.http.put(loc + ("&" if "?" in loc else "?") + f"digest={d}", content=data)
        assert r.status_code == 201, r.text
        return d

    def mount_base(self, repo: str) -> None:
        r = self.http.post(f"/v2/{repo}/blobs/uploads/",
                           params={"mount": self.base["digest"], "from": self.base_repo})
        assert r.status_code == 201, r.text

    def manifest(self, repo: str, ref: str, doc: dict, mt: str) -> str:
        data = json.dumps(doc).encode()
        r = self.http.put(f"/v2/{repo}/manifests/{ref}", content=data, headers={"Content-Type": mt})
        assert r.status_code == 201, r.text
        return sha(data)

    def image(self, repo: str, tag: str, layers: list[tuple[bytes, str, str]], *, mt=MT_DOCKER,
              arch="amd64", push_tag=True) -> tuple[str, int]:
        """busybox + layers [(blob bytes, mediaType, diff_id)]; (manifest digest, size)."""
        self.mount_base(repo)
        descs = [{"mediaType": self.base["mediaType"], "digest": self.base["digest"], "size": self.base["size"]}]
        diff_ids = [self.base["digest"]]
        for data, media, diff_id in layers:
            descs.append({"mediaType": media, "digest": self.blob(repo, data), "size": len(data)})
            diff_ids.append(diff_id)
        cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
                          "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        cfg_mt = ("application/vnd.docker.container.image.v1+json" if mt == MT_DOCKER
                  else "application/vnd.oci.image.config.v1+json")
        doc = {"schemaVersion": 2, "mediaType": mt,
               "config": {"mediaType": cfg_mt, "digest": self.blob(repo, cfg), "size": len(cfg)},
               "layers": descs}
        data = json.dumps(doc).encode()
        return self.manifest(repo, tag if push_tag else sha(data), doc, mt), len(data)


@pytest.fixture(scope="module")
def registry():
    with private_registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def remote(rt, registry):
    """busybox pushed by `terrarium push` to base/busybox, and a client for the rest."""
    name = f"{registry.addr}/base/busybox:v1"
    assert cli("tag", "busybox", name).returncode == 0
    r = cli("push", name)
    assert r.returncode == 0, r.stderr
    assert "Pushed" in r.stdout
    busybox = rt.images.get("busybox")
    rem = Remote(registry.addr, "base/busybox",
                 {"digest": busybox.layers[0].digest, "size": None,
                  "mediaType": "application/vnd.oci.image.layer.v1.tar"})
    head = rem.http.head(f"/v2/base/busybox/blobs/{busybox.layers[0].digest}")
    assert head.status_code == 200            # pushed as a plain tar: its digest is the diff_id
    rem.base["size"] = int(head.headers["content-length"])
    yield rem
    rem.http.close()
    rt.remove_image(name)


def _images(rt) -> set[str]:
    return {i.name for i in rt.images.list()}


def test_push_mounts_across_repositories_then_pull_runs(rt, registry, remote, cleanup):
    """A second push of busybox's layer to another repository is mounted, not
    uploaded; a gzip layer on top (Docker schema 2) pulls under a new name and runs."""
    other = f"{registry.addr}/team/bb:v2"
    assert cli("tag", "busybox", other).returncode == 0
    try:
        uploads_before = len(registry.requests("PUT", "/blobs/uploads/"))
        r = cli("push", other)
        assert r.returncode == 0, r.stderr
        assert "Mounted from base/busybox" in r.stdout
        assert any("mount=" in line for line in registry.requests("POST", "/v2/team/bb/blobs/uploads/"))
        # only the config went up (the layer was mounted)
        assert len(registry.requests("PUT", "/blobs/uploads/")) == uploads_before + 1
        again = cli("push", other)
        assert "Layer already exists" in again.stdout
    finally:
        rt.remove_image(other)

    tar = layer_tar({"hello.txt": b"hello from the registry\n"})
    remote.image("apps/hello", "v1", [(gzip.compress(tar), "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                       sha(tar))])
    ref = f"{registry.addr}/apps/hello:v1"
    r = cli("pull", ref)
    assert r.returncode == 0, r.stderr
    assert "Verified" in r.stdout and "Pull complete" in r.stdout
    assert "Already exists" in r.stdout            # busybox's layer is here already
    try:
        run = cli("run", "--rm", ref, "cat", "/hello.txt")
        assert run.returncode == 0, run.stderr
        assert run.stdout == "hello from the registry\n"
        # nothing of the pull is left in the blob cache once the layer is stored
        blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
        assert [f for f in os.listdir(blobs) if not f.endswith(".partial")] == []
    finally:
        rt.remove_image(ref)


def test_manifest_list_picks_the_platform_and_zstd_layers(rt, registry, remote):
    import zstandard
    amd = layer_tar({"arch.txt": b"amd64\n"})
    arm = layer_tar({"arch.txt": b"arm64\n"})
    zc = zstandard.ZstdCompressor()
    d_amd, s_amd = remote.image("multi/app", "", [(zc.compress(amd), "application/vnd.oci.image.layer.v1.tar+zstd",
                                                   sha(amd))], mt=MT_OCI, push_tag=False)
    d_arm, s_arm = remote.image("multi/app", "", [(gzip.compress(arm), "application/vnd.oci.image.layer.v1.tar+gzip",
                                                   sha(arm))], mt=MT_OCI, arch="arm64", push_tag=False)
    remote.manifest("multi/app", "v1", {
        "schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [{"mediaType": MT_OCI, "digest": d_arm, "size": s_arm,
                       "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                      {"mediaType": MT_OCI, "digest": d_amd, "size": s_amd,
                       "platform": {"os": "linux", "architecture": "amd64"}}]}, MT_INDEX)
    ref = f"{registry.addr}/multi/app:v1"
    try:
        r = cli("pull", ref)
        assert r.returncode == 0, r.stderr
        run = cli("run", "--rm", ref, "cat", "/arch.txt")
        assert run.stdout == "amd64\n", run.stderr
        r = cli("pull", "--platform", "linux/arm64", ref)
        assert r.returncode == 0, r.stderr
        assert "moved" in r.stdout                 # the name moved to the arm64 image
        arm_img = rt.images.get(ref)
        with open(os.path.join(arm_img.layers[-1].path, "arch.txt")) as f:
            assert f.read() == "arm64\n"
        r = cli("pull", "--platform", "linux/s390x", ref)
        assert r.returncode == 125
        assert "no image for platform linux/s390x" in r.stderr and "linux/arm64/v8" in r.stderr
        r = cli("pull", "--platform", "linux", ref)
        assert r.returncode == 125 and "invalid platform" in r.stderr
    finally:
        rt.remove_image(ref)
        for image in rt.images.dangling():
            if image.layers[-1].digest in (sha(amd), sha(arm)):
                rt.remove_image(image.id)


def test_pull_by_digest_alone_is_stored_and_shown_under_the_digest(rt, registry, remote):
    """`terrarium pull reg/repo@sha256:...` (no tag; the manifest pushed by
    digest only) names the image by that reference: `images` shows it, `run`
    finds it; `tag` still refuses to write a digest name."""
    tar = layer_tar({"pinned.txt": b"pinned by digest\n"})
    digest, _ = remote.image("pinned/app", "", [(gzip.compress(tar), "application/vnd.oci.image.layer.v1.tar+gzip",
                                                 sha(tar))], mt=MT_OCI, push_tag=False)
    ref = f"{registry.addr}/pinned/app@{digest}"
    try:
        r = cli("pull", ref)
        assert r.returncode == 0, r.stderr
        assert ref in _images(rt)
        assert ref in cli("images").stdout.split()
        run = cli("run", "--rm", ref, "cat", "/pinned.txt")
        assert run.stdout == "pinned by digest\n", run.stderr
        r = cli("tag", "busybox", f"{registry.addr}/pinned/app@sha256:{'0' * 64}")
        assert r.returncode == 125 and "refusing to create a tag with a digest" in r.stderr
    finally:
        rt.remove_image(ref)
    assert ref not in _images(rt)


def test_corrupt_blob_is_refused_and_leaves_nothing(rt, registry, remote):
    tar = layer_tar({"data.bin": os.urandom(200_000)})
    blob = gzip.compress(tar, compresslevel=1)
    remote.image("bad/app", "v1", [(blob, "application/vnd.oci.image.layer.v1.tar+gzip", sha(tar))])
    path = registry.blob_data(sha(blob))
    with open(path, "r+b") as f:                   # same length, other bytes
        f.seek(len(blob) // 2)
        byte = f.read(1)
        f.seek(len(blob) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    layers_before = {la.digest for la in rt.images.layers()}
    ref = f"{registry.addr}/bad/app:v1"
    r = cli("pull", ref)
    assert r.returncode == 125
    assert f"blob {sha(blob)}: digest mismatch" in r.stderr
    assert ref.rsplit("/", 1)[0] + "/app:v1" not in _images(rt)
    with pytest.raises(Exception):
        rt.images.get(ref)
    assert {la.digest for la in rt.images.layers()} == layers_before
    blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
    assert not os.path.exists(os.path.join(blobs, sha(blob)[7:]))
    assert not os.path.exists(os.path.join(blobs, sha(blob)[7:] + ".partial"))


def test_interrupted_pull_resumes_without_refetching(rt, registry, remote, monkeypatch):
    """Cut a pull off in the middle of its second blob: the first (verified)
    is not fetched again, the second continues with a Range request."""
    from runtime.images import distribution
    small = layer_tar({"small.txt": b"small\n"})
    big = layer_tar({"big.bin": os.urandom(24 << 20)})          # incompressible: stays big
    small_gz = gzip.compress(small)
    remote.image("resume/app", "v1", [(small_gz, "application/vnd.oci.image.layer.v1.tar+gzip", sha(small)),
                                      (big, "application/vnd.oci.image.layer.v1.tar", sha(big))])
    ref = f"{registry.addr}/resume/app:v1"
    monkeypatch.setenv("TERRARIUM_PULL_PARALLEL", "1")           # in layer order: small, then big
    monkeypatch.setattr(distribution.Progress, "interval", 0.0)  # every chunk reported: cut at 8 MiB

    class Cut(Exception):
        pass

    def cut(ev):
        if ev.get("id") == sha(big)[7:19] and ev["status"] == "Downloading" and ev["current"] >= 8 << 20:
            raise Cut()
    with pytest.raises(Cut):
        distribution.pull(rt.images, ref, progress=cut)
    assert ref not in _images(rt)
    with pytest.raises(Exception):
        rt.images.get(ref)
    blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
    assert os.path.exists(os.path.join(blobs, sha(small_gz)[7:]))           # kept: verified
    assert os.path.getsize(os.path.join(blobs, sha(big)[7:] + ".partial")) >= 8 << 20
    assert not rt.images.has_layer(sha(small))        # unpacked layers of a failed pull are gone

    events = []
    try:
        image = distribution.pull(rt.images, ref, progress=events.append)
        assert image.layers[-1].digest == sha(big)
        assert {"id": sha(small_gz)[7:19], "status": "Verified earlier", "current": len(small_gz),
                "total": len(small_gz)} in events
        assert len(registry.requests("GET", f"/blobs/{sha(small_gz)}")) == 1     # never again
        big_gets = registry.requests("GET", f"/blobs/{sha(big)}")
        assert len(big_gets) == 2 and '" 206 ' in big_gets[1]                  # the rest only
        sent = int(big_gets[1].split('" 206 ')[1].split()[0])
        assert sent < len(big) - (8 << 20) + (1 << 20)
    finally:
        rt.remove_image(ref)


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_login_push_pull_logout(rt, auth):
    """Basic auth (htpasswd) and the bearer-token flow: a wrong password is
    refused and nothing kept; the right one is kept 0600 as Docker's auths,
    never printed; push and pull use it; logout forgets it."""
    from runtime.images import distribution
    with private_registry(auth) as reg:
        path = distribution.auth_path(rt.root)
        ref = f"{reg.addr}/private/bb:v1"
        assert cli("tag", "busybox", ref).returncode == 0
        try:
            r = cli("push", ref)
            assert r.returncode == 125 and ("unauthorized" in r.stderr or "access denied" in r.stderr), r.stderr
            bad = cli("login", "-u", reg.user, "--password-stdin", reg.addr, input="wrong\n")
            assert bad.returncode == 125
            assert "incorrect username or password" in bad.stderr
            assert reg.addr not in distribution._read_auths(rt.root)
            ok = cli("login", "-u", reg.user, "--password-stdin", reg.addr, input=reg.password + "\n")
            assert ok.returncode == 0, ok.stderr
            assert reg.password not in ok.stdout + ok.stderr
            assert os.stat(path).st_mode & 0o777 == 0o600
            with open(path) as f:
                entry = json.load(f)["auths"][reg.addr]
            import base64
            assert base64.b64decode(entry["auth"]).decode() == f"{reg.user}:{reg.password}"
            r = cli("push", ref)
            assert r.returncode == 0, r.stderr
            pulled = f"{reg.addr}/private/bb:again"
            # pull back under another name: a fresh tag in the registry, the same layers
            r = cli("tag", ref, pulled)
            assert cli("push", pulled).returncode == 0
            rt.remove_image(pulled)
            r = cli("pull", pulled)
            assert r.returncode == 0, r.stderr
            assert rt.images.get(pulled).id == rt.images.get(ref).id
            rt.remove_image(pulled)
            for line in reg.log().splitlines():            # never in a URL the registry saw
                assert reg.password not in line
            with open(os.path.join(rt.root, "audit.log")) as f:   # the CLI's records: no password
                audit = f.read()
            assert reg.password not in audit
            records = [json.loads(line) for line in audit.splitlines()]
            assert {(r["verb"], r["target"], r["result"]) for r in records} >= {
                ("registry-login", reg.addr, "error"), ("registry-login", reg.addr, "ok"),
                ("push", ref, "ok"), ("pull", pulled, "ok")}
            if auth == "token":
                scopes = [s for _sub, ss in reg.token_server.issued for s in ss]
                assert "repository:private/bb:pull,push" in scopes
                assert any(sub == reg.user for sub, _ in reg.token_server.issued)
            out = cli("logout", reg.addr)
            assert out.returncode == 0 and "Removing login credentials" in out.stdout
            assert reg.addr not in distribution._read_auths(rt.root)
            r = cli("pull", ref)
            assert r.returncode == 125
        finally:
            for n in (ref, f"{reg.addr}/private/bb:again"):
                try:
                    rt.remove_image(n)
                except Exception:
                    pass
            distribution.logout(rt.root, reg.addr)


def test_pull_and_push_through_the_agent(rt, registry, remote, session_root):
    """The agent's pull verb: arguments checked, progress streamed, the image
    in the store, the audit line names the reference (and no credential)."""
    from runtime.agent_client import AgentRuntime
    from runtime.errors import InvalidArgument
    tar = layer_tar({"agent.txt": b"through the agent\n"})
    remote.image("agent/app", "v1", [(gzip.compress(tar), "application/vnd.oci.image.layer.v1.tar+gzip",
                                      sha(tar))], mt=MT_OCI)
    ref = f"{registry.addr}/agent/app:v1"
    art = AgentRuntime(session_root, user="registry-test")
    try:
        with pytest.raises(InvalidArgument, match="invalid platform"):
            art.pull_image(ref, platform="linux/amd64; rm -rf /")
        with pytest.raises(InvalidArgument, match="invalid reference format"):
            art.pull_image("Bad//Ref")
        events = []
        image = art.pull_image(ref, progress=events.append)
        assert image.name == ref and image.layers[-1].digest == sha(tar)
        statuses = [e["status"] for e in events]
        assert "Downloading" in statuses or "Verified" in statuses
        assert statuses[-1] == "done" and "Pull complete" in statuses
        pushed = f"{registry.addr}/agent/copy:v1"
        art.tag_image(ref, pushed)
        digest = art.push_image(pushed, progress=events.append)
        assert digest.startswith("sha256:")
        with open(os.path.join(session_root, "audit.log")) as f:
            audit = [json.loads(line) for line in f if '"registry-test"' in line]
        assert {(a["verb"], a["target"], a["result"]) for a in audit} >= {
            ("pull", ref, "ok"), ("push", pushed, "ok"), ("tag", pushed, "ok")}
        pulled = next(a for a in audit if a["verb"] == "pull" and a["result"] == "ok")
        assert pulled["change"] == {"image": [None, image.id]}        # the name was new
    finally:
        for n in (ref, f"{registry.addr}/agent/copy:v1"):
            try:
                rt.remove_image(n)
            except Exception:
                pass
        art.close()


def test_gzip_reader_members_padding_and_damage():
    """The pull's gzip reader: every member of a multi-member gzip, zero
    padding after it allowed, a cut or a bad CRC refused (as zlib checks)."""
    from runtime.images.tarsafe import Decompressed, decompress_errors
    a, b = os.urandom(1 << 20) * 2, b"x" * (2 << 20)
    blob = gzip.compress(a) + gzip.compress(b) + bytes(1024)

    def read_all(data: bytes) -> bytes:
        return b"".join(Decompressed(io.BytesIO(data), "gzip").chunks())
    assert read_all(blob) == a + b
    with pytest.raises(EOFError):
        read_all(gzip.compress(a)[:-100])
    bad = bytearray(gzip.compress(a))
    bad[-6] ^= 0xFF                                                    # the CRC32 in the trailer
    with pytest.raises(decompress_errors()):
        read_all(bytes(bad))
    with pytest.raises(decompress_errors()):
        read_all(gzip.compress(a) + b"garbage")


def test_pull_killed_halfway_resumes(rt, registry, remote):
    """`kill -9` of a `terrarium pull` once its first blob is verified: no
    image, the verified blob kept; the next pull does not fetch it again."""
    import signal
    import subprocess

    from tests.conftest import CLI
    small = layer_tar({"small.txt": b"small, killed\n"})       # not a layer the store has
    big = layer_tar({"big.bin": os.urandom(32 << 20)})
    small_gz = gzip.compress(small)
    remote.image("kill/app", "v1", [(small_gz, "application/vnd.oci.image.layer.v1.tar+gzip", sha(small)),
                                    (big, "application/vnd.oci.image.layer.v1.tar", sha(big))])
    ref = f"{registry.addr}/kill/app:v1"
    env = {**os.environ, "TERRARIUM_PULL_PARALLEL": "1", "TERRARIUM_CLI_LOCAL": "1"}
    proc = subprocess.Popen([CLI, "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        for line in proc.stdout:
            if line.startswith(sha(small_gz)[7:19]) and "Verified" in line:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert ref not in _images(rt)
    blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
    assert os.path.exists(os.path.join(blobs, sha(small_gz)[7:]))
    try:
        r = cli("pull", ref)
        assert r.returncode == 0, r.stderr
        assert f"{sha(small_gz)[7:19]}: Verified earlier" in r.stdout
        assert len(registry.requests("GET", f"/blobs/{sha(small_gz)}")) == 1
        assert rt.images.get(ref).layers[-1].digest == sha(big)
    finally:
        rt.remove_image(ref)


def test_two_pulls_of_one_image_at_once_both_finish(rt, registry, remote):
    """Two processes pull the same layers at once (each unpacks a blob while
    it downloads, holding the blob's flock, and takes the store's lock to put
    a layer in): both end, one layer each, nothing left in the blob cache."""
    import subprocess

    from tests.conftest import CLI
    tars = [layer_tar({f"part{i}.bin": os.urandom(3 << 20)}) for i in range(3)]
    gzs = [gzip.compress(t, compresslevel=1) for t in tars]
    remote.image("twice/app", "v1", [(g, "application/vnd.oci.image.layer.v1.tar+gzip", sha(t))
                                     for g, t in zip(gzs, tars)])
    ref = f"{registry.addr}/twice/app:v1"
    env = {**os.environ, "TERRARIUM_CLI_LOCAL": "1"}
    procs = [subprocess.Popen([CLI, "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        image = rt.images.get(ref)
        assert [la.digest for la in image.layers[1:]] == [sha(t) for t in tars]
        blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
        assert [f for f in os.listdir(blobs) if f.startswith(tuple(sha(g)[7:] for g in gzs))] == []
        assert len(registry.requests("GET", f"/blobs/{sha(gzs[0])}")) in (1, 2)   # each fetched at most once a pull
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        rt.remove_image(ref)


def test_image_gc_sweeps_blobs_of_abandoned_pulls(rt, tmp_path):
    """Verified or partial blobs a pull left a day ago go with image-gc;
    newer ones (a pull may come back for them) stay."""
    import time

    from runtime.images import distribution
    blobs = os.path.join(rt.root, "distribution", "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    old, new = os.path.join(blobs, "a" * 64), os.path.join(blobs, "b" * 64 + ".partial")
    for p in (old, new):
        with open(p, "wb") as f:
            f.write(b"x")
    day_ago = time.time() - 86400 - 60
    os.utime(old, (day_ago, day_ago))
    rt.image_gc()
    assert not os.path.exists(old) and os.path.exists(new)
    assert "b" * 64 + ".partial" in distribution.sweep(rt.root, max_age=0)
