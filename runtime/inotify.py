"""inotify(7) with the standard library only (ctypes): the runtime's daemons
(the root agent among them) run as `python -I -S`, so no inotify package.

    ino = Inotify()
    wd = ino.add_watch(path, IN_MOVED_TO | IN_CLOSE_WRITE)
    for ev in ino.read(timeout_ms=1000):     # Event(wd, mask, cookie, name)
        ...
"""
from __future__ import annotations

import ctypes
import os
import select
import struct
from typing import NamedTuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000

_HEADER = struct.Struct("iIII")
_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """libc with inotify_init1/add_watch/rm_watch typed (shared with runtime/oom.py)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


class Inotify:
    """One inotify descriptor (non-blocking, close-on-exec)."""

    def __init__(self) -> None:
        fd: int = libc().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd: int = fd

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        wd: int = libc().inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}", path)
        return wd

    def rm_watch(self, wd: int) -> None:
        libc().inotify_rm_watch(self.fd, wd)          # fails quietly if the watch is gone

    def read(self, timeout_ms: int | None = 0) -> list[Event]:
        """The events waiting, after up to ``timeout_ms`` for the first (None: for ever)."""
        if timeout_ms != 0:
            p = select.poll()
            p.register(self.fd, select.POLLIN)
            if not p.poll(timeout_ms):
                return []
        out: list[Event] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            off = 0
            while off + _HEADER.size <= len(buf):
                wd, mask, cookie, size = _HEADER.unpack_from(buf, off)
                off += _HEADER.size
                name = buf[off:off + size].split(b"\0", 1)[0].decode(errors="surrogateescape")
                off += size
                out.append(Event(wd, mask, cookie, name))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
