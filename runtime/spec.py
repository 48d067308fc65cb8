"""Checking what people type: names, sizes, CPU fractions, env, paths.

Every function raises InvalidArgument with the offending value in the
message, and returns a clean value otherwise.  Nothing here touches the
kernel or the disk (apart from counting the host's CPUs), so the CLI and
the dashboard's forms share it.
"""
from __future__ import annotations

import os
import posixpath
import re

from .errors import InvalidArgument
from .model import Limits, LogConfig, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, TypedDict
    from .model import Healthcheck, Mount

    class NetworkOptions(TypedDict):
        network: str
        ports: tuple[str, ...]

    class LifecycleOptions(TypedDict):
        restart: str
        healthcheck: Healthcheck | None

# Patterns are used with fullmatch (`$` also matches before a final newline)
# and re.ASCII (`\d` and `\s` would take any Unicode digit or space: '٦٤m').
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}", re.ASCII)
HOSTNAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*",
                         re.ASCII)
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_SIZE_RE = re.compile(r"[ \t]*([0-9]+)(?:\.([0-9]+))?[ \t]*([bkmgt]?)(?:i?b)?[ \t]*",
                      re.ASCII | re.IGNORECASE)
_CPUS_RE = re.compile(r"[ \t]*([0-9]{1,10})?(?:\.([0-9]{1,9}))?[ \t]*", re.ASCII)
_PIDS_RE = re.compile(r"[ \t]*\+?([0-9]{1,30})[ \t]*", re.ASCII)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20   # Docker's floor too: below this the container cannot even start
# The kernel keeps a memory limit in a page counter that holds at most 2^63-1
# bytes; memparse() wraps silently above 2^64.  Measured on v1 here:
# 2^63 reads back as 9223372036854771712 (unlimited), 2^64+4096 as 4096.
# Anything from 2^63 up is refused.  Above the host's RAM is accepted, as
# Docker and podman do ("-m can be larger than physical RAM" with swap).
MAX_BYTES = (1 << 63) - 1
# pids.max takes at most PID_MAX_LIMIT, 4194304; one more is EINVAL.
MAX_PIDS = 1 << 22
MAX_PATH = 4096


def _show(value: object, limit: int = 80) -> str:
    """The value as the message shows it: ASCII escapes (homoglyphs, bidi
    controls and NUL stand out), cut short when long."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid container name {_show(name)}: use 1-64 ASCII letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")
    return name


def check_hostname(hostname: object) -> str:
    if not isinstance(hostname, str) or len(hostname) > 64 or not HOSTNAME_RE.fullmatch(hostname):
        raise InvalidArgument(f"invalid hostname {_show(hostname)}: use at most 64 ASCII letters, "
                              "digits, '-' and '.'")
    return hostname


def parse_size(text: object, what: str = "size") -> int:
    """'64m' -> 67108864.  Accepts b, k, m, g, t (optionally 'kb'/'mib'), or bytes.

    Exact integer arithmetic (a float round-trip made a 32-digit value
    1.0000000000000000536e32); fractions of a byte are dropped."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.fullmatch(text) if isinstance(text, str) else None
        if not m:
            raise InvalidArgument(f"invalid {what} {_show(text)}: use a number with an optional "
                                  "unit b, k, m, g or t (e.g. 64m)")
        whole, frac, unit = m.group(1).lstrip("0"), (m.group(2) or "")[:20], _UNITS[m.group(3).lower()]
        if len(whole) > 20:               # int() of thousands of digits is slow, then refused
            value = MAX_BYTES + 1
        else:
            value = int(whole or "0") * unit + int(frac or "0") * unit // 10 ** len(frac)
    if value <= 0:
        raise InvalidArgument(f"invalid {what} {_show(text)}: must be positive")
    if value > MAX_BYTES:
        raise InvalidArgument(f"invalid {what} {_show(text)}: the most the kernel can hold is "
                              f"{MAX_BYTES} bytes (2^63-1)")
    return value


def parse_memory(text: object) -> int:
    value = parse_size(text, "memory limit")
    if value < MIN_MEMORY:
        raise InvalidArgument(f"memory limit {text!r} is too small: the minimum is 6m")
    return value


def host_cpus() -> int:
    """CPUs online on this host (what Docker's daemon counts)."""
    return os.cpu_count() or 1


def parse_cpus(text: object, available: int | None = None) -> float:
    """'0.5' -> 0.5; between 0.01 and the host's CPU count, as Docker has it."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _CPUS_RE.fullmatch(text) if isinstance(text, str) else None
        if not m or not (m.group(1) or m.group(2)):
            raise InvalidArgument(f"invalid cpus {_show(text)}: use a number of cores such as 0.5")
        value = float(f"{m.group(1) or 0}.{m.group(2) or 0}")
    if not value > 0:                      # also NaN
        raise InvalidArgument(f"invalid cpus {_show(text)}: must be more than 0")
    n = host_cpus() if available is None else available
    if value < 0.01 or value > n:
        raise InvalidArgument(f"invalid cpus {_show(text)}: the range is from 0.01 to {n}.00, "
                              f"as there are only {n} CPUs available")
    return value


def parse_pids(text: object) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _PIDS_RE.fullmatch(text) if isinstance(text, str) else None
        if not m:
            raise InvalidArgument(f"invalid pids limit {_show(text)}: use a whole number")
        value = int(m.group(1))
    if value < 1 or value > MAX_PIDS:
        raise InvalidArgument(f"invalid pids limit {_show(text)}: must be from 1 to {MAX_PIDS}")
    return value


def check_env(items: Iterable[object]) -> tuple[str, ...]:
    if isinstance(items, (str, bytes)):
        raise InvalidArgument("environment: give a list of KEY=VALUE strings")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"invalid environment variable {_show(item)}: use KEY=VALUE")
        key, sep, _ = item.partition("=")
        if not sep or not ENV_KEY_RE.fullmatch(key):
            raise InvalidArgument(f"invalid environment variable {_show(key)}: use KEY=VALUE, "
                                  "KEY of ASCII letters, digits and '_'")
        if "\0" in item:
            raise InvalidArgument(f"invalid environment variable {key!r}: contains a NUL byte")
        out.append(item)
    return tuple(out)


def check_workdir(path: object) -> str:
    """An absolute path that stays inside the container's root once normalised."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"invalid working directory {_show(path)}: must be absolute")
    if "\0" in path:
        raise InvalidArgument(f"invalid working directory {_show(path)}: contains a NUL byte")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise InvalidArgument(f"invalid working directory {_show(path)}: longer than {MAX_PATH} bytes")
    if any(part == ".." for part in path.split("/")):
        raise InvalidArgument(f"invalid working directory {_show(path)}: '..' is not allowed")
    return posixpath.normpath(path)


def check_cmd(cmd: Iterable[object]) -> tuple[str, ...]:
    if isinstance(cmd, (str, bytes)):
        raise InvalidArgument("invalid command: give a list of arguments, not one string")
    argv = tuple(a if isinstance(a, str) else str(a) for a in cmd)
    if any("\0" in a for a in argv):
        raise InvalidArgument("invalid command: an argument contains a NUL byte")
    if argv and not argv[0]:
        raise InvalidArgument("invalid command: the program name is empty")
    return argv


def make_limits(memory: object = None, memory_swap: object = None, cpus: object = None,
                pids: object = None) -> Limits:
    """Limits from loose input ('64m', '0.5', '64', '' or None)."""
    blank = (None, "")
    mem = None if memory in blank else parse_memory(memory)
    swap = None
    if memory_swap not in blank:
        if str(memory_swap).strip() == "-1":
            swap = -1
        else:
            swap = parse_size(memory_swap, "memory+swap limit")
            if mem is None or swap < mem:
                raise InvalidArgument("memory+swap limit must be at least the memory limit, which it needs")
    return Limits(memory=mem, memory_swap=swap,
                  cpus=None if cpus in blank else parse_cpus(cpus),
                  pids=None if pids in blank else parse_pids(pids))


def check_limits(limits: Limits) -> Limits:
    """Limits built by hand (the API) checked as the parsers check typed ones."""
    if not isinstance(limits, Limits):
        raise InvalidArgument("limits: give a runtime.Limits")
    swap = limits.memory_swap
    if swap is not None and swap != -1:
        swap = parse_size(swap, "memory+swap limit")
    return Limits(memory=None if limits.memory is None else parse_memory(limits.memory),
                  memory_swap=swap,
                  cpus=None if limits.cpus is None else parse_cpus(limits.cpus),
                  pids=None if limits.pids is None else parse_pids(limits.pids))


def check_spec(spec: Spec) -> Spec:
    """A Spec built by hand (the API) checked as make_spec checks typed input."""
    checked = make_spec(image=spec.image, name=spec.name, cmd=spec.cmd, env=spec.env,
                        hostname=spec.hostname, workdir=spec.workdir,
                        limits=check_limits(spec.limits), auto_remove=spec.auto_remove,
                        log=check_log_config(spec.log), network=spec.network, ports=spec.ports,
                        restart=spec.restart, healthcheck=spec.healthcheck,
                        mounts=spec.mounts, read_only=spec.read_only)
    return checked._replace(seccomp=spec.seccomp)     # Runtime.create checks it


MIN_LOG_SIZE = 32 << 10   # a file must hold the longest record (runtime/logs.py RECORD_MAX)
MAX_LOG_FILES = 100


def parse_log_opts(opts: Iterable[object] | None) -> LogConfig:
    """`--log-opt KEY=VALUE` items (max-size, max-file, as Docker's) -> LogConfig."""
    max_size, max_file = LogConfig()
    for opt in opts or ():
        key, sep, value = str(opt).partition("=")
        if not sep:
            raise InvalidArgument(f"invalid log option {_show(opt)}: use KEY=VALUE, e.g. max-size=10m or max-file=3")
        if key == "max-size":
            max_size = parse_size(value, "log max-size")
            if max_size < MIN_LOG_SIZE:
                raise InvalidArgument(f"log max-size {_show(value)} is too small: the minimum is 32k")
        elif key == "max-file":
            if (not (value.isascii() and value.isdigit() and len(value) <= 3)
                    or not 1 <= int(value) <= MAX_LOG_FILES):
                raise InvalidArgument(f"invalid log max-file {_show(value)}: "
                                      f"use a whole number from 1 to {MAX_LOG_FILES}")
            max_file = int(value)
        else:
            raise InvalidArgument(f"unknown log option {_show(key)}: use max-size or max-file")
    return LogConfig(max_size, max_file)


def check_log_config(log: object) -> LogConfig:
    """A LogConfig built by hand (the API) checked as parse_log_opts checks typed options."""
    if not isinstance(log, LogConfig):
        raise InvalidArgument("log: give a runtime.LogConfig")
    return parse_log_opts([f"max-size={log.max_size}", f"max-file={log.max_file}"])


def make_spec(*, image: str, name: str | None = None, cmd: Iterable[object] = (), env: Iterable[object] = (),
              hostname: str | None = None, workdir: str | None = None, limits: Limits | None = None,
              auto_remove: bool = False, seccomp: Mapping[str, Any] | None = None, log: LogConfig | None = None,
              network: str | None = None, ports: object = (), restart: str | None = "no",
              healthcheck: Healthcheck | Mapping[str, Any] | None = None,
              mounts: Iterable[object] = (), read_only: bool = False) -> Spec:
    if not image or not isinstance(image, str):
        raise InvalidArgument("an image is required")
    if "\0" in image:
        raise InvalidArgument(f"invalid image name {_show(image)}: contains a NUL byte")
    if auto_remove and restart not in (None, "", "no"):
        raise InvalidArgument("conflicting options: a container that removes itself (--rm) "
                              "cannot have a restart policy")
    if seccomp is not None:
        from .seccomp import check_setting
        seccomp = check_setting(seccomp)
    return Spec(
        image=image,
        name=None if not name else check_name(name),
        cmd=check_cmd(cmd),
        env=check_env(env),
        hostname=None if not hostname else check_hostname(hostname),
        workdir=None if not workdir else check_workdir(workdir),
        limits=limits or Limits(),
        auto_remove=bool(auto_remove),
        seccomp=seccomp,
        log=log or LogConfig(),
        **check_network_options(network, ports),
        **check_lifecycle_options(restart, healthcheck),
        mounts=_check_mounts(mounts),
        read_only=bool(read_only),
    )


def check_lifecycle_options(restart: str | None,
                            healthcheck: Healthcheck | Mapping[str, Any] | None) -> LifecycleOptions:
    """--restart and the health check (runtime/lifecycle.py)."""
    if (restart in (None, "", "no")) and healthcheck is None:
        return {"restart": "no", "healthcheck": None}
    from .lifecycle import check_healthcheck, check_restart
    return {"restart": check_restart(restart or "no"),
            "healthcheck": None if healthcheck is None else check_healthcheck(healthcheck)}


def _check_mounts(mounts: Iterable[object]) -> tuple[Mount, ...]:
    """Volumes, bind mounts and tmpfs (runtime/mounts.py), one per target."""
    if not mounts:
        return ()
    from .mounts import check_mounts
    return check_mounts(mounts)


def check_network_options(network: str | None, ports: object) -> NetworkOptions:
    """--network and -p (runtime/network.py); ports only on a bridged network."""
    if (network is None or network == "none") and not ports:
        return {"network": "none", "ports": ()}
    from .network import check_network, check_ports
    network = check_network(network or "none")
    if isinstance(ports, str) or not isinstance(ports, (list, tuple)):
        raise InvalidArgument(f"invalid ports {_show(ports)}: a list such as ['8080:80']")
    ports = check_ports(ports)
    if ports and (network in ("none", "host") or network.startswith("container:")):
        raise InvalidArgument(f"ports are published on a bridged network only, not with --network {network}")
    return {"network": network, "ports": ports}
