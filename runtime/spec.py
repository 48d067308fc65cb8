"""Checking what people type: names, sizes, CPU fractions, env, paths.

Every function raises InvalidArgument with the offending value in the
message, and returns a clean value otherwise.  Nothing here touches the
kernel or the disk, so the CLI and the dashboard's forms share it.
"""
from __future__ import annotations

import posixpath
import re

from .errors import InvalidArgument
from .model import Limits, Spec

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20   # Docker's floor too: below this the container cannot even start


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid container name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")
    return name


def check_hostname(hostname: str) -> str:
    if len(hostname) > 64 or not HOSTNAME_RE.match(hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}")
    return hostname


def parse_size(text, what: str = "size") -> int:
    """'64m' -> 67108864.  Accepts b, k, m, g, t (optionally 'kb'/'mib'), or bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise InvalidArgument(f"invalid {what} {text!r}: use a number with an optional unit b, k, m or g (e.g. 64m)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise InvalidArgument(f"invalid {what} {text!r}: must be positive")
    return value


def parse_memory(text) -> int:
    value = parse_size(text, "memory limit")
    if value < MIN_MEMORY:
        raise InvalidArgument(f"memory limit {text!r} is too small: the minimum is 6m")
    return value


def parse_cpus(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid cpus {text!r}: use a number of cores such as 0.5") from None
    if not value > 0 or value != value or value > 1024:
        raise InvalidArgument(f"invalid cpus {text!r}: must be more than 0")
    if value < 0.01:
        raise InvalidArgument(f"invalid cpus {text!r}: the minimum is 0.01")
    return value


def parse_pids(text) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InvalidArgument(f"invalid pids limit {text!r}: use a whole number") from None
    if value < 1:
        raise InvalidArgument(f"invalid pids limit {text!r}: must be at least 1")
    return value


def check_env(items) -> tuple[str, ...]:
    out = []
    for item in items:
        key, sep, _ = str(item).partition("=")
        if not sep or not ENV_KEY_RE.match(key):
            raise InvalidArgument(f"invalid environment variable {item!r}: use KEY=VALUE")
        if "\0" in item:
            raise InvalidArgument(f"invalid environment variable {key!r}: contains a NUL byte")
        out.append(str(item))
    return tuple(out)


def check_workdir(path: str) -> str:
    """An absolute path that stays inside the container's root once normalised."""
    if not path.startswith("/"):
        raise InvalidArgument(f"invalid working directory {path!r}: must be absolute")
    if "\0" in path or any(part == ".." for part in path.split("/")):
        raise InvalidArgument(f"invalid working directory {path!r}: '..' is not allowed")
    return posixpath.normpath(path)


def check_cmd(cmd) -> tuple[str, ...]:
    cmd = tuple(str(a) for a in cmd)
    if any("\0" in a for a in cmd):
        raise InvalidArgument("invalid command: an argument contains a NUL byte")
    if cmd and not cmd[0]:
        raise InvalidArgument("invalid command: the program name is empty")
    return cmd


def make_limits(memory=None, memory_swap=None, cpus=None, pids=None) -> Limits:
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


def make_spec(*, image: str, name: str | None = None, cmd=(), env=(), hostname: str | None = None,
              workdir: str | None = None, limits: Limits | None = None, auto_remove: bool = False) -> Spec:
    if not image or not isinstance(image, str):
        raise InvalidArgument("an image is required")
    return Spec(
        image=image,
        name=None if not name else check_name(name),
        cmd=check_cmd(cmd),
        env=check_env(env),
        hostname=None if not hostname else check_hostname(hostname),
        workdir=None if not workdir else check_workdir(workdir),
        limits=limits or Limits(),
        auto_remove=bool(auto_remove),
    )
