"""The discovery sources read from the kernel alone, in ENGINES order: the
cgroup tree's recognisers (cgrouptree.py: kubernetes, containerd, crio,
nspawn, lxc, systemd) and bare PID namespaces (bare.py).  The roots are
parameters so tests can point them at fake trees."""
from __future__ import annotations


def kernel_sources(cgroup_root: str | None = None, proc: str = "/proc",
                   log_root: str = "/var/log") -> list:
    from .bare import BareSource
    from .cgrouptree import tree_sources
    return tree_sources(cgroup_root, proc, log_root) + [BareSource(proc, cgroup_root)]
