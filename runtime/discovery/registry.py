"""Which sources discovery asks, in ENGINES order.

    default_sources(rt)     every source this host can have
    kernel_sources(...)     the ones read from the kernel alone: the cgroup
                            tree's recognisers (cgrouptree) and bare PID
                            namespaces (bare); roots are parameters for tests
"""
from __future__ import annotations

from . import ENGINES


def kernel_sources(cgroup_root: str | None = None, proc: str = "/proc",
                   log_root: str = "/var/log") -> list:
    from .bare import BareSource
    from .cgrouptree import tree_sources
    return tree_sources(cgroup_root, proc, log_root) + [BareSource(proc, cgroup_root)]


def default_sources(rt=None) -> list:
    sources = kernel_sources()
    return sorted(sources, key=lambda s: ENGINES.index(s.engine))
