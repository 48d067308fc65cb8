"""The discovery sources read from the kernel alone, in ENGINES order: the
cgroup tree's recognisers (cgrouptree.py: kubernetes, containerd, crio,
nspawn, lxc, systemd) and bare PID namespaces (bare.py).  The roots are
parameters so tests can point them at fake trees."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Found
    from .bare import BareSource
    from .cgrouptree import TreeSource


def kernel_sources(cgroup_root: str | None = None, proc: str = "/proc",
                   log_root: str = "/var/log") -> list[TreeSource | BareSource]:
    from .bare import BareSource
    from .cgrouptree import tree_sources
    return tree_sources(cgroup_root, proc, log_root) + [BareSource(proc, cgroup_root)]


def found_pids(found: Found, proc: str = "/proc", cgroup_root: str | None = None) -> list[int]:
    """The host pids of a discovered container's processes, for its process
    tree: its cgroup's (the subtree, in the memory hierarchy on v1, the one
    tree on v2) when it has one of its own, else its PID namespace's (a bare
    namespace shares its cgroup with processes that are not its own)."""
    from .bare import members
    from .cgrouptree import hierarchy_roots, subtree_procs
    if found.cgroup:
        roots = hierarchy_roots(cgroup_root)[1]
        for root in roots:
            directory = root + found.cgroup
            if os.path.isdir(directory):
                return sorted(subtree_procs(directory))
        return []
    ino = found.namespaces.get("pid")
    return members(ino, proc) if ino is not None else []
