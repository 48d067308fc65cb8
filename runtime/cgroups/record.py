"""The typed record of one cgroup reading: what crosses from runtime/ to the
dashboard, in process or through the agent.

    s = rt.cgroups.sample(cid)                  # or StatsReader.read(cid)[0]
    s.memory_usage, s.memory_limit              # typed: int | None
    s.figures["psi_cpu_some_avg10"]             # every figure of the table, by name
    s.sources["memory_usage"]                   # "memory.usage_in_bytes": where it came from

A ``Sample`` is a named tuple of three parts:

- ``figures``: every figure the version's table (runtime/cgroups/figures.py)
  yields, keyed as the table names them -- a row added there is in it with no
  other edit, so the live page's "kernel files" panel and ``/metrics``, which
  walk it (or the rows' metrics) by name, carry the new file too.  A v1 sample
  has no PSI keys at all, not 24 Nones: what a version does not read is not
  there.
- ``sources``: figure -> the file (and key) it was read from, the label a
  page shows on hover.  Shared between readings while it does not change, so a
  consumer tells "same files" by identity (dashboard/live/sampler.py).
- typed fields for the figures consumers read by name (the memory, CPU, pids
  and io figures graphs and the OOM record use), each a copy of
  ``figures[name]`` (None where the table has no such row), so mypy checks
  every such read.  They are filled in one place, ``Sample.of``, from the
  mapping; tests/runtime/test_figures.py checks that each field is a figure of
  a table.

Why a named tuple: it is immutable, built by one ``tuple.__new__`` (3.2 µs with
the 30 fields, on the 2 loaded cores here, and only on the ticks where
something moved: the readers hand back the same object otherwise, and "nothing
moved" stays an identity check), and field reads are C-speed.  A frozen
dataclass costs one ``object.__setattr__`` per field to build.  Why not a
field for every figure: the table would then be written twice, which is what
#16 set out to end; the mapping stays the one generic door, the fields the
checked one.

Treat ``figures``, ``sources`` and ``memory_events`` as read-only (typed as
Mapping): they are shared with the reader that made them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Union

# A figure's value: a count or size (int), a PSI average (float), absent (None),
# or memory.events / memory.oom_control whole ({key: count}).
Figure = Union[int, float, Mapping[str, int], None]
_NO_SOURCES: Mapping[str, str] = {}


class Sample(NamedTuple):
    """One reading of a container's cgroup (see the module docstring)."""
    kind: str                               # "v1" | "v2": which table
    figures: Mapping[str, Figure]           # every figure of the table, by name
    sources: Mapping[str, str]              # figure -> "file [key]"
    # -- memory (bytes)
    memory_usage: int | None = None
    memory_limit: int | None = None         # None: no limit
    memory_max_usage: int | None = None     # v1
    memory_cache: int | None = None
    memory_inactive_file: int | None = None
    memory_swap: int | None = None
    memory_swap_limit: int | None = None    # v2
    memory_anon: int | None = None
    memory_shmem: int | None = None
    memory_kernel: int | None = None
    memory_sock: int | None = None
    memory_failcnt: int | None = None       # v1
    memsw_usage: int | None = None          # v1: memory + swap
    memsw_limit: int | None = None
    memsw_failcnt: int | None = None
    memory_events: Mapping[str, int] | None = None   # memory.events (v2) / memory.oom_control (v1)
    oom_kills: int | None = None
    # -- CPU (ns; the quota and period in µs)
    cpu_usage_ns: int | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_ns: int | None = None
    cpu_quota_us: int | None = None         # None: no quota
    cpu_period_us: int | None = None
    # -- tasks, io (bytes)
    pids_current: int | None = None
    pids_max: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None

    @classmethod
    def of(cls, kind: str, figures: Mapping[str, Figure],
           sources: Mapping[str, str] = _NO_SOURCES) -> Sample:
        """The record of a table's figures: the one place the typed fields are
        filled (the readers' and the agent client's way to make one; tests make
        one from a few figures)."""
        return cls._make((kind, figures, sources, *map(figures.get, TYPED)))

    def get(self, figure: str) -> Figure:
        """A figure by its table name (None when the table has none)."""
        return self.figures.get(figure)

    def changes(self, before: Sample) -> dict[str, Figure] | None:
        """{figure: value} of what differs from ``before``; None when the
        two do not hold the same figures (another table)."""
        a, b = before.figures, self.figures
        if len(a) != len(b):
            return None
        try:
            return {k: v for k, v in b.items() if a[k] != v}
        except KeyError:
            return None

    def updated(self, changes: Mapping[str, Figure], sources: Mapping[str, str] | None = None) -> Sample:
        """This record with ``changes`` applied (and other ``sources``): a new one."""
        figures = {**self.figures, **changes}
        return Sample.of(self.kind, figures, self.sources if sources is None else sources)


# The figures with a field, in field order (Sample.of reads them from the mapping).
TYPED: tuple[str, ...] = Sample._fields[3:]
