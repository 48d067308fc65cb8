"""`terrarium`, the command: a thin client of a warm CLI server.

A fresh Python spends its first ~20 ms starting and importing argparse,
json, re and the runtime before it can do any work.  So the command does
almost nothing itself: it connects to ROOT/run/cli.sock, hands over its
argv, environment, working directory and its stdin/stdout/stderr (the file
descriptors themselves, SCM_RIGHTS), forwards the signals it gets, and exits
with the code it is sent back.  The work is done by runtime.cliserver in a
process forked from a server that has all of that loaded already: the same
`runtime.cli.main`, writing straight to this process's terminal or pipe.

It runs the command in this process instead (`runtime.cli.main`, as before
the server existed) when:
- TERRARIUM_CLI_LOCAL=1 is set;
- the verb is `exec`: it relays the process's pipes or terminal itself, as
  the foreground process of the caller's terminal, with its window-size
  signals (exec is not on any hot path);
- the server can't be started, or goes away or turns out stale before it
  took the request.
After the server has taken a request, its answer is final: nothing runs twice.

Imports: only what the interpreter has loaded at start, plus _socket and
_signal (the C modules; `socket` and `signal` would pull in enum).
"""
import os
import sys

import _signal
import _socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType
    from typing import NoReturn

PROTOCOL = b"terrarium-cli/1"
SOCKET = "cli.sock"
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
_DEFAULT_ROOT = "/var/lib/terrarium"        # runtime.containers.DEFAULT_ROOT


class _Declined(Exception):
    """The server did not take the request: run it here instead."""


def main(argv: "Sequence[str] | None" = None) -> "NoReturn":
    """Exit with the command's code; never a traceback (TERRARIUM_DEBUG=1 shows one)."""
    try:
        _main(argv)
    except KeyboardInterrupt:                   # Ctrl-C before the server took the request
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - one line, as runtime.cli.main does
        sys.stderr.write(f"terrarium: internal error: {type(e).__name__}: {e}\n")
        if os.environ.get("TERRARIUM_DEBUG") == "1":
            import traceback
            traceback.print_exc()
        sys.exit(125)


def _main(argv: "Sequence[str] | None") -> "NoReturn":
    argv = sys.argv[1:] if argv is None else list(argv)
    if os.environ.get("TERRARIUM_CLI_LOCAL") == "1" or _verb(argv) in (None, "exec", "agent"):
        _local(argv)
    run_dir = os.path.join(os.path.abspath(_root(argv)), "run")
    try:
        sock = _connect(run_dir)
    except OSError:
        try:
            _start_server(run_dir)
            sock = _connect(run_dir)
        except Exception:  # noqa: BLE001 - no server: the command still works
            _local(argv)
    try:
        code = _remote(sock, argv)
    except _Declined:
        _local(argv)
    finally:
        sock.close()
    sys.exit(code)


def _local(argv: list[str]) -> "NoReturn":
    from .cli import main as cli_main
    sys.exit(cli_main(argv))


def _verb(argv: list[str]) -> str | None:
    """The first word that is not --root or its value (None: let argparse say)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--root":
            i += 2
        elif arg.startswith("--root="):
            i += 1
        elif arg.startswith("-"):
            return None                     # -h, --help, a typo: argparse answers
        else:
            return arg
    return None


def _root(argv: list[str]) -> str:
    """The state root as runtime.cli will see it: --root, $TERRARIUM_ROOT, the default."""
    for i, arg in enumerate(argv):
        if arg == "--root" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--root="):
            return arg[len("--root="):]
        if not arg.startswith("-"):
            break
    return os.environ.get("TERRARIUM_ROOT") or _DEFAULT_ROOT


def _connect(run_dir: str) -> _socket.socket:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        s.connect(os.path.join(run_dir, SOCKET))
    except OSError:
        s.close()
        raise
    return s


def _start_server(run_dir: str) -> None:
    from .cliserver import ensure_server
    ensure_server(run_dir)


def _request(argv: list[str]) -> bytes:
    umask = os.umask(0o022)
    os.umask(umask)
    env = [k + b"=" + v for k, v in os.environb.items()]
    fields = [PROTOCOL, b"%d" % umask, b"%d" % len(argv)] + [os.fsencode(a) for a in argv] + env
    return b"\0".join(fields)


def _remote(sock: _socket.socket, argv: list[str]) -> int:
    """Hand the command to the server; returns its exit code."""
    fds = [0, 1, 2]
    opened = []
    for fd in fds:                              # a closed stdio: give /dev/null, as a shell would
        try:
            os.fstat(fd)
        except OSError:
            opened.append(os.open("/dev/null", os.O_RDWR))
            fds[fd] = opened[-1]
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds.append(cwd)
    try:
        sock.sendmsg([_request(argv)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                         b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
    except OSError:
        raise _Declined from None
    finally:
        for fd in opened + [cwd]:
            os.close(fd)
    first = _recv(sock)
    if not first.startswith(b"pid "):
        raise _Declined                         # b"" (gone) or b"stale": nothing was run
    pidfd = None
    try:
        pidfd = os.pidfd_open(int(first[4:]))
    except OSError:
        pass                                    # already done and gone: nothing to signal

    def forward(signum: int, _frame: "FrameType | None") -> None:
        if pidfd is not None:
            try:
                _signal.pidfd_send_signal(pidfd, signum)
            except OSError:
                pass
    old = {sig: _signal.signal(sig, forward) for sig in FORWARDED}
    try:
        last = _recv(sock)
    finally:
        for sig, handler in old.items():
            _signal.signal(sig, handler)
        if pidfd is not None:
            os.close(pidfd)
    if last.startswith(b"exit "):
        return int(last[5:])
    sys.stderr.write("terrarium: error: the CLI server's worker ended without an exit code\n")
    return 125


def _recv(sock: _socket.socket) -> bytes:
    """One message from the server; b"" when it went away.  (A forwarded
    signal interrupts recv; Python runs the handler and resumes, PEP 475.)"""
    try:
        return sock.recv(64)
    except OSError:
        return b""
