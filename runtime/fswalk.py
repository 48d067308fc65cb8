"""Walking a tree that a running container can change under us, by directory fds.

A container's writable layer is the container's to change while the host
walks it as root (diff, size, commit).  Walked by path, a directory swapped
for `x -> /` between the check and the use makes root walk, list or read
the host's own tree.  Here every step is relative to the directory fd
already open (openat with O_NOFOLLOW|O_DIRECTORY, fstatat and scandir on
the fd), so a swapped-in symlink is never followed: it is seen as the
symlink it is, or the step fails and the entry is skipped.
"""
from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    # (rel, lstat, dir_fd, name, fd): see walk()
    Entry = tuple[str, os.stat_result, int, str, int | None]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 512          # directories open at once (one fd per level) at most


def open_dir(name: str, dir_fd: int | None = None) -> int | None:
    """An fd on directory `name` (relative to dir_fd), never through a symlink;
    None if it is gone or no longer a directory."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:            # a symlink now: not ours to follow
            return None
        raise


def entries(dir_fd: int, sort: bool = False) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the open directory; vanished ones skipped."""
    out = []
    with os.scandir(dir_fd) as it:            # on a dup of dir_fd
        for e in it:
            try:
                out.append((e.name, e.stat(follow_symlinks=False)))   # fstatat(dir_fd, name)
            except FileNotFoundError:
                continue
    if sort:
        out.sort(key=lambda item: item[0])
    return out


class TooDeep(Exception):
    """The tree nests deeper than MAX_DEPTH directories."""


def walk(root: str, *, sort: bool = False, max_depth: int = MAX_DEPTH) -> Iterator[Entry]:
    """Every entry below directory `root`, depth first, a directory before
    its contents: yields (rel, st, dir_fd, name, fd) where st is its lstat,
    dir_fd the open directory holding it, and fd an open fd on it when it is
    a directory (None otherwise, or when it stopped being one).  Both fds
    are valid until the next item.  TooDeep past max_depth."""
    top = open_dir(root)
    if top is None:
        raise FileNotFoundError(errno.ENOENT, "no such directory", root)
    try:
        stack = [(top, "", iter(entries(top, sort)))]
    except BaseException:
        os.close(top)
        raise
    try:
        while stack:
            dir_fd, prefix, it = stack[-1]
            item = next(it, None)
            if item is None:
                os.close(dir_fd)
                stack.pop()
                continue
            name, st = item
            rel = prefix + name
            fd = open_dir(name, dir_fd) if stat.S_ISDIR(st.st_mode) else None
            if fd is None:
                yield rel, st, dir_fd, name, None
                continue
            try:
                yield rel, st, dir_fd, name, fd
                if len(stack) >= max_depth:
                    raise TooDeep(f"{rel} nests more than {max_depth} directories deep")
                children = iter(entries(fd, sort))
            except BaseException:
                os.close(fd)
                raise
            stack.append((fd, rel + "/", children))
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
