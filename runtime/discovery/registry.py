"""Which sources discovery asks, in ENGINES order.

    default_sources(rt)     every source this host can have; the kernel's own
                            (kernel.kernel_sources) are always there
"""
from __future__ import annotations

from . import ENGINES
from .kernel import kernel_sources


def default_sources(rt=None) -> list:
    sources = kernel_sources()
    return sorted(sources, key=lambda s: ENGINES.index(s.engine))
