"""Mounts outside the overlay: named volumes, bind mounts, tmpfs.

Two halves:

- what people type, checked (`-v NAME:/path[:ro]`, `-v /host:/path[:ro]`,
  `-v /path`, `--tmpfs /path[:size=...,mode=...]`) and the host paths a
  bind mount may never expose (`check_bind_source`);
- the mounts themselves, made by the container's init inside its own mount
  namespace before pivot_root (`mount_all`), so the host's mount table never
  holds them.  Every one is made from descriptors with the new mount API:
  the target is opened with openat2(RESOLVE_IN_ROOT) on the container's
  root (a symlink in the image, `/data -> /`, stays inside the root), a bind
  or volume source is cloned with open_tree and gets nosuid,nodev added to
  the flags it already has (mount_setattr, recursive), a tmpfs is made with
  fsopen/fsmount, and move_mount attaches it to the target descriptor.

Standard library and runtime's small modules only: init imports it.
"""
from __future__ import annotations

import errno
import os
import posixpath
import re
import stat

from .errors import Forbidden, InvalidArgument
from .model import Mount

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType
    from typing import Required, TypedDict

    class MountRequest(TypedDict, total=False):
        """One mount of a start request, as mount_all makes it (runtime/containers.py
        writes them): a volume's data or a bind source is "path"."""
        type: Required[str]                # volume, bind or tmpfs
        target: Required[str]
        read_only: bool
        path: str                          # volume, bind: the host directory or file
        copy: bool                         # volume: fill it from the image when empty
        size: int | None                   # tmpfs: bytes
        mode: int | None                   # tmpfs


VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}", re.ASCII)   # Docker's, at most 128

# Host paths a bind mount refuses, with everything under them and every
# directory above them ("/" holds them all, "/var" holds /var/run):
#   /proc /sys /dev   the kernel's own interfaces: process memory, sysrq,
#                     every disk as a device node
#   /boot             the kernel and boot loader the host starts next time
#   /etc              passwd, shadow, sudoers, cron, systemd units: read
#                     (hashes) or write (a root login) and the host is lost
#   /run /var/run     sockets of root daemons: the agent's own (any uid 0
#                     peer may drive it: a container is uid 0), docker.sock
#   /usr /bin /sbin /lib*  programs root runs on the host
#   /root             root's keys and shell start-up files
# plus the state root (layers, other containers, the fork server's socket),
# the agent's socket directory and the dashboard's files (its database and
# secret key), wherever they are configured.
SENSITIVE = ("/proc", "/sys", "/dev", "/boot", "/etc", "/run", "/var/run", "/usr", "/bin", "/sbin",
             "/lib", "/lib32", "/lib64", "/libx32", "/root")
# Targets inside the container a mount may not cover: its kernel interfaces
# (a volume over /proc would hide the masks on /proc/kcore and friends).
_FORBIDDEN_TARGETS = ("/proc", "/sys")
_TMPFS_FLAGS = {"ro", "rw"}


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 80 else text[:80] + "..."


def check_target(path: object, what: str = "mount") -> str:
    """An absolute path inside the container, normalised; not / and not in /proc or /sys."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"invalid {what} target {_show(path)}: must be an absolute path "
                              "inside the container")
    if "\0" in path or len(path.encode("utf-8", "surrogateescape")) > 4096:
        raise InvalidArgument(f"invalid {what} target {_show(path)}: a NUL byte or longer than 4096 bytes")
    if ".." in path.split("/"):
        raise InvalidArgument(f"invalid {what} target {_show(path)}: '..' is not allowed")
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path == "/":
        raise InvalidArgument(f"invalid {what} target '/': the root is the image's (use --read-only "
                              "to make it read-only)")
    for top in _FORBIDDEN_TARGETS:
        if path == top or path.startswith(top + "/"):
            raise InvalidArgument(f"invalid {what} target {_show(path)}: {top} is the kernel's, "
                                  "mounts there are refused")
    return path


def check_volume_name(name: object) -> str:
    if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid volume name {_show(name)}: use 2-128 ASCII letters, digits, "
                              "'_', '.' or '-', starting with a letter or digit (a host path must be "
                              "absolute)")
    return name


def _mode_flags(opts: list[str], text: str, allowed: set[str]) -> set[str]:
    flags = set()
    for o in opts:
        if o not in allowed:
            raise InvalidArgument(f"invalid mount option {_show(o)} in {_show(text)}: use "
                                  f"{' or '.join(sorted(allowed))}")
        flags.add(o)
    if {"ro", "rw"} <= flags:
        raise InvalidArgument(f"invalid mount options in {_show(text)}: both ro and rw")
    return flags


def parse_volume(text: object) -> Mount:
    """`-v` as Docker reads it on Linux: NAME:/path[:ro|rw], /host/path:/path[:ro|rw],
    or /path alone (a new anonymous volume)."""
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidArgument(f"invalid volume specification {_show(text)}")
    parts = text.split(":")
    if len(parts) == 1:
        return Mount("volume", "", check_target(parts[0], "volume"))
    if len(parts) > 3:
        raise InvalidArgument(f"invalid volume specification {_show(text)}: SOURCE:TARGET[:ro|rw]")
    source, target = parts[0], parts[1]
    flags = _mode_flags(parts[2].split(",") if len(parts) == 3 else [], text, {"ro", "rw"})
    if not source:
        raise InvalidArgument(f"invalid volume specification {_show(text)}: the source is empty")
    if source.startswith("/"):
        return Mount("bind", check_bind_path(source), check_target(target, "bind mount"), "ro" in flags)
    return Mount("volume", check_volume_name(source), check_target(target, "volume"), "ro" in flags)


def parse_tmpfs(text: object) -> Mount:
    """`--tmpfs /path[:size=64m,mode=1770,ro|rw]`: always nosuid,nodev,noexec
    (Docker's default for --tmpfs)."""
    from .spec import parse_size
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidArgument(f"invalid tmpfs specification {_show(text)}")
    target, _, opts = text.partition(":")
    size: int | None = None
    mode: int | None = None
    options: list[str] = []
    for o in filter(None, opts.split(",")):
        key, eq, value = o.partition("=")
        if key == "size" and eq:
            size = parse_size(value, "tmpfs size")
        elif key == "mode" and eq:
            if not re.fullmatch(r"[0-7]{1,4}", value):
                raise InvalidArgument(f"invalid tmpfs mode {_show(value)}: octal, e.g. 1777")
            mode = int(value, 8)
        else:
            options.append(o)
    flags = _mode_flags(options, text, _TMPFS_FLAGS)
    return Mount("tmpfs", "", check_target(target, "tmpfs"), "ro" in flags, size, mode)


def check_bind_path(path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"invalid bind mount source {_show(path)}: must be an absolute host path")
    if "\0" in path or len(path.encode("utf-8", "surrogateescape")) > 4096:
        raise InvalidArgument(f"invalid bind mount source {_show(path)}: a NUL byte or longer than 4096 bytes")
    return posixpath.normpath(path)


def check_mounts(mounts: object) -> tuple[Mount, ...]:
    """Mount records (or dicts of their fields, from the agent) checked as the parsers check
    typed ones; one mount per target."""
    if isinstance(mounts, (str, bytes, dict)) or not isinstance(mounts, (list, tuple)):
        raise InvalidArgument("mounts: give a list of runtime.Mount")
    out: list[Mount] = []
    seen: set[str] = set()
    for m in mounts:
        if isinstance(m, dict):
            if set(m) - set(Mount._fields) or not {"type", "target"} <= set(m):
                raise InvalidArgument(f"invalid mount {_show(m)}: an object with {', '.join(Mount._fields)}")
            m = Mount(**{"source": "", **m})
        if not isinstance(m, Mount):
            raise InvalidArgument(f"invalid mount {_show(m)}: give a runtime.Mount")
        if not isinstance(m.read_only, bool):
            raise InvalidArgument(f"invalid mount {_show(m)}: read_only must be true or false")
        if m.type == "volume":
            source = "" if m.source in ("", None) else check_volume_name(m.source)
            m = Mount("volume", source, check_target(m.target, "volume"), m.read_only)
        elif m.type == "bind":
            m = Mount("bind", check_bind_path(m.source), check_target(m.target, "bind mount"), m.read_only)
        elif m.type == "tmpfs":
            from .spec import parse_size
            size = None if m.size is None else parse_size(m.size, "tmpfs size")
            if m.mode is not None and (isinstance(m.mode, bool) or not isinstance(m.mode, int)
                                       or not 0 <= m.mode <= 0o7777):
                raise InvalidArgument(f"invalid tmpfs mode {_show(m.mode)}: 0 to 0o7777")
            if m.source not in ("", None):
                raise InvalidArgument(f"invalid tmpfs source {_show(m.source)}: a tmpfs has none")
            m = Mount("tmpfs", "", check_target(m.target, "tmpfs"), m.read_only, size, m.mode)
        else:
            raise InvalidArgument(f"invalid mount type {_show(m.type)}: volume, bind or tmpfs")
        if m.target in seen:
            raise InvalidArgument(f"duplicate mount point {m.target}")
        seen.add(m.target)
        out.append(m)
    return tuple(out)


# ------------------------------------------------------- bind mount sources

def protected_paths(state_root: str) -> list[str]:
    """SENSITIVE plus this installation's own directories (see above)."""
    from .agent import socket_path
    extra = [state_root, os.path.dirname(socket_path(state_root)),
             os.environ.get("TERRARIUM_WEB_DIR") or "/var/lib/terrarium-web"]
    return [*SENSITIVE, *(os.path.realpath(p) for p in extra)]


def check_bind_source(path: str, state_root: str) -> str:
    """The real path (symlinks resolved) of a bind mount's source on the host;
    Forbidden if it is, is inside, or holds a protected path; NotFound-like
    InvalidArgument if it does not exist."""
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise InvalidArgument(f"bind mount source {_show(path)} does not exist on the host")
    refuse_protected(real, protected_paths(state_root), shown=path)
    return real


def refuse_protected(real: str, protected: Iterable[str], shown: str | None = None) -> None:
    shown = _show(shown or real)
    for p in protected:
        if real == p or real.startswith(p.rstrip("/") + "/"):
            raise Forbidden(f"bind mount of {shown} refused: {p} is the host's own "
                            f"({_reason(p)})")
        if real == "/" or p.startswith(real.rstrip("/") + "/"):
            raise Forbidden(f"bind mount of {shown} refused: it holds {p} ({_reason(p)})")


def _reason(p: str) -> str:
    if p in ("/proc", "/sys", "/dev"):
        return "the kernel's interfaces"
    if p == "/boot":
        return "what the host boots"
    if p == "/etc":
        return "the host's accounts and services"
    if p in ("/run", "/var/run"):
        return "root daemons' sockets, the agent's among them"
    if p == "/root":
        return "root's keys and start-up files"
    if p in SENSITIVE:
        return "programs root runs"
    return "Terrarium's state, agent socket or dashboard files"


# ----------------------------------------------------- inside the container

def mount_all(rootfs: str, mounts: list[MountRequest]) -> None:
    """Make the start request's mounts under rootfs, parents first.  Runs in
    init, in its own mount namespace, before pivot_root.  Each item: type,
    target, read_only, and "path" (the host directory or file: a volume's
    data or a bind source), "copy" (a volume: fill it from the image when
    empty), "size" and "mode" (tmpfs)."""
    if not mounts:
        return
    from . import linux
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in sorted(mounts, key=lambda m: m["target"].count("/")):
            _mount_one(linux, root_fd, m)
    finally:
        os.close(root_fd)


IN_ROOT = 0x10 | 0x02        # RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS


def _mount_one(linux: ModuleType, root_fd: int, m: MountRequest) -> None:
    target = m["target"]
    nosuid_nodev = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
    ro = linux.MOUNT_ATTR_RDONLY if m.get("read_only") else 0
    if m["type"] == "tmpfs":
        mode = m.get("mode")
        options: dict[str, str | int] = {"mode": format(0o1777 if mode is None else mode, "o")}
        size = m.get("size")
        if size:
            options["size"] = size
        mnt = linux.fs_mount("tmpfs", options, nosuid_nodev | linux.MOUNT_ATTR_NOEXEC | ro)
        is_dir = True
    else:
        # the host path as the runtime checked it: no symlink may have been
        # swapped into it since (a bind source's check is on this very path)
        src = linux.openat2(linux.AT_FDCWD, m["path"], os.O_PATH, linux.RESOLVE_NO_SYMLINKS)
        try:
            is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
            if m["type"] == "volume" and m.get("copy"):
                _fill_volume(linux, root_fd, target, src)
            mnt = linux.open_tree(src, "", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC
                                  | linux.AT_EMPTY_PATH | linux.AT_RECURSIVE)
        finally:
            os.close(src)
    try:
        if m["type"] != "tmpfs":
            linux.mount_setattr(mnt, "", nosuid_nodev | ro, recursive=True, flags=linux.AT_EMPTY_PATH)
        dest = target_fd(linux, root_fd, target, is_dir)
        try:
            linux.move_mount(mnt, dest, f"{m['type']} on {target}")
        finally:
            os.close(dest)
    finally:
        os.close(mnt)


def target_fd(linux: ModuleType, root_fd: int, target: str, is_dir: bool, _links: int = 0) -> int:
    """An O_PATH descriptor on target inside the root (made if missing: a
    directory, or an empty file for a file's bind mount), every component
    resolved by the kernel as if root_fd were /.  A dangling symlink on the
    way is followed inside the root, and what it names is made."""
    from .errors import KernelError, TerrariumError
    parts = [p for p in target.split("/") if p]
    fd: int = -1
    if not parts:                                     # the root itself (a file's parent may be /)
        fd = linux.openat2(root_fd, ".", os.O_PATH, IN_ROOT)
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        last = i == len(parts)
        try:
            fd = linux.openat2(root_fd, sub, os.O_PATH, IN_ROOT)
        except OSError as e:
            if e.errno == errno.ELOOP:                # e.g. debootstrap's `proc -> /proc`
                raise KernelError(errno.ELOOP, f"mount target {target}: a symlink in the image "
                                               f"at /{sub} loops") from None
            if e.errno != errno.ENOENT:
                raise
            fd = -1
        if fd < 0:
            parent_path = "/".join(parts[:i - 1])
            parent = linux.openat2(root_fd, parent_path or ".", os.O_PATH | os.O_DIRECTORY, IN_ROOT)
            try:
                link = os.readlink(parts[i - 1], dir_fd=parent)
            except OSError:
                link = None                           # not there, or not a symlink
            if link is not None:
                os.close(parent)
                if _links >= 40:
                    raise KernelError(errno.ELOOP, f"mount target {target}")
                base = link if link.startswith("/") else posixpath.join("/" + parent_path, link)
                return target_fd(linux, root_fd, posixpath.join(base, *parts[i:]), is_dir, _links + 1)
            try:
                if last and not is_dir:
                    os.close(os.open(parts[i - 1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=parent))
                else:
                    os.mkdir(parts[i - 1], 0o755, dir_fd=parent)
            except FileExistsError:
                pass                                  # made meanwhile: opened below
            finally:
                os.close(parent)
            fd = linux.openat2(root_fd, sub, os.O_PATH, IN_ROOT)
        if not last:
            os.close(fd)
    kind = os.fstat(fd).st_mode
    if stat.S_ISDIR(kind) != is_dir:
        os.close(fd)
        raise TerrariumError(f"mount target {target} is {'not ' if is_dir else ''}a directory, "
                             f"the source is {'a directory' if is_dir else 'a file'}")
    return fd


def bind_file_in_root(rootfs: str, source: str, target: str) -> None:
    """Bind the host file source over target inside the root (its directory
    made if missing, resolved inside the root): a symlink, or anything but a
    regular file, at target is replaced by an empty file first (/etc/hosts,
    /etc/resolv.conf)."""
    from . import linux
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = target_fd(linux, root_fd, posixpath.dirname(target), True)
    finally:
        os.close(root_fd)
    name = posixpath.basename(target)
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            missing = not stat.S_ISREG(st.st_mode)
            if missing:
                os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            missing = True
        if missing:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=parent))
        dest = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        mnt = linux.open_tree(linux.AT_FDCWD, source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
        try:
            linux.move_mount(mnt, dest, f"{source} on {target}")
        finally:
            os.close(mnt)
    finally:
        os.close(dest)


def _fill_volume(linux: ModuleType, root_fd: int, target: str, src: int) -> None:
    """Docker's rule for a volume: when it is empty, what the image has at
    the target is copied into it (files, directories, symlinks, FIFOs; owner,
    mode and times; not xattrs or device nodes), and the volume's root takes
    the target directory's owner and mode.  Walked by descriptors on both
    sides, never following a symlink."""
    from . import fswalk
    try:
        image_dir = linux.openat2(root_fd, target.lstrip("/"), os.O_RDONLY | os.O_DIRECTORY, IN_ROOT)
    except OSError:
        return                                        # nothing there (or not a directory)
    try:
        data = linux.openat2(src, ".", os.O_RDONLY | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS)
    except OSError:
        os.close(image_dir)
        return                                        # a volume is a directory; else nothing to fill
    try:
        if os.listdir(data):
            return
        _copy_dir(fswalk, image_dir, data, 0)
        st = os.fstat(image_dir)
        os.fchown(data, st.st_uid, st.st_gid)
        os.fchmod(data, stat.S_IMODE(st.st_mode))
    finally:
        os.close(image_dir)
        os.close(data)


def _copy_dir(fswalk: ModuleType, src: int, dst: int, depth: int) -> None:
    if depth >= fswalk.MAX_DEPTH:
        return
    for name, st in fswalk.entries(src):
        mode = st.st_mode
        times = (st.st_atime_ns, st.st_mtime_ns)
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s, d = fswalk.open_dir(name, src), fswalk.open_dir(name, dst)
            try:
                if s is not None and d is not None:
                    _copy_dir(fswalk, s, d, depth + 1)
                    _own(d, st, times)
            finally:
                for fd in (s, d):
                    if fd is not None:
                        os.close(fd)
        elif stat.S_ISREG(mode):
            try:
                s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            except OSError:
                continue
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                            dir_fd=dst)
                try:
                    while os.sendfile(d, s, None, 1 << 30):   # (copy_file_range: EXDEV off overlay)
                        pass
                    _own(d, st, times)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.utime(name, ns=times, dir_fd=dst, follow_symlinks=False)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(name, 0o600, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst)


def _own(fd: int, st: os.stat_result, times: tuple[int, int]) -> None:
    os.fchown(fd, st.st_uid, st.st_gid)               # before the mode: chown clears setuid
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=times)
