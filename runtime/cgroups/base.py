"""The cgroup driver protocol, the host layout, and what both drivers share.

A driver manages the cgroups ``<parent>/<name>`` of one host, where
``parent`` is relative to the ROOT of every hierarchy (never to the
caller's own cgroup: ours sits inside a ``process_api`` cgroup that is not
ours).  v1 spreads one container over several hierarchies (memory, cpu,
pids, ...); v2 has one directory.  The shared verbs below work on "the
directories of a cgroup", so each driver only says where those are and how
its knobs are spelled.

All kernel I/O goes through an ``FS`` object: the real one wraps OSError
into KernelError (errno kept, path in the message); tests hand the v2 driver
a fake one that behaves like cgroupfs on a temp directory.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal as _signal
import time
from collections import namedtuple
from collections.abc import Hashable, Iterable
from types import MappingProxyType
from typing import TypeVar

from ..errors import InvalidArgument, KernelError, NotFound
from ..model import Limits
from ..pidinfo import MountInfo, parse_cgroup
from . import parse
from .record import Sample

_H = TypeVar("_H", bound=Hashable)

CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000        # the kernel refuses a smaller cfs quota / cpu.max
DAEMONS = "_daemons"        # <parent>/_daemons: the runtime's own helper processes


# --- file system edge

class FS:
    """cgroupfs I/O.  Every OSError leaves as KernelError naming the path."""

    def read(self, path: str) -> str:
        try:
            with open(path, "rb", buffering=0) as f:
                return f.read().decode()
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"read {path}") from None

    def write(self, path: str, value: str) -> None:
        # No O_CREAT: a missing knob is an error (controller not enabled),
        # never a new plain file.  One write() per value, as the kernel wants.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"write {path}") from None
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"write {value!r} to {path}") from None
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> bool:
        """Create one directory; False if it was already there."""
        try:
            os.mkdir(path, 0o755)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"mkdir {path}") from None

    def rename(self, old: str, new: str) -> None:
        try:
            os.rename(old, new)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"rename {old} to {new}") from None

    def rmdir(self, path: str) -> None:
        try:
            os.rmdir(path)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"rmdir {path}") from None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"list {path}") from None


# --- layout

class Layout(namedtuple("Layout", "kind v1 v2 v2_controllers named",
                        defaults=(MappingProxyType({}), None, (), MappingProxyType({})))):
    """How the host mounts cgroups (a named tuple, like runtime.model's records:
    every CLI command imports this, and dataclasses cost it ~15 ms).

    kind: "v2" (one cgroup2 tree with controllers), "v1" (only per-controller
    hierarchies) or "hybrid" (v1 controllers plus a cgroup2 mount, usually
    empty, as systemd's hybrid mode does).  v1 and hybrid use the v1 driver.
    v1: controller -> mount point ("cpu" and "cpuacct" may share one).
    v2: the cgroup2 mount point, if any; v2_controllers: what its root offers.
    named: v1 hierarchies without a controller ("name=systemd" -> mount point),
    where systemd tracks the processes of its units on a v1 host.
    """
    __slots__ = ()


def layout_from_mounts(mounts: Iterable[MountInfo], v2_controllers: tuple[str, ...] = ()) -> Layout:
    """Decide the layout from parsed mountinfo entries (pidinfo.parse_mountinfo)."""
    v1: dict[str, str] = {}
    v1_root: dict[str, str] = {}
    named: dict[str, str] = {}
    v2 = None
    for m in mounts:
        if m.fstype == "cgroup2":
            if v2 is None:
                v2 = m.mount_point
        elif m.fstype == "cgroup":
            for c in parse.v1_controllers_of(m.super_options):
                # A hierarchy may be mounted twice (bind mounts, containers):
                # prefer the mount that shows the hierarchy's root.
                if c not in v1 or (v1_root[c] != "/" and m.root == "/"):
                    v1[c], v1_root[c] = m.mount_point, m.root
            for o in m.super_options.split(","):
                if o.startswith("name=") and m.root == "/":
                    named.setdefault(o, m.mount_point)
    if v1:
        kind = "hybrid" if v2 else "v1"
    elif v2:
        kind = "v2"
    else:
        raise NotFound("no cgroup file system is mounted (checked mountinfo)")
    return Layout(kind, v1, v2, tuple(v2_controllers) if v2 else (), named)


# --- limits -> kernel values (pure)

def check_limits(limits: Limits) -> None:
    """Refuse limits the kernel would half-apply.  Nothing is written first."""
    mem, swap = limits.memory, limits.memory_swap
    if mem is not None and (not isinstance(mem, int) or mem <= 0):
        raise InvalidArgument(f"memory limit must be a positive byte count, not {mem!r}")
    if swap is not None and swap != -1:
        if mem is None:
            raise InvalidArgument("memory_swap needs a memory limit")
        if not isinstance(swap, int) or swap < mem:
            raise InvalidArgument(
                f"memory_swap ({swap!r}) must be -1 or at least memory ({mem})")
    if limits.cpus is not None:
        if not limits.cpus > 0 or cpu_quota_us(limits.cpus) < MIN_QUOTA_US:
            raise InvalidArgument(f"cpus must be at least 0.01, not {limits.cpus!r}")
    if limits.pids is not None and (not isinstance(limits.pids, int) or limits.pids < 1):
        raise InvalidArgument(f"pids limit must be a positive count, not {limits.pids!r}")


def cpu_quota_us(cpus: float) -> int:
    return int(round(cpus * CFS_PERIOD_US))


def swap_bytes(limits: Limits) -> int | None:
    """Swap allowed on top of memory: 0 = none, None = unlimited.

    Docker's rule: memory_swap is memory + swap; left unset with a memory
    limit it means no swap at all; -1 is unlimited; no memory limit means
    no swap limit either.
    """
    if limits.memory is None or limits.memory_swap == -1:
        return None
    if limits.memory_swap is None:
        return 0
    swap: int = limits.memory_swap - limits.memory
    return swap


# --- the driver protocol

class CgroupDriver:
    """One container = one cgroup ``<parent>/<name>`` in every hierarchy used.

    Subclasses define ``kind``, ``_roots()`` (controller -> hierarchy mount
    point), ``create``, ``update``, ``freeze``, ``thaw``, ``is_frozen``,
    ``oom_kills`` and ``sample``.
    """
    kind = ""

    def __init__(self, parent: str = "terrarium", fs: FS | None = None):
        self.parent = _check_parent(parent)
        self.fs = fs or FS()

    # -- where things are

    def _roots(self) -> dict[str, str]:
        raise NotImplementedError

    def paths(self, name: str) -> dict[str, str]:
        """controller -> absolute directory of the cgroup (for display)."""
        rel = os.path.join(self.parent, _check_name(name))
        return {c: os.path.join(root, rel) for c, root in self._roots().items()}

    def parent_paths(self) -> dict[str, str]:
        return {c: os.path.join(root, self.parent) for c, root in self._roots().items()}

    def _dirs(self, name: str) -> list[str]:
        """The distinct directories of a cgroup (co-mounted controllers share one)."""
        return _unique(self.paths(name).values())

    def _existing_dirs(self, name: str) -> list[str]:
        dirs = [d for d in self._dirs(name) if self.fs.isdir(d)]
        if not dirs:
            raise NotFound(f"cgroup '{self.parent}/{name}' not found")
        return dirs

    def exists(self, name: str) -> bool:
        return any(self.fs.isdir(d) for d in self._dirs(name))

    def files(self, name: str) -> dict[str, list[str]]:
        """directory -> the kernel files in it, sorted (for the teaching views)."""
        return {d: sorted(f for f in self.fs.listdir(d) if not self.fs.isdir(os.path.join(d, f)))
                for d in self._existing_dirs(name)}

    # -- shared verbs

    def create(self, name: str, limits: Limits) -> dict[str, str]:
        raise NotImplementedError

    def update(self, name: str, limits: Limits) -> None:
        raise NotImplementedError

    def sample(self, name: str) -> Sample:
        """One reading of the cgroup (runtime/cgroups/figures.py's table of this kind)."""
        raise NotImplementedError

    def attach(self, name: str, pid: int) -> None:
        """Move ``pid`` (0 = the calling process) into the cgroup, in every hierarchy."""
        if not isinstance(pid, int) or pid < 0:
            raise InvalidArgument(f"bad pid {pid!r}")
        for d in self._existing_dirs(name):
            self.fs.write(os.path.join(d, "cgroup.procs"), str(pid))

    can_rename = False      # whether rename() below can work on this kind of hierarchy

    def rename(self, old: str, new: str) -> None:
        """Rename the cgroup in every hierarchy, or in none: processes stay in it.

        Lets a cgroup be made and filled ahead of need under a temporary name
        (see runtime/forkserver.py: moving a process in can wait a whole RCU grace
        period on v1).  cgroup v1 renames within a parent; where the kernel
        refuses (KernelError), nothing is left half renamed."""
        self._existing_dirs(old)
        done = []
        try:
            for d, n in zip(self._dirs(old), self._dirs(new)):
                if self.fs.isdir(d):
                    self.fs.rename(d, n)
                    done.append((d, n))
        except KernelError:
            for d, n in reversed(done):
                self.fs.rename(n, d)
            raise

    def procs(self, name: str) -> list[int]:
        """Pids in the cgroup, deduplicated across hierarchies, sorted."""
        seen: set[int] = set()
        for d in self._existing_dirs(name):
            seen.update(parse.pids(self.fs.read(os.path.join(d, "cgroup.procs"))))
        return sorted(seen)

    def kill_all(self, name: str, sig: int = _signal.SIGKILL) -> int:
        """Send ``sig`` to every process in the cgroup; returns how many were signalled."""
        return self._signal_each(name, sig)

    def _signal_each(self, name: str, sig: int) -> int:
        n = 0
        for pid in self.procs(name):
            try:
                os.kill(pid, sig)
                n += 1
            except ProcessLookupError:
                pass            # exited between the read and the kill
            except OSError as e:
                raise KernelError(e.errno or errno.EIO, f"kill({pid}, {sig})") from None
        return n

    # each kind's own (the docstring's list; declared here for the callers' types)
    def freeze(self, name: str, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def thaw(self, name: str, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def is_frozen(self, name: str) -> bool:
        raise NotImplementedError

    def oom_kills(self, name: str) -> int:
        raise NotImplementedError

    def remove(self, name: str, timeout: float = 2.0) -> None:
        """rmdir the cgroup everywhere; EBUSY is retried while its processes exit.

        A missing cgroup is fine.  The parent is left alone (remove_parent).
        """
        deadline = time.monotonic() + timeout
        failure = None
        for d in self._dirs(name):
            try:
                self._rmdir_retry(d, deadline)
            except KernelError as e:
                failure = failure or e
        if failure:
            raise failure

    def remove_parent(self, wait: float = 0.0) -> bool:
        """rmdir the helpers' cgroup if no process is left in it, then the parent
        if it holds no cgroup; True if both are gone everywhere.  wait: seconds
        to retry while the helpers' cgroup is busy (helpers still exiting)."""
        gone = True
        deadline = time.monotonic() + wait
        for root in _unique(self._daemon_roots().values()):
            parent = os.path.join(root, self.parent)
            try:
                self._rmdir_retry(os.path.join(parent, DAEMONS), deadline)
                self.fs.rmdir(parent)
            except KernelError as e:
                if e.code in (errno.EBUSY, errno.ENOTEMPTY):
                    gone = False
                elif e.code != errno.ENOENT:
                    raise
        return gone

    # -- the helpers' own cgroup: <parent>/_daemons
    #
    # The fork server, the CLI server and the shims (forked from the fork
    # server, so they inherit it) leave whatever cgroup started them for this
    # one.  Killing the starter's cgroup -- what `systemctl stop` of a unit
    # does -- then cannot reach them, and containers keep their supervisors.
    #
    # Who removes it: every helper holds a shared flock on the directory for
    # its whole life (its forks inherit it: a shim shares its server's).  A
    # helper on its way out lets go of its own, then asks for the lock
    # exclusively; only when no helper is left does anyone get it, and that
    # one -- the last out, whatever order they leave in -- removes the
    # helpers' cgroup and the parent if no container is left in it.

    def _daemon_roots(self) -> dict[str, str]:
        """/proc/<pid>/cgroup key -> root of each hierarchy the helpers move in."""
        return self._roots()

    def _daemon_dir(self, root: str) -> str:
        return os.path.join(root, self.parent, DAEMONS)

    def join_daemons(self) -> int:
        """Move the calling process into <parent>/_daemons in every hierarchy
        (made when missing) unless it is there already.  Returns a descriptor
        (close-on-exec) holding the shared lock: keep it open until leave_daemons."""
        here = _own_cgroups(self.fs)
        want = f"/{self.parent}/{DAEMONS}"
        roots = _unique_roots(self._daemon_roots())
        for key, root in roots:
            if here.get(key) == want:
                continue                # e.g. started by a CLI worker: saves a cgroup move
            for attempt in range(5):
                try:
                    self._mkdirs(root, DAEMONS)
                    self.fs.write(os.path.join(self._daemon_dir(root), "cgroup.procs"), "0")
                    break
                except KernelError as e:
                    # the last helper out removed it between our mkdir and write
                    if e.code != errno.ENOENT or attempt == 4:
                        raise
        # We are in it now, so it stays: lock the directory itself.
        fd = _open_dir(self._daemon_dir(roots[0][1]))
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def leave_daemons(self, held: int | None) -> bool:
        """A helper's last step: close held (join_daemons' descriptor, or a
        fork's copy of it); if no helper holds the lock any more, go back to
        the root cgroups and remove the helpers' cgroup and the parent (when
        no container is left).  True if this call removed them."""
        if held is not None:
            os.close(held)
        roots = _unique_roots(self._daemon_roots())
        try:
            fd = _open_dir(self._daemon_dir(roots[0][1]))
        except KernelError as e:
            if e.code == errno.ENOENT:
                return False            # removed already
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False            # another helper lives; the last of them does it
            here = _own_cgroups(self.fs)
            want = f"/{self.parent}/{DAEMONS}"
            for key, root in roots:
                if here.get(key) == want:
                    self.fs.write(os.path.join(root, "cgroup.procs"), "0")
            # A helper that let go just before us may not have finished exiting.
            return self.remove_parent(wait=1.0)
        finally:
            os.close(fd)

    def _rmdir_retry(self, path: str, deadline: float) -> None:
        delay = 0.001
        while True:
            try:
                self.fs.rmdir(path)
                return
            except KernelError as e:
                if e.code == errno.ENOENT:
                    return
                if e.code != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _mkdirs(self, root: str, name: str) -> list[str]:
        """mkdir <root>/<parent>/<name> one level at a time; returns what was created."""
        made = []
        path = root
        for part in self.parent.split("/") + [name]:
            path = os.path.join(path, part)
            if self.fs.mkdir(path):
                made.append(path)
        return made

    def _undo(self, made: list[str]) -> None:
        """Best-effort rollback of a failed create: newest directory first."""
        for path in reversed(made):
            try:
                self.fs.rmdir(path)
            except KernelError:
                pass

    def _read_opt(self, path: str) -> str | None:
        try:
            return self.fs.read(path)
        except KernelError as e:
            if e.code == errno.ENOENT:
                return None
            raise

    def netns(self, name: str) -> str | None:
        """/proc/<pid> of the first process cgroup.procs lists, whose network
        namespace the NETNS rows of runtime/cgroups/figures.py read; None
        when there is no process or it is in the reader's own namespace."""
        paths = self.paths(name)
        procs_dir = next((paths[c] for c in ("pids", "memory", "unified") if c in paths),
                         next(iter(paths.values()), None))
        try:
            text = self._read_opt(os.path.join(procs_dir, "cgroup.procs")) if procs_dir else None
        except KernelError:
            return None
        pids = parse.pids(text) if text else []
        return own_netns_dir(pids[0]) if pids else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} parent={self.parent!r} roots={self._roots()!r}>"


PROC = "/proc"
_own_netns: tuple[int, int] | None = None


def same_netns(st: os.stat_result) -> bool:
    """Whether a stat of some /proc/<pid>/ns/net is the reader's own namespace."""
    global _own_netns
    if _own_netns is None:
        own = os.stat(f"{PROC}/self/ns/net")
        _own_netns = (own.st_dev, own.st_ino)
    return (st.st_dev, st.st_ino) == _own_netns


def own_netns_dir(pid: int, proc: str = PROC) -> str | None:
    """``/proc/<pid>`` if that process has a network namespace other than the
    reader's; None if it shares the reader's (``--network host``) or is gone."""
    try:
        st = os.stat(f"{proc}/{pid}/ns/net")
    except OSError:
        return None
    return None if same_netns(st) else f"{proc}/{pid}"


def read_netns_file(netns: str, file: str) -> bytes | None:
    """A NETNS row's file (procfs, not cgroupfs: read here, not through FS)."""
    try:
        with open(f"{netns}/{file}", "rb", buffering=0) as f:
            return f.read()
    except OSError:
        return None


def _own_cgroups(fs: FS) -> dict[str, str]:
    """The caller's cgroup per hierarchy, keyed as /proc/self/cgroup names them."""
    try:
        return parse_cgroup(fs.read("/proc/self/cgroup"))
    except KernelError:
        return {}


def _open_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError(e.errno or errno.EIO, f"open {path}") from None


def _unique_roots(roots: dict[str, str]) -> list[tuple[str, str]]:
    """(key, root) once per root: co-mounted controllers share a hierarchy."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for key, root in roots.items():
        if root not in seen:
            seen.add(root)
            out.append((key, root))
    return out


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") \
            or "\0" in name:
        raise InvalidArgument(f"bad cgroup name {name!r}")
    return name


def _check_parent(parent: str) -> str:
    parts = [p for p in str(parent).split("/") if p]
    if not parts or any(p in (".", "..") or "\0" in p for p in parts):
        raise InvalidArgument(f"bad cgroup parent {parent!r}")
    return "/".join(parts)


def _unique(items: Iterable[_H]) -> list[_H]:
    out: list[_H] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
