"""The content-addressed layer store and the image records on top of it.

    <root>/layers/<64hex>/fs/         unpacked tree: an overlay lowerdir
    <root>/layers/<64hex>/meta.json   digest, size, files, created_by, created
    <root>/images/<name>.json         name, id, layer digests bottom-first, config, created, history
    <root>/dangling/<hex>.json        an image a name was moved off, by id, until gc()
    <root>/tmp/                       work in progress, same filesystem

A layer's digest is the sha256 of its *uncompressed* tar (an OCI diff_id).
A layer is unpacked into tmp/<random>/fs and its meta written there; only
then is tmp/<random> renamed to layers/<hex>, so a layer directory that
exists is complete.  Image records are written to tmp and renamed too.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from ..errors import Conflict, InvalidArgument, KernelError, NotFound
from ..model import Image, ImageConfig, Layer

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from contextlib import AbstractContextManager

    from _typeshed import SupportsRead

    from ..model import Healthcheck
    from . import tarsafe

    # What add_layer_from_tar reads: a path, or a binary file object.
    LayerSource = str | os.PathLike[str] | SupportsRead[bytes | bytearray]
    # One image for add_images: (name, layer digests bottom first, config, history, created).
    ImageArgs = tuple[str, Sequence[str], ImageConfig | None, Sequence[str], float | None]

_HEX = re.compile(r"[0-9a-f]{64}")
# What the store took as a name before runtime/images/reference.py: records
# written then keep working under the name they were written with.
_LEGACY_NAME = re.compile(r"([a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*)"
                          r"(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?")
_STALE_TMP = 3600.0        # seconds before gc() removes other leftovers in tmp/
_SWEPT = ("layer-", "gc-", "image-", "outer-", "import-", "save-")   # tmp/ entries flocked by their maker


def _locked_while_linked(fd: int) -> bool:
    """flock a tmp/ entry just made, and say whether it is still there: between
    making it and the lock, another process's sweep_tmp() may have taken it
    for a killed maker's and removed it (then the caller makes another; fd is
    closed).  The sweep removes only under the lock, so once locked and still
    linked it stays ours."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    if os.fstat(fd).st_nlink > 0:
        return True
    os.close(fd)
    return False


class LayerMeta(TypedDict):
    """layers/<hex>/meta.json."""
    digest: str
    size: int
    files: int
    created_by: NotRequired[str]
    created: NotRequired[float]


class HealthcheckRecord(TypedDict):
    """A Healthcheck in an image record: model.Healthcheck's fields, test a list."""
    test: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float


class ConfigRecord(TypedDict, total=False):
    """An image record's config (records written by older versions may lack keys)."""
    cmd: list[str]
    env: list[str]
    workdir: str
    healthcheck: HealthcheckRecord


class ImageRecord(TypedDict):
    """images/<key>.json and dangling/<hex>.json.  Records written before ids,
    history or configs existed lack them; a dangling one names the key it
    was moved off in `was` and has an empty `name`."""
    name: str
    layers: list[str]
    config: NotRequired[ConfigRecord]
    created: NotRequired[float]
    history: NotRequired[list[str]]
    id: NotRequired[str]
    was: NotRequired[str]


def normalize_name(name: str, *, by_digest: bool = False) -> str:
    """The store's key for an image name, as Docker parses references
    (runtime/images/reference.py): 'busybox:latest' and
    'docker.io/library/busybox' -> 'busybox', 'docker.io/library/x:v2' ->
    'x:v2', 'localhost:5000/x' kept; with `by_digest` (a pull by digest
    alone), 'localhost:5000/x@sha256:...' kept too.  InvalidArgument
    (Docker's wording) if malformed."""
    from . import reference
    return reference.normalize(name, by_digest=by_digest)


def digest_hex(digest: str) -> str:
    """'sha256:<hex>' (or bare hex) -> '<hex>'.  InvalidArgument otherwise."""
    hexpart = digest[7:] if digest.startswith("sha256:") else digest
    if not _HEX.fullmatch(hexpart):
        raise InvalidArgument(f"invalid layer digest {digest!r}: expected sha256:<64 hex digits>")
    return hexpart


def arch() -> str:
    """This machine's architecture as OCI names it."""
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def format_time(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_document(config: ImageConfig, diff_ids: Iterable[str], history: Iterable[str],
                    created: float) -> bytes:
    """The OCI image config of an image as Terrarium writes it (save), bytes:
    its sha256 is the image's id."""
    when = format_time(created)
    doc = {"architecture": arch(), "os": "linux", "created": when,
           "config": {"Cmd": list(config.cmd), "Env": list(config.env), "WorkingDir": config.workdir,
                      **_docker_healthcheck(config.healthcheck)},
           "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
           "history": [{"created": when, "created_by": h} for h in history]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _docker_healthcheck(hc: Healthcheck | None) -> dict[str, dict[str, object]]:
    """{"Healthcheck": ...} in the image config's form (nanoseconds; Test "CMD" or
    "NONE"), or nothing for an image without one (its id stays what it was)."""
    if hc is None:
        return {}
    ns = 1_000_000_000
    return {"Healthcheck": {"Test": ["CMD", *hc.test] if hc.test else ["NONE"],
                            "Interval": int(hc.interval * ns), "Timeout": int(hc.timeout * ns),
                            "StartPeriod": int(hc.start_period * ns), "Retries": hc.retries}}


def _config_of(rec: ImageRecord) -> ImageConfig:
    c = rec.get("config", {})
    stored = c.get("healthcheck")
    hc = None
    if stored is not None:
        from ..model import Healthcheck
        hc = Healthcheck(test=tuple(stored["test"]), interval=stored["interval"],
                         timeout=stored["timeout"], retries=stored["retries"],
                         start_period=stored["start_period"])
    return ImageConfig(cmd=tuple(c.get("cmd", ())), env=tuple(c.get("env", ())),
                       workdir=c.get("workdir", "/") or "/", healthcheck=hc)


def image_id(rec: ImageRecord) -> str:
    """'sha256:<hex>': the digest of the record's config document (config_document,
    with the stored layers' digests as diff_ids).  Records written before
    ids existed get theirs computed on read, the same way."""
    import hashlib
    doc = config_document(_config_of(rec), rec["layers"], rec.get("history", ()),
                          rec.get("created", 0.0))
    return "sha256:" + hashlib.sha256(doc).hexdigest()


class ImageStore:
    """Layers and images under one root directory (the runtime root)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.fspath(root)          # str paths: pathlib costs ~7 ms to import
        self.layers_dir = os.path.join(self.root, "layers")
        self.images_dir = os.path.join(self.root, "images")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.dangling_dir = os.path.join(self.root, "dangling")

    # --- layers ----------------------------------------------------------

    def layer(self, digest: str) -> Layer:
        """The stored layer with this digest; NotFound if it is not complete on disk."""
        hexpart = digest_hex(digest)
        d = os.path.join(self.layers_dir, hexpart)
        try:
            meta: LayerMeta = _read_json(os.path.join(d, "meta.json"))
        except FileNotFoundError:
            raise NotFound(f"layer 'sha256:{hexpart}' not found") from None
        return Layer(digest=f"sha256:{hexpart}", size=meta["size"], files=meta["files"],
                     created_by=meta.get("created_by", ""), path=os.path.join(d, "fs"))

    def layers(self) -> list[Layer]:
        """Every stored layer, by digest."""
        try:
            names = sorted(os.listdir(self.layers_dir))
        except FileNotFoundError:
            return []
        out: builtins.list[Layer] = []
        for n in names:
            if _HEX.fullmatch(n):
                try:
                    out.append(self.layer(n))
                except NotFound:
                    pass
        return out

    def has_layer(self, digest: str) -> bool:
        return os.path.exists(os.path.join(self.layers_dir, digest_hex(digest), "meta.json"))

    def add_layer_from_tar(self, src: LayerSource, created_by: str = "", *,
                           expect_digest: str | None = None, budget: tarsafe.Budget | None = None,
                           _before_commit: Callable[[], object] | None = None) -> Layer:
        """Unpack a layer tar (path or binary file object; plain, gzip or zstd) into the store.

        The digest is the sha256 of the uncompressed tar.  An existing layer
        with that digest is reused.  With `expect_digest` (an OCI diff_id)
        an already stored layer is returned without reading `src`, and a
        different digest is refused.  On any failure nothing is left behind.
        `budget` (tarsafe.Budget) bounds what it may unpack; by default the
        environment's limits and the free space under the root.
        """
        return self.import_layer(src, created_by, expect_digest=expect_digest, budget=budget,
                                 _before_commit=_before_commit)[0]

    def import_layer(self, src: LayerSource, created_by: str = "", *,
                     expect_digest: str | None = None, budget: tarsafe.Budget | None = None,
                     compression: str | None = None,
                     _before_commit: Callable[[], object] | None = None) -> tuple[Layer, bool]:
        """add_layer_from_tar, and whether this call put the layer in place
        (True) or found it already there (False): a rollback removes only the first.
        `compression`: 'tar', 'gzip' or 'zstd' as a manifest says; None: by the magic."""
        if expect_digest is not None and self.has_layer(expect_digest):
            return self.layer(expect_digest), False
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                return self.import_layer(f, created_by, expect_digest=expect_digest, budget=budget,
                                         compression=compression, _before_commit=_before_commit)
        from . import tarsafe

        self._make_dirs()
        if budget is None:
            budget = tarsafe.Budget(self.root)
        with self._work_dir("layer-") as work:
            try:
                return self._unpack_into(work, src, created_by, expect_digest, budget, _before_commit,
                                         compression)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, KernelError):
                    raise KernelError(e.errno, f"unpack a layer under {self.root}") from None
                raise

    def _unpack_into(self, work: str, src: SupportsRead[bytes | bytearray], created_by: str,
                     expect_digest: str | None, budget: tarsafe.Budget,
                     _before_commit: Callable[[], object] | None,
                     compression: str | None) -> tuple[Layer, bool]:
        from . import tarsafe
        fs = os.path.join(work, "fs")
        os.mkdir(fs, 0o755)           # work, and so the layer's directory, stays 0700
        if compression is None:
            compression, src = tarsafe.sniff(src)
        blob = tarsafe.Decompressed(src, compression)
        try:
            with tarsafe.LayerStream(blob.chunks()) as reader:
                budget.watch(blob.compressed, reader)
                size, files = tarsafe.unpack(reader, fs, budget)
                reader.drain(budget)      # the digest covers the padding after the end marker
                digest = "sha256:" + reader.hexdigest()
        except Exception as e:
            # decompress_errors() imports the codecs: only once something failed
            if not isinstance(e, (EOFError, *tarsafe.decompress_errors())):
                raise
            raise InvalidArgument(f"layer tar is truncated or corrupt: {e}") from None
        if expect_digest is not None and digest != expect_digest:
            raise InvalidArgument(f"layer digest mismatch: expected {expect_digest}, "
                                  f"the tar is {digest}")
        if _before_commit is not None:
            _before_commit()
        meta: LayerMeta = {"digest": digest, "size": size, "files": files,
                           "created_by": created_by, "created": time.time()}
        _write_json(os.path.join(work, "meta.json"), meta)
        final = os.path.join(self.layers_dir, digest[7:])
        if os.path.exists(final):
            return self.layer(digest), False
        try:
            os.rename(work, final)
        except OSError:                   # lost a race with the same layer: theirs is complete
            if not os.path.exists(os.path.join(final, "meta.json")):
                raise
            return self.layer(digest), False
        return self.layer(digest), True

    @contextmanager
    def _work_dir(self, prefix: str) -> Iterator[str]:
        """A fresh directory in tmp/, flocked while this process works in it, so
        sweep_tmp() can tell a live import's from a killed one's; removed after."""
        import shutil
        import tempfile
        while True:
            work = tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir)
            try:
                fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue                      # swept before we could open it
            if _locked_while_linked(fd):
                break
        try:
            yield work
        finally:
            if os.path.exists(work):
                shutil.rmtree(work, ignore_errors=True)
            os.close(fd)

    @contextmanager
    def import_journal(self) -> Iterator[Callable[[str], int]]:
        """A file in tmp/, flocked while an import lives, to which note(digest)
        appends each layer before the import adds it: sweep_tmp() removes a
        killed import's layers that no image record uses, so an import ends
        complete or absent.  (No fsync: a SIGKILL keeps the page cache.)"""
        import tempfile
        while True:
            fd, path = tempfile.mkstemp(prefix="import-", dir=self.tmp_dir)
            if _locked_while_linked(fd):
                break
        try:
            yield lambda digest: os.write(fd, f"{digest_hex(digest)}\n".encode())
        finally:
            os.unlink(path)
            os.close(fd)

    def lock(self, blocking: bool = True) -> AbstractContextManager[bool]:
        """ROOT/images.lock, the one Runtime.commit, remove_image and image_gc
        take: held across an import's unpack and record writes.  (flock: a
        second lock() in the same process waits for the first.)  Yields
        True; with blocking=False, False at once if another holds it."""
        from ..fsutil import locked
        os.makedirs(self.root, exist_ok=True)
        return locked(os.path.join(self.root, "images.lock"), blocking=blocking)

    def sweep_tmp(self, keep: Iterable[str] = frozenset()) -> list[str]:
        """Remove what a killed import, commit or gc left in tmp/; returns the names.

        Each such work dir or file is flocked by its maker while it lives,
        so one we can lock is an orphan.  A killed import's layers in `keep`
        (digests: those the caller is about to name in an image) stay.  Call
        with lock() held."""
        import shutil
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return []
        removed: builtins.list[str] = []
        journalled: set[str] = set()
        for e in entries:
            if not e.name.startswith(_SWEPT):
                continue
            try:
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue                  # its maker is alive
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    if e.name.startswith("import-"):
                        journalled.update(_HEX.findall(os.read(fd, 1 << 20).decode("ascii", "replace")))
                    os.unlink(e.path)
                removed.append(e.name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if journalled:                        # a killed import's layers, unless an image has them
            kept = {digest_hex(d) for d in keep}
            for hexpart in sorted(journalled - self._recorded_layers() - kept):
                if os.path.isdir(os.path.join(self.layers_dir, hexpart)):
                    self.remove_layer(hexpart)
                    removed.append(f"sha256:{hexpart}")
        return removed

    def _recorded_layers(self) -> set[str]:
        """The hex digests of the layers some image record names."""
        out: set[str] = set()
        for _path, rec in self._records():
            try:
                out.update(digest_hex(d) for d in rec["layers"])
            except (KeyError, TypeError, InvalidArgument):
                continue
        return out

    def remove_layer(self, digest: str) -> None:
        """Remove one layer directory: renamed away first, so it vanishes at once."""
        hexpart = digest_hex(digest)
        self._make_dirs()
        with self._work_dir("gc-") as grave:
            try:
                os.rename(os.path.join(self.layers_dir, hexpart), os.path.join(grave, hexpart))
            except FileNotFoundError:
                pass

    # --- images ----------------------------------------------------------
    #
    # images/<key>.json is the image a name points at; key is the name as
    # normalize_name gives it ('busybox', 'barsumoci:v2', 'localhost:5000/x').
    # dangling/<hex>.json is an image a name was moved off (an import or
    # commit onto an existing name) while no other name points at it: still
    # reachable by its id until image gc collects it.

    def _image_path(self, name: str) -> str:
        return os.path.join(self.images_dir, f"{name}.json")

    def _dangling_path(self, hexpart: str) -> str:
        return os.path.join(self.dangling_dir, f"{hexpart}.json")

    def _legacy_keys(self, key: str) -> list[str]:
        """Where a record for `key` may have been written before references
        were parsed as Docker does: under the name as given, which for an
        archive's RepoTags was the full 'docker.io/library/x:v2'."""
        from . import reference
        r = reference.parse(key)
        if r.domain != reference.DEFAULT_DOMAIN or r.digest is not None:
            return []
        tag = "" if r.tag in (None, reference.DEFAULT_TAG) else f":{r.tag}"
        paths = [r.path]
        if r.path.startswith(reference.OFFICIAL_NAMESPACE + "/") and r.path.count("/") == 1:
            paths.append(r.path.partition("/")[2])
        return [f"{d}/{p}{tag}" for d in (reference.DEFAULT_DOMAIN, reference.LEGACY_DOMAIN)
                for p in paths]

    def _named(self, key: str) -> tuple[str, ImageRecord] | None:
        """(path, record) of the image the name `key` points at, or None."""
        for k in (key, *self._legacy_keys(key)):
            path = self._image_path(k)
            try:
                return path, _read_json(path)
            except FileNotFoundError:
                continue
        return None

    def _records(self, dangling: bool = True) -> Iterator[tuple[str, ImageRecord]]:
        """(path, record) of every readable record: named ones, then dangling ones."""
        dirs = [self.images_dir] + ([self.dangling_dir] if dangling else [])
        for top in dirs:
            for dirpath, _dirs, files in os.walk(top):
                for f in sorted(files):
                    if f.endswith(".json"):
                        path = os.path.join(dirpath, f)
                        try:
                            yield path, _read_json(path)
                        except (FileNotFoundError, ValueError):
                            continue

    def _find(self, ref: str) -> tuple[str, ImageRecord] | None:
        """Resolve `ref` as Docker does: a name (normalised), `name@sha256:<id>`,
        else an image id or a unique prefix of one (4 hex digits at least)."""
        from . import reference
        try:
            r = reference.parse(ref)
            bad = None
        except InvalidArgument as e:
            r, bad = None, e
            legacy = _LEGACY_NAME.fullmatch(ref) if isinstance(ref, str) else None
            if legacy and len(ref) <= 255:       # a name the old parser took: its record, as written
                tag = legacy.group(2)
                key = legacy.group(1) + ("" if tag in (None, "latest") else f":{tag}")
                try:
                    return self._image_path(key), _read_json(self._image_path(key))
                except FileNotFoundError:
                    pass
        if r is not None and r.digest is not None:
            if r.tag is None:                 # pulled by this (manifest) digest
                hit = self._named(r.key)
                if hit is not None:
                    return hit
            found = [(p, rec) for p, rec in self._records() if _rec_id(rec) == r.digest]
            return found[0] if found else None
        if r is not None:
            hit = self._named(r.key)
            if hit is not None:
                return hit
        hexpart = reference.image_id_prefix(ref)
        if hexpart is None:
            if bad is not None:
                raise bad                     # Docker's message for a malformed reference
            return None
        found = [(p, rec) for p, rec in self._records() if _rec_id(rec)[7:].startswith(hexpart)]
        if len({_rec_id(rec) for _p, rec in found}) > 1:
            raise InvalidArgument(f"image id prefix {ref!r} is ambiguous: it matches "
                                  f"{len({_rec_id(rec) for _p, rec in found})} images")
        return found[0] if found else None

    def get(self, name: str) -> Image:
        """The image `name` points at ("busybox", "busybox:latest" and
        "docker.io/library/busybox" are one), or the one with that id."""
        hit = self._find(name)
        if hit is None:
            raise NotFound(f"image {name!r} not found")
        return self._image(hit[1], dangling=hit[0].startswith(self.dangling_dir + os.sep))

    def _image(self, rec: ImageRecord, dangling: bool = False) -> Image:
        layers = []
        for d in rec["layers"]:
            try:
                layers.append(self.layer(d))
            except NotFound:
                raise NotFound(f"layer {d!r} of image {rec.get('name') or _rec_id(rec)!r} "
                               "not found") from None
        name = "" if dangling else _key_of(rec["name"])
        return Image(name=name, layers=tuple(layers), config=_config_of(rec),
                     created=rec.get("created", 0.0), history=tuple(rec.get("history", ())),
                     id=_rec_id(rec))

    def list(self) -> list[Image]:
        """Every image a name points at, by name (see dangling() for the others)."""
        out: dict[str, Image] = {}
        for path, rec in self._records(dangling=False):
            try:
                image = self._image(rec)
            except (NotFound, KeyError, TypeError):
                continue              # broken, or a layer removed meanwhile: get() will say which
            canonical = path == self._image_path(image.name)
            if image.name not in out or canonical:   # a legacy-named duplicate loses
                out[image.name] = image
        return sorted(out.values(), key=lambda i: i.name)

    def dangling(self) -> builtins.list[Image]:
        """Images a name was moved off, kept by id until gc(), oldest first."""
        out = []
        for path, rec in self._records():
            if path.startswith(self.dangling_dir + os.sep):
                try:
                    out.append(self._image(rec, dangling=True))
                except (NotFound, KeyError, TypeError):
                    continue
        return sorted(out, key=lambda i: i.created)

    def add_image(self, name: str, layers: Sequence[str], config: ImageConfig | None = None,
                  history: Sequence[str] = (), created: float | None = None) -> Image:
        """Record the image `name` made of stored layers, bottom first.  A name
        that pointed at another image is moved: the result's `replaced` is
        the old image's id, still reachable by it until gc()."""
        return self.add_images([(name, layers, config, history, created)])[0]

    def add_images(self, records: Iterable[ImageArgs], *,
                   by_digest: bool = False) -> builtins.list[Image]:
        """Record several images, all or none: (name, layers, config, history,
        created) each.  Every record is checked and written to tmp/ first,
        then all are renamed in; if a rename fails, the records renamed so
        far are put back as they were (replaced ones restored).  An image a
        name is moved off, and no other name points at, is kept in dangling/.
        `by_digest`: names may be digest references (a pull by digest)."""
        recs = [self._record(*r, by_digest=by_digest) for r in records]
        self._make_dirs()
        writing = {rec["name"] for rec in recs}
        replaced: dict[str, ImageRecord] = {}     # key -> the record it pointed at before
        legacy_paths = []
        for key in writing:
            for k in self._legacy_keys(key):
                if os.path.exists(self._image_path(k)):
                    legacy_paths.append(self._image_path(k))
            hit = self._named(key)
            if hit is not None:
                replaced[key] = hit[1]
        new_ids = {rec["id"] for rec in recs}
        kept_ids = set(new_ids)                   # ids some name still points at afterwards
        gone = {self._image_path(k) for k in writing} | set(legacy_paths)
        for path, rec in self._records(dangling=False):
            if path not in gone:
                kept_ids.add(_rec_id(rec))
        orphans: dict[str, ImageRecord] = {}
        for old in replaced.values():
            oid = _rec_id(old)
            if oid not in kept_ids and not os.path.exists(self._dangling_path(oid[7:])):
                orphans[oid] = {**old, "id": oid, "name": "", "was": _key_of(old.get("name", ""))}
        staged: builtins.list[tuple[str, int, str]] = []  # (tmp file, flock fd, final path)
        done: builtins.list[tuple[str, str | None]] = []  # (final path, backup of the old record or None)
        try:
            for rec in [*recs, *orphans.values()]:
                path = (self._image_path(rec["name"]) if rec["name"]
                        else self._dangling_path(rec["id"][7:]))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                staged.append((*_stage_json(rec, self.tmp_dir), path))
            for tmp, _fd, path in reversed(staged):       # the dangling copies first
                backup: str | None = None
                if os.path.exists(path):
                    backup = f"{tmp}.old"
                    os.link(path, backup)
                done.append((path, backup))
                os.replace(tmp, path)
            for _path, backup in done:
                if backup:
                    os.unlink(backup)
            done = []
        except BaseException:
            for path, backup in reversed(done):
                try:
                    if backup:
                        os.replace(backup, path)
                    else:
                        os.unlink(path)
                except FileNotFoundError:
                    pass
            raise
        finally:
            for tmp, fd, _path in staged:
                for leftover in (tmp, f"{tmp}.old"):
                    try:
                        os.unlink(leftover)
                    except FileNotFoundError:
                        pass
                os.close(fd)
        for path in legacy_paths:                 # superseded by the record under the new key
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for rec in recs:                          # a dangling copy of an image named again
            try:
                os.unlink(self._dangling_path(rec["id"][7:]))
            except FileNotFoundError:
                pass
        out = []
        for rec in recs:
            prev = replaced.get(rec["name"])
            moved = _rec_id(prev) if prev is not None and _rec_id(prev) != rec["id"] else ""
            out.append(self._image(rec)._replace(replaced=moved))
        return out

    def tag(self, source: str, target: str) -> Image:
        """Point the name `target` at the image `source` names (`docker tag`);
        a name it moves off is kept by id, as add_image says."""
        image = self.get(source)
        return self.add_image(target, [layer.digest for layer in image.layers], image.config,
                              image.history, image.created)

    def _record(self, name: str, layers: Iterable[str], config: ImageConfig | None = None,
                history: Iterable[str] = (), created: float | None = None, *,
                by_digest: bool = False) -> ImageRecord:
        """The JSON record of one image, checked: name, stored layers, history."""
        key = normalize_name(name, by_digest=by_digest)
        digests = []
        for d in layers:
            digests.append(f"sha256:{digest_hex(d)}")
            self.layer(d)                 # NotFound if missing
        entries = list(history)
        if entries and len(entries) != len(digests):
            raise InvalidArgument(f"image {key!r}: {len(entries)} history entries for "
                                  f"{len(digests)} layers")
        if not entries:
            entries = [self.layer(d).created_by for d in digests]
        config = config or ImageConfig()
        conf: ConfigRecord = {"cmd": list(config.cmd), "env": list(config.env),
                              "workdir": config.workdir}
        if (hc := config.healthcheck) is not None:
            conf["healthcheck"] = {"test": list(hc.test), "interval": hc.interval,
                                   "timeout": hc.timeout, "retries": hc.retries,
                                   "start_period": hc.start_period}
        rec: ImageRecord = {"name": key, "layers": digests, "config": conf,
                            "created": time.time() if created is None else created,
                            "history": entries}
        rec["id"] = image_id(rec)
        return rec

    def remove_image(self, name: str, in_use: Iterable[str] = ()) -> None:
        """Remove an image record (by name, or a dangling one by id); Conflict
        if a container uses it.  Layers stay until gc()."""
        hit = self._find(name)
        if hit is None:
            raise NotFound(f"image {name!r} not found")
        path = hit[0]
        image = self.get(name)
        used: set[str] = set()
        for n in in_use:
            try:
                used.add(normalize_name(n))
            except InvalidArgument:
                pass
        if image.name and image.name in used:
            raise Conflict(f"image {image.name!r} is in use by a container")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound(f"image {name!r} not found") from None

    def gc(self, used_layers: Iterable[str] = ()) -> builtins.list[str]:
        """Remove layers no image uses and not in `used_layers` (digests); return their digests.

        Also removes leftovers older than an hour in tmp/ (a killed unpack).
        """
        keep = {f"sha256:{digest_hex(d)}" for d in used_layers}
        removed: builtins.list[str] = []
        for image in self.dangling():     # unnamed images, unless a container runs their layers
            if not all(layer.digest in keep for layer in image.layers):
                try:
                    os.unlink(self._dangling_path(image.id[7:]))
                    removed.append(image.id)
                except FileNotFoundError:
                    pass
        for _path, rec in self._records():
            try:
                keep.update(rec["layers"])
            except (KeyError, TypeError):
                continue
        for layer in self.layers():
            if layer.digest not in keep:
                self.remove_layer(layer.digest)
                removed.append(layer.digest)
        self.sweep_tmp()
        self._clean_tmp()
        return removed

    def _clean_tmp(self) -> None:
        """Anything else in tmp/ (an export's work dir) once an hour old."""
        import shutil
        now = time.time()
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(_SWEPT):
                continue                  # sweep_tmp's: never while their maker lives
            try:
                if now - e.stat(follow_symlinks=False).st_mtime < _STALE_TMP:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except FileNotFoundError:
                pass

    def ensure_builtin(self) -> None:
        """Build the built-in images (busybox, lab) if missing; a few stats when present."""
        from . import builtin
        builtin.ensure(self)

    def _make_dirs(self) -> None:
        from ..fsutil import spread_subdirs
        for d in (self.layers_dir, self.images_dir, self.tmp_dir, self.dangling_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        spread_subdirs(self.tmp_dir)             # each unpack in a block group of its own (~10 µs)


# --- helpers ----------------------------------------------------------------

def _rec_id(rec: ImageRecord) -> str:
    rid = rec.get("id")
    return rid if isinstance(rid, str) and rid.startswith("sha256:") else image_id(rec)


def _key_of(name: str) -> str:
    """A stored record's name as the store's key: a legacy full name
    ('docker.io/library/x:v2') read as 'x:v2'; one the parser refuses, as written."""
    try:
        return normalize_name(name, by_digest=True)
    except InvalidArgument:
        return name


class _Counter:
    """Passes reads through and counts them: the compressed side of a ratio."""

    def __init__(self, f: SupportsRead[bytes]):
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        return data


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, obj: object) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def _stage_json(obj: object, tmp_dir: str) -> tuple[str, int]:
    """obj written and fsynced to a new file in tmp_dir, flocked (see
    ImageStore.sweep_tmp); returns (path, the fd holding the lock)."""
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix="image-", suffix=".json", dir=tmp_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.fchmod(fd, 0o644)
    except BaseException:
        os.unlink(tmp)
        os.close(fd)
        raise
    return tmp, fd
