"""Bare PID namespaces: process trees no engine owns.

`unshare --pid --fork --mount-proc bash` makes a container in all but name:
its own PID namespace (bash is PID 1 inside), often its own mount namespace,
and no cgroup of its own, so no limit but the host's.  Any PID namespace that
is not the host's is one `Found` here; discover() drops those an earlier
source already reported (a Docker container's, a pod's, ours).

    one Found per PID namespace inode, key "bare-pidns-<inode>"
    pid         the process that is PID 1 inside (last NSpid field 1), else
                the one with the lowest PID inside
    namespaces  that init's
    cgroup      "" unless the namespace has a cgroup of its own: all its
                processes in one cgroup (other than the root) that holds
                nothing else, subtree included.  A cgroup shared with
                processes outside the namespace (the shell that ran unshare,
                the session) is not the namespace's, and its limits are not
                the namespace's either; showing it would say otherwise.

Nothing tells us when a PID namespace is born (no inotify for it; the proc
connector would wake us on every fork of the host), so each pass reads
/proc: one readlink per process, and /proc/<pid>/status only for processes
outside the host's namespace (bench/discovery_cost.py measures it).
"""
from __future__ import annotations

import os
from types import MappingProxyType
from typing import Sequence

from ..pidinfo import memory_cgroup, namespace_inodes, parse_ns_link, parse_nspid, parse_status
from ..procs import parse_cmdline
from . import Availability, Found, make_key
from .cgrouptree import hierarchy_roots, subtree_procs

NOTE = ("No engine owns this PID namespace: a process made it itself (unshare, clone with "
        "CLONE_NEWPID), so there is nothing to drive but its processes.")
NOTE_NO_CGROUP = " It has no cgroup of its own: no limit applies to it but the host's."

def host_pidns(proc: str = "/proc") -> int | None:
    """The host's PID namespace: PID 1's, or (when PID 1's links cannot be
    read, as when PID 1 is not dumpable) our own, which a /proc that shows
    PID 1 at all is mounted for."""
    for who in ("1", "self"):
        try:
            return parse_ns_link(os.readlink(f"{proc}/{who}/ns/pid"))[1]
        except (OSError, ValueError):
            continue
    return None


def pid_namespaces(proc: str = "/proc") -> dict[int, list[int]]:
    """{PID namespace inode: [host pids]} of every process /proc shows."""
    out: dict[int, list[int]] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            target = os.readlink(f"{proc}/{name}/ns/pid")
        except OSError:
            continue                         # gone, a zombie, or not ours to see
        try:
            ino = parse_ns_link(target)[1]
        except ValueError:
            continue
        out.setdefault(ino, []).append(int(name))
    return out


def members(inode: int, proc: str = "/proc") -> list[int]:
    """Host pids of the processes in one PID namespace (not in deeper ones)."""
    return sorted(pid_namespaces(proc).get(inode, []))


def _read(path: str) -> str | None:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _nspid(pid: int, proc: str) -> tuple[int, ...] | None:
    text = _read(f"{proc}/{pid}/status")
    if text is None:
        return None
    line = parse_status(text, ("NSpid",)).get("NSpid")
    return parse_nspid(line) if line else None


class BareSource:
    """Every PID namespace that is not the host's (Source protocol)."""
    engine = "bare"

    def __init__(self, proc: str = "/proc", cgroup_root: str | None = None):
        self.proc, self.cgroup_root = proc, cgroup_root
        self._roots: tuple[str, list[str], str | None] | None = None

    def availability(self) -> Availability:
        if host_pidns(self.proc) is None:
            return Availability("bare", "refused", f"cannot read the PID namespaces under {self.proc}")
        return Availability("bare", "up")

    def list(self, skip: frozenset[int] = frozenset()) -> list[Found]:
        """Every PID namespace but the host's and those in ``skip`` (inodes an
        earlier source already claimed: discover() passes them, so a Docker
        container's processes are not read again only to be dropped)."""
        host = host_pidns(self.proc)
        if host is None:
            return []
        out = []
        for ino, pids in sorted(pid_namespaces(self.proc).items()):
            if ino == host or ino in skip:
                continue
            f = self.found(ino, sorted(pids))
            if f is not None:
                out.append(f)
        return out

    def found(self, ino: int, pids: Sequence[int]) -> Found | None:
        init, lowest = None, None
        for pid in pids:
            nspid = _nspid(pid, self.proc)
            if nspid is None:
                continue
            if nspid[-1] == 1:
                init = pid
                break
            if lowest is None or nspid[-1] < lowest[0]:
                lowest = (nspid[-1], pid)
        if init is None:
            if lowest is None:
                return None                  # every process left meanwhile
            init = lowest[1]
        ns = namespace_inodes(init, self.proc)
        ns.setdefault("pid", ino)
        cgroup = self.own_cgroup(pids)
        ident = f"pidns-{ino}"
        return Found(make_key("bare", ident), "bare", ident, self._command(init) or ident,
                     state="running", pid=init, cgroup=cgroup, namespaces=MappingProxyType(ns),
                     labels=MappingProxyType({"processes": str(len(pids)), "pidns": str(ino)}),
                     owner_note=NOTE + ("" if cgroup else NOTE_NO_CGROUP))

    def own_cgroup(self, pids: Sequence[int]) -> str:
        """The cgroup all of pids are in when it holds nothing else (its
        subtree included) and is not a hierarchy's root; else ""."""
        paths: set[str | None] = set()
        for pid in pids:
            text = _read(f"{self.proc}/{pid}/cgroup")
            if text is None:
                continue
            paths.add(memory_cgroup(text))
            if len(paths) > 1:
                return ""
        if len(paths) != 1:
            return ""
        path = paths.pop()
        if not path or path == "/":
            return ""
        if self._roots is None:
            self._roots = hierarchy_roots(self.cgroup_root)
        kind, roots, _ = self._roots
        for root in roots[:1]:                   # memory (v1) or the one tree (v2): /proc's path is theirs
            directory = root + path
            if not os.path.isdir(directory):
                return ""
            if not set(subtree_procs(directory)) <= set(pids):
                return ""
            return path
        return ""

    def _command(self, pid: int) -> str:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as f:
                text = " ".join(parse_cmdline(f.read()))
        except OSError:
            text = ""
        if text:
            return text[:80]
        return (_read(f"{self.proc}/{pid}/comm") or "").strip()
