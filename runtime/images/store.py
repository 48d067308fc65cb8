"""The content-addressed layer store and the image records on top of it.

    <root>/layers/<64hex>/fs/         unpacked tree: an overlay lowerdir
    <root>/layers/<64hex>/meta.json   digest, size, files, created_by, created
    <root>/images/<name>.json         name, layer digests bottom-first, config, created, history
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

from ..errors import Conflict, InvalidArgument, KernelError, NotFound
from ..model import Image, ImageConfig, Layer

_HEX = re.compile(r"[0-9a-f]{64}")
_REPO = r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(rf"({_REPO})(?::({_TAG}))?")
_STALE_TMP = 3600.0        # seconds before gc() removes other leftovers in tmp/
_SWEPT = ("layer-", "gc-", "image-", "outer-", "import-", "save-")   # tmp/ entries flocked by their maker


def normalize_name(name: str) -> str:
    """'busybox:latest' -> 'busybox'; other tags kept.  InvalidArgument if malformed."""
    m = _NAME.fullmatch(name) if isinstance(name, str) else None
    if not m or len(name) > 255:
        raise InvalidArgument(f"invalid image name {ascii(name)[:140]}: use lowercase ASCII letters, digits, "
                              "'.', '_', '-' and '/', with an optional ':tag'")
    repo, tag = m.group(1), m.group(2)
    return repo if tag in (None, "latest") else f"{repo}:{tag}"


def digest_hex(digest: str) -> str:
    """'sha256:<hex>' (or bare hex) -> '<hex>'.  InvalidArgument otherwise."""
    hexpart = digest[7:] if digest.startswith("sha256:") else digest
    if not _HEX.fullmatch(hexpart):
        raise InvalidArgument(f"invalid layer digest {digest!r}: expected sha256:<64 hex digits>")
    return hexpart


class ImageStore:
    """Layers and images under one root directory (the runtime root)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)          # str paths: pathlib costs ~7 ms to import
        self.layers_dir = os.path.join(self.root, "layers")
        self.images_dir = os.path.join(self.root, "images")
        self.tmp_dir = os.path.join(self.root, "tmp")

    # --- layers ----------------------------------------------------------

    def layer(self, digest: str) -> Layer:
        """The stored layer with this digest; NotFound if it is not complete on disk."""
        hexpart = digest_hex(digest)
        d = os.path.join(self.layers_dir, hexpart)
        try:
            meta = _read_json(os.path.join(d, "meta.json"))
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
        out = []
        for n in names:
            if _HEX.fullmatch(n):
                try:
                    out.append(self.layer(n))
                except NotFound:
                    pass
        return out

    def has_layer(self, digest: str) -> bool:
        return os.path.exists(os.path.join(self.layers_dir, digest_hex(digest), "meta.json"))

    def add_layer_from_tar(self, src, created_by: str = "", *, expect_digest: str | None = None,
                           budget=None, _before_commit=None) -> Layer:
        """Unpack a layer tar (path or binary file object, plain or gzip) into the store.

        The digest is the sha256 of the uncompressed tar.  An existing layer
        with that digest is reused.  With `expect_digest` (an OCI diff_id)
        an already stored layer is returned without reading `src`, and a
        different digest is refused.  On any failure nothing is left behind.
        `budget` (tarsafe.Budget) bounds what it may unpack; by default the
        environment's limits and the free space under the root.
        """
        return self.import_layer(src, created_by, expect_digest=expect_digest, budget=budget,
                                 _before_commit=_before_commit)[0]

    def import_layer(self, src, created_by: str = "", *, expect_digest: str | None = None,
                     budget=None, _before_commit=None) -> tuple[Layer, bool]:
        """add_layer_from_tar, and whether this call put the layer in place
        (True) or found it already there (False): a rollback removes only the first."""
        if expect_digest is not None and self.has_layer(expect_digest):
            return self.layer(expect_digest), False
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                return self.import_layer(f, created_by, expect_digest=expect_digest, budget=budget,
                                         _before_commit=_before_commit)
        from . import tarsafe

        self._make_dirs()
        if budget is None:
            budget = tarsafe.Budget(self.root)
        with self._work_dir("layer-") as work:
            try:
                return self._unpack_into(work, src, created_by, expect_digest, budget, _before_commit)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, KernelError):
                    raise KernelError(e.errno, f"unpack a layer under {self.root}") from None
                raise

    def _unpack_into(self, work, src, created_by, expect_digest, budget, _before_commit):
        from . import tarsafe
        fs = os.path.join(work, "fs")
        os.mkdir(fs, 0o755)           # work, and so the layer's directory, stays 0700
        raw = _Counter(src)
        reader = _HashReader(_uncompressed(raw))
        budget.watch(raw, reader)
        try:
            size, files = tarsafe.unpack(reader, fs, budget)
            reader.drain(budget)          # the digest covers the padding after the end marker
        except (EOFError, *_gzip_errors()) as e:
            raise InvalidArgument(f"layer tar is truncated or corrupt: {e}") from None
        digest = "sha256:" + reader.hexdigest()
        if expect_digest is not None and digest != expect_digest:
            raise InvalidArgument(f"layer digest mismatch: expected {expect_digest}, "
                                  f"the tar is {digest}")
        if _before_commit is not None:
            _before_commit()
        meta = {"digest": digest, "size": size, "files": files,
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
    def _work_dir(self, prefix: str):
        """A fresh directory in tmp/, flocked while this process works in it, so
        sweep_tmp() can tell a live import's from a killed one's; removed after."""
        import shutil
        import tempfile
        work = tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir)
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield work
        finally:
            if os.path.exists(work):
                shutil.rmtree(work, ignore_errors=True)
            os.close(fd)

    @contextmanager
    def import_journal(self):
        """A file in tmp/, flocked while an import lives, to which note(digest)
        appends each layer before the import adds it: sweep_tmp() removes a
        killed import's layers that no image record uses, so an import ends
        complete or absent.  (No fsync: a SIGKILL keeps the page cache.)"""
        import tempfile
        fd, path = tempfile.mkstemp(prefix="import-", dir=self.tmp_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield lambda digest: os.write(fd, f"{digest_hex(digest)}\n".encode())
        finally:
            os.unlink(path)
            os.close(fd)

    def lock(self):
        """ROOT/images.lock, the one Runtime.commit, remove_image and image_gc
        take: held across an import's unpack and record writes.  (flock: a
        second lock() in the same process waits for the first.)"""
        from ..fsutil import locked
        os.makedirs(self.root, exist_ok=True)
        return locked(os.path.join(self.root, "images.lock"))

    def sweep_tmp(self) -> list[str]:
        """Remove what a killed import, commit or gc left in tmp/; returns the names.

        Each such work dir or file is flocked by its maker while it lives,
        so one we can lock is an orphan.  Call with lock() held."""
        import shutil
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return []
        removed, journalled = [], set()
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
            for hexpart in sorted(journalled - self._recorded_layers()):
                if os.path.isdir(os.path.join(self.layers_dir, hexpart)):
                    self.remove_layer(hexpart)
                    removed.append(f"sha256:{hexpart}")
        return removed

    def _recorded_layers(self) -> set[str]:
        """The hex digests of the layers some image record names."""
        out = set()
        for dirpath, _dirs, files in os.walk(self.images_dir):
            for f in files:
                if f.endswith(".json"):
                    try:
                        out.update(digest_hex(d) for d in _read_json(os.path.join(dirpath, f))["layers"])
                    except (FileNotFoundError, ValueError, KeyError, InvalidArgument):
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

    def _image_path(self, name: str) -> str:
        return os.path.join(self.images_dir, f"{name}.json")

    def get(self, name: str) -> Image:
        """The image called `name` ("busybox" and "busybox:latest" are one)."""
        try:
            key = normalize_name(name)
        except InvalidArgument:
            raise NotFound(f"image {name!r} not found") from None
        try:
            rec = _read_json(self._image_path(key))
        except FileNotFoundError:
            raise NotFound(f"image {name!r} not found") from None
        return self._image(rec)

    def _image(self, rec: dict) -> Image:
        layers = []
        for d in rec["layers"]:
            try:
                layers.append(self.layer(d))
            except NotFound:
                raise NotFound(f"layer {d!r} of image {rec['name']!r} not found") from None
        c = rec.get("config", {})
        config = ImageConfig(cmd=tuple(c.get("cmd", ())), env=tuple(c.get("env", ())),
                             workdir=c.get("workdir", "/") or "/")
        return Image(name=rec["name"], layers=tuple(layers), config=config,
                     created=rec.get("created", 0.0), history=tuple(rec.get("history", ())))

    def list(self) -> list[Image]:
        """Every image, by name."""
        out = []
        for dirpath, _dirs, files in os.walk(self.images_dir):
            for f in files:
                if not f.endswith(".json"):
                    continue
                try:
                    rec = _read_json(os.path.join(dirpath, f))
                    out.append(self._image(rec))
                except (FileNotFoundError, NotFound, ValueError, KeyError):
                    continue              # removed meanwhile, or broken: get() will say which
        return sorted(out, key=lambda i: i.name)

    def add_image(self, name: str, layers: list[str], config: ImageConfig | None = None,
                  history: list[str] | tuple[str, ...] = (), created: float | None = None) -> Image:
        """Record (or replace) the image `name` made of stored layers, bottom first."""
        return self.add_images([(name, layers, config, history, created)])[0]

    def add_images(self, records) -> list[Image]:
        """Record several images, all or none: (name, layers, config, history,
        created) each.  Every record is checked and written to tmp/ first,
        then all are renamed in; if a rename fails, the records renamed so
        far are put back as they were (replaced ones restored)."""
        recs = [self._record(*r) for r in records]
        self._make_dirs()
        staged = []                               # (tmp file, final path, flock fd)
        done = []                                 # (final path, backup of the old record or None)
        try:
            for rec in recs:
                path = self._image_path(rec["name"])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                staged.append((*_stage_json(rec, self.tmp_dir), path))
            for tmp, _fd, path in staged:
                backup = None
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
        return [self._image(rec) for rec in recs]

    def _record(self, name: str, layers, config=None, history=(), created=None) -> dict:
        """The JSON record of one image, checked: name, stored layers, history."""
        key = normalize_name(name)
        digests = []
        for d in layers:
            digests.append(f"sha256:{digest_hex(d)}")
            self.layer(d)                 # NotFound if missing
        history = list(history)
        if history and len(history) != len(digests):
            raise InvalidArgument(f"image {key!r}: {len(history)} history entries for "
                                  f"{len(digests)} layers")
        if not history:
            history = [self.layer(d).created_by for d in digests]
        config = config or ImageConfig()
        return {"name": key, "layers": digests,
                "config": {"cmd": list(config.cmd), "env": list(config.env),
                           "workdir": config.workdir},
                "created": time.time() if created is None else created,
                "history": history}

    def remove_image(self, name: str, in_use: set[str] | frozenset[str] | tuple = ()) -> None:
        """Remove an image record; Conflict if a container uses it.  Layers stay until gc()."""
        image = self.get(name)
        used = set()
        for n in in_use:
            try:
                used.add(normalize_name(n))
            except InvalidArgument:
                pass
        if image.name in used:
            raise Conflict(f"image {image.name!r} is in use by a container")
        try:
            os.unlink(self._image_path(image.name))
        except FileNotFoundError:
            raise NotFound(f"image {name!r} not found") from None

    def gc(self, used_layers: set[str] | frozenset[str] | tuple = ()) -> list[str]:
        """Remove layers no image uses and not in `used_layers` (digests); return their digests.

        Also removes leftovers older than an hour in tmp/ (a killed unpack).
        """
        keep = {f"sha256:{digest_hex(d)}" for d in used_layers}
        for dirpath, _dirs, files in os.walk(self.images_dir):
            for f in files:
                if f.endswith(".json"):
                    try:
                        keep.update(_read_json(os.path.join(dirpath, f))["layers"])
                    except (FileNotFoundError, ValueError, KeyError):
                        continue
        removed = []
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
        for d in (self.layers_dir, self.images_dir, self.tmp_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)


# --- helpers ----------------------------------------------------------------

class _HashReader:
    """Passes reads through and hashes them: the digest of what tarfile consumed."""

    def __init__(self, f):
        import hashlib
        self._f = f
        self._h = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        self.count += len(data)
        return data

    def drain(self, budget=None) -> None:
        while self.read(1 << 20):
            if budget is not None:
                budget.check_ratio("data after the layer tar's end")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class _Counter:
    """Passes reads through and counts them: the compressed side of a ratio."""

    def __init__(self, f):
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        return data


class _Prefixed:
    """A reader that first returns `head`, already read from `f` to sniff it."""

    def __init__(self, head: bytes, f):
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._f.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            if len(data) < n:
                data += self._f.read(n - len(data))
            return data
        return self._f.read(n)


def _uncompressed(f):
    """`f` itself for a plain tar, a decompressing reader for gzip (by magic)."""
    head = b""
    while len(head) < 4:
        chunk = f.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    f = _Prefixed(head, f)
    if head[:2] == b"\x1f\x8b":
        import gzip
        return gzip.GzipFile(fileobj=f, mode="rb")
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise InvalidArgument("zstd-compressed layers are not supported; use gzip or plain tar")
    return f


def _gzip_errors() -> tuple[type[Exception], ...]:
    import gzip
    import zlib
    return (gzip.BadGzipFile, zlib.error)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def _stage_json(obj, tmp_dir: str) -> tuple[str, int]:
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
