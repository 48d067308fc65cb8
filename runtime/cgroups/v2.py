"""cgroup v2 driver: one unified tree, one directory per container.

A controller's knobs (memory.max, cpu.max, ...) appear in a cgroup only when
its PARENT lists the controller in cgroup.subtree_control, and a parent can
enable only what its own parent enabled.  So ``create`` walks down from the
root enabling memory, cpu, pids and io at every level above the container.
The container's own subtree_control stays empty: with the "no internal
processes" rule a cgroup holding processes cannot delegate controllers.
"""
from __future__ import annotations

import errno
import os
import signal as _signal
import time

from ..errors import KernelError, NotFound
from ..model import Limits
from . import figures, parse
from .base import FS, CFS_PERIOD_US, CgroupDriver, check_limits, cpu_quota_us, read_netns_file, swap_bytes
from .record import Sample

WANTED = ("memory", "cpu", "pids", "io")


class V2Driver(CgroupDriver):
    """Drives the cgroup2 tree mounted at ``root``."""
    kind = "v2"
    # cgroup2 refuses rename(2) of a cgroup (EPERM; kernel 6.1 in the VM tier)
    can_rename = False

    def __init__(self, root: str, parent: str = "terrarium", fs: FS | None = None):
        super().__init__(parent, fs)
        self.root = root

    def _roots(self) -> dict[str, str]:
        return {"unified": self.root}

    def _daemon_roots(self) -> dict[str, str]:
        return {"": self.root}                     # as /proc/<pid>/cgroup names it: "0::/path"

    def _dir(self, name: str) -> str:
        return self.paths(name)["unified"]

    def _file(self, name: str, knob: str) -> str:
        return os.path.join(self._dir(name), knob)

    def _require(self, name: str) -> str:
        d = self._dir(name)
        if not self.fs.isdir(d):
            raise NotFound(f"cgroup '{self.parent}/{name}' not found")
        return d

    # --- lifecycle

    def create(self, name: str, limits: Limits) -> dict[str, str]:
        """Enable controllers from the root down, mkdir the cgroup, apply limits."""
        check_limits(limits)
        paths = self.paths(name)
        made: list[str] = []
        try:
            level = self.root
            for part in self.parent.split("/"):
                self._enable_controllers(level)
                level = os.path.join(level, part)
                if self.fs.mkdir(level):
                    made.append(level)
            self._enable_controllers(level)         # the parent itself
            leaf = os.path.join(level, name)
            if self.fs.mkdir(leaf):
                made.append(leaf)
            self.update(name, limits)
        except BaseException:
            self._undo(made)
            raise
        return paths

    def _enable_controllers(self, directory: str) -> None:
        """+memory +cpu +pids +io in directory's subtree_control, as far as offered."""
        offered = parse.controllers(self.fs.read(os.path.join(directory, "cgroup.controllers")))
        ctl = os.path.join(directory, "cgroup.subtree_control")
        enabled = parse.controllers(self.fs.read(ctl))
        missing = [c for c in WANTED if c in offered and c not in enabled]
        if missing:
            self.fs.write(ctl, " ".join("+" + c for c in missing))

    def update(self, name: str, limits: Limits) -> None:
        """Apply limits to a live cgroup; None resets a knob to "max"."""
        check_limits(limits)
        self._require(name)
        swap = swap_bytes(limits)
        self._set(name, "memory.max", limits.memory is not None,
                  "max" if limits.memory is None else str(limits.memory))
        # Why swap matters: on a host with swap, memory.max alone does not
        # make the kernel kill.  At the limit, reclaim swaps the cgroup's
        # anonymous pages out, usage stays at memory.max, the process only
        # slows down and nothing dies.  memory.swap.max=0 leaves reclaim
        # nowhere to put them, so the limit holds and the cgroup OOMs.
        self._set(name, "memory.swap.max", swap is not None and swap > 0,
                  "max" if swap is None else str(swap))
        quota = "max" if limits.cpus is None else str(cpu_quota_us(limits.cpus))
        self._set(name, "cpu.max", limits.cpus is not None, f"{quota} {CFS_PERIOD_US}")
        self._set(name, "pids.max", limits.pids is not None,
                  "max" if limits.pids is None else str(limits.pids))

    def _set(self, name: str, knob: str, required: bool, value: str) -> None:
        """Write a knob; when it is absent, fail only if a real limit was asked."""
        path = self._file(name, knob)
        if self.fs.exists(path):
            self.fs.write(path, value)
        elif required:
            ctrl = knob.split(".")[0]
            raise KernelError(errno.ENOENT,
                              f"{path} (controller '{ctrl}' not enabled for "
                              f"'{self.parent}/{name}')")

    # --- freezer

    def freeze(self, name: str, timeout: float = 5.0) -> None:
        """cgroup.freeze=1, then wait for ``frozen 1`` in cgroup.events."""
        self._set_frozen(name, True, timeout)

    def thaw(self, name: str, timeout: float = 5.0) -> None:
        self._set_frozen(name, False, timeout)

    def is_frozen(self, name: str) -> bool:
        self._require(name)
        return parse.flat_keyed(self.fs.read(self._file(name, "cgroup.events"))).get("frozen") == 1

    def _set_frozen(self, name: str, frozen: bool, timeout: float) -> None:
        self._require(name)
        self.fs.write(self._file(name, "cgroup.freeze"), "1" if frozen else "0")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.is_frozen(name) != frozen:
            if time.monotonic() >= deadline:
                raise KernelError(errno.EBUSY, f"{self._file(name, 'cgroup.events')} "
                                               f"did not show frozen {int(frozen)} in {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # --- signals, counters, stats

    def kill_all(self, name: str, sig: int = _signal.SIGKILL) -> int:
        """SIGKILL through cgroup.kill (5.14+, race-free against forks) when
        present; otherwise signal each pid.  Returns the pids seen."""
        kill = self._file(name, "cgroup.kill")
        if sig == _signal.SIGKILL and self.fs.exists(kill):
            n = len(self.procs(name))
            self.fs.write(kill, "1")
            return n
        return self._signal_each(name, sig)

    def oom_kills(self, name: str) -> int:
        """``oom_kill`` of memory.events (counts this cgroup and its children)."""
        self._require(name)
        return parse.flat_keyed(self.fs.read(self._file(name, "memory.events"))).get("oom_kill", 0)

    def sample(self, name: str) -> Sample:
        """One reading (runtime/cgroups/figures.py's V2 table); its
        ``sources`` map each figure to its file."""
        self._require(name)
        netns = self.netns(name)

        def read(row: figures.Row) -> bytes | None:
            if row.controller == figures.NETNS:
                return None if netns is None else read_netns_file(netns, row.file)
            text = self._read_opt(self._file(name, row.file))
            return None if text is None else text.encode()
        return figures.sample_from(figures.V2, read, ("unified",), netns)
