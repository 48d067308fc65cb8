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

`save(store, name, path)` writes an image as an OCI layout tar (umoci, skopeo
`oci-archive:`), layers as uncompressed tars re-packed from the store.
"""
from __future__ import annotations

import json
import os
import re

from ..errors import InvalidArgument, NotFound
from ..model import Image, ImageConfig
from .store import ImageStore, digest_hex, normalize_name

_DEFAULT_PATH = ImageConfig().env[0]
_MT_INDEX = ("application/vnd.oci.image.index.v1+json",
             "application/vnd.docker.distribution.manifest.list.v2+json")
_MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MT_CONFIG = "application/vnd.oci.image.config.v1+json"
_MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
_MAX_JSON = 16 << 20


def load(store: ImageStore, path: str | os.PathLike, name: str | None = None) -> list[Image]:
    """Import every image in the archive or layout at `path`; `name` renames a single one."""
    src = _open_source(os.fspath(path))
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
            p["names"] = [normalize_name(n) for n in p["names"]]
        return _apply(store, src, plans)
    finally:
        src.close()


# --- sources: a directory or a tar ------------------------------------------

class _DirSource:
    def __init__(self, path: str):
        self.path = path

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._abs(rel))

    def open(self, rel: str):
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
    def __init__(self, path: str):
        import tarfile
        try:
            self.tf = tarfile.open(path, "r:*")
            self.members = {}
            for m in self.tf:
                key = _tar_key(m.name)
                if m.isreg():
                    self.members[key] = m
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InvalidArgument(f"cannot read {path}: {e}") from None
        self.path = path

    def exists(self, rel: str) -> bool:
        return _tar_key(rel) in self.members

    def open(self, rel: str):
        m = self.members.get(_tar_key(rel))
        if m is None:
            raise InvalidArgument(f"{self.path}: {rel} is missing")
        return self.tf.extractfile(m)

    def close(self) -> None:
        self.tf.close()


def _tar_key(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _open_source(path: str):
    if os.path.isdir(path):
        return _DirSource(path)
    if os.path.isfile(path):
        return _TarSource(path)
    raise NotFound(f"{path} not found")


# --- reading and checking ---------------------------------------------------

def _sha256_of(f) -> tuple[str, int]:
    import hashlib
    h, n = hashlib.sha256(), 0
    with f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _json(src, rel: str, digest: str | None = None):
    with src.open(rel) as f:
        data = f.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise InvalidArgument(f"{rel} is larger than {_MAX_JSON} bytes")
    if digest is not None:
        import hashlib
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise InvalidArgument(f"blob {rel} does not match its digest: expected {digest}, got {got}")
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"{rel} is not valid JSON: {e}") from None


def _check_blob(src, rel: str, digest: str, size: int | None = None) -> None:
    got, n = _sha256_of(src.open(rel))
    if got != digest:
        raise InvalidArgument(f"blob {rel} does not match its digest: expected {digest}, got {got}")
    if size is not None and n != size:
        raise InvalidArgument(f"blob {rel} is {n} bytes, its descriptor says {size}")


def _blob_path(digest: str) -> str:
    algo, _, hexpart = (digest or "").partition(":")
    if algo != "sha256":
        raise InvalidArgument(f"unsupported blob digest {digest!r}: only sha256 is supported")
    return f"blobs/sha256/{digest_hex(hexpart)}"


# --- docker save archives ---------------------------------------------------

_BLOB_RE = re.compile(r"(?:\./)?blobs/sha256/([0-9a-f]{64})")
_CONFIG_RE = re.compile(r"(?:\./)?([0-9a-f]{64})\.json")


def _docker_plans(src) -> list[dict]:
    manifest = _json(src, "manifest.json")
    if not isinstance(manifest, list):
        raise InvalidArgument("manifest.json is not a list of images")
    plans = []
    for entry in manifest:
        cfg_path = entry.get("Config", "")
        m = _BLOB_RE.fullmatch(cfg_path) or _CONFIG_RE.fullmatch(cfg_path)
        if not m:
            raise InvalidArgument(f"manifest.json names config {cfg_path!r}, not a sha256 blob")
        cfg_digest = "sha256:" + m.group(1)
        config = _json(src, cfg_path, cfg_digest)
        layers = []
        for rel in entry.get("Layers") or []:
            bm = _BLOB_RE.fullmatch(rel)
            layers.append({"path": rel, "blob_digest": "sha256:" + bm.group(1) if bm else None,
                           "size": None})
        names = entry.get("RepoTags") or [m.group(1)[:12]]
        plans.append(_plan(names, config, layers, cfg_path))
    return plans


# --- OCI image layouts ------------------------------------------------------

def _oci_plans(src) -> list[dict]:
    layout = _json(src, "oci-layout")
    if not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise InvalidArgument(f"unsupported OCI layout version {layout.get('imageLayoutVersion')!r}")
    index = _json(src, "index.json")
    plans = []
    for desc in index.get("manifests") or []:
        ann = desc.get("annotations") or {}
        names = [ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
                 or desc["digest"].partition(":")[2][:12]]
        manifest = _manifest(src, desc)
        cfg = manifest["config"]
        cfg_path = _blob_path(cfg["digest"])
        config = _json(src, cfg_path, cfg["digest"])
        layers = []
        for ld in manifest.get("layers") or []:
            if "zstd" in ld.get("mediaType", ""):
                raise InvalidArgument(f"layer {ld['digest']} is zstd-compressed; not supported")
            if ld.get("urls") and not src.exists(_blob_path(ld["digest"])):
                raise InvalidArgument(f"layer {ld['digest']} is a foreign layer not in the layout")
            layers.append({"path": _blob_path(ld["digest"]), "blob_digest": ld["digest"],
                           "size": ld.get("size")})
        plans.append(_plan([_short_name(n) for n in names], config, layers, cfg_path))
    if not plans:
        raise InvalidArgument("index.json lists no images")
    return plans


def _manifest(src, desc: dict) -> dict:
    """The image manifest `desc` points at; an index picks this machine's platform."""
    doc = _json(src, _blob_path(desc["digest"]), desc["digest"])
    if desc.get("mediaType") in _MT_INDEX or doc.get("mediaType") in _MT_INDEX:
        options = doc.get("manifests") or []
        if not options:
            raise InvalidArgument(f"image index {desc['digest']} is empty")
        arch = _arch()
        chosen = next((d for d in options if (d.get("platform") or {}).get("architecture") == arch
                       and (d.get("platform") or {}).get("os", "linux") == "linux"), options[0])
        return _manifest(src, chosen)
    return doc


def _short_name(name: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


# --- the common part --------------------------------------------------------

def _plan(names: list[str], config: dict, layers: list[dict], cfg_path: str) -> dict:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise InvalidArgument(f"config {cfg_path} lists {len(diff_ids)} diff_ids for "
                              f"{len(layers)} layers")
    for layer, diff_id in zip(layers, diff_ids):
        digest_hex(diff_id)
        layer["diff_id"] = diff_id
    made = [h.get("created_by", "") for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(made) != len(layers):
        made = [""] * len(layers)
    for layer, how in zip(layers, made):
        layer["created_by"] = how
    c = config.get("config") or {}
    env = tuple(c.get("Env") or ())
    if not any(e.startswith("PATH=") for e in env):
        env = (_DEFAULT_PATH,) + env      # what Docker adds when an image sets none
    image_config = ImageConfig(cmd=tuple(c.get("Entrypoint") or ()) + tuple(c.get("Cmd") or ()),
                               env=env, workdir=c.get("WorkingDir") or "/")
    return {"names": names, "layers": layers, "config": image_config,
            "created": _parse_time(config.get("created")), "history": made}


def _apply(store: ImageStore, src, plans: list[dict]) -> list[Image]:
    for p in plans:                       # every blob checked before anything is unpacked
        for layer in p["layers"]:
            if layer["blob_digest"] and not store.has_layer(layer["diff_id"]):
                _check_blob(src, layer["path"], layer["blob_digest"], layer["size"])
    added: list[str] = []
    try:
        for p in plans:
            for layer in p["layers"]:
                if store.has_layer(layer["diff_id"]):
                    continue
                try:
                    with src.open(layer["path"]) as f:
                        store.add_layer_from_tar(f, layer["created_by"], expect_digest=layer["diff_id"])
                except InvalidArgument as e:
                    raise InvalidArgument(f"blob {layer['path']}: {e}") from None
                added.append(layer["diff_id"])
        images = []
        for p in plans:
            digests = [layer["diff_id"] for layer in p["layers"]]
            for n in p["names"]:
                images.append(store.add_image(n, digests, p["config"], p["history"], p["created"]))
        return images
    except BaseException:
        for d in added:
            store.remove_layer(d)
        raise


def _parse_time(value) -> float:
    """RFC 3339 ('2024-01-02T03:04:05.123456789Z') -> unix time; 0.0 if absent."""
    if not value:
        return 0.0
    from datetime import datetime
    s = re.sub(r"(\.\d{6})\d+", r"\1", str(value)).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return 0.0


def _format_time(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


# --- export -----------------------------------------------------------------

class _HashWriter:
    def __init__(self, f):
        import hashlib
        self._f, self._h, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self._h.update(data)
        self.size += len(data)
        return self._f.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()


def save(store: ImageStore, name: str, path: str | os.PathLike) -> str:
    """Write image `name` as an OCI image layout tar at `path`; returns the manifest digest."""
    import io
    import shutil
    import tempfile
    from . import tarsafe

    image = store.get(name)
    repo, _, tag = image.name.partition(":")
    tag = tag or "latest"
    store._make_dirs()
    work = tempfile.mkdtemp(prefix="save-", dir=store.tmp_dir)
    try:
        blobs: dict[str, tuple[str, int]] = {}        # digest -> (file, size)
        layer_descs, diff_ids = [], []
        for layer in image.layers:
            tmp = os.path.join(work, f"layer-{len(blobs)}")
            with open(tmp, "wb") as f:
                w = _HashWriter(f)
                tarsafe.pack(layer.path, w)
            blobs.setdefault(w.digest, (tmp, w.size))
            diff_ids.append(w.digest)
            layer_descs.append({"mediaType": _MT_LAYER, "digest": w.digest, "size": w.size})

        def add_json(obj) -> dict:
            import hashlib
            data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = (data, len(data))
            return {"digest": digest, "size": len(data)}

        created = _format_time(image.created)
        config = {"architecture": _arch(), "os": "linux", "created": created,
                  "config": {"Cmd": list(image.config.cmd), "Env": list(image.config.env),
                             "WorkingDir": image.config.workdir},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids},
                  "history": [{"created": created, "created_by": h} for h in image.history]}
        manifest = {"schemaVersion": 2, "mediaType": _MT_MANIFEST,
                    "config": {"mediaType": _MT_CONFIG, **add_json(config)},
                    "layers": layer_descs}
        mdesc = {"mediaType": _MT_MANIFEST, **add_json(manifest),
                 "annotations": {"org.opencontainers.image.ref.name": tag,
                                 "io.containerd.image.name": f"{repo}:{tag}"}}
        index = {"schemaVersion": 2, "mediaType": _MT_INDEX[0], "manifests": [mdesc]}
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                 "index.json": json.dumps(index, sort_keys=True, separators=(",", ":")).encode()}

        path = os.fspath(path)
        out_dir = os.path.dirname(os.path.abspath(path))
        fd, partial = tempfile.mkstemp(prefix=".save-", suffix=".tar", dir=out_dir)
        try:
            mtime = int(image.created)
            with os.fdopen(fd, "wb") as out, tarsafe.open_writer(out) as tf:
                for d in ("blobs", "blobs/sha256"):
                    tf.addfile(tarsafe.tarinfo(d, "dir", mode=0o755, mtime=mtime))
                for digest in sorted(blobs):
                    content, size = blobs[digest]
                    ti = tarsafe.tarinfo(f"blobs/sha256/{digest[7:]}", "file", mode=0o644,
                                         mtime=mtime, size=size)
                    if isinstance(content, bytes):
                        tf.addfile(ti, io.BytesIO(content))
                    else:
                        with open(content, "rb") as f:
                            tf.addfile(ti, f)
                for n, data in files.items():
                    tf.addfile(tarsafe.tarinfo(n, "file", mode=0o644, mtime=mtime, size=len(data)),
                               io.BytesIO(data))
            os.chmod(partial, 0o666 & ~_umask())     # as open() would have made it
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        return mdesc["digest"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
