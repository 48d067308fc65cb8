"""The whole host's cgroup hierarchy, read-only (systemd-cgtop's view).

    from runtime.cgroups import detect, tree
    for h in tree.walk(detect()):                 # one Hierarchy per v1 mount, or the v2 tree
        for node in h.nodes:                      # depth-first, root first
            node.path, node.memory_usage, node.memory_limit, node.cpu_usage_ns

v1 hosts spread a cgroup over one hierarchy per controller mount; we walk
the mounts of memory, cpuacct and pids (co-mounted controllers such as
"cpu,cpuacct" are one hierarchy, walked once).  A v2 host has one tree.
Every node names in ``sources`` the file each figure came from.

This module only lists directories and reads files: it never writes, so it
is safe on cgroups that are not Terrarium's.  Stdlib only.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from . import parse
from .base import Layout

V1_WALKED = ("memory", "cpuacct", "pids")
# (knob file, CgroupNode field, parser)
Knob = tuple[str, str, Callable[[str], int | None]]

# knob -> (field, parser), per kind of tree.  Absent files leave the field None
# (a v1 root has no memory.limit_in_bytes limit; a v2 root has no memory.current).
_V1_KNOBS: dict[str, tuple[Knob, ...]] = {
    "memory": (("memory.usage_in_bytes", "memory_usage", parse.integer),
               ("memory.limit_in_bytes", "memory_limit", parse.limit_v1)),
    "cpuacct": (("cpuacct.usage", "cpu_usage_ns", parse.integer),),
    "pids": (("pids.current", "pids_current", parse.integer),
             ("pids.max", "pids_max", parse.max_or_int)),
}
_V2_KNOBS: tuple[Knob, ...] = (("memory.current", "memory_usage", parse.integer),
             ("memory.max", "memory_limit", parse.max_or_int),
             ("pids.current", "pids_current", parse.integer),
             ("pids.max", "pids_max", parse.max_or_int))


@dataclass(frozen=True)
class CgroupNode:
    """One cgroup of one hierarchy."""
    path: str                       # "/" or "/terrarium/<id>", relative to the hierarchy root
    directory: str                  # absolute directory
    depth: int                      # 0 for the root
    nprocs: int | None              # lines of cgroup.procs (None: unreadable)
    memory_usage: int | None = None
    memory_limit: int | None = None  # None: unlimited
    cpu_usage_ns: int | None = None  # cumulative
    pids_current: int | None = None
    pids_max: int | None = None      # None: unlimited
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Hierarchy:
    name: str                       # "memory", "cpu,cpuacct", "pids" or "unified"
    mount: str
    nodes: tuple[CgroupNode, ...]


def hierarchies(layout: Layout, controllers: tuple[str, ...] = V1_WALKED) -> dict[str, str]:
    """{hierarchy name: mount point} to walk.  v1: one per distinct mount of
    the wanted controllers, named by every controller sharing that mount."""
    if layout.kind == "v2":
        return {"unified": layout.v2}
    by_mount: dict[str, list[str]] = {}
    for c, mount in sorted(layout.v1.items()):
        by_mount.setdefault(mount, []).append(c)
    out: dict[str, str] = {}
    for c in controllers:
        mount = layout.v1.get(c)
        if mount is not None:
            out.setdefault(",".join(by_mount[mount]), mount)
    return out


def walk(layout: Layout, controllers: tuple[str, ...] = V1_WALKED,
         max_depth: int | None = None) -> list[Hierarchy]:
    """Every cgroup of the hierarchies to show, depth-first with children sorted."""
    out = []
    for name, mount in hierarchies(layout, controllers).items():
        knobs = _V2_KNOBS + (("cpu.stat", "cpu_usage_ns", _usage_usec_ns),) if layout.kind == "v2" \
            else tuple(k for c in name.split(",") for k in _V1_KNOBS.get(c, ()))
        out.append(Hierarchy(name, mount, tuple(_walk_one(mount, knobs, max_depth))))
    return out


def _walk_one(mount: str, knobs: tuple[Knob, ...], max_depth: int | None) -> Iterator[CgroupNode]:
    stack = [("/", mount, 0)]
    while stack:                                   # iterative: depth is not bounded by us
        rel, directory, depth = stack.pop()
        node = read_node(directory, rel, depth, knobs)
        if node is None:
            continue                               # removed while we walked
        yield node
        if max_depth is not None and depth >= max_depth:
            continue
        try:
            with os.scandir(directory) as it:
                kids = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        for k in reversed(kids):
            stack.append((rel.rstrip("/") + "/" + k, os.path.join(directory, k), depth + 1))


def read_node(directory: str, rel: str, depth: int, knobs: tuple[Knob, ...]) -> CgroupNode | None:
    """One cgroup's figures; None if its directory is gone."""
    values: dict[str, int | None] = {}
    sources: dict[str, str] = {}
    procs = _read(os.path.join(directory, "cgroup.procs"))
    if procs is _GONE:
        return None
    for knob, key, parser in knobs:
        text = _read(os.path.join(directory, knob))
        if isinstance(text, str):
            try:
                values[key] = parser(text)
            except (ValueError, KeyError):
                continue
            line = text.strip().splitlines()[0] if text.strip() else ""
            sources[key] = f"{os.path.join(directory, knob)}: {line[:80]}"
    nprocs = len(procs.split()) if isinstance(procs, str) else None
    if nprocs is not None:
        sources["nprocs"] = f"{os.path.join(directory, 'cgroup.procs')}: {nprocs} lines"
    return CgroupNode(rel, directory, depth, nprocs, sources=sources, **values)


def _usage_usec_ns(text: str) -> int:
    """cpu.stat (v2) usage_usec -> ns."""
    return parse.flat_keyed(text)["usage_usec"] * 1000


_GONE = object()


def _read(path: str) -> str | object | None:
    """The file's text; None if unreadable or absent; _GONE if the cgroup vanished."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        if e.errno == errno.ENOENT and not os.path.isdir(os.path.dirname(path)):
            return _GONE
        return None
