"""How many descriptors this process's kept-open kernel files may hold.

A kept-open file makes a re-read one ``pread`` instead of open, read, close;
but each is a descriptor, and the soft RLIMIT_NOFILE is often 1,024 (systemd
services, login shells).  At 1,000 containers, ~16 kept-open cgroup files
each (runtime.stats) or an eventfd and a counter file each (runtime.oom) would
take every descriptor the process has: the OOM watcher died at start-up at
~500 containers and OOM detection was silently off.

So each kind of holder may keep at most its share of the soft limit, read
when it asks (the web process raises its soft limit at start,
dashboard/rlimits.py); beyond it, a holder opens and closes per read, slower
but never failing for want of descriptors.  The rest of the limit stays for
sockets, the database and files opened for a moment.

    from runtime import fdbudget
    if fdbudget.STATS.take(n):      # keep n files open
        ...
        fdbudget.STATS.give(n)      # when they are closed
"""
from __future__ import annotations

import resource
import threading


class Budget:
    """A share of the soft descriptor limit, counted across threads.

    ``limit`` (tests, bench/): a fixed number of descriptors instead of the share."""

    def __init__(self, share: float, limit: int | None = None):
        self.share, self.limit = share, limit
        self.held = 0
        self.refused = 0                  # takes refused, for tests and bench/
        self._lock = threading.Lock()

    def allowed(self) -> int:
        if self.limit is not None:
            return self.limit
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return int(soft * self.share)

    def take(self, n: int = 1) -> bool:
        """Reserve n descriptors; False (nothing reserved) when over the share."""
        with self._lock:
            if self.held + n > self.allowed():
                self.refused += 1
                return False
            self.held += n
            return True

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.held = max(self.held - n, 0)


# runtime.stats: every kept-open reader of the process (live sampler, OOM
# memory record, /metrics), cgroup files and /proc/<pid>/stat alike
STATS = Budget(0.5)
# runtime.oom.CgroupOomWatch: the counter watches (v1: an eventfd and
# memory.oom_control per cgroup; v2: memory.events) -- beyond it, polled
OOM = Budget(0.25)
