"""The CLI server: a warm `runtime.cli` that fresh `terrarium` commands borrow.

One per state root, on ROOT/run/cli.sock, started by the first command that
finds none (runtime.client) and gone after a minute without one.  It is a
fresh `python -I -S` (stdlib only, like the fork server) that has imported
everything a command needs and keeps one *worker* forked ahead of need:

    client ──connect──▶ worker (a fork of the server, blocked in accept)
           ──argv, env, umask, fds 0-2 and cwd (SCM_RIGHTS)──▶
           ◀──"pid N"──   worker becomes the command: dup2, fchdir, environ,
                          then runtime.cli.main(argv), output straight to the
                          client's own stdout/stderr
           ◀──"exit N"──  client exits N

The server only forks: when its worker reports "busy" it makes the next one
(as soon as the busy one ends, or after SPARE_DELAY, so that the fork does
not compete with the command for the CPUs).  Signals reach the worker from
the client (pidfd_send_signal).  The worker dies with its client, as the
command it stands for would: the connection is set O_ASYNC, and SIGIO's
default action ends the worker when the client hangs up.

A server whose code changed on disk since it started answers "stale" and
exits; the client then runs the command itself, and the next one starts a
fresh server.
"""
from __future__ import annotations

import fcntl
import gc
import io
import os
import signal
import socket
import struct
import sys
import time

from . import daemons, linux
from .client import PROTOCOL, SOCKET

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn

# What a server's code was loaded from: (directory, file name, mtime_ns, size) of each runtime/*.py
CodeSignature = tuple[tuple[str, str, int, int], ...]

IDLE_EXIT_SECONDS = 60.0    # a server with no command for this long leaves
SPARE_DELAY = 0.05          # seconds after a worker turns busy before the next fork
# glibc's malloc, as the server starts (workers inherit it): big blocks (up to
# 4 MiB) from the heap, and up to 32 MiB of freed heap kept, not handed back.
# By default each thread's arena hands back its free top past ~2 MiB and
# takes it again at the next chunk, a page fault every 4 KiB: a pull's 1 MiB
# chunks, in flight in three download threads and three unpack threads,
# cost 14.6k minor faults a pull against 7.6k so (CPU 524 -> 478 ms a `pull`
# of 100 MB, medians of 7, two alternating rounds, load 2.8-4.1).  A worker
# runs one command and exits: what it keeps is given back then.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=33554432"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))     # for code_signature()


# ------------------------------------------------------------------ control

def ensure_server(run_dir: str) -> None:
    """Start run_dir's CLI server unless one answers (runtime/daemons.py)."""
    path = os.path.join(run_dir, SOCKET)
    daemons.start(run_dir, name="cli", module="cliserver",
                  answers=lambda: daemons.answers(path, socket.SOCK_SEQPACKET),
                  cgroup_parent=daemons.default_cgroup_parent(),
                  environ=None if "GLIBC_TUNABLES" in os.environ else {"GLIBC_TUNABLES": MALLOC_TUNABLES})


def stop_server(run_dir: str) -> None:
    """Stop run_dir's CLI server and its spare worker (busy workers finish)."""
    daemons.stop(run_dir, name="cli", comm="terrarium-cli")


def main(argv: list[str]) -> None:
    """`python -I -S -c ... RUN_DIR CGROUP_PARENT` (daemons.start): daemonise,
    move into the helpers' cgroup, then serve."""
    ready_fd = daemons.detach()
    daemons.settle(argv[1], argv[2])
    serve(argv[1], ready_fd=ready_fd)


# ------------------------------------------------------------------- server

def serve(run_dir: str, ready_fd: int | None = None) -> None:
    path = os.path.join(run_dir, SOCKET)
    listener = daemons.listen(path, socket.SOCK_SEQPACKET)
    listener.setblocking(False)
    linux.set_name("terrarium-cli")
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _warm(run_dir)
    pull_warm = _warm_pull(run_dir)
    signature = code_signature()
    with open(os.path.join(run_dir, "cli.pid"), "w") as f:
        f.write(str(os.getpid()))
    gc.collect()
    gc.freeze()                                 # workers share these pages untouched by GC
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)

    idle_exit = _idle_exit_seconds()
    spare: _Worker | None = None
    busy: dict[int, int] = {}                   # pid -> pidfd of workers running a command
    spare_due = 0.0                             # monotonic time to fork the next spare
    idle_since = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if spare is None and now >= spare_due:
                if not pull_warm:               # the root pulled since: the next workers have it loaded
                    pull_warm = _warm_pull(run_dir)
                    if pull_warm:
                        gc.freeze()
                # SIGTERM (stop_server) held off from the fork to the assignment:
                # between the two it would leave a worker the finally below does
                # not know to dismiss, waiting on the socket for ever.
                old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                try:
                    spare = _Worker(listener, signature)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            waits = list(busy.values()) + ([spare.report] if spare else [])
            timeout: float | None
            if spare is None:
                timeout = max(0.0, spare_due - now)
            else:
                timeout = max(0.05, idle_since + idle_exit - now) if not busy else None
            ready = daemons.wait_readable(waits, timeout)
            for pid, fd in list(busy.items()):
                if fd in ready:
                    os.close(fd)
                    del busy[pid]
                    _reap(pid)
                    spare_due = 0.0             # the CPUs are free again
                    idle_since = time.monotonic()
            if spare is not None and spare.report in ready:
                word = spare.read_report()
                if word == b"busy":
                    busy[spare.pid] = spare.pidfd()
                    spare_due = time.monotonic() + SPARE_DELAY
                    idle_since = time.monotonic()
                    spare.close()
                    spare = None
                else:                           # b"stale", or it died: start over
                    spare.close()
                    _reap(spare.pid)
                    spare = None
                    if word == b"stale":
                        break
                    spare_due = time.monotonic() + 0.5      # no tight loop of failing forks
            if (spare is not None and not busy
                    and time.monotonic() - idle_since > idle_exit):
                break
    finally:
        # New clients start a new server from here on.  A client already
        # queued sees the connection close unanswered and runs the command
        # itself; a command a worker has taken runs to its end.
        for name in (path, os.path.join(run_dir, "cli.pid")):
            try:
                os.unlink(name)
            except OSError:
                pass
        if spare is not None:
            spare.dismiss()
        for pid, fd in busy.items():
            os.close(fd)
        daemons.leave()
    os._exit(0)


def _idle_exit_seconds() -> float:
    """IDLE_EXIT_SECONDS, or $TERRARIUM_CLI_IDLE_EXIT (the tests' short wait)."""
    try:
        return max(0.1, float(os.environ["TERRARIUM_CLI_IDLE_EXIT"]))
    except (KeyError, ValueError):
        return IDLE_EXIT_SECONDS


def _exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _warm(run_dir: str) -> None:
    """Import what commands use and walk the common paths once, so that every
    worker starts with it loaded (the imports are most of a cold CLI's time)."""
    import argparse  # noqa: F401
    import json  # noqa: F401
    import shutil  # noqa: F401
    import subprocess  # noqa: F401
    import tarfile  # noqa: F401
    from . import cgroups, cli, containers, overlay, spec  # noqa: F401
    from .images import store  # noqa: F401
    cli.warm_parsers()
    root = os.path.dirname(os.path.abspath(run_dir))
    if os.path.isdir(os.path.join(root, "networks")):      # a root that uses networks: pyroute2 too
        from . import network
        network.pyroute2()
    saved = os.dup(1)
    null = os.open("/dev/null", os.O_WRONLY)
    try:
        os.dup2(null, 1)
        try:
            cli.main(["--root", root, "ps", "-a"])   # read-only (`images` would build the built-ins)
        except (Exception, SystemExit):  # noqa: BLE001 - warming only
            pass
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _warm_pull(run_dir: str) -> bool:
    """Once the root has pulled or pushed (ROOT/distribution exists), import
    what those load (runtime.images.distribution.warm); True once done."""
    root = os.path.dirname(os.path.abspath(run_dir))
    if not os.path.isdir(os.path.join(root, "distribution")):
        return False
    try:
        from .images import distribution
        distribution.warm()
    except ImportError:
        pass                                    # a command that needs them says so
    return True


def code_signature() -> CodeSignature:
    """What a server's code was loaded from: every runtime/*.py's mtime and size."""
    sig: list[tuple[str, str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(_PACKAGE_DIR):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                sig.append((dirpath, name, st.st_mtime_ns, st.st_size))
    sig.sort()
    return tuple(sig)


class _Worker:
    """The server's handle on its spare worker: pid and a pipe it reports on."""

    def __init__(self, listener: socket.socket, signature: CodeSignature) -> None:
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            try:
                _work(listener, report_w, signature)
            finally:
                os._exit(1)
        os.close(report_w)
        self.pid, self.report = pid, report_r

    def read_report(self) -> bytes:
        try:
            return os.read(self.report, 16)
        except OSError:
            return b""

    def pidfd(self) -> int:
        return os.pidfd_open(self.pid)

    def close(self) -> None:
        os.close(self.report)

    def dismiss(self) -> None:
        """Tell the spare to leave unless it has just taken a command.

        SIGUSR1 ends a worker still waiting in poll; one that has accepted
        ignores it, reports "busy" and is left to finish its command."""
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            pass
        if self.read_report() == b"":
            _reap(self.pid)
        self.close()


# ------------------------------------------------------------------- worker

def _work(listener: socket.socket, report: int, signature: CodeSignature) -> None:
    """A spare worker: take one connection, become that command, exit."""
    signal.signal(signal.SIGUSR1, _leave_if_idle)
    signal.signal(signal.SIGTERM, _leave_if_idle)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})    # blocked by serve() for the fork
    # Copy the server's pages now rather than fault by fault during the
    # command (25.8 vs 31.5 ms for a `run --rm`, measured): a worker then
    # holds ~13 MB of its own, less than the fresh interpreter it replaces.
    linux.populate_private_memory()
    while True:
        daemons.wait_readable([listener.fileno()], None)
        try:
            conn, _ = listener.accept()
            break
        except (BlockingIOError, InterruptedError):
            continue                           # someone else's, or a signal
    # From here on the client's command is ours: a dismissal no longer ends it
    # (a signal in between ends us before "pid": the client runs it itself).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    listener.close()
    conn.setblocking(True)
    stale = code_signature() != signature
    os.write(report, b"stale" if stale else b"busy")
    os.close(report)
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    if stale or uid != os.getuid():
        _send(conn, b"stale")
        _exit_worker()
    msg, fds = _receive(conn)
    if msg is None:
        _send(conn, b"stale")
        _exit_worker()
    argv = _become(msg, fds)
    _send(conn, b"pid %d" % os.getpid())
    fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(conn.fileno(), fcntl.F_SETFL, fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) | os.O_ASYNC)
    code = _run_cli(argv)
    _send(conn, b"exit %d" % code)
    _exit_worker()


def _exit_worker() -> NoReturn:
    """A worker that took a command ends; it may be the last helper if its
    server has left meanwhile (then it removes their cgroup, see daemons.leave)."""
    daemons.leave()
    os._exit(0)


def _leave_if_idle(signum: int, frame: FrameType | None) -> NoReturn:
    os._exit(0)


def _receive(conn: socket.socket) -> tuple[bytes | None, list[int]]:
    fd_size = struct.calcsize("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(1 << 20, socket.CMSG_SPACE(8 * fd_size))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fd_size
            fds.extend(struct.unpack(f"{usable // fd_size}i", data[:usable]))
    if not msg.startswith(PROTOCOL + b"\0") or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        return None, []
    return msg, fds


def _become(msg: bytes, fds: list[int]) -> list[str]:
    """Take on the client's stdio, working directory, umask and environment."""
    fields = msg.split(b"\0")
    umask, argc = int(fields[1]), int(fields[2])
    argv = [os.fsdecode(a) for a in fields[3:3 + argc]]
    env = fields[3 + argc:]
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.umask(umask)
    os.environb.clear()
    for item in env:
        key, sep, value = item.partition(b"=")
        if sep and key:
            os.environb[key] = value
    enc, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                 encoding=enc, errors=errors)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                  encoding=enc, errors=errors, line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                  encoding=enc, errors="backslashreplace", line_buffering=True)
    sys.argv = ["terrarium", *argv]
    signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a fresh interpreter
    for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    linux.set_name("terrarium")
    return argv


def _run_cli(argv: list[str]) -> int:
    from .cli import main as cli_main
    try:
        code = cli_main(argv)
    except SystemExit as e:                    # argparse: usage errors, --help
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - as a crashing command would: a traceback, 1
        import traceback
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _send(conn: socket.socket, data: bytes) -> None:
    try:
        conn.send(data)
    except OSError:
        pass
