"""A shell on a terminal in another engine's container, through its API
(Docker's exec, or Podman's compatible one): the same runtime.terminal.Terminal
our own containers' terminals are, so the web terminal serves both.

    caller (web tier, or the agent's client) holds:
        master   the exec's connection to the engine, taken over after its
                 start: the terminal's raw bytes both ways (a socket, read
                 and written as a pty master is)
        ctl      one end of a SEQPACKET pair: {"resize": [rows, cols]} goes
                 out (the engine sets the exec's window), {"exit": N} comes
                 back when the process has ended
    a watcher thread here (in the process that talks to the engine) holds the
    other end and a copy of the connection, and
      - on a resize message, asks the engine (exec resize);
      - when the engine closes the connection (the process ended: `exit`, or
        the container stopped), reads the exit code from the engine (exec
        inspect) and sends it;
      - when the caller closes ctl (the page went, logout, no longer an
        operator), hangs the process up as closing a terminal does: SIGHUP to
        the exec's host pid as the engine reports it, SIGKILL HANGUP_GRACE
        seconds later if it still runs.  The engine's API has no way to end
        an exec; its clients leave the shell running when they go.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time

from typing import Callable, Protocol, Sequence, TypedDict, runtime_checkable

from ..terminal import ENV, HANGUP_GRACE, Terminal, check_shell, check_size
from . import Found


class ExecState(TypedDict):
    """An exec as its engine reports it: whether it runs, its host pid, its exit code."""
    running: bool
    pid: int | None
    exit_code: int | None


class Closable(Protocol):
    def close(self) -> object: ...


@runtime_checkable
class ExecSource(Protocol):
    """A source whose engine runs a process on a terminal in a container
    (docker.EngineSource: Docker's exec API, or Podman's)."""

    def exec_tty(self, ident: str, argv: Sequence[str], env: Sequence[str], rows: int,
                 cols: int) -> tuple[Closable, socket.socket, str]: ...

    def exec_state(self, exec_id: str) -> ExecState: ...

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None: ...


class EngineTerminal(Terminal):
    """A Terminal whose master is the engine's connection: the window size goes
    to the watcher (the engine sets it), not to an ioctl."""

    def resize(self, rows: int, cols: int) -> None:
        rows, cols = check_size(rows, cols)
        self._size = (rows, cols)
        try:
            self.ctl.send(json.dumps({"resize": [rows, cols]}).encode())
        except (BlockingIOError, BrokenPipeError, ConnectionError):
            pass

    def size(self) -> tuple[int, int]:
        return getattr(self, "_size", (self.info.get("rows", 24), self.info.get("cols", 80)))

    def read(self, size: int = 1 << 16) -> bytes | None:
        try:
            return super().read(size)
        except ConnectionError:
            return b""

    def write(self, data: bytes) -> int:
        try:
            return super().write(data)
        except ConnectionError:
            return len(data)              # the process is gone: drop it


def open_terminal(source: object, found: Found, *, shell: str = "auto", rows: int = 24,
                  cols: int = 80, on_end: Callable[[], None] | None = None) -> EngineTerminal:
    """A shell (runtime.terminal.SHELLS) on a terminal in running container found.
    on_end() is called once the watcher is done with it (the process ended and
    the caller went, or it was hung up), as runtime.terminal's on_end is once
    its helper is reaped: the agent counts both kinds toward one cap."""
    from ..errors import Conflict, InvalidArgument
    argv = check_shell(shell)
    rows, cols = check_size(rows, cols)
    if not isinstance(source, ExecSource):
        raise InvalidArgument(f"{found.engine} container {found.name!r}: no API to run a shell through "
                              f"({found.owner_note})")
    if found.state != "running":
        raise Conflict(f"{found.engine} container {found.name!r} is {found.state}, not running")
    io, conn, exec_id = source.exec_tty(found.id, argv, ENV, rows, cols)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        master = os.dup(conn.fileno())
    except OSError:
        ours.close()
        theirs.close()
        io.close()
        raise
    threading.Thread(target=_watch, args=(source, exec_id, io, conn, ours, on_end), daemon=True,
                     name=f"{found.engine}-terminal").start()
    return EngineTerminal(master, theirs, {"id": found.id, "key": found.key, "name": found.name,
                                           "engine": found.engine, "shell": shell, "exec": exec_id,
                                           "rows": rows, "cols": cols})


def _watch(source: ExecSource, exec_id: str, io: Closable, conn: socket.socket, ctl: socket.socket,
           on_end: Callable[[], None] | None = None) -> None:
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLRDHUP)
    poller.register(ctl.fileno(), select.POLLIN)
    ended = False
    try:
        while True:
            for fd, ev in poller.poll():
                if fd == ctl.fileno():
                    msg = ctl.recv(4096) if ev & select.POLLIN else b""
                    if not msg:                                 # the caller went
                        if not ended:
                            _hang_up(source, exec_id)
                        return
                    _resize(source, exec_id, msg)
                elif not ended:                                 # the engine closed it: the process ended
                    ended = True
                    poller.unregister(conn.fileno())
                    try:
                        ctl.send(json.dumps({"exit": _exit_code(source, exec_id)}).encode())
                    except OSError:
                        return
    except OSError:
        return
    finally:
        ctl.close()
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        io.close()
        if on_end is not None:
            on_end()


def _resize(source: ExecSource, exec_id: str, msg: bytes) -> None:
    try:
        rows, cols = json.loads(msg)["resize"]
        source.exec_resize(exec_id, *check_size(rows, cols))
    except Exception:  # noqa: BLE001, S110 - a bad size or an exec ending meanwhile: nothing to do
        pass


def _exit_code(source: ExecSource, exec_id: str) -> int:
    """Its exit code once the engine has it (-1 if it cannot say)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            state = source.exec_state(exec_id)
        except Exception:  # noqa: BLE001 - the container is gone with it
            return -1
        if not state["running"] and state["exit_code"] is not None:
            return int(state["exit_code"])
        if time.monotonic() > deadline:
            return -1
        time.sleep(0.05)


def _hang_up(source: ExecSource, exec_id: str) -> None:
    """SIGHUP, then SIGKILL after HANGUP_GRACE, to the exec's process while the engine says it runs."""
    for sig, wait in ((signal.SIGHUP, HANGUP_GRACE), (signal.SIGKILL, 0.0)):
        try:
            state = source.exec_state(exec_id)
        except Exception:  # noqa: BLE001 - gone already
            return
        if not state["running"] or not state["pid"]:
            return
        try:
            os.kill(state["pid"], sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                if not source.exec_state(exec_id)["running"]:
                    return
            except Exception:  # noqa: BLE001
                return
