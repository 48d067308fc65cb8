"""The web tier's own files: the SQLite database and the secret key.

They live in one directory, TERRARIUM_WEB_DIR (default /var/lib/terrarium-web),
outside the repository and outside the runtime's state root: the database
holds password hashes and live session keys, the key signs sessions, so both
are 0600 in a 0700 directory, tightened at every start if they were made
looser.  (The web tier will run as a user of its own that reaches the
runtime only through a root agent: it owns this directory and needs nothing
of the state root.)  TERRARIUM_DB and TERRARIUM_SECRET_KEY_FILE put either
file elsewhere; then the file is still made 0600, its directory is yours.

Used by dashboard/settings.py at import: no Django here.
"""
from __future__ import annotations

import os
import secrets
import stat
import tempfile

DEFAULT_DIR = "/var/lib/terrarium-web"


class WebStateError(Exception):
    """A file of the web tier is missing, unusable or not private; one sentence."""


def web_dir() -> str:
    """TERRARIUM_WEB_DIR, made if missing and 0700."""
    path = os.path.abspath(os.environ.get("TERRARIUM_WEB_DIR") or DEFAULT_DIR)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as e:
        raise WebStateError(f"cannot make {path} a private (0700) directory: {e.strerror}") from None
    return path


def database_path() -> str:
    """TERRARIUM_DB, or db.sqlite3 in the web directory; made 0600 (empty:
    SQLite takes an empty file as a new database) before SQLite makes it 0644."""
    path = os.environ.get("TERRARIUM_DB") or os.path.join(web_dir(), "db.sqlite3")
    path = os.path.abspath(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        # SQLite gives its journal files the database's mode: tighten those too
        for p in (path, path + "-journal", path + "-wal", path + "-shm"):
            _tighten(p)
    except OSError as e:
        raise WebStateError(f"cannot make the database {path} private (0600): {e.strerror}") from None
    return path


def secret_key() -> str:
    """DJANGO_SECRET_KEY, else the key in TERRARIUM_SECRET_KEY_FILE (default
    secret_key in the web directory), generated once."""
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    path = os.path.abspath(os.environ.get("TERRARIUM_SECRET_KEY_FILE")
                           or os.path.join(web_dir(), "secret_key"))
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise WebStateError(f"cannot read the secret key {path}: {e.strerror}") from None
    try:
        return _make_key(path)
    except OSError as e:
        raise WebStateError(f"cannot write the secret key {path}: {e.strerror}") from None


METRICS_TOKEN_MIN = 16          # characters: a shorter bearer token is guessable


def metrics_token() -> str | None:
    """The bearer token /metrics asks for: TERRARIUM_METRICS_TOKEN, else the
    file TERRARIUM_METRICS_TOKEN_FILE (default metrics_token in the web
    directory) if it exists; None: no token configured.  The file must be a
    regular file no one else can read (0600 or tighter): it is refused, not
    tightened, since its owner may have meant to share it."""
    token = os.environ.get("TERRARIUM_METRICS_TOKEN")
    source = "TERRARIUM_METRICS_TOKEN"
    if not token:
        path = os.path.abspath(os.environ.get("TERRARIUM_METRICS_TOKEN_FILE") or os.path.join(
            os.path.abspath(os.environ.get("TERRARIUM_WEB_DIR") or DEFAULT_DIR), "metrics_token"))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise WebStateError(f"cannot read the metrics token {path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise WebStateError(f"the metrics token {path} is not a regular file")
            if st.st_mode & 0o077:
                raise WebStateError(f"the metrics token {path} can be read by others "
                                    f"(mode {st.st_mode & 0o777:04o}): chmod 600 it")
            with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as f:
                token = f.read().strip()
        finally:
            os.close(fd)
        source = path
    token = token.strip()
    if len(token) < METRICS_TOKEN_MIN or not token.isascii() or not token.isprintable() or " " in token:
        raise WebStateError(f"the metrics token in {source} must be at least {METRICS_TOKEN_MIN} "
                            f"printable ASCII characters without spaces")
    return token


def _read_key(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WebStateError(f"the secret key {path} is not a regular file")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        with os.fdopen(os.dup(fd)) as f:
            key = f.read().strip()
    finally:
        os.close(fd)
    if not key:
        raise WebStateError(f"the secret key file {path} is empty: remove it and a new key is made")
    return key


def _make_key(path: str) -> str:
    """Write a new key to a temporary file and link it into place: a reader
    never sees a half-written key, and of two processes starting at once
    the second reads the first one's."""
    key = secrets.token_urlsafe(64)
    fd, tmp = tempfile.mkstemp(prefix=".secret_key-", dir=os.path.dirname(path))  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
        return key
    finally:
        os.unlink(tmp)


def _tighten(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        os.chmod(path, 0o600)
