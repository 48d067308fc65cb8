"""Small file helpers shared by the runtime and its shims: atomic JSON and locks."""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager


def write_json(path: str, obj, durable: bool = False, sync_dir: bool | None = None) -> None:
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


def read_json(path: str, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        # a file written by hand or cut short by a full disk: treat as missing
        return default


@contextmanager
def locked(path: str, blocking: bool = True):
    """An exclusive flock on path (created if missing), held for the block.

    Yields True when held; with blocking=False yields False if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
