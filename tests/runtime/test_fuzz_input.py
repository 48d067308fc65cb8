"""Fuzz-style bad input: a few hundred malformed archives and argument strings.

Archives are random mutations of a valid two-layer docker-archive and OCI
layout (JSON shape swaps with digests kept consistent, truncations, random
bytes, wrong digests, missing members, compressed variants).  Each must
either import or be refused with one InvalidArgument line, and a refused
one leaves the store exactly as it was: the base layer another image
shares is never removed, and layers/, images/ and tmp/ hold what they held.
Argument strings (memory, cpus, pids, names, env, hostname, workdir) with
Unicode digits and spaces, NUL, newlines and huge numbers go through
runtime.spec and the Runtime API; a sample of both goes through the real
`terrarium` command (exit 125, one line, no traceback).

Seeded: a failure names its case and replays.
"""
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import tarfile

import pytest

from runtime import InvalidArgument, Limits, Spec, TerrariumError
from runtime.images import ImageStore, importers
from runtime.spec import MAX_BYTES, MAX_PIDS, MIN_MEMORY, host_cpus, make_limits, make_spec
from tests.conftest import cli

SEED = 20261130
POOL = [1, -1, 2 ** 70, 1.5, None, True, "x", "", [], [1], {}, {"a": 1}, [[]], [{}],
        "sha256:" + "0" * 64, "sha256:../../x", "\0", "\u0666\u0664", "../../etc", {"digest": 1}]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_600_000_000
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


BASE = layer_tar("base.txt", b"shared base layer\n")
TOP = layer_tar("top.txt", b"the top layer, new to the store\n" * 50)


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for n, b in files.items():
            ti = tarfile.TarInfo(n)
            ti.size, ti.mode = len(b), 0o644
            tf.addfile(ti, io.BytesIO(b))
    return buf.getvalue()


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def config_doc():
    return {"architecture": "amd64", "os": "linux", "created": "2024-05-06T07:08:09Z",
            "config": {"Cmd": ["sh"], "Env": ["A=1"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [sha(BASE), sha(TOP)]},
            "history": [{"created_by": "base"}, {"created_by": "top"}]}


def docker_files(swap=None) -> dict[str, bytes]:
    """A docker save archive's members; swap(doc_name, obj) may return a changed obj."""
    swap = swap or (lambda _n, o: o)
    cfg = dumps(swap("config", config_doc()))
    cfg_path = f"{hashlib.sha256(cfg).hexdigest()}.json"
    manifest = swap("manifest", [{"Config": cfg_path, "RepoTags": ["fuzz/docker:1"],
                                  "Layers": ["0" * 64 + "/layer.tar", "1" * 64 + "/layer.tar"]}])
    return {"0" * 64 + "/layer.tar": BASE, "1" * 64 + "/layer.tar": TOP, cfg_path: cfg,
            "manifest.json": dumps(manifest)}


def oci_files(swap=None) -> dict[str, bytes]:
    """An OCI layout's members, digests recomputed after each swap."""
    swap = swap or (lambda _n, o: o)
    cfg = dumps(swap("config", config_doc()))
    manifest = dumps(swap("manifest", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg),
                   "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(b),
                    "size": len(b)} for b in (BASE, TOP)]}))
    index = swap("index", {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "fuzz/oci:1"}}]})
    files = {"oci-layout": dumps(swap("oci-layout", {"imageLayoutVersion": "1.0.0"})),
             "index.json": dumps(index)}
    for b in (BASE, TOP, cfg, manifest):
        files[f"blobs/sha256/{sha(b)[7:]}"] = b
    return files


def random_swap(rng: random.Random, target: str):
    """Replace one value somewhere inside `target`'s JSON (or the whole of it),
    or delete one key: a shape the importer must name, not trip over."""
    def swap(name, obj):
        if name != target:
            return obj
        if rng.random() < 0.2:
            return rng.choice(POOL)
        nodes = []                                   # (container, key) of every value

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    nodes.append((o, k))
                    walk(v)
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    nodes.append((o, i))
                    walk(v)
        walk(obj)
        if not nodes:
            return rng.choice(POOL)
        parent, key = rng.choice(nodes)
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[key]
        else:
            parent[key] = rng.choice(POOL)
        return obj
    return swap


def deep_index_files(depth: int) -> dict[str, bytes]:
    """An OCI layout whose index points at an index ... `depth` times."""
    files = oci_files()
    index = json.loads(files["index.json"])
    desc = index["manifests"][0]
    for _ in range(depth):
        doc = dumps({"schemaVersion": 2,
                     "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]})
        files[f"blobs/sha256/{sha(doc)[7:]}"] = doc
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(doc),
                "size": len(doc)}
    files["index.json"] = dumps({"schemaVersion": 2, "manifests": [desc]})
    return files


def byte_mutation(rng: random.Random, data: bytes) -> bytes:
    how = rng.choice(["truncate", "overwrite", "flip", "gzip-truncate", "xz-truncate", "gzip-garbage"])
    if how == "truncate":
        return data[:rng.randrange(len(data))]
    if how == "overwrite":
        at = rng.randrange(len(data))
        n = rng.randrange(1, 600)
        return data[:at] + rng.randbytes(n) + data[at + n:]
    if how == "flip":
        b = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if how == "gzip-truncate":
        z = gzip.compress(data, mtime=0)
        return z[:rng.randrange(10, len(z))]
    if how == "xz-truncate":
        z = lzma.compress(data)
        return z[:rng.randrange(10, len(z))]
    return gzip.compress(rng.randbytes(rng.randrange(1, 4096)), mtime=0)


def member_mutation(rng: random.Random, files: dict[str, bytes]) -> dict[str, bytes]:
    """Drop a member, rename a blob (wrong digest), or change a blob's bytes."""
    files = dict(files)
    name = rng.choice(sorted(files))
    how = rng.choice(["drop", "rename", "change"])
    if how == "drop":
        del files[name]
    elif how == "rename":
        files[name.rsplit("/", 1)[0] + "/" + "f" * 64 if "/" in name else "f" * 64] = files.pop(name)
    else:
        files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1]) if files[name] else b"x"
    return files


def named_cases() -> list[tuple[str, bytes]]:
    """The shapes the security review named, each by itself."""
    def docker_manifest(m):
        return tar_of({**docker_files(), "manifest.json": m})

    def oci(**docs):
        return tar_of(oci_files(lambda n, o: docs.get(n, o)))
    return [
        ("manifest [1]", docker_manifest(b"[1]")),
        ("manifest [Config 1]", docker_manifest(b'[{"Config": 1}]')),
        ("manifest {}", docker_manifest(b"{}")),
        ("manifest []", docker_manifest(b"[]")),
        ("manifest not JSON", docker_manifest(b"\x00not json")),
        ("manifest deep nesting", docker_manifest(b"[" * 100_000 + b"]" * 100_000)),
        ("index manifests [1]", oci(index={"manifests": [1]})),
        ("index manifests [{}]", oci(index={"manifests": [{}]})),
        ("oci-layout []", oci(**{"oci-layout": []})),
        ("deep index", tar_of(deep_index_files(50))),
        ("missing blob", tar_of({k: v for k, v in oci_files().items() if sha(TOP)[7:] not in k})),
        ("wrong digest", tar_of({k.replace(sha(TOP)[7:], "e" * 64): v for k, v in oci_files().items()})),
        ("not a tar", os.urandom(3000)),
        ("empty file", b""),
        ("truncated gzip", gzip.compress(tar_of(oci_files()), mtime=0)[:300]),
        ("bzip2 garbage", b"BZh9" + os.urandom(500)),
        ("truncated xz", lzma.compress(tar_of(docker_files()))[:400]),
    ]


def generated_cases(n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    cases = []
    for i in range(n):
        kind = rng.choice(["docker", "oci"])
        build = docker_files if kind == "docker" else oci_files
        targets = ["config", "manifest"] + (["index", "oci-layout"] if kind == "oci" else [])
        style = rng.choice(["shape", "shape", "bytes", "member"])
        if style == "shape":
            target = rng.choice(targets)
            data = tar_of(build(random_swap(rng, target)))
        elif style == "member":
            data = tar_of(member_mutation(rng, build()))
        else:
            data = byte_mutation(rng, tar_of(build()))
        cases.append((f"{i}-{kind}-{style}", data))
    return cases


CASES = named_cases() + generated_cases(300)


def snapshot(store: ImageStore) -> dict[str, set]:
    out = {}
    for d in (store.layers_dir, store.images_dir, store.tmp_dir):
        found = set()
        for dirpath, dirs, files in os.walk(d):
            for n in dirs + files:
                found.add(os.path.relpath(os.path.join(dirpath, n), d))
            if dirpath != d and d == store.layers_dir:
                dirs[:] = []                         # a layer's top directory is enough
        out[os.path.basename(d)] = found
    return out


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory):
    """A store that already holds BASE, used by an image of its own."""
    store = ImageStore(tmp_path_factory.mktemp("fuzz") / "root")
    base = store.add_layer_from_tar(io.BytesIO(BASE), "base")
    store.add_image("fuzz/base", [base.digest])
    return store


def test_malformed_archives_are_one_clear_error_and_leave_nothing(seeded_store, tmp_path):
    store = seeded_store
    before = snapshot(store)
    refused = 0
    for case, data in CASES:
        path = tmp_path / "case.tar"
        path.write_bytes(data)
        try:
            images = importers.load(store, path)
        except InvalidArgument as e:
            refused += 1
            msg = str(e)
            assert msg and "\n" not in msg and len(msg) < 600, (case, msg)
            assert snapshot(store) == before, case
            continue
        except TerrariumError as e:            # any other refusal is a wrong kind of error
            pytest.fail(f"{case}: {type(e).__name__}: {e}")
        # a mutation that still is a valid archive: undo it, so the next case starts equal
        for image in images:
            store.remove_image(image.name)
        store.gc({layer.digest for layer in store.get("fuzz/base").layers})
        assert snapshot(store) == before, case
    assert store.get("fuzz/base").layers[0].digest == sha(BASE)
    assert refused >= len(CASES) * 0.8, refused


def test_named_shapes_are_refused(seeded_store, tmp_path):
    for case, data in named_cases():
        path = tmp_path / "case.tar"
        path.write_bytes(data)
        with pytest.raises(InvalidArgument):
            importers.load(seeded_store, path)


# --- arguments --------------------------------------------------------------

def argument_strings(rng: random.Random, n: int) -> list[str]:
    parts = ["0", "1", "9", "64", "6", "00", ".", "5", "\u0666", "\u0664", "\uff11", "\U0001d7d9",
             "k", "m", "g", "t", "b", "kb", "mib", "e", "e9", "x", "-", "+", "_", " ", "\t", "\n",
             "\u00a0", "\u2003", "\0", "nan", "inf", "0x", "99999999999999999999", "18446744073709555712",
             "\u202e", "\u0435", "w", "A", "=", "/", "..", "\udcff"]
    return ["".join(rng.choice(parts) for _ in range(rng.randrange(1, 6))) for _ in range(n)]


def test_argument_strings_are_refused_or_sane():
    rng = random.Random(SEED)
    cpus = host_cpus()
    for text in argument_strings(rng, 600):
        bad_chars = not text.isascii() or any(c in text for c in "\0\n")
        for field in ("memory", "cpus", "pids"):
            try:
                limits = make_limits(**{field: text})
            except InvalidArgument as e:
                assert "\n" not in str(e), (field, text)
                continue
            value = getattr(limits, field)
            assert not bad_chars, (field, text, value)
            if field == "memory":
                assert isinstance(value, int) and MIN_MEMORY <= value <= MAX_BYTES, (text, value)
            elif field == "cpus":
                assert 0.01 <= value <= cpus, (text, value)
            else:
                assert 1 <= value <= MAX_PIDS, (text, value)
        for kw in ({"name": text}, {"hostname": text}, {"env": [f"{text}=v"]}, {"env": [f"K={text}"]},
                   {"workdir": "/" + text}, {"cmd": ["sh", text]}):
            try:
                spec = make_spec(image="busybox", **kw)
            except InvalidArgument as e:
                assert "\n" not in str(e), (kw, text)
                continue
            value = json.dumps(spec._asdict())
            assert "\\u0000" not in value, (kw, text)
            checked = kw.get("name") or kw.get("hostname") or kw.get("env", ["="])[0].partition("=")[0]
            assert checked.isascii() and "\n" not in checked, (kw, text)


@pytest.mark.parametrize("text, expected", [
    ("99999999999999999999999999999999", "2^63-1"),
    ("18446744073709555712", "2^63-1"),             # 2^64 + 4096: the kernel would wrap it to 4 KiB
    ("18446744073709551616k", "2^63-1"),
    ("\u0666\u0664m", "invalid memory limit"),
    ("64m\n", "invalid memory limit"),
    ("64\u00a0m", "invalid memory limit"),
])
def test_memory_values_the_kernel_cannot_hold_are_refused(text, expected):
    with pytest.raises(InvalidArgument, match=expected.replace("^", r"\^")):
        make_limits(memory=text)


def test_sizes_are_exact_integers():
    assert make_limits(memory="9223372036854775807").memory == MAX_BYTES
    assert make_limits(memory="1.5g").memory == 3 << 29
    assert make_limits(memory="8191.9999999999999999999t").memory == (8192 << 40) - 1


def test_cpus_above_the_host_are_refused_as_docker_does():
    n = host_cpus()
    assert make_limits(cpus=str(n)).cpus == n
    with pytest.raises(InvalidArgument, match=rf"from 0.01 to {n}\.00, as there are only {n} CPUs"):
        make_limits(cpus=str(n + 1))


def test_the_api_checks_a_spec_made_by_hand(rt):
    before = sorted(os.listdir(rt.containers_dir))
    bad = [Spec(image="busybox", name="w\u0435b", cmd=("true",)),
           Spec(image="busybox", cmd=("true", "a\0b")),
           Spec(image="busybox", env=("A=\0",), cmd=("true",)),
           Spec(image="busybox", hostname="h\0", cmd=("true",)),
           Spec(image="busybox", workdir="/a\0b", cmd=("true",)),
           Spec(image="busybox\0", cmd=("true",)),
           Spec(image="busybox", limits=Limits(memory=2 ** 64 + 4096), cmd=("true",)),
           Spec(image="busybox", limits=Limits(cpus=1e9), cmd=("true",)),
           Spec(image="busybox", limits=Limits(pids=2 ** 40), cmd=("true",))]
    for spec in bad:
        with pytest.raises(InvalidArgument):
            rt.create(spec)
    with pytest.raises(TerrariumError):
        rt.inspect("a\0b")
    assert sorted(os.listdir(rt.containers_dir)) == before


# --- a sample through the real command --------------------------------------

def one_clear_line(r) -> bool:
    return (r.returncode == 125 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
            and r.stderr.startswith("terrarium"))


@pytest.mark.parametrize("args", [
    ["--memory", "18446744073709555712"], ["--memory", "\u0666\u0664m"], ["--cpus", "4096"],
    ["--pids", str(2 ** 40)], ["--name", "w\u0435b"], ["--hostname", "h\u202eost"],
    ["-e", "K\u0435Y=1"], ["-w", "relative"], ["--bogus-flag"],
])
def test_bad_arguments_through_the_cli(rt, args):
    before = sorted(os.listdir(rt.containers_dir))
    r = cli("run", *args, "busybox", "true")
    assert one_clear_line(r), (args, r.returncode, r.stderr)
    assert sorted(os.listdir(rt.containers_dir)) == before


def test_malformed_archives_through_the_cli(rt, tmp_path):
    scratch = ImageStore(tmp_path / "scratch")
    refused = []
    for case, data in random.Random(SEED + 1).sample(generated_cases(300), 40):
        (tmp_path / "case.tar").write_bytes(data)
        try:
            for image in importers.load(scratch, tmp_path / "case.tar"):
                scratch.remove_image(image.name)
        except InvalidArgument:
            refused.append((case, data))
    before = snapshot(rt.images)
    for case, data in named_cases() + refused[:6]:
        path = tmp_path / "case.tar"
        path.write_bytes(data)
        r = cli("load", "-i", str(path))
        assert one_clear_line(r), (case, r.returncode, r.stderr)
        assert snapshot(rt.images) == before, case


def test_exec_checks_its_arguments(rt, name, cleanup):
    cleanup.append(name)
    rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    for kw in ({"argv": ["sh", "a\0b"]}, {"argv": ["true"], "env": ["A=\0"]},
               {"argv": ["true"], "env": ["K\u0435Y=1"]}, {"argv": ["true"], "workdir": "/a\0b"},
               {"argv": ["true"], "workdir": "relative"}):
        with pytest.raises(InvalidArgument):
            rt.exec(name, kw.pop("argv"), **kw)


@pytest.mark.parametrize("what", ["images", "layers", "json"])
def test_archives_that_ask_for_too_much_are_refused(tmp_path, what):
    store = ImageStore(tmp_path / "root")
    files = docker_files()
    entry = json.loads(files["manifest.json"])[0]
    if what == "images":
        manifest = [entry] * 1001
    elif what == "layers":
        manifest = [{**entry, "Layers": entry["Layers"] * 251}]
    else:                                       # 900 entries naming one 100 KB config
        cfg = dumps({**config_doc(), "padding": "x" * 100_000})
        files[f"{hashlib.sha256(cfg).hexdigest()}.json"] = cfg
        manifest = [{**entry, "Config": f"{hashlib.sha256(cfg).hexdigest()}.json"}] * 900
    files["manifest.json"] = dumps(manifest)
    (tmp_path / "a.tar").write_bytes(tar_of(files))
    message = {"images": "1001 images; at most 1000", "layers": "502 layers; at most 500",
               "json": "add up to more than"}[what]
    with pytest.raises(InvalidArgument, match=message):
        importers.load(store, tmp_path / "a.tar")
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.images_dir) == []
