"""Frozen value types the runtime hands out.  No behaviour, no I/O.

They are named tuples rather than dataclasses on purpose: every `terrarium`
command imports this module, and `dataclasses` pulls in `inspect`, `ast` and
`dis` and generates code per class — about 35 ms of a CLI start that is
meant to compete with runc (bench/start_latency.py).  Named tuples are just
as frozen, hashable and comparable; `to_dict()` turns one into JSON-ready data.
Their fields are declared with types, in typing.NamedTuple's class syntax:
mypy reads them as NamedTuples, and at run time TypedRecord's metaclass
makes the same collections.namedtuple without importing typing.
"""
from __future__ import annotations

from collections import namedtuple
from types import MappingProxyType

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, NamedTuple as TypedRecord, TypedDict

    class HealthcheckDict(TypedDict):
        """A Healthcheck as config.json and Container.healthcheck hold it."""
        test: list[str] | tuple[str, ...]
        interval: float
        timeout: float
        retries: int
        start_period: float

    class HealthResult(TypedDict):
        """One run of a health check (runtime/lifecycle.py)."""
        start: float
        end: float
        exit_code: int
        output: str

    class Health(TypedDict):
        status: str | None              # None only from a health.json without one
        failing_streak: int
        log: list[HealthResult]

    class Stopping(TypedDict):
        since: float
        timeout: float

    class Restarting(TypedDict):
        due: float | None
        delay: float | None

    class RestartRecord(TypedDict):
        exit_code: int | None
        finished_at: float | None
        delay: float
        restarted_at: float
else:
    class _RecordMeta(type):
        """typing.NamedTuple's class syntax without importing typing (2 ms of
        a cold command): the annotated names, in order, are the fields, and
        the values given to the last of them their defaults.  A docstring,
        nothing else: a method would be lost, so it is refused."""

        def __new__(mcs, name, bases, ns):
            if not bases:
                return super().__new__(mcs, name, bases, ns)
            fields = tuple(ns["__annotations__"])
            defaults = tuple(ns[f] for f in fields if f in ns)
            if any(f in ns for f in fields[:len(fields) - len(defaults)]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            if any(k not in fields and not k.startswith("__") for k in ns):
                raise TypeError(f"{name}: a record has fields and a docstring only")
            cls = namedtuple(name, fields, defaults=defaults, module=ns["__module__"])
            cls.__doc__ = ns.get("__doc__")
            cls.__qualname__ = ns["__qualname__"]
            return cls

    class TypedRecord(metaclass=_RecordMeta):
        """Base of a record declared with typing.NamedTuple's class syntax (other
        modules: `from typing import NamedTuple as TypedRecord` for mypy)."""

_EMPTY: Mapping[str, int] = MappingProxyType({})


class Limits(TypedRecord):
    """Resource limits of one container; None means unlimited.

    memory        bytes
    memory_swap   bytes of memory + swap, as Docker counts it.  None with a
                  memory limit means "no swap at all" (swap max = 0), so the
                  memory limit really holds on hosts with swap; -1 = unlimited.
    cpus          fraction of cores, e.g. 0.5
    pids          the most processes at once
    """
    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids: int | None = None


class ImageConfig(TypedRecord):
    """What an image runs by default: argv, KEY=VALUE env, working directory, and
    the health check its containers get unless they say otherwise (a
    Healthcheck, defined below; None: none)."""
    cmd: tuple[str, ...] = ("sh",)
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = "/"
    healthcheck: Healthcheck | None = None


class Layer(TypedRecord):
    """One unpacked layer: digest "sha256:<hex>" of its uncompressed tar, bytes of
    content, entries, the instruction or source that made it, its directory."""
    digest: str
    size: int
    files: int
    created_by: str = ""
    path: str = ""


class Image(TypedRecord):
    """name ("busybox"; "" for an image no name points at any more), layers
    bottom first, ImageConfig, unix time, how each layer was made (bottom
    first), id ("sha256:<hex>", runtime/images/store.py image_id), and, when
    this write moved the name off another image, that image's id (replaced)."""
    name: str
    layers: tuple[Layer, ...]
    config: ImageConfig
    created: float = 0.0
    history: tuple[str, ...] = ()
    id: str = ""
    replaced: str = ""


class LogConfig(TypedRecord):
    """A container's log (runtime/logs.py): rotated when a file would pass
    max_size bytes, max_file files kept (the live one included)."""
    max_size: int = 10 << 20
    max_file: int = 3


class Mount(TypedRecord):
    """One mount outside the overlay (runtime/mounts.py).

    type      volume | bind | tmpfs
    source    a volume's name ("" in a Spec: a new anonymous volume), a host
              path (bind; the resolved one once created), "" for tmpfs
    target    absolute path inside the container
    read_only mounted read-only
    size      tmpfs only: bytes (None: the kernel's default, half the RAM)
    mode      tmpfs only: permission bits of its root (None: 1777)"""
    type: str
    source: str
    target: str
    read_only: bool = False
    size: int | None = None
    mode: int | None = None


class Healthcheck(TypedRecord):
    """A container's health check (runtime/lifecycle.py), Docker's fields: test is
    the argv run in the container through exec (`--health-cmd` is sh -c CMD);
    empty test: none at all (--no-healthcheck).  Seconds; retries failures in a
    row make it unhealthy; failures within start_period do not count."""
    test: tuple[str, ...] = ()
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


class Spec(TypedRecord):
    """What `create` needs; runtime.spec.make_spec() builds a checked one.

    cmd empty: the image's cmd.  env: "K=V" added to the image's.  hostname
    None: the container's name.  workdir None: the image's.  seccomp None:
    the default profile; else a setting of runtime.seccomp ({"mode": ...}).
    log: LogConfig.  network: none, host, bridge, a network's name or
    container:NAME (runtime/network.py); ports: "[IP:]HOST:CONTAINER[/proto]"
    to publish (on a bridged network only).  restart: no | on-failure[:N] |
    always | unless-stopped; healthcheck: a Healthcheck, None for the image's
    (runtime/lifecycle.py).  mounts: Mount records (volumes,
    bind mounts, tmpfs); read_only: the root filesystem is mounted read-only."""
    image: str
    name: str | None = None
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    hostname: str | None = None
    workdir: str | None = None
    limits: Limits = Limits()
    auto_remove: bool = False
    seccomp: Mapping[str, Any] | None = None
    log: LogConfig = LogConfig()
    network: str = "none"
    ports: tuple[str, ...] = ()
    # lifecycle (runtime/lifecycle.py)
    restart: str = "no"
    healthcheck: Healthcheck | None = None
    # volumes and mounts (runtime/mounts.py)
    mounts: tuple[Mount, ...] = ()
    read_only: bool = False


class Container(TypedRecord):
    """What inspect and list report.

    status        created | running | paused | exited | broken (config.json unreadable;
                  error says why, only id, name and paths are known)
    layers        lower layer directories, bottom first
    pid           host pid of the container's init, while it runs
    oom_killed    the container's init died of an OOM kill
    oom_kills     OOM kills in its cgroup during the last run (children too)
    error         why the last start failed, if it did
    cgroup        "<parent>/<id>", relative to each hierarchy's root
    namespaces    {"pid": inode, ...} while running
    rootfs        the merged directory (mounted only inside the container)
    seccomp       "default", "unconfined" or "custom" (a profile given at create)
    no_new_privileges  its processes run with no_new_privs (false only if asked:
                  then setuid files and file capabilities in the image work)
    log_path      the live log file (rotated ones are log_path.1, .2, ...)
    network       none | host | bridge | a network's name | container:<id>
    address       its IPv4 address on that network (from its first start on)
    ports         published ports, "[IP:]HOST:CONTAINER/proto"
    restart_policy  no | on-failure[:N] | always | unless-stopped
    restart_history the policy's last restarts in a row (a person's start clears them), oldest
                  first: {"exit_code", "finished_at", "delay", "restarted_at"}
    healthcheck   its health check as a dict of Healthcheck's fields, or None
    health        {"status": starting|healthy|unhealthy, "failing_streak": n,
                  "log": [{"start", "end", "exit_code", "output"}, ...]} of this run, or None
    stopping      {"since": t, "timeout": s} while a stop waits for SIGTERM to work
    restarting    {"due": t, "delay": s} while the restart policy waits to start it again
    mounts        Mount records: volumes (by name), bind mounts (resolved host path), tmpfs
    read_only     its root filesystem is mounted read-only
    """
    id: str
    name: str
    image: str
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    hostname: str
    workdir: str
    limits: Limits
    status: str
    created_at: float
    layers: tuple[str, ...] = ()
    pid: int | None = None
    shim_pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    oom_kills: int = 0
    error: str | None = None
    cgroup: str | None = None
    namespaces: Mapping[str, int] = _EMPTY
    rootfs: str = ""
    upperdir: str = ""
    workdir_overlay: str = ""
    log_path: str = ""
    auto_remove: bool = False
    restart_count: int = 0
    seccomp: str = "default"
    log_config: LogConfig = LogConfig()
    no_new_privileges: bool = True
    network: str = "none"
    address: str | None = None
    ports: tuple[str, ...] = ()
    # lifecycle (runtime/lifecycle.py)
    restart_policy: str = "no"
    restart_history: tuple[RestartRecord, ...] = ()
    healthcheck: HealthcheckDict | None = None
    health: Health | None = None
    stopping: Stopping | None = None
    restarting: Restarting | None = None
    # volumes and mounts (runtime/mounts.py)
    mounts: tuple[Mount, ...] = ()
    read_only: bool = False


def to_dict(value: object) -> Any:
    """A record (recursively) as plain dicts, lists and scalars, for JSON."""
    if hasattr(value, "_asdict"):
        return {k: to_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k: to_dict(v) for k, v in value.items()}
    return value
