"""Thin wrappers over the Linux system calls Python does not expose (3.11).

One place for ctypes: each wrapper raises KernelError with the errno and
what was being done, so a failure reads "mount overlay on /x: Invalid argument
[EINVAL]" instead of a bare OSError.  Nothing here has policy.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct

from .errors import KernelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import NoReturn

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

# namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86-64 syscall numbers
_SYS_capset = 126
_SYS_pivot_root = 155
_SYS_close_range = 436
CLOSE_RANGE_CLOEXEC = 4

# capabilities (linux/capability.h)
CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
    "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21,
    "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33,
    "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
# Docker's default set (moby oci/caps/defaults.go): these 14 and no others.
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
                "SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE",
                "SYS_CHROOT", "KILL", "AUDIT_WRITE")


def caps_mask(names: Iterable[str] = DEFAULT_CAPS) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPS[name]
    return mask


def _fail(what: str) -> NoReturn:
    raise KernelError(ctypes.get_errno(), what)


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        _fail(f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        _fail(f"setns({nstype:#x})")


PR_SET_DUMPABLE = 4


def set_dumpable(on: bool) -> None:
    """Not dumpable: /proc/<pid>/ files are root's and ptrace needs
    CAP_SYS_PTRACE.  Kept across fork; exec sets it again."""
    prctl(PR_SET_DUMPABLE, int(on))


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        _fail(f"mount {fstype or source} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        _fail(f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_SYS_pivot_root, _b(new_root), _b(put_old)) != 0:
        _fail(f"pivot_root {new_root}")


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        _fail(f"sethostname {name}")


MADV_POPULATE_WRITE = 23     # Linux 5.14


def populate_private_memory() -> int:
    """Fault in, writable, every private writable mapping of this process.

    After fork that copies now, ahead of need, the pages a child would
    otherwise copy one fault at a time while it works (a CLI server's spare
    worker: ~5 ms of a command).  Returns the bytes asked for; kernels
    without MADV_POPULATE_WRITE refuse it and nothing happens."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if _libc.madvise(lo, hi - lo, MADV_POPULATE_WRITE) == 0:
                total += hi - lo
    return total


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    rc: int = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if rc < 0:
        _fail(f"prctl({option})")
    return rc


def set_name(name: str) -> None:
    """The process's comm (15 bytes), as `ps -o comm` and /proc/<pid>/comm show it.

    Written to /proc/thread-self/comm (what PR_SET_NAME sets, without ctypes:
    a shim calls this right after fork, and ctypes' Python layer would copy
    a few hundred kB of the fork server's pages); prctl where /proc is absent."""
    raw = name.encode()[:15]
    try:
        fd = os.open("/proc/thread-self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            if os.write(fd, raw) == len(raw):
                return
        except OSError:
            pass
        finally:
            os.close(fd)
    buf = ctypes.create_string_buffer(raw)
    if _libc.prctl(PR_SET_NAME, ctypes.cast(buf, ctypes.c_void_p).value or 0, 0, 0, 0) < 0:
        _fail("prctl(PR_SET_NAME)")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


_cap_last_cap: int | None = None


def cap_last_cap() -> int:
    """The highest capability this kernel knows.  Read once per process and kept:
    opening a /proc/sys file costs ~0.5 ms, and the fork server reads it before
    forking, so no container init pays for it."""
    global _cap_last_cap
    if _cap_last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _cap_last_cap = int(f.read())
        except OSError:
            _cap_last_cap = max(CAPS.values())
    return _cap_last_cap


def limit_capabilities(keep_mask: int) -> None:
    """Drop every capability outside keep_mask from the bounding, ambient,
    effective and permitted sets, and empty the inheritable set.  After exec,
    root's sets are the bounding set, so the process holds exactly keep_mask.

    Inheritable stays empty (Docker >= 20.10.14): with keep_mask there, a
    non-root user in the container would gain those capabilities by exec'ing
    a file with inheritable file capabilities (CVE-2022-24769)."""
    for cap in range(cap_last_cap() + 1):
        if not keep_mask & (1 << cap):
            if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                _fail(f"drop capability {cap}")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)   # _LINUX_CAPABILITY_VERSION_3, this thread
    lo, hi = keep_mask & 0xFFFFFFFF, keep_mask >> 32
    data = struct.pack("IIIIII", lo, lo, 0, hi, hi, 0)     # effective, permitted, inheritable x2
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    if _libc.syscall(_SYS_capset, hbuf, dbuf) != 0:
        _fail("capset")


def seccomp_filter(program: bytes | None) -> None:
    """Load a classic BPF program (struct sock_filter[], as libseccomp exports
    it) as this thread's seccomp filter; None: nothing.  Needs no_new_privs
    (or CAP_SYS_ADMIN) first; lasts across execve and is inherited by children."""
    if program is None:
        return
    if not program or len(program) % 8 or len(program) // 8 > 4096:
        raise KernelError(errno.EINVAL, f"load seccomp filter: {len(program)} bytes is not a BPF program")
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = ctypes.create_string_buffer(struct.pack("@HP", len(program) // 8, ctypes.addressof(buf)))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        _fail("load seccomp filter")


_malloc_trim = _libc.malloc_trim          # looked up once, in the fork server


def malloc_trim() -> None:
    """Give the heap's free pages back to the kernel (glibc malloc_trim(0))."""
    _malloc_trim(0)


def close_fds_on_exec(first: int = 3) -> None:
    """Mark every descriptor >= first close-on-exec (close_range, Linux 5.11+)."""
    if _libc.syscall(_SYS_close_range, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                     ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) == 0:
        return
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd >= first:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            except OSError:
                pass


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up() -> None:
    """`ip link set lo up` in the current network namespace, by ioctl: no netlink import."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


# --- the new mount API and openat2 (Linux 5.2 / 5.6 / 5.12): mounts made
# from descriptors, so a path inside a container's root is resolved once,
# by the kernel, and never re-walked by name (runtime/mounts.py).
_SYS_open_tree = 428
_SYS_move_mount = 429
_SYS_fsopen = 430
_SYS_fsconfig = 431
_SYS_fsmount = 432
_SYS_openat2 = 437
_SYS_mount_setattr = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_STRICTATIME = 0x20
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10


def _fd_call(what: str, nr: int, *args: object) -> int:
    rc: int = _libc.syscall(nr, *args)
    if rc < 0:
        _fail(what)
    return rc


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open path relative to dir_fd with `resolve` rules
    (RESOLVE_IN_ROOT: every `..` and absolute symlink stays under dir_fd)."""
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    return _fd_call(f"open {path}", _SYS_openat2, ctypes.c_int(dir_fd), _b(path), buf, ctypes.c_size_t(len(how)))


def open_tree(dir_fd: int, path: str, flags: int) -> int:
    """A detached copy of the mount tree at path (OPEN_TREE_CLONE), as an fd."""
    return _fd_call(f"open_tree {path or dir_fd}", _SYS_open_tree, ctypes.c_int(dir_fd), _b(path),
                    ctypes.c_uint(flags))


def move_mount(from_fd: int, to_fd: int, what: str) -> None:
    """Attach the detached mount from_fd onto the object to_fd is open on."""
    _fd_call(f"mount {what}", _SYS_move_mount, ctypes.c_int(from_fd), b"", ctypes.c_int(to_fd), b"",
             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


def mount_setattr(dir_fd: int, path: str, attr_set: int, *, recursive: bool = False, flags: int = 0) -> None:
    """Add mount attributes (MOUNT_ATTR_*) to the mount at path, keeping the
    ones it has (unlike MS_REMOUNT, which replaces them)."""
    attr = struct.pack("QQQQ", attr_set, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    _fd_call(f"mount_setattr {path or dir_fd}", _SYS_mount_setattr, ctypes.c_int(dir_fd), _b(path),
             ctypes.c_uint(flags | (AT_RECURSIVE if recursive else 0)), buf, ctypes.c_size_t(len(attr)))


def fs_mount(fstype: str, options: Mapping[str, object], attrs: int) -> int:
    """A new detached mount of a fresh file system (fsopen, fsconfig, fsmount)."""
    fs = _fd_call(f"fsopen {fstype}", _SYS_fsopen, _b(fstype), ctypes.c_uint(1))        # FSOPEN_CLOEXEC
    try:
        for key, value in options.items():
            _fd_call(f"{fstype} option {key}={value}", _SYS_fsconfig, ctypes.c_int(fs),
                     ctypes.c_uint(FSCONFIG_SET_STRING), _b(key), _b(str(value)), ctypes.c_int(0))
        _fd_call(f"create {fstype}", _SYS_fsconfig, ctypes.c_int(fs), ctypes.c_uint(FSCONFIG_CMD_CREATE),
                 None, None, ctypes.c_int(0))
        return _fd_call(f"fsmount {fstype}", _SYS_fsmount, ctypes.c_int(fs), ctypes.c_uint(1),   # FSMOUNT_CLOEXEC
                        ctypes.c_uint(attrs))
    finally:
        os.close(fs)
