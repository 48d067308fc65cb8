"""A shell on a terminal in a container, for a caller with threads.

`exec -t` (runtime/execute.py) forks, so it runs in a process without
threads: the CLI.  The web tier and the agent have threads, so a terminal is
made by a helper process of its own, started with subprocess (fork and exec
in C, no Python between them):

    caller ──socketpair (SEQPACKET)──> helper: Runtime.exec(tty, hand_off)
                                         └─ joiner ─ process (in the container,
                                                      on /dev/pts/N of its devpts)

- The helper sends the pty master (the container's own /dev/pts/ptmx, opened
  by the process after joining it: never the host's terminal) on the
  control socket, closes its copy, and waits for the joiner.
- When the process exits (`exit`, or the container stops: the end of its PID
  namespace kills it) the helper sends {"exit": N} and exits with N.
- When the caller closes the control socket (the person closed the page,
  logged out, lost the operator role) the helper hangs the process up
  (SIGHUP, as closing a terminal does), SIGKILLs it after HANGUP_GRACE
  seconds, and exits once it has been reaped.

Whoever holds a Terminal (the caller, or the web tier the agent passed both
descriptors to with SCM_RIGHTS) reads and writes the master, sets its window
size (TIOCSWINSZ) and reads the exit code, all without blocking.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

from .errors import Conflict, InvalidArgument, TerrariumError

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from .containers import Runtime

# The commands a terminal may run: a small fixed set, never one a client names.
# "auto" is the image's shell: bash where the image has one, else sh.
SHELLS = {
    "auto": ("/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash; fi; exec /bin/sh"),
    "sh": ("/bin/sh",),
    "bash": ("/bin/bash",),
    "ash": ("/bin/ash",),
}
ENV = ("TERM=xterm-256color",)
MAX_ROWS, MAX_COLS = 500, 1000
START_TIMEOUT = 30.0            # seconds the helper may take to hand over the terminal
HANGUP_GRACE = 2.0              # seconds between SIGHUP and SIGKILL once the caller has gone
READ_SIZE = 1 << 16


def check_shell(shell: object) -> tuple[str, ...]:
    if not isinstance(shell, str) or shell not in SHELLS:
        raise InvalidArgument(f"invalid shell {shell!r}: one of {', '.join(SHELLS)}")
    return SHELLS[shell]


def check_size(rows: object, cols: object) -> tuple[int, int]:
    return _check_side("rows", rows, MAX_ROWS), _check_side("cols", cols, MAX_COLS)


def _check_side(what: str, v: object, top: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
        raise InvalidArgument(f"invalid terminal {what} {v!r}: 1 to {top}")
    return v


def winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class Terminal:
    """The pty master of a shell in a container and the control socket of its
    helper.  read/write never block; `control` becomes readable when the
    process has exited (exit_code() then has its code) or the helper is gone;
    close() ends the session (the helper hangs the process up)."""

    def __init__(self, master: int, ctl: socket.socket, info: Mapping[str, object] | None = None) -> None:
        self.master, self.ctl = master, ctl
        # what its maker says of it: id, name, shell, helper (its pid); an engine's its own, rows, cols
        self.info: dict[str, Any] = dict(info or {})
        os.set_blocking(master, False)
        ctl.setblocking(False)
        self._code: int | None = None

    def fileno(self) -> int:
        return self.master

    @property
    def control(self) -> int:
        return self.ctl.fileno()

    def read(self, size: int = READ_SIZE) -> bytes | None:
        """What the process wrote (up to size bytes); None if nothing yet, b""
        once its side of the terminal is closed."""
        try:
            return os.read(self.master, size)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EIO:          # every slave descriptor closed: the process is done
                return b""
            raise

    def write(self, data: bytes) -> int:
        """Type data (as much as the terminal takes now): the bytes taken."""
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno == errno.EIO:
                return len(data)              # nobody reads any more: drop it
            raise

    def resize(self, rows: int, cols: int) -> None:
        """The window size (the process gets SIGWINCH)."""
        rows, cols = check_size(rows, cols)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, winsize(rows, cols))

    def size(self) -> tuple[int, int]:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols

    def exit_code(self) -> int | None:
        """The process's exit code once the helper has said it (-1 if the
        helper ended without saying), else None."""
        if self._code is None:
            try:
                data = self.ctl.recv(4096)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                data = b""
            try:
                self._code = int(json.loads(data)["exit"]) if data else -1
            except (ValueError, KeyError, TypeError):
                self._code = -1
        return self._code

    def close(self) -> None:
        """Close both ends: the helper hangs the process up if it still runs."""
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.ctl.close()


# ------------------------------------------------------------------ caller

def open_terminal(rt: Runtime, ref: str, *, shell: str = "auto", rows: int = 24, cols: int = 80,
                  on_end: Callable[[int], object] | None = None) -> Terminal:
    """Start the helper for a shell in running container ref; returns once the
    process runs on its terminal (or raises the runtime's error: NotFound,
    Conflict when it is not running, ExecFailed when the shell is missing).
    on_end(exit_code): called from a thread once the helper is reaped."""
    argv = check_shell(shell)
    rows, cols = check_size(rows, cols)
    c = rt.inspect(ref)
    if c.status != "running":
        raise Conflict(f"container {c.name!r} is {c.status}, not running")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    what = {"root": rt.root, "cgroup_parent": rt.cgroup_parent, "id": c.id, "argv": list(argv),
            "env": list(ENV), "rows": rows, "cols": cols, "ctl": theirs.fileno()}
    from .daemons import PROJECT
    code = (f"import sys; sys.path.insert(0, {PROJECT!r}); "
            "from runtime.terminal import _helper; _helper(sys.argv[1])")
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, json.dumps(what)],
                                pass_fds=(theirs.fileno(),), start_new_session=True, cwd="/",
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    theirs.close()
    try:
        master = _first_message(ours, proc)
    except BaseException:
        ours.close()
        _reap_later(proc, None)
        raise
    _reap_later(proc, on_end)
    return Terminal(master, ours, {"id": c.id, "name": c.name, "shell": shell, "helper": proc.pid})


def _first_message(ctl: socket.socket, proc: subprocess.Popen[bytes]) -> int:
    """The master the helper sends, or its error raised as the runtime's."""
    from .agent_client import error_of
    if not _readable(ctl, START_TIMEOUT):
        proc.kill()
        raise TerrariumError(f"the terminal did not start within {START_TIMEOUT:g} s")
    data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 1, socket.MSG_CMSG_CLOEXEC)
    if data == b"pty" and len(fds) == 1:
        return fds[0]
    for fd in fds:
        os.close(fd)
    if not data:
        raise TerrariumError(f"the terminal's helper (pid {proc.pid}) ended without a word")
    try:
        reply = json.loads(data)
    except ValueError:
        reply = {"kind": "TerrariumError", "error": data.decode(errors="replace")[:500]}
    raise error_of(reply)


def _readable(sock: socket.socket, timeout: float) -> bool:
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(timeout * 1000))


def _reap_later(proc: subprocess.Popen[bytes], on_end: Callable[[int], object] | None) -> None:
    """Reap the helper when it exits (a thread: the caller has an event loop
    or a thread per connection, no SIGCHLD handler of its own)."""
    def reap() -> None:
        code = proc.wait()
        if on_end is not None:
            on_end(code)
    threading.Thread(target=reap, name=f"terminal-reaper-{proc.pid}", daemon=True).start()


# ------------------------------------------------------------------ helper

def _helper(raw: str) -> None:
    """The helper's main: make the terminal (Runtime.exec with hand_off), wait,
    say the exit code.  Never returns."""
    code = 126
    ctl = None
    try:
        what = json.loads(raw)
        ctl = socket.socket(fileno=what["ctl"])
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        from .containers import Runtime
        rt = Runtime(what["root"], what["cgroup_parent"])

        def hand_off(master: int, process: int, joiner: int) -> None:
            try:
                socket.send_fds(ctl, [b"pty"], [master])
            finally:
                os.close(master)
            _until_exit(ctl, process, joiner)

        code = rt.exec(what["id"], what["argv"], env=what["env"], tty=True, interactive=True,
                       size=winsize(what["rows"], what["cols"]), hand_off=hand_off)
        _say(ctl, {"exit": code})
    except BaseException as e:  # noqa: BLE001 - told to the caller, which raises it
        from .agent import error_reply
        if ctl is not None:
            reply = error_reply(e)
            if not isinstance(e, (TerrariumError, OSError)):
                reply = {"kind": "TerrariumError", "error": f"terminal: {type(e).__name__}: {e}"}
            _say(ctl, reply)
        code = getattr(e, "exit_code", 126)
    os._exit(code & 0xFF)


def _say(ctl: socket.socket, message: Mapping[str, Any]) -> None:
    try:
        ctl.send(json.dumps(message).encode())
    except OSError:
        pass                                  # the caller has gone


def _until_exit(ctl: socket.socket, process: int, joiner: int) -> None:
    """Until the joiner (which reaps the process) exits.  Once the caller has
    hung up: SIGHUP to the process, SIGKILL after HANGUP_GRACE seconds."""
    p = select.poll()
    p.register(joiner, select.POLLIN)
    p.register(ctl, select.POLLIN)
    hung_up_at = None
    while True:
        timeout = None
        if hung_up_at is not None:
            timeout = max(0, hung_up_at + HANGUP_GRACE - time.monotonic()) * 1000
        ready = dict(p.poll(timeout))
        if joiner in ready:
            return
        if ctl.fileno() in ready:
            try:
                gone = ctl.recv(4096) == b""      # anything else the caller sends is ignored
            except OSError:
                gone = True
            if gone:
                p.unregister(ctl)
                hung_up_at = time.monotonic()
                _signal(process, signal.SIGHUP)
        elif hung_up_at is not None and not ready:
            _signal(process, signal.SIGKILL)
            hung_up_at = None


def _signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
