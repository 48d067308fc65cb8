"""Small file helpers shared by the runtime and its shims: atomic JSON and locks."""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def write_json(path: str, obj: object, durable: bool = False, sync_dir: bool | None = None) -> None:
    """Write obj as JSON so that readers see the old file or the new one, never half.

    The rename alone is atomic for every reader; durable=True (fsync of the
    file, then of the directory after the rename) adds survival of a power
    cut: without it the rename can reach the disk before the data, and the
    file reads back empty.  sync_dir=False (with durable) skips the directory's
    fsync: when path already exists, a power cut then leaves the old file or
    the new one, each whole, and the rename costs no second journal commit."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)             # a full disk must not leave the half file behind
        except OSError:
            pass
        raise
    if durable if sync_dir is None else sync_dir:
        fsync_dir(os.path.dirname(path) or ".")     # the rename itself, on disk


def fsync_dir(path: str) -> None:
    """fsync a directory: what makes a create, rename or unlink in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        # a file written by hand or cut short by a full disk: treat as missing
        return default


@contextmanager
def locked(path: str, blocking: bool = True, create: bool = True) -> Iterator[bool]:
    """An exclusive flock on path (created if missing, unless not create:
    FileNotFoundError then), held for the block.

    Yields True when held; with blocking=False yields False if someone else holds it."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def private_dir(path: str, mode: int = 0o700) -> None:
    """Make the directory path if missing, and take away any permission bit
    beyond mode if it has one: a state directory made by an older version,
    or by hand under a umask of 022, is tightened on every start, not only
    when it is created."""
    os.makedirs(path, mode=mode, exist_ok=True)
    if os.stat(path).st_mode & 0o7777 & ~mode:
        os.chmod(path, mode)


FS_IOC_GETFLAGS = 0x80086601            # _IOR('f', 1, long): the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000               # `chattr +T`


def spread_subdirs(path: str) -> bool:
    """Mark the directory `path` as the top of unrelated trees (`chattr +T`,
    FS_TOPDIR_FL): ext2/3/4's Orlov allocator then places each directory
    made in it in a block group of its own choosing, as for the children of
    /, rather than beside the parent.  For tmp/ of the image store, where
    every layer is unpacked in a directory of its own.

    Why: ext4 without a journal (this machine's root) never reuses an inode
    freed in the last minute or more, and on every create walks past each such
    inode from the start of the group, reading its table block
    (recently_deleted).  Unpacking a layer's 700 files right after image-gc
    freed 700 in the same group made file creation a quarter of a pull's
    CPU; in a group of their own, under 1%.  False where the file system has
    no such flag (or refuses it): nothing else changes."""
    import struct
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(4)))[0]
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
