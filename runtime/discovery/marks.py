"""Which container a host cgroup or namespace belongs to, for the host pages
(the cgroup browser, the namespaces list): one discovery pass in, a lookup
out.

    marks = Marks(found)                    # found: discover()'s list
    marks.cgroup("/kubepods/besteffort/pod<uid>/<id>/sub")  -> "kubernetes-<id>"
    marks.namespace(4026532177)             -> ("bare-pidns-4026532177",)

A cgroup belongs to the container whose cgroup is it or its nearest
ancestor.  A namespace belongs to every container whose init is in it
(a pod's containers share the sandbox's network namespace), except the
host's own: a systemd service runs in them, and marking them as its would
mark the whole host.
"""
from __future__ import annotations

import os
from typing import Iterable

from ..pidinfo import NS_TYPES, parse_ns_link
from . import Found


def host_namespaces(proc: str = "/proc") -> set[int]:
    """Inodes of PID 1's namespaces and our own (PID 1's links may be
    unreadable when it is not dumpable)."""
    out = set()
    for who in ("1", "self"):
        for t in NS_TYPES:
            try:
                out.add(parse_ns_link(os.readlink(f"{proc}/{who}/ns/{t}"))[1])
            except (OSError, ValueError):
                pass
    return out


class Marks:
    def __init__(self, found: Iterable[Found], host: set[int] | None = None, proc: str = "/proc"):
        host = host_namespaces(proc) if host is None else host
        self._cgroups: dict[str, str] = {}
        self._ns: dict[int, list[str]] = {}
        for f in found:
            if f.cgroup and f.cgroup != "/":
                self._cgroups.setdefault(f.cgroup.rstrip("/"), f.key)
            for ino in (f.namespaces or {}).values():
                if ino not in host:
                    keys = self._ns.setdefault(ino, [])
                    if f.key not in keys:
                        keys.append(f.key)

    def cgroup(self, path: str) -> str | None:
        """The key of the container a cgroup path is in, or None."""
        path = "/" + path.strip("/")
        while path not in ("/", ""):
            key = self._cgroups.get(path)
            if key is not None:
                return key
            path = path.rsplit("/", 1)[0] or "/"
        return None

    def namespace(self, inode: int) -> tuple[str, ...]:
        """The keys of the containers whose init is in this namespace."""
        return tuple(self._ns.get(inode, ()))
