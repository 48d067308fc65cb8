"""Layer tars <-> directory trees, safely.

`unpack` turns one OCI/Docker layer tar into an overlay lower directory. It
is its own member loop, not `tarfile.extractall`: every member is checked
before anything is written, and nothing is ever written *through* a symlink
or outside the destination.  Refused:

- absolute names and `..` components (hardlink targets too);
- a member whose parent directory is a symlink (`a -> /` then `a/etc/x`);
- relative symlinks that point above the layer root, resolved from the
  link's own directory (absolute targets are fine: they are read inside the
  container's root, as Docker allows);
- hardlinks to anything not already in this layer;
- names longer than PATH_MAX, or a component longer than NAME_MAX.

Device nodes (character and block) and FIFOs are recreated as real base
images carry them (`dev/console`, `dev/null`): inert, since a container's
root and /dev are mounted nodev, and the layer store is 0700 root-only on the
host.  A 0/0 character device is overlay's whiteout.  Sparse members (GNU
and PAX sparse) are written with holes.  Long names come as PAX or GNU
headers (tarfile reads both).  Sockets have no tar type: `pack` skips them,
as Docker does.

Whiteouts in either spelling become overlay ones: `.wh.NAME` (OCI) or a 0/0
character device `NAME` (overlay's) a 0/0 device `NAME`; `.wh..wh..opq`,
before or after its siblings, the xattr `trusted.overlay.opaque=y` on its
directory.  An opaque directory said only as an overlay xattr in the tar is
not taken (see xattr_kept): what hides lower layers must be visible to
every OCI tool reading the layer.
Modes, owners, mtimes, symlinks and hardlinks are kept, and so are the
extended attributes a layer may carry (`xattr_kept`: file capabilities and
`user.*`), from and to PAX `SCHILY.xattr.<name>` records as Docker writes them.

`pack` goes the other way (overlay whiteouts back to OCI spelling) and is
deterministic: entries sorted by path components, owners numeric, no
user/group names, integer mtimes, xattrs sorted by name.  A tree unpacked
from a tar that was written the same way packs back to the very same bytes,
hence same digest.

The caller owns `dest`: on any error it removes the whole directory.
"""
from __future__ import annotations

import errno
import functools
import os
import stat
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypedDict

from ..errors import InvalidArgument, KernelError

if TYPE_CHECKING:
    import queue
    import tarfile
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from types import ModuleType

    from _typeshed import SupportsRead, SupportsWrite

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PATH_MAX = 4096
NAME_MAX = 255
_CHUNK = 1 << 20
MAX_HEADER = 1 << 20                  # one PAX or GNU long-name header, as Go's archive/tar caps it
XATTR_PAX = "SCHILY.xattr."           # PAX record of one xattr (star, GNU tar, Docker)
MAX_XATTRS = 32                       # xattr records one member may carry
MAX_XATTR_BYTES = 64 << 10            # their names and values together (Linux: 64 KiB a value)


def sort_key(path: str) -> tuple[str, ...]:
    """Order of entries in every tar we write: a depth-first walk, names sorted."""
    return tuple(path.split("/"))


@functools.cache
def bounded_tarinfo() -> type[tarfile.TarInfo]:
    """A TarInfo class whose PAX and GNU long-name headers are at most
    MAX_HEADER bytes: tarfile reads such a header whole into memory before
    it yields the member, so a tar could otherwise ask for gigabytes of it."""
    import tarfile

    # _proc_pax and _proc_gnulong are tarfile's own (private, not in typeshed)
    class Bounded(tarfile.TarInfo):
        def _proc_pax(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            self._check_size()
            return super()._proc_pax(tf)  # type: ignore[misc, no-any-return]  # private, see above

        def _proc_gnulong(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            self._check_size()
            return super()._proc_gnulong(tf)  # type: ignore[misc, no-any-return]  # private, see above

        def _check_size(self) -> None:
            if self.size > MAX_HEADER:
                raise InvalidArgument(f"the tar has an extended header (PAX or GNU long name) of "
                                      f"{self.size} bytes; at most {MAX_HEADER} are taken")
    return Bounded


# --- extended attributes ----------------------------------------------------

def xattr_kept(name: str) -> bool:
    """Whether a layer carries the xattr `name`, in and out alike.

    Kept: `security.capability` (file capabilities: distributions install
    `ping` with cap_net_raw+ep rather than setuid root; it is the one
    xattr Docker's own layer packing records) and `user.*` (data any
    file's owner may set).  Not kept:
    - `trusted.overlay.*` and `user.overlay.*`: overlayfs's own markers
      (opaque, whiteout, redirect, metacopy, origin; `user.` when mounted
      with userxattr).  On a lower layer's file they would let an archive
      forge whiteouts and opaque directories, or redirect a directory to
      another path of the stack; a layer says those things only in its
      OCI spelling (`.wh.`), and overlay writes its own on the upper dir.
    - other `trusted.*`: only CAP_SYS_ADMIN reads them, which no container
      process has, so nothing in an image could use them.
    - other `security.*` (selinux, ima, evm): labels of the host's own
      policy, not an image's to choose; `system.*` (ACLs) are not carried.
    """
    if name == "security.capability":
        return True
    return name.startswith("user.") and not name.startswith("user.overlay.")


def _pax_xattrs(m: tarfile.TarInfo, what: str) -> dict[str, bytes]:
    """The kept xattrs of member m, from its PAX records, after checking
    the count and size of all of them (kept or not) against the caps."""
    records = [(k[len(XATTR_PAX):], v) for k, v in m.pax_headers.items() if k.startswith(XATTR_PAX)]
    if not records:
        return {}
    if len(records) > MAX_XATTRS:
        raise InvalidArgument(f"{what} carries {len(records)} extended attributes; at most "
                              f"{MAX_XATTRS} are taken")
    out: dict[str, bytes] = {}
    total = 0
    for name, text in records:
        # tarfile gives each value as text; surrogateescape gives back the
        # very bytes when they were not UTF-8 (a capability mask often is not).
        value = text.encode("utf-8", "surrogateescape")
        raw_name = name.encode("utf-8", "surrogateescape")
        total += len(raw_name) + len(value)
        if not name or "\0" in name or len(raw_name) > NAME_MAX:
            raise InvalidArgument(f"{what} carries an extended attribute of no valid name "
                                  f"({ascii(name)[:80]})")
        if xattr_kept(name):
            out[name] = value
    if total > MAX_XATTR_BYTES:
        raise InvalidArgument(f"{what} carries {total} bytes of extended attributes; at most "
                              f"{MAX_XATTR_BYTES} are taken")
    return out


# --- budget -----------------------------------------------------------------

class Counted(Protocol):
    """A byte counter a Budget watches: Count, LayerStream, store._Counter."""
    count: int


class Budget:
    """What one import may cost: unpacked bytes, entries, directory depth and
    decompression ratio, each with a default and an environment override,
    the first two also capped by the free space and inodes of the state root
    (statvfs at the start).  Shared by every layer of one import.

    A gzip of zeros expands about 1000:1, so a 1 GB upload could ask for a
    terabyte; the ratio check stops such a stream early (once 64 MiB are out),
    the byte and space checks stop it in any case."""

    DEFAULTS = {"TERRARIUM_UNPACK_MAX_BYTES": "64g", "TERRARIUM_UNPACK_MAX_ENTRIES": "1000000",
                "TERRARIUM_UNPACK_MAX_RATIO": "200", "TERRARIUM_UNPACK_MAX_DEPTH": "256"}
    RATIO_AFTER = 64 << 20
    BLOCK = 4096

    def __init__(self, root: str, *, max_bytes: int | None = None, max_entries: int | None = None,
                 max_ratio: int | None = None, max_depth: int | None = None,
                 environ: Mapping[str, str] | None = None):
        from ..spec import parse_size
        env = os.environ if environ is None else environ

        def setting(name: str, given: int | None, parse: Callable[[str], int]) -> int:
            if given is not None:
                return given
            text = env.get(name) or self.DEFAULTS[name]
            try:
                return parse(text)
            except (ValueError, InvalidArgument):
                raise InvalidArgument(f"{name}={ascii(text)} is not a valid number") from None
        self.max_bytes = setting("TERRARIUM_UNPACK_MAX_BYTES", max_bytes, lambda t: parse_size(t, "size"))
        self.max_entries = setting("TERRARIUM_UNPACK_MAX_ENTRIES", max_entries, _count)
        self.max_ratio = setting("TERRARIUM_UNPACK_MAX_RATIO", max_ratio, _count)
        self.max_depth = setting("TERRARIUM_UNPACK_MAX_DEPTH", max_depth, _count)
        self.root = root
        st = os.statvfs(root)
        # Leave a little for everything else on that filesystem: 5%, at most 256 MiB.
        reserve = min(256 << 20, st.f_blocks * st.f_frsize // 20)
        self.free_bytes = max(0, st.f_bavail * st.f_frsize - reserve)
        self.free_inodes = st.f_favail if st.f_files else None   # tmpfs/btrfs may report 0: no limit
        self.bytes = 0
        self.entries = 0
        self.streams: list[tuple[Counted, Counted]] = []   # (compressed, uncompressed)

    def watch(self, compressed: Counted, uncompressed: Counted) -> None:
        """Check the ratio of these two byte counters (objects with .count) as data flows."""
        self.streams.append((compressed, uncompressed))

    def charge(self, nbytes: int, what: str) -> None:
        """Space that stays on disk: content rounded up to a block."""
        self.bytes += -(-nbytes // self.BLOCK) * self.BLOCK
        if self.bytes > self.max_bytes:
            raise InvalidArgument(f"{what}: the import unpacks to more than {self.max_bytes} bytes "
                                  "(TERRARIUM_UNPACK_MAX_BYTES)")
        if self.bytes > self.free_bytes:
            raise KernelError(errno.ENOSPC, f"{what}: the import needs more than the "
                                            f"{self.free_bytes} bytes free under {self.root}")

    def entry(self, rel: str, what: str) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise InvalidArgument(f"{what}: the import has more than {self.max_entries} entries "
                                  "(TERRARIUM_UNPACK_MAX_ENTRIES)")
        if self.free_inodes is not None and self.entries > self.free_inodes:
            raise KernelError(errno.ENOSPC, f"{what}: the import needs more than the "
                                            f"{self.free_inodes} inodes free under {self.root}")
        if rel.count("/") + 1 > self.max_depth:
            raise InvalidArgument(f"{what}: {rel[:64]!r}... is more than {self.max_depth} directories "
                                  "deep (TERRARIUM_UNPACK_MAX_DEPTH)")
        self.check_ratio(what)

    def check_ratio(self, what: str) -> None:
        for packed, unpacked in self.streams:
            out = unpacked.count
            if out > self.RATIO_AFTER and out > self.max_ratio * max(packed.count, 1):
                raise InvalidArgument(f"{what}: expands more than {self.max_ratio}:1 when "
                                      "decompressed (TERRARIUM_UNPACK_MAX_RATIO); refusing a "
                                      "likely decompression bomb")


def _count(text: str) -> int:
    if not text.isascii() or not text.strip().isdigit():
        raise ValueError(text)
    return int(text)



# --- the stream a layer is read from ------------------------------------------

class Count:
    """A byte counter a Budget watches (.count)."""
    count = 0


def _zlib() -> ModuleType:
    """zlib-ng's Python binding (zlib's API; inflates 4-5x faster than the
    system zlib, which `tar -xzf`'s gzip uses), else zlib itself."""
    try:
        from .distribution import _lib
        return _lib("zlib_ng.zlib_ng")
    except ImportError:
        import zlib
        return zlib


def decompress_errors() -> tuple[type[Exception], ...]:
    """What corrupt compressed data raises (a cut stream: EOFError)."""
    import zlib
    errors = [zlib.error, _zlib().error]
    try:
        from .distribution import _lib
        errors.append(_lib("zstandard").ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class Decompressed:
    """The tar inside a layer blob as chunks of at most 1 MiB: plain, gzip
    (zlib-ng or zlib, every member, zero padding after the last allowed,
    each trailer's CRC checked) or zstd (zstandard, every frame).
    `compressed.count`: bytes read from `f`, for the budget's ratio check.
    Corrupt data raises one of decompress_errors(), a cut EOFError."""

    def __init__(self, f: SupportsRead[bytes | bytearray], kind: str):
        if kind not in ("tar", "gzip", "zstd"):
            raise ValueError(kind)
        self._f, self.kind = f, kind
        self.compressed = Count()

    def _raw(self) -> bytes | bytearray:
        data = self._f.read(_CHUNK)
        self.compressed.count += len(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        if self.kind == "tar":
            while data := self._raw():
                yield bytes(data) if isinstance(data, bytearray) else data   # a pull's: see _Blob._recv
        elif self.kind == "zstd":
            from .distribution import _lib
            z = _lib("zstandard").ZstdDecompressor().stream_reader(self, read_size=_CHUNK,
                                                                   read_across_frames=True)
            while data := z.read(_CHUNK):
                yield data
        else:
            yield from self._gunzip()

    def read(self, n: int = -1) -> bytes | bytearray:     # for zstandard's stream_reader
        data = self._f.read(n)
        self.compressed.count += len(data)
        return data

    def _gunzip(self) -> Iterator[bytes]:
        zlib = _zlib()
        d = zlib.decompressobj(31)
        data = self._raw()
        if not data:
            raise EOFError("the gzip stream is empty")
        while True:
            # bounded: a bomb cannot fill memory at once
            piece = d.decompress(data, _CHUNK)
            if piece:
                yield piece
            if d.eof:                                # a member ended: another, padding or the end
                data = d.unused_data or self._raw()
                if not data or not data.lstrip(b"\0"):
                    while data:
                        if data.lstrip(b"\0"):
                            raise zlib.error("data after the gzip stream")
                        data = self._raw()
                    return
                d = zlib.decompressobj(31)
            elif d.unconsumed_tail:
                data = d.unconsumed_tail
            else:
                data = self._raw()
                if not data:
                    raise EOFError("the gzip stream ends early")


def sniff(f: SupportsRead[bytes | bytearray]) -> tuple[str, _Prefixed]:
    """(kind, reader) of a blob of unknown compression, by its magic: 'gzip',
    'zstd' or 'tar'; the reader gives back the bytes read to sniff."""
    head = b""
    while len(head) < 4:
        chunk = f.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    kind = "gzip" if head[:2] == b"\x1f\x8b" else "zstd" if head == b"\x28\xb5\x2f\xfd" else "tar"
    return kind, _Prefixed(head, f)


class _Prefixed:
    def __init__(self, head: bytes, f: SupportsRead[bytes | bytearray]):
        self._head, self._f = head, f

    def read(self, n: int = -1) -> bytes | bytearray:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._f.read(n)


class LayerStream:
    """The uncompressed layer tar, read, decompressed and hashed by a second
    thread while this one unpacks (zlib, zstd, sha256 and file reads let go
    of the GIL: two cores work on one layer), in chunks of up to 1 MiB.

    The digest is of every chunk handed over, in order, so of the very bytes
    unpacked (and, after drain(), of the padding after the tar's end marker):
    never a second read of a source that could change in between.  Offers
    what tarfile's seekable mode needs (read, tell, forward seek) plus
    copy_to(), which writes a member's content straight from the chunks.
    `count`: uncompressed bytes, for the budget's ratio check.  Use as a
    context manager: leaving it stops the thread."""

    DEPTH = 8                             # chunks read ahead of the unpack

    def __init__(self, chunks: Iterable[bytes]):
        import hashlib
        import queue
        import threading
        self.count = 0
        self._h = hashlib.sha256()
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(self.DEPTH)
        self._stop = False
        self._chunk = b""
        self._pos = 0
        self._base = 0                    # stream offset of _chunk[0]
        self._eof = False
        self._thread = threading.Thread(target=self._produce, args=(chunks,), name="layer-read",
                                        daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterable[bytes]) -> None:
        try:
            for c in chunks:
                if self._stop:
                    return
                self._h.update(c)
                self.count += len(c)
                self._q.put(c)
            self._q.put(None)
        except BaseException as e:        # noqa: BLE001 -- handed to the unpacking thread, raised there
            self._q.put(e)

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        import queue
        self._stop = True
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _next(self) -> bool:
        """The next chunk as the current one; False at the end."""
        if self._eof:
            return False
        item = self._q.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._base += len(self._chunk)
        self._chunk, self._pos = item, 0
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._chunk[self._pos:]]
            self._pos = len(self._chunk)
            while self._next():
                parts.append(self._chunk)
                self._pos = len(self._chunk)
            return b"".join(parts)
        left = len(self._chunk) - self._pos
        if n <= left:
            data = self._chunk[self._pos:self._pos + n]
            self._pos += n
            return data
        parts = [self._chunk[self._pos:]] if left else []
        self._pos = len(self._chunk)
        n -= left
        while n and self._next():
            take = min(n, len(self._chunk))
            parts.append(self._chunk[:take])
            self._pos = take
            n -= take
        return b"".join(parts)

    def tell(self) -> int:
        return self._base + self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0:
            raise OSError(errno.ESPIPE, "a layer stream seeks only to absolute offsets")
        if offset < self._base:
            raise OSError(errno.ESPIPE, "a layer stream cannot go back")
        while offset > self._base + len(self._chunk):
            if not self._next():
                self._pos = len(self._chunk)
                return self.tell()        # past the end: the next read says so
        self._pos = offset - self._base
        return offset

    def copy_to(self, out_fd: int, size: int, check: Callable[[], object] | None = None) -> None:
        """Write the next `size` bytes to out_fd; EOFError if the stream ends first."""
        while size:
            if self._pos == len(self._chunk) and not self._next():
                raise EOFError("unexpected end of data")
            view = memoryview(self._chunk)[self._pos:self._pos + size]
            self._pos += len(view)
            size -= len(view)
            while view:
                view = view[os.write(out_fd, view):]
            if check is not None:
                check()

    def drain(self, budget: Budget | None = None) -> None:
        """Read to the end (the digest covers the padding after the end marker)."""
        self._pos = len(self._chunk)
        while self._next():
            self._pos = len(self._chunk)
            if budget is not None:
                budget.check_ratio("data after the layer tar's end")

    def hexdigest(self) -> str:
        if not self._eof:
            raise RuntimeError("the layer stream is not read to its end")
        self._thread.join()
        return self._h.hexdigest()

# --- unpack -----------------------------------------------------------------

def unpack(stream: SupportsRead[bytes], dest: str, budget: Budget | None = None) -> tuple[int, int]:
    """Unpack the uncompressed tar read from `stream` into the empty dir `dest`.

    Returns (bytes of file content, entries).  `stream` is a LayerStream,
    or anything with read() (then read through one); it is read forward
    only, never past the tar's end-of-archive marker.  Raises InvalidArgument
    naming the member on a refused or corrupt tar, or when `budget` runs
    out; `dest` is then in an undefined state.
    """
    if not isinstance(stream, LayerStream):
        with LayerStream(iter(lambda: stream.read(_CHUNK), b"")) as s:
            return unpack(s, dest, budget)
    import tarfile

    u = _Unpacker(dest, budget, stream)
    try:
        # The seekable mode on a forward-only stream: headers are read as
        # they come, and content is copied by _Unpacker straight from the
        # stream's chunks (the stream mode re-slices a 10 KiB buffer for
        # every read and copies each piece three times).
        # (typeshed wants a fileobj that can write too; reading never calls it)
        with tarfile.open(fileobj=stream, mode="r:",  # type: ignore[call-overload]
                          tarinfo=bounded_tarinfo()) as tf:
            for member in tf:
                u.member(tf, member)
    except (tarfile.TarError, EOFError) as e:
        raise InvalidArgument(f"layer tar is truncated or corrupt: {e}") from None
    except OSError as e:
        if e.errno != errno.ESPIPE:
            raise
        raise InvalidArgument(f"layer tar is corrupt: {e.strerror}") from None
    u.finish()
    return u.size, u.files


def clean_name(name: str, what: str = "member") -> str:
    """'./usr//bin/' -> 'usr/bin'; '' for the root.  Refuses '/x' and '..'."""
    if name.startswith("/"):
        raise InvalidArgument(f"layer tar {what} {name!r} is an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise InvalidArgument(f"layer tar {what} {name[:64]!r}... is longer than {PATH_MAX} bytes")
    parts = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            raise InvalidArgument(f"layer tar {what} {name!r} has a '..' component")
        if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise InvalidArgument(f"layer tar {what} {name!r} has a name longer than {NAME_MAX} bytes")
        if "\0" in p:
            raise InvalidArgument(f"layer tar {what} {name!r} contains a NUL byte")
        parts.append(p)
    return "/".join(parts)


class _Unpacker:
    def __init__(self, dest: str, budget: Budget | None, stream: LayerStream):
        self.dest = dest
        self.budget = budget
        self.stream = stream
        self.size = 0
        self.files = 0
        self.dirs: dict[str, tuple[int, int]] = {}   # rel dir -> (mode, mtime), set at the end
        self.checked = {""}                            # rel dirs known to be real dirs

    # One member, checked first, then written.
    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = clean_name(m.name)
        if not rel:                       # "./": the layer root itself; overlay ignores it
            return
        what = f"layer tar member {m.name[:64]!r}"
        xattrs = _pax_xattrs(m, what)
        if self.budget is not None:
            self.budget.entry(rel, what)
            if m.isreg() or m.isdir():
                self.budget.charge((m.size if m.isreg() else Budget.BLOCK)
                                   + sum(len(k) + len(v) for k, v in xattrs.items()), what)
        base = rel.rsplit("/", 1)[-1]
        parent = rel.rpartition("/")[0]
        if base == OPAQUE:
            self._parent_dir(parent, m.name)
            path = self._abs(parent)
            _setxattr(path, OPAQUE_XATTR, b"y")
            self.files += 1
            return
        if base.startswith(WHITEOUT + WHITEOUT):  # aufs bookkeeping (.wh..wh.plnk): skip, as Docker does
            return
        if base.startswith(WHITEOUT):
            target = (parent + "/" if parent else "") + base[len(WHITEOUT):]
            if base[len(WHITEOUT):] in ("", ".", ".."):
                raise InvalidArgument(f"layer tar member {m.name!r} is a whiteout of no valid name")
            self._parent_dir(parent, m.name)
            self._make_room(target, m.name, is_dir=False)
            _mknod_whiteout(self._abs(target))
            self._attrs(target, m, link=False)
            self.files += 1
            return

        self._check_type(m)
        self._parent_dir(parent, m.name)
        path = self._abs(rel)
        if m.isdir():
            if not self._make_room(rel, m.name, is_dir=True):
                os.mkdir(path, 0o700)
            self.checked.add(rel)
            self._chown(path, m)
            self._xattrs(path, xattrs, what)
            self.dirs[rel] = (m.mode & 0o7777, int(m.mtime))
        elif m.issym():
            self._check_symlink(rel, m)
            self._make_room(rel, m.name, is_dir=False)
            os.symlink(m.linkname, path)
            self._attrs(rel, m, link=True)
        elif m.islnk():
            src = self._check_hardlink(m)
            self._make_room(rel, m.name, is_dir=False)
            os.link(self._abs(src), path, follow_symlinks=False)
            self._xattrs(path, xattrs, what)      # the inode's, as Docker applies them
        elif m.isreg():
            self._make_room(rel, m.name, is_dir=False)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            check = None
            if self.budget is not None:
                check = functools.partial(self.budget.check_ratio, f"layer tar member {m.name[:64]!r}")
            with os.fdopen(fd, "wb") as out:
                if m.issparse():
                    content = tf.extractfile(m)
                    assert content is not None        # a regular member's: never None
                    while chunk := content.read(_CHUNK):
                        _write_sparse(out, chunk)     # holes come as zeros: keep them holes
                        if check is not None:
                            check()
                    out.truncate()            # a file that ends in a hole: its full size
                else:
                    self.stream.seek(m.offset_data)
                    self.stream.copy_to(fd, m.size, check)
            self.size += m.size
            self._attrs(rel, m, link=False)
            self._xattrs(path, xattrs, what)      # after chown, which clears security.capability
        elif m.ischr() or m.isblk():
            self._make_room(rel, m.name, is_dir=False)
            if m.ischr() and (m.devmajor, m.devminor) == (0, 0):
                _mknod_whiteout(path)             # overlay's whiteout spelling
            else:
                _mknod(path, stat.S_IFCHR if m.ischr() else stat.S_IFBLK, m.devmajor, m.devminor)
            self._attrs(rel, m, link=False)
        elif m.isfifo():
            self._make_room(rel, m.name, is_dir=False)
            os.mkfifo(path, 0o600)
            self._attrs(rel, m, link=False)
        self.files += 1

    def finish(self) -> None:
        """Directory modes and mtimes last, deepest first: children change mtimes."""
        for rel in sorted(self.dirs, key=sort_key, reverse=True):
            mode, mtime = self.dirs[rel]
            path = self._abs(rel)
            os.chmod(path, mode)
            os.utime(path, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)

    # --- checks
    def _check_type(self, m: tarfile.TarInfo) -> None:
        if (m.ischr() or m.isblk()) and not (0 <= m.devmajor < 1 << 12 and 0 <= m.devminor < 1 << 20):
            raise InvalidArgument(f"layer tar member {m.name!r} is a device {m.devmajor}:{m.devminor}, "
                                  "out of Linux's range")
        if not (m.isdir() or m.issym() or m.islnk() or m.isreg() or m.ischr() or m.isblk()
                or m.isfifo()):
            kind = m.type.decode("latin-1", "replace") if isinstance(m.type, bytes) else m.type
            raise InvalidArgument(f"layer tar member {m.name!r} has unsupported type {kind!r}")

    def _check_symlink(self, rel: str, m: tarfile.TarInfo) -> None:
        target = m.linkname
        if not target:
            raise InvalidArgument(f"layer tar member {m.name!r} is a symlink with an empty target")
        if "\0" in target or len(target.encode("utf-8", "surrogateescape")) > PATH_MAX:
            raise InvalidArgument(f"layer tar member {m.name!r} has an invalid symlink target")
        if target.startswith("/"):
            return                        # read inside the container's root
        import posixpath
        where = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if where == ".." or where.startswith("../"):
            raise InvalidArgument(f"layer tar member {m.name!r} is a symlink to {target!r}, "
                                  "outside the layer")

    def _check_hardlink(self, m: tarfile.TarInfo) -> str:
        if m.linkname.startswith("/"):
            raise InvalidArgument(f"layer tar member {m.name!r} is a hardlink to {m.linkname!r}, "
                                  "outside the layer")
        try:
            src = clean_name(m.linkname, "hardlink target")
        except InvalidArgument as e:
            raise InvalidArgument(f"layer tar member {m.name!r}: {e}") from None
        if not src:
            raise InvalidArgument(f"layer tar member {m.name!r} is a hardlink to the layer root")
        self._parent_dir(src.rpartition("/")[0], m.name, create=False)
        try:
            st = os.lstat(self._abs(src))
        except FileNotFoundError:
            raise InvalidArgument(f"layer tar member {m.name!r} is a hardlink to {m.linkname!r}, "
                                  "which is not in the layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"layer tar member {m.name!r} is a hardlink to a directory")
        return src

    def _parent_dir(self, parent: str, name: str, create: bool = True) -> None:
        """Make sure `parent` is a real directory inside dest, never a symlink."""
        if parent in self.checked:
            return
        so_far = ""
        for part in parent.split("/"):
            so_far = f"{so_far}/{part}" if so_far else part
            if so_far in self.checked:
                continue
            path = self._abs(so_far)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise InvalidArgument(f"layer tar member {name!r} refers to {so_far!r}, "
                                          "which is not in the layer") from None
                os.mkdir(path, 0o755)     # implied directory, as tar does
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise InvalidArgument(f"layer tar member {name!r} goes through the symlink "
                                          f"{so_far!r}")
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"layer tar member {name!r} goes through {so_far!r}, "
                                          "which is not a directory")
            self.checked.add(so_far)

    def _make_room(self, rel: str, name: str, is_dir: bool) -> bool:
        """A later member replaces an earlier one, as with tar.  True if `rel`
        is already a directory and a directory is wanted (kept, merged)."""
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            import shutil
            shutil.rmtree(path)
            prefix = rel + "/"
            self.checked = {d for d in self.checked if d != rel and not d.startswith(prefix)}
            self.dirs = {d: v for d, v in self.dirs.items() if d != rel and not d.startswith(prefix)}
        else:
            os.unlink(path)
        return False

    # --- writing
    def _abs(self, rel: str) -> str:
        return os.path.join(self.dest, rel) if rel else self.dest

    def _chown(self, path: str, m: tarfile.TarInfo) -> None:
        if os.geteuid() == 0:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)

    def _attrs(self, rel: str, m: tarfile.TarInfo, link: bool) -> None:
        path = self._abs(rel)
        self._chown(path, m)            # before chmod: chown clears setuid bits
        if not link:
            os.chmod(path, m.mode & 0o7777)
        mt = int(m.mtime) * 10**9
        os.utime(path, ns=(mt, mt), follow_symlinks=False)

    @staticmethod
    def _xattrs(path: str, xattrs: dict[str, bytes], what: str) -> None:
        """Set the kept xattrs on a file or directory, never through a symlink.
        Only those carry them: the kernel takes user.* on nothing else, and a
        file capability means something only on a file that is executed."""
        for name, value in sorted(xattrs.items()):
            try:
                os.setxattr(path, name, value, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ERANGE, errno.E2BIG):
                    raise InvalidArgument(f"{what}: the kernel refuses its extended attribute "
                                          f"{name!r}: {os.strerror(e.errno)}") from None
                raise KernelError(e.errno or 0, f"{what}: set its extended attribute {name!r} "
                                           "under the state root") from None


def _mknod_whiteout(path: str) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError as e:
        raise KernelError(e.errno or 0, f"mknod whiteout {path} (needs root)") from None


_HOLE = 64 << 10


def _write_sparse(out: BinaryIO, chunk: bytes) -> None:
    """Write `chunk`, seeking over each 64 KiB run of zeros instead (a hole)."""
    view = memoryview(chunk)
    for i in range(0, len(view), _HOLE):
        piece = view[i:i + _HOLE]
        if piece.tobytes().count(0) == len(piece):
            out.seek(len(piece), os.SEEK_CUR)
        else:
            out.write(piece)


def _mknod(path: str, kind: int, major: int, minor: int) -> None:
    """A device node as the layer has it (mode and owner set after); inert under nodev."""
    try:
        os.mknod(path, 0o600 | kind, os.makedev(major, minor))
    except PermissionError as e:
        raise KernelError(e.errno or 0, f"mknod {path} (needs root)") from None


def _setxattr(path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as e:
        raise KernelError(e.errno or 0, f"setxattr {name} on {path} (needs root)") from None


# --- pack -------------------------------------------------------------------

def tarinfo(name: str, kind: str, *, mode: int, mtime: int = 0, uid: int = 0, gid: int = 0,
            size: int = 0, linkname: str = "", xattrs: dict[str, bytes] | None = None,
            rdev: int = 0) -> tarfile.TarInfo:
    """One deterministic header. kind: dir|file|symlink|hardlink|fifo|chr|blk
    (rdev: the device number).  xattrs become PAX SCHILY.xattr.<name>
    records, sorted by name."""
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE,
               "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
               "blk": tarfile.BLKTYPE}[kind]
    if kind in ("chr", "blk"):
        ti.devmajor, ti.devminor = os.major(rdev), os.minor(rdev)
    ti.mode = mode & 0o7777
    ti.mtime = int(mtime)
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.size = size if kind == "file" else 0
    ti.linkname = linkname
    if xattrs:
        # Text for tarfile; bytes that are not UTF-8 go out as they are
        # (tarfile then marks the header hdrcharset=BINARY).
        ti.pax_headers = {XATTR_PAX + k: xattrs[k].decode("utf-8", "surrogateescape")
                          for k in sorted(xattrs)}
    return ti


def open_writer(out: SupportsWrite[bytes]) -> tarfile.TarFile:
    """A tarfile writer with the settings every tar of ours uses."""
    import tarfile
    # (typeshed wants a fileobj that reads and seeks too; the stream mode only writes)
    tf: tarfile.TarFile = tarfile.open(fileobj=out, mode="w|",  # type: ignore[call-overload]
                                       format=tarfile.PAX_FORMAT)
    return tf


def open_file_writer(out: BinaryIO) -> tarfile.TarFile:
    """open_writer for a regular file: the same bytes, written straight to it
    1 MiB at a time (the stream mode re-slices its buffer for every 10 KiB
    record, which makes large copies slow).  TarFile() itself, as open() with
    mode "w" calls it: typeshed's open() does not pass copybufsize on."""
    import tarfile
    return tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK)


def pack(src: str, out: SupportsWrite[bytes]) -> None:
    """Write the tree `src` (an overlay layer dir) as an OCI layer tar to `out`.

    Walked by directory fds (runtime/fswalk.py), and files opened relative to
    them with O_NOFOLLOW: a container that swaps a directory or file for a
    symlink to the host's / gets the symlink packed, never the host's files."""
    from .. import fswalk
    seen_inodes: dict[tuple[int, int], str] = {}
    with open_writer(out) as tf:
        try:
            for rel, st, dir_fd, name, fd in fswalk.walk(src, sort=True):
                if len(rel) > PATH_MAX:
                    raise InvalidArgument(f"cannot pack {src}/{rel[:64]}...: path longer than "
                                          f"{PATH_MAX} bytes")
                _pack_one(tf, src, rel, st, dir_fd, name, fd, seen_inodes)
        except fswalk.TooDeep as e:
            raise InvalidArgument(f"cannot pack {src}: {e}") from None


class _Header(TypedDict):
    """What tarinfo() takes from a stat."""
    mode: int
    mtime: int
    uid: int
    gid: int


def _pack_one(tf: tarfile.TarFile, src: str, rel: str, st: os.stat_result, dir_fd: int, name: str,
              fd: int | None, seen_inodes: dict[tuple[int, int], str]) -> None:
    """One entry.  One that vanishes or changes kind between the walk's look
    and the read (only in a layer that is not frozen) is skipped, as if it
    had changed a moment earlier."""
    kw = _Header(mode=stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime), uid=st.st_uid, gid=st.st_gid)
    m = st.st_mode
    if stat.S_ISDIR(m):
        if fd is None:
            return                              # swapped for something else mid-walk: skip it
        tf.addfile(tarinfo(rel, "dir", xattrs=_fd_xattrs(fd, src, rel), **kw))
        try:
            opaque = os.getxattr(fd, OPAQUE_XATTR) == b"y"
        except OSError:
            opaque = False
        if opaque:
            tf.addfile(tarinfo(f"{rel}/{OPAQUE}", "file", **kw))
    elif stat.S_ISLNK(m):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):     # gone, or not a symlink now
                return
            raise
        tf.addfile(tarinfo(rel, "symlink", linkname=target, **kw))
    elif stat.S_ISCHR(m) and st.st_rdev == 0:
        head, _, base = rel.rpartition("/")
        tf.addfile(tarinfo(f"{head}/{WHITEOUT}{base}" if head else WHITEOUT + base, "file", **kw))
    elif stat.S_ISREG(m):
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the open
        try:
            ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                          dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):      # gone, or a symlink now
                return
            raise KernelError(e.errno or 0, f"open {src}/{rel} to pack it") from None
        with os.fdopen(ffd, "rb") as f:
            st = os.fstat(ffd)                  # what was opened, not what was looked at
            if not stat.S_ISREG(st.st_mode):
                return
            kw = _Header(mode=stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime), uid=st.st_uid,
                         gid=st.st_gid)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                tf.addfile(tarinfo(rel, "hardlink", linkname=seen_inodes[key], **kw))
                return
            seen_inodes[key] = rel
            tf.addfile(tarinfo(rel, "file", size=st.st_size, xattrs=_fd_xattrs(ffd, src, rel), **kw),
                       f)
    elif stat.S_ISFIFO(m):
        tf.addfile(tarinfo(rel, "fifo", **kw))
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        tf.addfile(tarinfo(rel, "chr" if stat.S_ISCHR(m) else "blk", rdev=st.st_rdev, **kw))
    elif stat.S_ISSOCK(m):
        return                                  # no tar type for it: skipped, as Docker does
    else:
        raise InvalidArgument(f"cannot pack {src}/{rel}: not a file, directory, symlink or whiteout")


def _fd_xattrs(fd: int, src: str, rel: str) -> dict[str, bytes]:
    """The kept xattrs (xattr_kept) of the file open as fd: read by the fd,
    so by what was opened, never through a name a container could swap."""
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno == errno.ENOTSUP:            # a filesystem without xattrs: none to carry
            return {}
        raise KernelError(e.errno or 0, f"list the extended attributes of {src}/{rel}") from None
    out: dict[str, bytes] = {}
    for name in names:
        if not xattr_kept(name):
            continue
        try:
            out[name] = os.getxattr(fd, name)
        except OSError as e:
            if e.errno == errno.ENODATA:        # removed since the list: as if a moment earlier
                continue
            raise KernelError(e.errno or 0, f"read the extended attribute {name!r} of "
                                       f"{src}/{rel}") from None
    return out
