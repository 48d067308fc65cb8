"""Bring images in from `docker save` archives and OCI image layouts; write OCI layouts.

`load(store, path)` takes:
- a `docker save` archive (tar, maybe gzip): manifest.json, a config JSON per
  image, layer tars (`<id>/layer.tar`, or `blobs/sha256/<hex>` since Docker 25);
- an OCI image layout, as a directory or a tar of one: oci-layout,
  index.json, blobs/sha256/<hex>.

Every blob is checked against its digest before anything is unpacked, and
each layer's uncompressed tar against the config's diff_id while it is
unpacked.  A mismatch raises InvalidArgument naming the blob; the layers this
load added are removed again and no image record is written.

`save(store, name, path)` writes an image as one tar that both kinds of tool
read, as Docker 25 does: an OCI image layout (oci-layout, index.json,
blobs/sha256/; umoci, skopeo `oci-archive:`) and, naming the same blobs, the
`docker save` manifest.json and repositories files that `docker load` reads
(Docker 20.10 included).  Layers are uncompressed tars re-packed from the store.
"""
from __future__ import annotations

import json
import os
import re
from typing import (IO, TYPE_CHECKING, Any, BinaryIO, Generic, NotRequired, TypedDict, TypeVar,
                    overload)

from ..errors import InvalidArgument, NotFound
from ..model import Image, ImageConfig
from .store import ImageStore, arch, config_document, digest_hex, normalize_name

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable

    from _typeshed import SupportsRead

    from ..model import Healthcheck
    from .tarsafe import Budget

_DEFAULT_PATH = ImageConfig().env[0]
_MT_INDEX = ("application/vnd.oci.image.index.v1+json",
             "application/vnd.docker.distribution.manifest.list.v2+json")
_MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MT_CONFIG = "application/vnd.oci.image.config.v1+json"
_MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
_MAX_JSON = 16 << 20          # one document
_MAX_JSON_TOTAL = 64 << 20    # all documents of one load: 1000 entries naming one 16 MiB config
_MAX_IMAGES = 1000            # entries of manifest.json or index.json
_MAX_LAYERS = 500             # layers of one image

_T = TypeVar("_T")
_D = TypeVar("_D")
JSONObject = dict[str, Any]    # a JSON object as json.loads gives it: checked where it is read


class PlannedLayer(TypedDict):
    """What _plan adds to each layer of a Plan, from the image config."""
    diff_id: NotRequired[str]
    created_by: NotRequired[str]


class ArchiveLayer(PlannedLayer):
    """A layer in an archive: its member, the blob's digest (None: a docker
    save `<id>/layer.tar`, not content-addressed), its size if a descriptor says."""
    path: str
    blob_digest: str | None
    size: int | None


_L = TypeVar("_L", bound=PlannedLayer)


class Plan(TypedDict, Generic[_L]):
    """One image, read and checked, before anything is unpacked: from an
    archive (ArchiveLayer) or a registry (distribution.RegistryLayer)."""
    names: list[str]
    layers: list[_L]
    config: ImageConfig
    created: float
    history: list[str]


class _Descriptor(TypedDict, total=False):
    """An OCI descriptor as save_to writes it."""
    mediaType: str
    digest: str
    size: int
    annotations: dict[str, str]


def load(store: ImageStore, path: str | os.PathLike[str] | IO[bytes], name: str | None = None, *,
         budget: Budget | None = None, label: str | None = None,
         check_names: Callable[[list[str]], object] | None = None) -> list[Image]:
    """Import every image in the archive or layout at `path`; `name` renames a single one.
    check_names(names), when given, sees the names the images will take before
    anything is unpacked, and may refuse them by raising.

    `path` may also be an open binary file of a tar (seekable: the agent's
    received descriptor), which messages call `label`.

    Holds the store's lock (as commit and gc do) from the first unpack to
    the last record, so a gc never sees a layer before its image, and the
    rollback of a failed load removes only layers this load put in place.
    `budget` (tarsafe.Budget): by default the environment's limits and the
    free space under the root."""
    from . import tarsafe
    fileobj: IO[bytes] | None = None
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
    else:
        fileobj, path = path, label or "the archive"
    if "\0" in path:
        raise InvalidArgument(f"invalid path {ascii(path)[:80]}: contains a NUL byte")
    store._make_dirs()
    with store.lock():
        store.sweep_tmp()                     # what a killed import left behind
        budget = budget or tarsafe.Budget(store.root)
        src = _TarSource(path, store, budget, fileobj) if fileobj else _open_source(path, store, budget)
        try:
            if src.exists("manifest.json"):
                plans = _docker_plans(src)
            elif src.exists("index.json") and src.exists("oci-layout"):
                plans = _oci_plans(src)
            else:
                raise InvalidArgument(f"{path} is neither a docker save archive (manifest.json) "
                                      "nor an OCI image layout (oci-layout, index.json)")
            if name is not None:
                if len(plans) != 1:
                    raise InvalidArgument(f"{path} holds {len(plans)} images; a name fits only one")
                plans[0]["names"] = [name]
            for p in plans:
                p["names"] = list(dict.fromkeys(normalize_name(n) for n in p["names"]))
            if check_names is not None:
                check_names([n for p in plans for n in p["names"]])
            return _apply(store, src, plans, budget)
        except _CORRUPT as e:                 # a member cut short while read
            raise InvalidArgument(f"{path} is truncated or corrupt: {_one_line(e)}") from None
        finally:
            src.close()


# --- sources: a directory or a tar ------------------------------------------

def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else type(e).__name__


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    import lzma
    import tarfile
    import zlib
    return (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


_CORRUPT = _corrupt_errors()


def _rel(value: object, what: str) -> str:
    """A member path named by the archive's JSON: a string, no NUL, short."""
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise InvalidArgument(f"{what} is not a valid path: {ascii(value)[:80]}")
    return value


class _DirSource:
    json_bytes = 0

    def __init__(self, path: str):
        self.path = path

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._abs(rel))

    def open(self, rel: str) -> IO[bytes]:
        try:
            return open(self._abs(rel), "rb")
        except FileNotFoundError:
            raise InvalidArgument(f"{self.path}: {rel} is missing") from None

    def _abs(self, rel: str) -> str:
        rel = rel.lstrip("/")
        if ".." in rel.split("/"):
            raise InvalidArgument(f"{self.path}: refusing path {rel!r}")
        return os.path.join(self.path, rel)

    def close(self) -> None:
        pass


class _TarSource:
    """A tar, plain or compressed.  A compressed one is decompressed once, to
    an unnamed file in the store's tmp/ (gone with this process, even on
    SIGKILL): reading members of a gzip stream out of order would decompress
    it again from the start for each layer."""

    json_bytes = 0
    _borrowed = False         # self.plain is the caller's file: closed by its owner, not by us

    def __init__(self, path: str, store: ImageStore, budget: Budget,
                 fileobj: IO[bytes] | None = None):
        import contextlib
        import tarfile
        self.path = path
        self.tf: tarfile.TarFile | None = None
        self.plain: IO[bytes] | None = None
        try:
            with (contextlib.nullcontext(fileobj) if fileobj else open(path, "rb")) as f:
                head = f.read(6)
                f.seek(0)
                if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
                    self.plain = _decompressed(f, head, store, budget, path)
            from .tarsafe import bounded_tarinfo
            if self.plain is None and fileobj is not None:
                self.plain, self._borrowed = fileobj, True
            self.tf = tarfile.open(path if self.plain is None else None, "r:",
                                   fileobj=self.plain, tarinfo=bounded_tarinfo())
            self.members: dict[str, tarfile.TarInfo] = {}
            for m in self.tf:
                budget.entry(_tar_key(m.name), f"{path}: member {m.name[:64]!r}")
                if m.isreg():
                    self.members[_tar_key(m.name)] = m
        except _CORRUPT as e:
            self.close()
            raise InvalidArgument(f"cannot read {path}: not a tar archive (plain, gzip, bzip2 "
                                  f"or xz), or it is truncated: {_one_line(e)}") from None
        except BaseException:
            self.close()
            raise

    def exists(self, rel: str) -> bool:
        return _tar_key(rel) in self.members

    def open(self, rel: str) -> IO[bytes]:
        m = self.members.get(_tar_key(rel))
        if m is None:
            raise InvalidArgument(f"{self.path}: {rel} is missing")
        assert self.tf is not None
        f = self.tf.extractfile(m)
        assert f is not None                  # members holds regular files only
        return f

    def close(self) -> None:
        if self.tf is not None:
            self.tf.close()
        if self.plain is not None and not self._borrowed:
            self.plain.close()


def _decompressed(f: IO[bytes], head: bytes, store: ImageStore, budget: Budget,
                  path: str) -> IO[bytes]:
    """The outer archive decompressed into an unnamed temp file, within `budget`."""
    import bz2
    import gzip
    import lzma
    import tempfile
    from .store import _Counter
    raw = _Counter(f)
    # (typeshed asks these for a file that seeks: they seek it only to seek
    # themselves, and this stream is read once, forward)
    stream: gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile
    if head[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[call-overload]
    elif head[:3] == b"BZh":
        stream = bz2.BZ2File(raw, "rb")  # type: ignore[call-overload]
    else:
        stream = lzma.LZMAFile(raw, "rb")  # type: ignore[arg-type]
    out = tempfile.TemporaryFile(dir=store.tmp_dir)   # O_TMPFILE: no name to leave behind
    counted = _Counted()
    budget.watch(raw, counted)
    try:
        with stream:
            while chunk := stream.read(1 << 20):
                counted.count += len(chunk)
                budget.check_ratio(path)
                budget.charge(len(chunk), path)
                out.write(chunk)
        out.seek(0)
    except OSError as e:
        out.close()
        import errno
        from ..errors import KernelError
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, KernelError):
            raise KernelError(e.errno, f"decompress {path} under {store.root}") from None
        if e.errno is None:               # BadGzipFile, bz2's "Invalid data stream": the data
            raise InvalidArgument(f"cannot read {path}: it is not valid compressed data: "
                                  f"{_one_line(e)}") from None
        raise
    except BaseException:
        out.close()
        raise
    budget.streams.remove((raw, counted))    # its bytes stay charged: on disk until the load ends
    return out


class _Counted:
    count = 0


def _tar_key(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _open_source(path: str, store: ImageStore, budget: Budget) -> _Source:
    if os.path.isdir(path):
        return _DirSource(path)
    if os.path.isfile(path):
        return _TarSource(path, store, budget)
    raise NotFound(f"{path} not found")


# --- reading and checking ---------------------------------------------------

_Source = _DirSource | _TarSource


def _json(src: _Source, rel: str, digest: str | None = None) -> Any:
    with src.open(rel) as f:
        data = f.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise InvalidArgument(f"{rel} is larger than {_MAX_JSON} bytes")
    src.json_bytes += len(data)               # would be parsed again for each entry naming it
    if src.json_bytes > _MAX_JSON_TOTAL:
        raise InvalidArgument(f"the archive's JSON documents add up to more than {_MAX_JSON_TOTAL} bytes")
    if digest is not None:
        import hashlib
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise InvalidArgument(f"blob {rel} does not match its digest: expected {digest}, got {got}")
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"{rel} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument(f"{rel} is not valid JSON: nested too deeply") from None


# --- JSON shapes: what each document must be, said in one sentence ----------

def _obj(value: object, what: str) -> JSONObject:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is not a JSON object (got {_kind(value)})")
    return value


@overload
def _field(doc: JSONObject, key: str, kind: type[_T], what: str) -> _T | None: ...
@overload
def _field(doc: JSONObject, key: str, kind: type[_T], what: str, default: _D) -> _T | _D: ...
def _field(doc: JSONObject, key: str, kind: type[_T], what: str, default: object = None) -> object:
    """doc[key] of JSON type `kind` (str, list, dict, int); `default` when absent or null."""
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        names = {str: "a string", list: "a list", dict: "an object", int: "a number"}
        raise InvalidArgument(f"{what}: {key!r} is not {names[kind]} (got {_kind(value)})")
    return value


def _strings(doc: JSONObject, key: str, what: str) -> list[str]:
    items = _field(doc, key, list, what, [])
    if not all(isinstance(i, str) for i in items):
        raise InvalidArgument(f"{what}: {key!r} is not a list of strings")
    return items


def _limited(layers: list[_T], what: str) -> list[_T]:
    if len(layers) > _MAX_LAYERS:
        raise InvalidArgument(f"{what} has {len(layers)} layers; at most {_MAX_LAYERS} are supported")
    return layers


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _digest(desc: JSONObject, what: str) -> str:
    digest = _field(desc, "digest", str, what)
    if digest is None:
        raise InvalidArgument(f"{what} has no 'digest'")
    _blob_path(digest)                    # sha256:<64 hex> or InvalidArgument
    return digest


def _blob_path(digest: str) -> str:
    algo, _, hexpart = (digest or "").partition(":")
    if algo != "sha256":
        raise InvalidArgument(f"unsupported blob digest {digest!r}: only sha256 is supported")
    return f"blobs/sha256/{digest_hex(hexpart)}"


# --- docker save archives ---------------------------------------------------

_BLOB_RE = re.compile(r"(?:\./)?blobs/sha256/([0-9a-f]{64})")
_CONFIG_RE = re.compile(r"(?:\./)?([0-9a-f]{64})\.json")


def _docker_plans(src: _Source) -> list[Plan[ArchiveLayer]]:
    manifest = _json(src, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise InvalidArgument("manifest.json is not a list of images")
    if len(manifest) > _MAX_IMAGES:
        raise InvalidArgument(f"manifest.json lists {len(manifest)} images; at most {_MAX_IMAGES} "
                              "are taken at once")
    plans: list[Plan[ArchiveLayer]] = []
    for i, entry in enumerate(manifest):
        what = f"manifest.json entry {i}"
        entry = _obj(entry, what)
        cfg_path = _field(entry, "Config", str, what, "")
        m = _BLOB_RE.fullmatch(cfg_path) or _CONFIG_RE.fullmatch(cfg_path)
        if not m:
            raise InvalidArgument(f"manifest.json names config {ascii(cfg_path)[:80]}, not a sha256 blob")
        cfg_digest = "sha256:" + m.group(1)
        config = _obj(_json(src, cfg_path, cfg_digest), f"config {cfg_path}")
        layers: list[ArchiveLayer] = []
        for rel in _limited(_strings(entry, "Layers", what), what):
            _rel(rel, f"{what}: a layer")
            bm = _BLOB_RE.fullmatch(rel)
            layers.append({"path": rel, "blob_digest": "sha256:" + bm.group(1) if bm else None,
                           "size": None})
        names = _strings(entry, "RepoTags", what) or [m.group(1)[:12]]
        plans.append(_plan(names, config, layers, cfg_path))
    return plans


# --- OCI image layouts ------------------------------------------------------

_MAX_INDEX_DEPTH = 4       # index -> index -> manifest is the deepest seen in practice


def _oci_plans(src: _Source) -> list[Plan[ArchiveLayer]]:
    layout = _obj(_json(src, "oci-layout"), "oci-layout")
    version = layout.get("imageLayoutVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise InvalidArgument(f"unsupported OCI layout version {ascii(version)[:40]}")
    index = _obj(_json(src, "index.json"), "index.json")
    plans: list[Plan[ArchiveLayer]] = []
    descs = _field(index, "manifests", list, "index.json", [])
    if len(descs) > _MAX_IMAGES:
        raise InvalidArgument(f"index.json lists {len(descs)} images; at most {_MAX_IMAGES} "
                              "are taken at once")
    for i, desc in enumerate(descs):
        what = f"index.json manifest {i}"
        desc = _obj(desc, what)
        digest = _digest(desc, what)
        ann = _field(desc, "annotations", dict, what, {})
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        if name is not None and not isinstance(name, str):
            raise InvalidArgument(f"{what}: the image name annotation is not a string")
        names = [name or digest.partition(":")[2][:12]]
        manifest = _manifest(src, desc, what)
        cfg = _obj(manifest.get("config"), f"manifest {digest}: 'config'")
        cfg_digest = _digest(cfg, f"manifest {digest}: 'config'")
        cfg_path = _blob_path(cfg_digest)
        config = _obj(_json(src, cfg_path, cfg_digest), f"config {cfg_path}")
        layers: list[ArchiveLayer] = []
        for j, ld in enumerate(_limited(_field(manifest, "layers", list, f"manifest {digest}", []),
                                        f"manifest {digest}")):
            lwhat = f"manifest {digest}: layer {j}"
            ld = _obj(ld, lwhat)
            ldigest = _digest(ld, lwhat)
            if "zstd" in _field(ld, "mediaType", str, lwhat, ""):
                raise InvalidArgument(f"layer {ldigest} is zstd-compressed; not supported")
            if _field(ld, "urls", list, lwhat) and not src.exists(_blob_path(ldigest)):
                raise InvalidArgument(f"layer {ldigest} is a foreign layer not in the layout")
            size = _field(ld, "size", int, lwhat)
            layers.append({"path": _blob_path(ldigest), "blob_digest": ldigest, "size": size})
        plans.append(_plan([_short_name(n) for n in names], config, layers, cfg_path))
    if not plans:
        raise InvalidArgument("index.json lists no images")
    return plans


def _manifest(src: _Source, desc: JSONObject, what: str, depth: int = 0) -> JSONObject:
    """The image manifest `desc` points at; an index picks this machine's platform."""
    digest = _digest(desc, what)
    if depth >= _MAX_INDEX_DEPTH:
        raise InvalidArgument(f"{what}: image indexes nest more than {_MAX_INDEX_DEPTH} deep")
    doc = _obj(_json(src, _blob_path(digest), digest), f"blob {digest}")
    if desc.get("mediaType") in _MT_INDEX or doc.get("mediaType") in _MT_INDEX:
        options = _field(doc, "manifests", list, f"image index {digest}", [])
        if not options:
            raise InvalidArgument(f"image index {digest} is empty")
        options = [_obj(d, f"image index {digest}: an entry") for d in options]
        arch_ = arch()

        def platform(d: JSONObject) -> JSONObject:
            return _field(d, "platform", dict, f"image index {digest}: an entry", {})
        chosen = next((d for d in options if platform(d).get("architecture") == arch_
                       and platform(d).get("os", "linux") == "linux"), options[0])
        return _manifest(src, chosen, f"image index {digest}", depth + 1)
    return doc


def _short_name(name: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


# --- the common part --------------------------------------------------------

def _plan(names: list[str], config: JSONObject, layers: list[_L], cfg_path: str) -> Plan[_L]:
    what = f"config {cfg_path}"
    diff_ids = _strings(_field(config, "rootfs", dict, what, {}), "diff_ids", f"{what}: 'rootfs'")
    if len(diff_ids) != len(layers):
        raise InvalidArgument(f"config {cfg_path} lists {len(diff_ids)} diff_ids for "
                              f"{len(layers)} layers")
    for layer, diff_id in zip(layers, diff_ids):
        digest_hex(diff_id)
        if not diff_id.startswith("sha256:"):
            raise InvalidArgument(f"{what}: diff_id {diff_id!r} is not sha256:<hex>")
        layer["diff_id"] = diff_id
    made = []
    for h in _field(config, "history", list, what, []):
        h = _obj(h, f"{what}: a history entry")
        if not h.get("empty_layer"):
            made.append(_field(h, "created_by", str, f"{what}: a history entry", ""))
    if len(made) != len(layers):
        made = [""] * len(layers)
    for layer, how in zip(layers, made):
        layer["created_by"] = how
    c = _field(config, "config", dict, what, {})
    cwhat = f"{what}: 'config'"
    env = tuple(_strings(c, "Env", cwhat))
    if any("\0" in e for e in env):
        raise InvalidArgument(f"{cwhat}: an Env entry contains a NUL byte")
    if not any(e.startswith("PATH=") for e in env):
        env = (_DEFAULT_PATH,) + env      # what Docker adds when an image sets none
    cmd = tuple(_strings(c, "Entrypoint", cwhat)) + tuple(_strings(c, "Cmd", cwhat))
    if any("\0" in a for a in cmd):
        raise InvalidArgument(f"{cwhat}: the command contains a NUL byte")
    workdir = _field(c, "WorkingDir", str, cwhat, "") or "/"
    if "\0" in workdir:
        raise InvalidArgument(f"{cwhat}: WorkingDir contains a NUL byte")
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgument(f"{what}: an image name is not a string")
    image_config = ImageConfig(cmd=cmd, env=env, workdir=workdir,
                               healthcheck=_healthcheck(c.get("Healthcheck"), cwhat))
    return {"names": names, "layers": layers, "config": image_config,
            "created": _parse_time(config.get("created")), "history": made}


def _healthcheck(h: object, what: str) -> Healthcheck | None:
    """The image config's Healthcheck (Docker's form: Test ["CMD", ...], ["CMD-SHELL",
    "cmd"] or ["NONE"]; durations in nanoseconds, 0 for the default) as a Healthcheck."""
    if h is None:
        return None
    from ..lifecycle import check_healthcheck
    from ..model import Healthcheck
    if not isinstance(h, dict):
        raise InvalidArgument(f"{what}: Healthcheck is not an object")
    test = h.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(a, str) for a in test):
        raise InvalidArgument(f"{what}: Healthcheck Test is not a list of strings")
    argv: tuple[str, ...]
    if not test or test[0] == "NONE":
        argv = ()
    elif test[0] == "CMD" and len(test) > 1:
        argv = tuple(test[1:])
    elif test[0] == "CMD-SHELL" and len(test) == 2:
        argv = ("/bin/sh", "-c", test[1])
    else:
        raise InvalidArgument(f"{what}: Healthcheck Test {test[:3]!r} is not CMD, CMD-SHELL or NONE")
    d = Healthcheck()

    def seconds(key: str, default: float) -> float:
        v = h.get(key) or 0
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidArgument(f"{what}: Healthcheck {key} is not a whole number of nanoseconds")
        return v / 1e9 if v else default
    try:
        return check_healthcheck(Healthcheck(
            test=argv, interval=seconds("Interval", d.interval), timeout=seconds("Timeout", d.timeout),
            retries=h.get("Retries") or d.retries, start_period=seconds("StartPeriod", d.start_period)))
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: Healthcheck: {e}") from None


def _apply(store: ImageStore, src: _Source, plans: list[Plan[ArchiveLayer]],
           budget: Budget) -> list[Image]:
    """Unpack the missing layers, write all records; called with the store
    locked.  A compressed blob's digest is checked in the pass that unpacks
    it (an uncompressed one's is its diff_id, which the unpack checks),
    before its layer goes in.  On failure, removes the layers it put in place."""
    added: list[str] = []
    with store.import_journal() as note:     # what a SIGKILL here leaves, the next sweep removes
        try:
            for p in plans:
                for layer in p["layers"]:
                    if store.has_layer(layer["diff_id"]):
                        continue
                    note(layer["diff_id"])
                    with src.open(layer["path"]) as f:
                        blob: _HashReader | None = None
                        reader: SupportsRead[bytes] = f
                        if layer["blob_digest"] and layer["blob_digest"] != layer["diff_id"]:
                            reader = blob = _HashReader(f, layer["path"], layer["blob_digest"],
                                                        layer["size"])
                        try:
                            _, created = store.import_layer(reader, layer["created_by"],
                                                            expect_digest=layer["diff_id"], budget=budget,
                                                            _before_commit=blob.check if blob else None)
                        except InvalidArgument as e:
                            if blob is not None and not blob.checked:
                                blob.check()       # a damaged blob says so, rather than what its tar looked like
                            raise InvalidArgument(f"blob {layer['path']}: {e}") from None
                    if created:
                        added.append(layer["diff_id"])
            return store.add_images([(n, [layer["diff_id"] for layer in p["layers"]], p["config"],
                                      p["history"], p["created"])
                                     for p in plans for n in p["names"]])
        except BaseException:
            for d in added:
                store.remove_layer(d)
            raise


def _parse_time(value: object) -> float:
    """RFC 3339 ('2024-01-02T03:04:05.123456789Z') -> unix time; 0.0 if absent."""
    if not value:
        return 0.0
    from datetime import datetime
    s = re.sub(r"(\.\d{6})\d+", r"\1", str(value)).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(s).timestamp()
    except (ValueError, OverflowError, OSError):
        return 0.0


# --- export -----------------------------------------------------------------

class _HashReader:
    """Reads through to `f`, hashing and counting what goes by; check():
    the rest read too, the blob's digest and size as its descriptor says."""

    def __init__(self, f: SupportsRead[bytes], rel: str, digest: str, size: int | None):
        import hashlib
        self._f, self._h, self.size = f, hashlib.sha256(), 0
        self._rel, self._digest, self._size = rel, digest, size
        self.checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        self.size += len(data)
        return data

    def check(self) -> None:
        while self.read(1 << 20):
            pass
        got = "sha256:" + self._h.hexdigest()
        if got != self._digest:
            raise InvalidArgument(f"blob {self._rel} does not match its digest: expected "
                                  f"{self._digest}, got {got}")
        if self._size is not None and self.size != self._size:
            raise InvalidArgument(f"blob {self._rel} is {self.size} bytes, its descriptor says {self._size}")
        self.checked = True


class _HashWriter:
    def __init__(self, f: BinaryIO):
        import hashlib
        self._f, self._h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self.size += len(data)
        return self._f.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()


def save(store: ImageStore, name: str, path: str | os.PathLike[str], *,
         writer: Callable[[BinaryIO], str] | None = None) -> str:
    """Write image `name` as an OCI image layout tar at `path`; returns the manifest digest.

    The tar goes to a temp file beside `path`, renamed over it once whole.
    writer(out) -> digest writes it (default save_to; the CLI's agent mode
    passes the agent's, which writes to the descriptor it is sent)."""
    import tempfile
    if writer is None:
        store.get(name)                               # NotFound before any file is made
    path = os.fspath(path)
    out_dir = os.path.dirname(os.path.abspath(path))
    fd, partial = tempfile.mkstemp(prefix=".save-", suffix=".tar", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = writer(out) if writer else save_to(store, name, out)
        os.chmod(partial, 0o666 & ~_umask())     # as open() would have made it
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return digest


def save_to(store: ImageStore, name: str, out: BinaryIO) -> str:
    """Write image `name` (a name or an id) as an OCI layout + docker-archive
    tar to the binary file `out` (from where it stands); returns the manifest digest."""
    import contextlib
    import io
    from . import reference, tarsafe

    image = store.get(name)
    ref = reference.parse(image.name) if image.name else None
    store._make_dirs()
    stack = contextlib.ExitStack()       # flocked while it lives: sweep_tmp removes a killed save's
    with store.lock():                   # made and flocked where no sweep (under the lock) sees it
        work = stack.enter_context(store._work_dir("save-"))
    try:
        blobs: dict[str, tuple[str | bytes, int]] = {}  # digest -> (file or content, size)
        layer_descs: list[_Descriptor] = []
        diff_ids: list[str] = []
        for layer in image.layers:
            tmp = os.path.join(work, f"layer-{len(blobs)}")
            with open(tmp, "wb") as f:
                w = _HashWriter(f)
                tarsafe.pack(layer.path, w)
            blobs.setdefault(w.digest, (tmp, w.size))
            diff_ids.append(w.digest)
            layer_descs.append({"mediaType": _MT_LAYER, "digest": w.digest, "size": w.size})

        def add_blob(data: bytes) -> _Descriptor:
            import hashlib
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = (data, len(data))
            return {"digest": digest, "size": len(data)}

        def add_json(obj: object) -> _Descriptor:
            return add_blob(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())

        config = add_blob(config_document(image.config, diff_ids, image.history, image.created))
        manifest = {"schemaVersion": 2, "mediaType": _MT_MANIFEST,
                    "config": {"mediaType": _MT_CONFIG, **config},
                    "layers": layer_descs}
        mdesc: _Descriptor = {"mediaType": _MT_MANIFEST, **add_json(manifest)}
        # An image pulled by digest alone has no tag: saved as Docker saves an
        # untagged one (no RepoTags, no repositories, no ref.name annotation)
        docker = {"Config": f"blobs/sha256/{config['digest'][7:]}",
                  "Layers": [f"blobs/sha256/{d['digest'][7:]}" for d in layer_descs],
                  "RepoTags": [ref.familiar] if ref and ref.tag else []}
        if ref:
            mdesc["annotations"] = {"io.containerd.image.name": ref.full}
            if ref.tag:
                mdesc["annotations"]["org.opencontainers.image.ref.name"] = ref.tag
        index = {"schemaVersion": 2, "mediaType": _MT_INDEX[0], "manifests": [mdesc]}
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                 "index.json": json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
                 "manifest.json": json.dumps([docker], separators=(",", ":")).encode()}
        if ref and ref.tag and layer_descs:  # the pre-manifest.json file: repository -> tag -> top layer
            files["repositories"] = json.dumps(
                {ref.familiar_repository: {ref.tag: layer_descs[-1]["digest"][7:]}},
                separators=(",", ":")).encode()

        mtime = int(image.created)
        with tarsafe.open_file_writer(out) as tf:
            for d in ("blobs", "blobs/sha256"):
                tf.addfile(tarsafe.tarinfo(d, "dir", mode=0o755, mtime=mtime))
            for digest in sorted(blobs):
                content, size = blobs[digest]
                ti = tarsafe.tarinfo(f"blobs/sha256/{digest[7:]}", "file", mode=0o644,
                                     mtime=mtime, size=size)
                if isinstance(content, bytes):
                    tf.addfile(ti, io.BytesIO(content))
                else:
                    with open(content, "rb") as blob:
                        tf.addfile(ti, blob)
            for n, data in files.items():
                tf.addfile(tarsafe.tarinfo(n, "file", mode=0o644, mtime=mtime, size=len(data)),
                           io.BytesIO(data))
        return mdesc["digest"]
    finally:
        stack.close()


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for
    a moment, in every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
