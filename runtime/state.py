"""A container's state on disk: where it lives, its records, its removal,
and the sweep of what a crash left half made.

    ROOT/containers/<id>/
        config.json    what was asked for (the API writes it, under the
                       container's lock, durably: fsynced before its rename)
        run.json       the current run: init and shim pids, generation (the shim)
        exit.json      how that run ended (the shim)
        lock           the container's flock; every verb that changes it holds it
        upper/ work/ rootfs/ container.log
    ROOT/containers/.lock   held to create or remove a container (the names lock)
    ROOT/names/<name>       a symlink to the id: creating it takes the name

A config.json that exists but cannot be read (torn by a crash, edited by
hand) makes the container *broken*, never absent: it still holds its name
and its layers, shows in `ps -a`, and `rm -f` removes it.

The shim imports this (it removes `--rm` containers itself): standard
library only, and nothing heavy at import.
"""
from __future__ import annotations

import json
import os
import re
import time

from .errors import KernelError, TerrariumError
from .fsutil import fsync_dir, locked, read_json, write_json
from .model import Limits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, NotRequired, TypedDict, TypeGuard
    from .cgroups.base import CgroupDriver
    from .model import HealthcheckDict, RestartRecord

    class StopRecord(TypedDict):
        """config "stopping": a stop waits for SIGTERM to work (runtime/containers.py)."""
        generation: int
        since: float
        timeout: float

    class ContainerConfig(TypedDict):
        """config.json.  The first fields are what create() always writes and
        read_config checks (_CONFIG_FIELDS); the rest came later, or are set
        by a verb, so an older container's config may lack them."""
        id: str
        name: str
        image: str
        cmd: list[str]
        env: list[str]
        hostname: str
        workdir: str
        limits: dict[str, Any]              # Limits._asdict()
        created_at: float
        layers: list[str]                   # digests' hex, bottom first
        generation: int                     # runs asked for; run.json and exit.json carry theirs
        auto_remove: NotRequired[bool]
        paused: NotRequired[bool]
        seccomp: NotRequired[Mapping[str, Any] | None]  # runtime.seccomp's setting
        cgroup_parent: NotRequired[str]
        log: NotRequired[dict[str, Any]]    # LogConfig._asdict()
        network: NotRequired[str]
        address: NotRequired[str]
        ports: NotRequired[list[str]]
        mounts: NotRequired[list[dict[str, Any]]]   # Mount._asdict() each
        read_only: NotRequired[bool]
        # runtime/lifecycle.py
        restart: NotRequired[str]
        healthcheck: NotRequired[HealthcheckDict]
        manual_stop: NotRequired[int]       # the generation a person stopped
        policy_restarts: NotRequired[int]
        backoff: NotRequired[float]
        restart_history: NotRequired[list[RestartRecord]]
        stopping: NotRequired[StopRecord]

CONFIG, RUN, EXIT, LOCK = "config.json", "run.json", "exit.json", "lock"
NAMES_LOCK = ".lock"
ID_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_RE = re.compile(r"\.tmp\d+$")            # fsutil.write_json's (and the shim's) temp files
STALE_SECONDS = 60.0                           # older than this, a half-made thing is a leftover

# What create() writes; a config without these (or of other types) is broken.
_CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "name": str, "image": str, "cmd": list, "env": list, "hostname": str, "workdir": str,
    "limits": dict, "created_at": (int, float), "layers": list, "generation": int}


class Unreadable(TerrariumError):
    """A record that is there but cannot be read: its container is broken."""


# ------------------------------------------------------------------ records

def read_config(cdir: str) -> ContainerConfig | None:
    """The container's config; None if it has none (never made, or removed).

    Unreadable if config.json exists but is not a config (torn, empty,
    not JSON, not the shape create() writes)."""
    path = os.path.join(cdir, CONFIG)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Unreadable(f"config.json cannot be read: {e.strerror}") from None
    try:
        config = json.loads(data)
    except ValueError:
        raise Unreadable(f"config.json is not valid JSON ({len(data)} bytes)") from None
    if not _is_config(config):
        raise Unreadable("config.json is not a JSON object")
    return config


def _is_config(config: object) -> TypeGuard[ContainerConfig]:
    """Whether config is a JSON object; Unreadable if it is one without the
    shape create() writes."""
    if not isinstance(config, dict):
        return False
    for key, kind in _CONFIG_FIELDS.items():
        if not isinstance(config.get(key), kind):
            raise Unreadable(f"config.json has no valid {key!r}")
    if set(config["limits"]) - set(Limits._fields) or not all(isinstance(d, str) for d in config["layers"]):
        raise Unreadable("config.json has invalid limits or layers")
    return True


def write_config(cdir: str, config: ContainerConfig, new: bool = False) -> None:
    """Replace config.json atomically and durably: its data is on disk before
    the rename, so a power cut never leaves it torn.  The directory is synced
    only for a new one (create): a rewrite (pause, update) then survives as
    the old config or the new, both whole, for one fsync less (~3 ms each on
    this machine's disk under load)."""
    write_json(os.path.join(cdir, CONFIG), config, durable=True, sync_dir=new)


class DeferredSync:
    """write_config for the start path: the rename now, the fsync when called
    (idempotent), so that it runs while the fork server starts the container
    on the other core instead of before the request.  A power cut in that
    window can at worst tear the file, which then reads as broken, not gone."""

    def __init__(self, cdir: str, config: ContainerConfig):
        self.path = os.path.join(cdir, CONFIG)
        write_json(self.path, config)
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)                      # per inode: flushes what the rename put there
        finally:
            os.close(fd)


def read_run(cdir: str) -> dict[str, Any]:
    """run.json, or {} (none yet, or torn: reads as a start that did not complete)."""
    run = read_json(os.path.join(cdir, RUN))
    return run if isinstance(run, dict) else {}


def read_exit(cdir: str) -> dict[str, Any]:
    """exit.json, or {} (none yet, or torn: reads as a shim that died)."""
    ended = read_json(os.path.join(cdir, EXIT))
    return ended if isinstance(ended, dict) else {}


def has_config(cdir: str) -> bool:
    """Whether the container exists (broken or not): its config.json is there."""
    return os.path.lexists(os.path.join(cdir, CONFIG))


def names_of(names_dir: str, cid: str) -> list[str]:
    """The names that point at cid (for a broken container, whose config cannot tell)."""
    out: list[str] = []
    try:
        entries = os.listdir(names_dir)
    except FileNotFoundError:
        return out
    for n in entries:
        try:
            if os.readlink(os.path.join(names_dir, n)) == cid:
                out.append(n)
        except OSError:
            continue
    return out


# ------------------------------------------------------------------ create/remove

def register(containers_dir: str, names_dir: str, cid: str, config: ContainerConfig,
             subdirs: Iterable[str] = ()) -> None:
    """Make the container's directory, durable config and name; the caller holds
    the names lock and has checked the name is free.  A crash part way leaves a
    directory without config.json, which sweep() removes."""
    cdir = os.path.join(containers_dir, cid)
    os.makedirs(cdir, mode=0o700)
    os.close(os.open(os.path.join(cdir, LOCK), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for sub in subdirs:
        os.mkdir(os.path.join(cdir, sub), 0o755)
    write_config(cdir, config, new=True)
    fsync_dir(containers_dir)
    os.symlink(cid, os.path.join(names_dir, config["name"]))
    fsync_dir(names_dir)


def remove(containers_dir: str, names_dir: str, cid: str,
           remove_cgroup: Callable[[Mapping[str, Any]], object] | None = None) -> bool:
    """Remove container cid: free its name and drop its config under the names
    lock (whoever queued on the container's lock then sees it gone), then
    remove_cgroup(config) if given, then the directory.  False if it was gone.

    The caller holds the container's lock.  A broken container is removed too
    (its names are found by where they point)."""
    cdir = os.path.join(containers_dir, cid)
    with locked(os.path.join(containers_dir, NAMES_LOCK)):
        config: Mapping[str, Any] | None
        try:
            config = read_config(cdir)
        except Unreadable:
            config = {}
        if config is None:
            return False
        for name in [config["name"]] if config.get("name") else names_of(names_dir, cid):
            link = os.path.join(names_dir, name)
            try:
                if os.readlink(link) == cid:
                    os.unlink(link)
            except OSError:
                pass
        os.unlink(os.path.join(cdir, CONFIG))
    if remove_cgroup is not None:
        remove_cgroup(config)
    import shutil
    shutil.rmtree(cdir, ignore_errors=True)
    return True


# ------------------------------------------------------------------ sweep

def sweep(containers_dir: str, cgroups: CgroupDriver | None = None, *, min_age: float = STALE_SECONDS) -> list[str]:
    """Remove what a crash left: container directories without config.json
    (a create or remove cut short), write_json temp files, and under the
    cgroup driver's parent, spare shims' cgroups whose shim is gone and
    container cgroups whose container no longer exists.  Only things older
    than min_age seconds, so nothing being made right now; a cgroup with
    processes in it is never removed (the kernel refuses).

    Returns what was removed, one line each."""
    removed: list[str] = []
    now = time.time()
    try:
        ids = [n for n in os.listdir(containers_dir) if ID_RE.match(n)]
    except FileNotFoundError:
        ids = []
    for cid in ids:
        cdir = os.path.join(containers_dir, cid)
        if has_config(cdir):
            removed += _sweep_tmp(cdir, now, min_age)
            continue
        with locked(os.path.join(containers_dir, NAMES_LOCK)):     # create() holds it
            if has_config(cdir) or not _older(cdir, now, min_age):
                continue
        import shutil
        shutil.rmtree(cdir, ignore_errors=True)
        removed.append(f"half-made container directory {cdir}")
    if cgroups is not None:
        removed += _sweep_cgroups(containers_dir, cgroups, now, min_age)
    return removed


def _older(path: str, now: float, min_age: float) -> bool:
    try:
        return now - os.lstat(path).st_mtime >= min_age
    except FileNotFoundError:
        return False


def _sweep_tmp(cdir: str, now: float, min_age: float) -> list[str]:
    out: list[str] = []
    try:
        names = [n for n in os.listdir(cdir) if _TMP_RE.search(n)]
    except OSError:
        return out
    for n in names:
        path = os.path.join(cdir, n)
        if _older(path, now, min_age):
            try:
                os.unlink(path)
                out.append(f"temp file {path}")
            except FileNotFoundError:
                pass
    return out


def _sweep_cgroups(containers_dir: str, drv: CgroupDriver, now: float, min_age: float) -> list[str]:
    names: set[str] = set()
    for d in set(drv.parent_paths().values()):
        try:
            names.update(n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n)))
        except FileNotFoundError:
            continue
    out: list[str] = []
    for name in sorted(names):
        if name.startswith("spare-") and name[6:].isdigit():
            orphan = not _is_spare_shim(int(name[6:]))
        elif ID_RE.match(name):
            orphan = (not has_config(os.path.join(containers_dir, name))
                      and all(_older(d, now, min_age) for d in drv.paths(name).values()
                              if os.path.isdir(d)))
        else:
            continue                            # not ours to judge (e.g. the servers' own)
        if orphan:
            try:
                drv.remove(name, timeout=0)
                out.append(f"cgroup {drv.parent}/{name}")
            except KernelError:
                pass                            # busy: processes still in it, not an orphan
    return out


def _is_spare_shim(pid: int) -> bool:
    """Whether pid is alive and a shim (spare-<pid> cgroups are named after theirs)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "terrarium-shim"
    except OSError:
        return False
