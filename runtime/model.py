"""Frozen value types the runtime hands out.  No behaviour, no I/O.

They are named tuples rather than dataclasses on purpose: every `terrarium`
command imports this module, and `dataclasses` pulls in `inspect`, `ast` and
`dis` and generates code per class — about 35 ms of a CLI start that is
meant to compete with runc (bench/start_latency.py).  Named tuples are just
as frozen, hashable and comparable; `to_dict()` turns one into JSON-ready data.
"""
from __future__ import annotations

from collections import namedtuple
from types import MappingProxyType

_EMPTY = MappingProxyType({})


class Limits(namedtuple("Limits", "memory memory_swap cpus pids", defaults=(None, None, None, None))):
    """Resource limits of one container; None means unlimited.

    memory        bytes
    memory_swap   bytes of memory + swap, as Docker counts it.  None with a
                  memory limit means "no swap at all" (swap max = 0), so the
                  memory limit really holds on hosts with swap; -1 = unlimited.
    cpus          fraction of cores, e.g. 0.5
    pids          the most processes at once
    """
    __slots__ = ()


class ImageConfig(namedtuple("ImageConfig", "cmd env workdir healthcheck", defaults=(
        ("sh",), ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",), "/", None))):
    """What an image runs by default: argv, KEY=VALUE env, working directory, and
    the health check its containers get unless they say otherwise (a
    Healthcheck, defined below; None: none)."""
    __slots__ = ()


class Layer(namedtuple("Layer", "digest size files created_by path", defaults=("", ""))):
    """One unpacked layer: digest "sha256:<hex>" of its uncompressed tar, bytes of
    content, entries, the instruction or source that made it, its directory."""
    __slots__ = ()


class Image(namedtuple("Image", "name layers config created history id replaced",
                       defaults=(0.0, (), "", ""))):
    """name ("busybox"; "" for an image no name points at any more), layers
    bottom first, ImageConfig, unix time, how each layer was made (bottom
    first), id ("sha256:<hex>", runtime/images/store.py image_id), and, when
    this write moved the name off another image, that image's id (replaced)."""
    __slots__ = ()


class LogConfig(namedtuple("LogConfig", "max_size max_file", defaults=(10 << 20, 3))):
    """A container's log (runtime/logs.py): rotated when a file would pass
    max_size bytes, max_file files kept (the live one included)."""
    __slots__ = ()


class Mount(namedtuple("Mount", "type source target read_only size mode", defaults=(False, None, None))):
    """One mount outside the overlay (runtime/mounts.py).

    type      volume | bind | tmpfs
    source    a volume's name ("" in a Spec: a new anonymous volume), a host
              path (bind; the resolved one once created), "" for tmpfs
    target    absolute path inside the container
    read_only mounted read-only
    size      tmpfs only: bytes (None: the kernel's default, half the RAM)
    mode      tmpfs only: permission bits of its root (None: 1777)"""
    __slots__ = ()


class Healthcheck(namedtuple("Healthcheck", "test interval timeout retries start_period",
                             defaults=((), 30.0, 30.0, 3, 0.0))):
    """A container's health check (runtime/lifecycle.py), Docker's fields: test is
    the argv run in the container through exec (`--health-cmd` is sh -c CMD);
    empty test: none at all (--no-healthcheck).  Seconds; retries failures in a
    row make it unhealthy; failures within start_period do not count."""
    __slots__ = ()


_SPEC_FIELDS = (
    "image name cmd env hostname workdir limits auto_remove seccomp log network ports "
    "restart healthcheck "      # lifecycle (runtime/lifecycle.py)
    "mounts read_only"          # volumes and mounts (runtime/mounts.py)
)


class Spec(namedtuple("Spec", _SPEC_FIELDS,
                      defaults=(None, (), (), None, None, Limits(), False, None, LogConfig(), "none", (),
                                "no", None, (), False))):
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
    __slots__ = ()


_CONTAINER_FIELDS = (
    "id name image cmd env hostname workdir limits status created_at "
    "layers pid shim_pid started_at finished_at exit_code oom_killed oom_kills error "
    "cgroup namespaces rootfs upperdir workdir_overlay log_path auto_remove restart_count seccomp log_config "
    "no_new_privileges network address ports "
    "restart_policy restart_history healthcheck health stopping restarting"     # lifecycle (runtime/lifecycle.py)
    " mounts read_only"     # volumes and mounts (runtime/mounts.py)
)


class Container(namedtuple("Container", _CONTAINER_FIELDS, defaults=(
        (), None, None, None, None, None, False, 0, None,
        None, _EMPTY, "", "", "", "", False, 0, "default", LogConfig(), True, "none", None, (),
        "no", (), None, None, None, None, (), False))):
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
    __slots__ = ()


def to_dict(value):
    """A record (recursively) as plain dicts, lists and scalars, for JSON."""
    if hasattr(value, "_asdict"):
        return {k: to_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k: to_dict(v) for k, v in value.items()}
    return value
