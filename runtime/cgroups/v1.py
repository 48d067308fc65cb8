"""cgroup v1 (and hybrid) driver: one directory per hierarchy.

A container's cgroup ``<parent>/<name>`` is made in each hierarchy we use:
memory, cpu, cpuacct, pids, freezer, blkio, devices (cpuset is skipped: a
new v1 cpuset starts with no cpus/mems and would need copying them down).
Co-mounted controllers ("cpu,cpuacct") share one directory.
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

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "devices")

# Docker's default device rules: mknod anything, use only the null, zero,
# full, random, urandom, tty, console, ptmx devices and the pty slaves.
DEVICE_ALLOW = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
)

UNLIMITED = -1          # what v1 limit files accept for "no limit"
_INF = float("inf")


class V1Driver(CgroupDriver):
    """Drives the v1 hierarchies given as {controller: mount point}."""
    kind = "v1"
    can_rename = True

    def __init__(self, mounts: dict[str, str], parent: str = "terrarium", fs: FS | None = None,
                 tracking: dict[str, str] | None = None):
        super().__init__(parent, fs)
        self.mounts = {c: mounts[c] for c in CONTROLLERS if c in mounts}
        if not self.mounts:
            raise NotFound(f"no cgroup v1 hierarchy of {', '.join(CONTROLLERS)} is mounted")
        # Hierarchies without our controllers where a service manager tracks
        # processes (name=systemd; the cgroup2 tree of a hybrid host): only
        # the helpers' cgroup is made there (see join_daemons).
        self.tracking = dict(tracking or {})

    def _roots(self) -> dict[str, str]:
        return dict(self.mounts)

    def _daemon_roots(self) -> dict[str, str]:
        return {**self.mounts, **self.tracking}

    def _knob(self, name: str, controller: str, knob: str) -> str:
        if controller not in self.mounts:
            raise NotFound(f"cgroup v1 controller '{controller}' is not mounted")
        return os.path.join(self.mounts[controller], self.parent, name, knob)

    # --- lifecycle

    def create(self, name: str, limits: Limits) -> dict[str, str]:
        """mkdir the cgroup in every hierarchy, restrict devices, apply limits."""
        check_limits(limits)
        paths = self.paths(name)
        made: list[str] = []
        try:
            for root in dict.fromkeys(self.mounts.values()):
                made += self._mkdirs(root, name)
            if "devices" in self.mounts:
                self._restrict_devices(name)
            self.update(name, limits)
        except BaseException:
            self._undo(made)
            raise
        return paths

    def _restrict_devices(self, name: str) -> None:
        self.fs.write(self._knob(name, "devices", "devices.deny"), "a")
        allow = self._knob(name, "devices", "devices.allow")
        for rule in DEVICE_ALLOW:
            self.fs.write(allow, rule)

    def update(self, name: str, limits: Limits) -> None:
        """Apply limits to a live cgroup; None resets a knob to unlimited."""
        check_limits(limits)
        self._existing_dirs(name)
        if "memory" in self.mounts:
            self._set_memory(name, limits)
        elif limits.memory is not None:
            raise NotFound("memory limit asked but the v1 memory controller is not mounted")
        if "cpu" in self.mounts:
            quota = UNLIMITED if limits.cpus is None else cpu_quota_us(limits.cpus)
            self.fs.write(self._knob(name, "cpu", "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            self.fs.write(self._knob(name, "cpu", "cpu.cfs_quota_us"), str(quota))
        elif limits.cpus is not None:
            raise NotFound("cpu limit asked but the v1 cpu controller is not mounted")
        if "pids" in self.mounts:
            self.fs.write(self._knob(name, "pids", "pids.max"),
                          "max" if limits.pids is None else str(limits.pids))
        elif limits.pids is not None:
            raise NotFound("pids limit asked but the v1 pids controller is not mounted")

    def _set_memory(self, name: str, limits: Limits) -> None:
        # Why swap matters: on a host with swap, a memory limit alone does
        # not make the kernel kill.  When the cgroup reaches
        # memory.limit_in_bytes, reclaim swaps its anonymous pages out, so
        # usage sits at the limit, the process just gets slower, and the OOM
        # killer never runs.  memory.memsw.limit_in_bytes caps memory + swap
        # together: set equal to the memory limit there is no room to swap
        # to, reclaim fails, and the limit holds (the cgroup OOMs).
        # swappiness=0 adds the same intent where memsw is missing
        # (swapaccount=0), though it is only a preference there.
        mem = limits.memory
        swap = swap_bytes(limits)
        memsw = None if mem is None or swap is None else mem + swap
        mem_file = self._knob(name, "memory", "memory.limit_in_bytes")
        memsw_file = self._knob(name, "memory", "memory.memsw.limit_in_bytes")
        mem_val = UNLIMITED if mem is None else mem
        if self.fs.exists(memsw_file):
            memsw_val = UNLIMITED if memsw is None else memsw
            # The kernel keeps memsw >= memory at every step, so the order of
            # the two writes depends on the direction: raise memsw before
            # memory when growing, lower memory before memsw when shrinking.
            current_mem = parse.limit_v1(self.fs.read(mem_file))
            if _eff(memsw) >= _eff(current_mem):
                self.fs.write(memsw_file, str(memsw_val))
                self.fs.write(mem_file, str(mem_val))
            else:
                self.fs.write(mem_file, str(mem_val))
                self.fs.write(memsw_file, str(memsw_val))
        else:
            self.fs.write(mem_file, str(mem_val))
        swappiness = self._knob(name, "memory", "memory.swappiness")
        if self.fs.exists(swappiness):
            no_swap = mem is not None and swap == 0
            want = "0" if no_swap else self._parent_swappiness()
            if want is not None and self.fs.read(swappiness).strip() != want:
                self.fs.write(swappiness, want)

    def _parent_swappiness(self) -> str | None:
        text = self._read_opt(os.path.join(self.mounts["memory"], self.parent,
                                           "memory.swappiness"))
        return text.strip() if text is not None else None

    # --- freezer

    def freeze(self, name: str, timeout: float = 5.0) -> None:
        """Freeze every task; waits while the state reads FREEZING."""
        self._set_freezer(name, "FROZEN", timeout)

    def thaw(self, name: str, timeout: float = 5.0) -> None:
        self._set_freezer(name, "THAWED", timeout)

    def is_frozen(self, name: str) -> bool:
        self._existing_dirs(name)
        return parse.freezer_state(self.fs.read(self._knob(name, "freezer", "freezer.state"))) == "FROZEN"

    def _set_freezer(self, name: str, state: str, timeout: float) -> None:
        self._existing_dirs(name)
        path = self._knob(name, "freezer", "freezer.state")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            # Writing again is what moves a stuck FREEZING on (runc does it too).
            self.fs.write(path, state)
            if parse.freezer_state(self.fs.read(path)) == state:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        if state == "FROZEN":
            self.fs.write(path, "THAWED")       # don't leave it half frozen
        raise KernelError(errno.EBUSY, f"{path} did not reach {state} in {timeout}s")

    # --- signals, counters, stats

    def kill_all(self, name: str, sig: int = _signal.SIGKILL) -> int:
        """Signal every process.  For SIGKILL, freeze first so none can fork
        a new one between the read of cgroup.procs and the kills."""
        if sig != _signal.SIGKILL or "freezer" not in self.mounts:
            return self._signal_each(name, sig)
        try:
            self.freeze(name, timeout=1.0)
        except KernelError:
            return self._signal_each(name, sig)     # kill what we can see
        try:
            return self._signal_each(name, sig)
        finally:
            self.thaw(name)

    def oom_kills(self, name: str) -> int:
        """Processes the kernel OOM-killed in this cgroup (``oom_kill`` of memory.oom_control)."""
        self._existing_dirs(name)
        text = self.fs.read(self._knob(name, "memory", "memory.oom_control"))
        return parse.flat_keyed(text).get("oom_kill", 0)

    def sample(self, name: str) -> Sample:
        """One reading (runtime/cgroups/figures.py's V1 table); its
        ``sources`` map each figure to its file."""
        self._existing_dirs(name)
        netns = self.netns(name)

        def read(row: figures.Row) -> bytes | None:
            if row.controller == figures.NETNS:
                return None if netns is None else read_netns_file(netns, row.file)
            text = self._read_opt(self._knob(name, row.controller, row.file))
            return None if text is None else text.encode()
        return figures.sample_from(figures.V1, read, self.mounts, netns)


def _eff(limit: int | None) -> float:
    return _INF if limit is None else limit
