"""The Redis channel layer's connection, with credentials.

Every message of the live feed, process trees and container events included,
goes through Redis in scale-out mode, and channels-redis trusts whatever it
reads there: a Redis that any local user can reach and talk to without a
password lets them read the feed and inject `oom.killed` or
`container.changed` messages into every browser.  So a URL without
credentials is refused unless TERRARIUM_REDIS_INSECURE=1 says it is meant.

The password comes from a file only its owner reads (TERRARIUM_REDIS_PASSWORD_FILE,
0600), not from the command line or the environment; the user from
TERRARIUM_REDIS_USER (Redis ACL user, default `terrarium`).
"""
from __future__ import annotations

import os
import stat
import urllib.parse


class RedisConfigError(Exception):
    """A Redis set-up the dashboard refuses to start with; one sentence."""


def _read_password(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RedisConfigError(f"TERRARIUM_REDIS_PASSWORD_FILE {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RedisConfigError(f"TERRARIUM_REDIS_PASSWORD_FILE {path} is not a regular file")
        if st.st_mode & 0o077:
            raise RedisConfigError(f"TERRARIUM_REDIS_PASSWORD_FILE {path} is readable by others "
                                   f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 0600 it")
        password = f.read(4096).decode("utf-8", "replace").strip()
    if not password:
        raise RedisConfigError(f"TERRARIUM_REDIS_PASSWORD_FILE {path} is empty")
    return password


REPLY_TIMEOUT = 30.0              # seconds; over channels-redis' BZPOPMIN wait (5 s)


def channel_host(env=os.environ) -> dict:
    """The channels-redis `hosts` entry for TERRARIUM_REDIS_URL (see the module)."""
    url = env["TERRARIUM_REDIS_URL"]
    # channels-redis waits for a message with BZPOPMIN of 5 s; redis-py 8 reads
    # every reply with a 5 s socket timeout by default (before: none), so an
    # idle channel's wait timed out at the socket and the websocket closed 1011.
    # A reply later than this still fails, rather than hang a worker for good.
    host: dict = {"address": url, "socket_timeout": REPLY_TIMEOUT}
    password_file = env.get("TERRARIUM_REDIS_PASSWORD_FILE")
    if password_file:
        host["username"] = env.get("TERRARIUM_REDIS_USER") or "terrarium"
        host["password"] = _read_password(password_file)
    elif urllib.parse.urlsplit(url).password is None and env.get("TERRARIUM_REDIS_INSECURE") != "1":
        raise RedisConfigError(
            "TERRARIUM_REDIS_URL has no credentials: set TERRARIUM_REDIS_PASSWORD_FILE to a 0600 file "
            "with the Redis ACL user's password (README: Configuration), "
            "or TERRARIUM_REDIS_INSECURE=1 to use a Redis anyone local can reach")
    return host
