"""The union filesystem seen from outside: a container's writable layer
against the image layers below it, and the overlay mount itself.

    from runtime import overlay
    overlay.diff(c.upperdir, c.layers)          # [Change('/etc/passwd', 'C', ...), ...]
    overlay.layer_of("/etc/motd", c.upperdir, c.layers)   # Origin(layer=1, hidden=[])
    overlay.mount_info(c.pid, lower_base=ROOT + "/layers")
    overlay.upper_size(c.upperdir)              # UpperSize(bytes=..., files=...)

`lowerdirs` are always bottom first (as Container.layers lists them); layer
numbers are indexes into that list, and "upper" is the writable layer.

Overlayfs's own spelling, which everything here reads (see the kernel's
Documentation/filesystems/overlayfs.rst):
- a deleted name is a *whiteout*: a character device 0/0 in the upper layer;
- a directory removed and made again is *opaque*: the xattr
  trusted.overlay.opaque=y hides every lower directory below it.  (The value
  "x", since 6.7, only marks a directory holding data-only whiteouts; it
  hides nothing.)
- a directory in a layer over a non-directory below is opaque implicitly,
  and so is anything over a whiteout.
Nothing here writes: the functions read the layer directories, safely while
the container runs (a name that vanishes mid-walk is skipped).  The writable
layer is the container's to change meanwhile, so it is walked by directory
fds (runtime/fswalk.py): a directory it swaps for `x -> /` is never followed.
The image layers below are the store's, and read by path.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from . import fswalk
from .errors import InvalidArgument, KernelError, NotFound
from .pidinfo import MountInfo, parse_mountinfo

OPAQUE_XATTR = "trusted.overlay.opaque"

# kinds of entry in one layer directory
_DIR, _WHITEOUT, _OTHER = "dir", "whiteout", "other"

DIFF_LIMIT = 100_000      # changes diff() lists at most (then it says truncated)


@dataclass(frozen=True)
class Change:
    """One difference between the container's view and its image.

    kind: "A" added, "C" changed (the image had this path), "D" deleted.
    from_layer / from_dir: the lower layer whose copy was visible before
    (C and D), as an index into lowerdirs (bottom first) and its directory.
    whiteout: a D recorded by a whiteout; a D with whiteout=False is a name
    hidden by an opaque directory above it (rm -rf and mkdir again).
    """
    path: str                      # "/etc/passwd", in the container's view
    kind: str                      # "A" | "C" | "D"
    is_dir: bool
    size: int = 0                  # bytes, regular files in the upper layer
    opaque: bool = False           # a directory that hides its lower contents
    from_layer: int | None = None
    from_dir: str | None = None
    whiteout: bool = False


class Origin(NamedTuple):
    """Where a path in the container's view comes from.

    layer: "upper", a lower index (bottom first), or None if the path does
    not exist in the view.  hidden: lower indexes holding a copy of the path
    that the view does not show (shadowed by a file above, by a whiteout or
    by an opaque directory), top first.
    """
    layer: str | int | None
    hidden: list[int]


class Changes(list[Change]):
    """diff()'s list of Change; truncated: the walk stopped at its limit (or at
    fswalk.MAX_DEPTH), so the list is partial and in walk order, not sorted."""
    truncated = False


class OverlayMount(TypedDict):
    """mount_info: a process's root overlay mount."""
    mount_id: int
    source: str
    fstype: str
    mount_options: str
    lowerdir: list[str]                # top first, relative ones joined to lower_base
    lowerdir_raw: str
    upperdir: str
    workdir: str
    options: dict[str, str]            # the other superblock options
    line: str


_Layer = str | int                     # "upper" or a lower index (bottom first)
_Copy = tuple[_Layer, str, str | int | None]      # (layer, kind, path or fd: None unless a directory)


class UpperSize(NamedTuple):
    bytes: int                     # content of regular files (as Layer.size)
    files: int                     # entries, whiteouts included (as Layer.files)


# --- diff -------------------------------------------------------------------

def diff(upperdir: str, lowerdirs: Iterable[str | os.PathLike[str]], implicit: bool = True,
         limit: int = DIFF_LIMIT) -> Changes:
    """The changes of the writable layer, sorted by path (docker diff, and more).

    Every entry of `upperdir` is one Change (its parents, copied up to hold
    it, show as "C" like in Docker): "C" if the image has the path, else
    "A"; whiteouts of names the image has become "D".  Inside an opaque
    directory a name the image had is "C" too (replaced, not copied up).
    With `implicit`, the names an opaque directory hides are listed as well,
    as "D" with whiteout=False.  At `limit` changes the walk stops, before
    holding more, and the result says truncated.
    """
    roots = [os.fspath(d) for d in lowerdirs]
    upperdir = os.fspath(upperdir)
    top = fswalk.open_dir(upperdir)
    if top is None:
        raise NotFound(f"upper directory {upperdir!r} not found")
    out = Changes()
    top_first = [(i, roots[i]) for i in reversed(range(len(roots)))]
    try:
        _DiffWalk(roots, out, implicit, limit).dir(top, "", top_first)
    except _Stop:
        out.truncated = True
    finally:
        os.close(top)
    if not out.truncated:
        out.sort(key=lambda ch: ch.path.split("/"))
    return out


class _Stop(Exception):
    """The diff reached its limit (or fswalk.MAX_DEPTH)."""


class _DiffWalk:
    def __init__(self, roots: list[str], out: Changes, implicit: bool, limit: int) -> None:
        self.roots, self.out, self.implicit, self.limit = roots, out, implicit, limit

    def add(self, change: Change) -> None:
        if len(self.out) >= self.limit:
            raise _Stop
        self.out.append(change)

    def dir(self, fd: int, rel: str, lowers: list[tuple[int, str]], hiding: bool = False,
            depth: int = 0) -> None:
        """One directory of the upper layer, open as fd.  `lowers`: the lower dirs the
        image merges at `rel`, top first; `hiding`: inside an opaque directory, which
        shows none of them."""
        if depth >= fswalk.MAX_DEPTH:
            raise _Stop
        try:
            entries = fswalk.entries(fd)
        except (FileNotFoundError, NotADirectoryError):
            return                              # removed while we walk
        below = _merged_names(lowers)
        for name, st in entries:
            path = f"{rel}/{name}"
            seen = below.get(name)              # (index, kind, path) of the copy the image shows
            if seen is not None and seen[1] == _WHITEOUT:
                seen = None                     # the image shows nothing there
            from_layer = None if seen is None else seen[0]
            from_dir = None if seen is None else self.roots[seen[0]]
            if _is_whiteout(st):
                if seen is not None:
                    self.add(Change(path, "D", seen[1] == _DIR, whiteout=True, from_layer=from_layer,
                                    from_dir=from_dir))
                continue
            kind = "C" if seen is not None else "A"
            child = fswalk.open_dir(name, fd) if stat.S_ISDIR(st.st_mode) else None
            if child is None:                   # not a directory (or no longer one)
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                self.add(Change(path, kind, False, size=size, from_layer=from_layer, from_dir=from_dir))
                continue
            try:
                opaque = _opaque(child)
                self.add(Change(path, kind, True, opaque=opaque, from_layer=from_layer, from_dir=from_dir))
                merged = _child_lowers(lowers, name) if seen is not None and seen[1] == _DIR else []
                self.dir(child, path, merged, hiding or opaque, depth + 1)
            finally:
                os.close(child)
        if hiding and self.implicit:
            present = {name for name, _ in entries}
            for name, (idx, kind, _) in below.items():
                if kind != _WHITEOUT and name not in present:
                    self.add(Change(f"{rel}/{name}", "D", kind == _DIR, from_layer=idx,
                                    from_dir=self.roots[idx]))


def _merged_names(lowers: list[tuple[int, str]]) -> dict[str, tuple[int, str, str]]:
    """name -> (index, kind, path) of the topmost copy among merged lower dirs."""
    names: dict[str, tuple[int, str, str]] = {}
    for idx, d in lowers:
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for e in it:
                if e.name not in names:
                    names[e.name] = (idx, _kind(e), e.path)
    return names


def _child_lowers(lowers: list[tuple[int, str]], name: str) -> list[tuple[int, str]]:
    """The lower dirs merged at <dir>/name: top down until an opaque dir, a whiteout or a file."""
    out: list[tuple[int, str]] = []
    for idx, d in lowers:
        p = os.path.join(d, name)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISDIR(st.st_mode):
            break                              # a whiteout or a file ends the merge
        out.append((idx, p))
        if _opaque(p):
            break
    return out


def _kind(e: os.DirEntry[str]) -> str:
    if e.is_dir(follow_symlinks=False):
        return _DIR
    if e.is_file(follow_symlinks=False) or e.is_symlink():
        return _OTHER
    try:
        return _WHITEOUT if _is_whiteout(e.stat(follow_symlinks=False)) else _OTHER
    except FileNotFoundError:
        return _OTHER


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str | int) -> bool:
    """Whether the directory (a path, or an open fd) is opaque."""
    try:
        if isinstance(path, int):
            return os.getxattr(path, OPAQUE_XATTR) == b"y"
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


# --- which layer a path comes from -----------------------------------------

def layer_of(path: str, upperdir: str, lowerdirs: Iterable[str | os.PathLike[str]]) -> Origin:
    """The layer that shows `path` in the container's view, and the lower copies it hides.

    Follows overlayfs's lookup one component at a time: a whiteout or a
    non-directory ends the merge of the layers below it, and so does an
    opaque directory (after itself).  Symlinks are not followed.
    """
    if "\0" in path:
        raise InvalidArgument(f"path {ascii(path)[:80]} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {path!r} has a '..' component")
    lowers = [os.fspath(d) for d in lowerdirs]
    if not parts:
        return Origin("upper", [])
    shown = _lookup(parts, os.fspath(upperdir), lowers)
    hidden = [i for i in reversed(range(len(lowers)))
              if i not in shown and _copy_kind(lowers[i], parts) not in (None, _WHITEOUT)]
    return Origin(shown[0] if shown else None, hidden)


def _lookup(parts: list[str], upperdir: str, lowerdirs: list[str]) -> list[_Layer]:
    """The layers that make up the path in the view, top first; [] if it does not exist.

    The writable layer is stepped through by directory fd (the container may
    swap a directory for a symlink meanwhile); the image layers by path."""
    upper = fswalk.open_dir(upperdir)
    opened = [upper] if upper is not None else []
    try:
        # (layer, path or fd) of each directory merged at this depth, top first
        active: list[tuple[_Layer, str | int]] = [("upper", upper)] if upper is not None else []
        active += [(i, lowerdirs[i]) for i in reversed(range(len(lowerdirs)))]
        for depth, name in enumerate(parts):
            found: list[_Copy] = []          # (layer, kind, path or fd) of each copy, top first
            for layer, d in active:
                try:
                    if isinstance(d, int):
                        st = os.stat(name, dir_fd=d, follow_symlinks=False)
                    else:
                        st = os.lstat(os.path.join(d, name))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                kind = _WHITEOUT if _is_whiteout(st) else _DIR if stat.S_ISDIR(st.st_mode) else _OTHER
                where: str | int | None
                if isinstance(d, int):
                    where = fswalk.open_dir(name, d) if kind == _DIR else None
                    if kind == _DIR and where is None:
                        continue             # no longer a directory: gone from this walk
                    if where is not None:
                        opened.append(where)
                else:
                    where = os.path.join(d, name)
                found.append((layer, kind, where))
            if not found or found[0][1] == _WHITEOUT:
                return []
            if found[0][1] != _DIR:
                return [found[0][0]] if depth == len(parts) - 1 else []
            active = _merge(found)
        return [layer for layer, _ in active]
    finally:
        for fd in opened:
            os.close(fd)


def _copy_kind(root: str, parts: list[str]) -> str | None:
    """The kind of entry at root/parts in one layer alone, never through a symlink."""
    p = root
    for depth, name in enumerate(parts):
        p = os.path.join(p, name)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if depth < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None
    return _WHITEOUT if _is_whiteout(st) else _DIR if stat.S_ISDIR(st.st_mode) else _OTHER


def _merge(found: list[_Copy]) -> list[tuple[_Layer, str | int]]:
    """Of the copies of one directory, top first: the ones overlay merges."""
    merged: list[tuple[_Layer, str | int]] = []
    for layer, kind, p in found:
        if kind != _DIR or p is None:                 # (a directory always has its path or fd)
            break
        merged.append((layer, p))
        if _opaque(p):
            break
    return merged


# --- the mount ----------------------------------------------------------------

def mount_info(pid: int, lower_base: str | None = None, proc: str = "/proc") -> OverlayMount:
    """The root overlay mount of process `pid`, from its /proc/<pid>/mountinfo.

    Returns {"mount_id", "source", "fstype", "mount_options", "lowerdir"
    (top first, relative ones joined to `lower_base`), "lowerdir_raw",
    "upperdir", "workdir", "options" (the other superblock options),
    "line"}.  NotFound if the process is gone or its root is not overlay.
    """
    try:
        with open(f"{proc}/{pid}/mountinfo") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound(f"process {pid} not found (no {proc}/{pid}/mountinfo)") from None
    except PermissionError as e:
        raise KernelError(e.errno or errno.EACCES, f"read {proc}/{pid}/mountinfo") from None
    root: MountInfo | None = None
    for m in parse_mountinfo(text):
        if m.mount_point == "/":
            root = m                              # the last one is on top
    if root is None or root.fstype != "overlay":
        raise NotFound(f"process {pid} has no overlay mounted at / "
                       f"(found {root.fstype if root else 'nothing'})")
    opts = parse_super_options(root.super_options)
    raw_lower = opts.pop("lowerdir", "")
    lower = []
    for d in _split_lowerdir(raw_lower):
        if not os.path.isabs(d) and lower_base:
            d = os.path.normpath(os.path.join(lower_base, d))
        lower.append(d)
    return {"mount_id": root.mount_id, "source": root.source, "fstype": root.fstype,
            "mount_options": root.mount_options, "lowerdir": lower,
            "lowerdir_raw": raw_lower, "upperdir": opts.pop("upperdir", ""),
            "workdir": opts.pop("workdir", ""), "options": opts, "line": root.line}


def parse_super_options(text: str) -> dict[str, str]:
    """'rw,lowerdir=a:b,upperdir=/u' -> {'rw': '', 'lowerdir': 'a:b', 'upperdir': '/u'}.

    Values stay escaped where ':' matters (lowerdir); others are unescaped.
    Overlay escapes ',' and ':' inside a path, so a plain split is safe.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        out[key] = value if key == "lowerdir" else _unescape(value)
    return out


def _split_lowerdir(value: str) -> list[str]:
    """'a/fs:b/fs' -> ['a/fs', 'b/fs']; '::' (data-only layers) reads as ':'."""
    return [_unescape(p) for p in value.split(":") if p]


def _unescape(s: str) -> str:
    """An overlay option value as mountinfo shows it: the kernel's octal
    escapes (\\ooo, see pidinfo.unescape_octal) and overlay's own backslash
    before ',' and ':' inside a path, undone in one pass."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        elif s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


# --- size -----------------------------------------------------------------------

def upper_size(upperdir: str) -> UpperSize:
    """Bytes of regular files and number of entries in the writable layer
    (walked by directory fds; below fswalk.MAX_DEPTH levels nothing is counted)."""
    size = files = 0
    try:
        for _rel, st, _dir_fd, _name, _fd in fswalk.walk(os.fspath(upperdir)):
            files += 1
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    except (FileNotFoundError, fswalk.TooDeep):
        pass
    return UpperSize(size, files)
