"""One exception family for the runtime.

Every error carries what it is about in its message ("container 'web' not
found") so the CLI and the dashboard can show it as is.  Kernel failures keep
their errno, like pyroute2's NetlinkError, so callers can branch on it.
"""
from __future__ import annotations

import errno as _errno
import os


class TerrariumError(Exception):
    """Base class of every error the runtime raises on purpose."""


class InvalidArgument(TerrariumError, ValueError):
    """Bad input from the caller: a name, a size, a path. Nothing was changed."""


class NotFound(TerrariumError, LookupError):
    """A container, image or layer that does not exist."""


class Conflict(TerrariumError):
    """The request does not fit the current state (name taken, still running...)."""


class Forbidden(TerrariumError):
    """Allowed only when the caller says so (e.g. `--network host`): nothing was changed."""


class RegistryError(TerrariumError):
    """A registry refused or failed a pull, push or login (unreachable, unauthorized,
    a blob whose digest does not match): nothing was kept but verified blobs."""


class KernelError(TerrariumError, OSError):
    """A system call failed; ``code`` is the errno."""

    def __init__(self, code: int, what: str = ""):
        self.code = code
        msg = os.strerror(code)
        if what:
            msg = f"{what}: {msg}"
        OSError.__init__(self, code, msg)
        self.what = what

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.code, str(self.code))
        return f"{self.args[1]} [{name}]"


class ExecFailed(TerrariumError):
    """The container's command could not be started; ``exit_code`` is Docker's (126/127)."""

    def __init__(self, message: str, exit_code: int = 127):
        super().__init__(message)
        self.exit_code = exit_code
