"""The fork server, and the client half that talks to it.

One small Python per runtime root, started on first use as a fresh
interpreter (`python -I -S`, stdlib only) in its own session, listening on
ROOT/run/forkserver.sock.  Callers (the CLI, the dashboard's threads, the
agent) send it a start request; it hands the request to a spare shim
(runtime/shim.py) it forked ahead of need.  A fork of this small,
single-threaded process is safe and cheap, and the shim shares its pages,
so each shim costs about a megabyte.

The server's own imports are small (this module is imported by every CLI
command for the client half); it loads the shim, the init and the cgroup
drivers in serve(), before its first fork, so every shim shares them.
"""
from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import _socket
import time

from . import daemons
from .errors import TerrariumError

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, NoReturn

SOCKET = "forkserver.sock"
IDLE_EXIT_SECONDS = 60.0
SPARES = 2                    # spare shims kept ready (one is made at once when none is left)
REFILL_QUIET_SECONDS = 0.03   # the second only after this long without a request (see serve)


# --------------------------------------------------------------- the client

def ensure_forkserver(run_dir: str, cgroup_parent: str | None = None,
                      on_start: Callable[[], object] | None = None) -> None:
    """Start run_dir's fork server unless one answers (runtime/daemons.py); its
    cgroup is <cgroup_parent>/_daemons.

    on_start() is called after a start: a fresh server follows a crash, a
    reboot or a minute idle, the moment to sweep what a crash left."""
    path = os.path.join(run_dir, SOCKET)

    if daemons.answers(path):
        return
    try:
        daemons.start(run_dir, name="forkserver", module="forkserver", answers=lambda: daemons.answers(path),
                      cgroup_parent=cgroup_parent or daemons.default_cgroup_parent(), sealed=True)
    except OSError as e:
        raise TerrariumError(str(e)) from None
    if on_start is not None:
        on_start()


def _connect(path: str) -> _socket.socket:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s


def forkserver_call(run_dir: str, request: dict[str, Any], on_start: Callable[[], object] | None = None,
                    while_waiting: Callable[[], object] | None = None,
                    on_init: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Send the fork server a request and return its answer; while_waiting()
    runs between the two (work that can overlap the server's).

    on_init(pid): a bridged container's shim says {"net": pid} first and waits
    while on_init connects init's network namespace; it answers "go", or the
    error on_init raised (the shim then fails the start with it)."""
    path = os.path.join(run_dir, SOCKET)
    try:
        s = _connect(path)
    except OSError:
        ensure_forkserver(run_dir, request.get("cgroup_parent"), on_start)
        s = _connect(path)
    try:
        s.sendall(json.dumps(request).encode() + b"\n")
        if while_waiting is not None:
            while_waiting()
        buf = _read_line(s)
        if on_init is not None and buf.startswith(b'{"net":'):
            answer: dict[str, object]
            try:
                on_init(json.loads(buf)["net"])
                answer = {"go": True}
            except Exception as e:  # noqa: BLE001 - the shim must hear it, and fails the start
                answer = {"error": str(e) or type(e).__name__}
            s.sendall(json.dumps(answer).encode() + b"\n")
            buf = _read_line(s)
    finally:
        s.close()
    if not buf:
        raise TerrariumError("the fork server closed the connection without an answer")
    reply: dict[str, Any] = json.loads(buf)           # the shim's (runtime/shim.py send_reply)
    return reply


def _read_line(s: _socket.socket) -> bytes:
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
        if buf.endswith(b"\n"):
            break
    return buf


def stop_forkserver(run_dir: str) -> None:
    daemons.stop(run_dir, name="forkserver", comm="terrarium-fork")
    for name in ("forkserver.pid", "forkserver.sock"):     # it leaves them on SIGTERM
        try:
            os.unlink(os.path.join(run_dir, name))
        except OSError:
            pass


# --------------------------------------------------------------- the server

def _accept(server: socket.socket) -> _socket.socket:
    """server.accept()'s connection, blocking, without the Python wrapper."""
    fd, _ = server._accept()  # type: ignore[attr-defined]  # CPython's, not in typeshed: (fd, address)
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)


class Spare:
    """The server's handle on a spare shim: its pid and the channel to it."""

    def __init__(self, listening: socket.socket, cgroup_parent: str | None):
        from .shim import run_spare
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            listening.close()
            ours.close()
            run_spare(theirs, cgroup_parent)
        theirs.close()
        self.pid, self.channel = pid, ours

    def hand_over(self, request: bytes, conn: _socket.socket) -> bool:
        """Give the spare a request and the caller's connection; False if it is gone."""
        try:
            self.channel.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
            return True
        except OSError:
            return False
        finally:
            self.channel.close()

    def discard(self, wait: float = 1.0) -> None:
        """Close the channel: the spare and its waiting init leave by themselves."""
        self.channel.close()
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return
        try:
            daemons.wait_readable([fd], wait)
        finally:
            os.close(fd)


def _children(but: set[int]) -> set[int] | None:
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return {int(p) for p in f.read().split()} - but
    except OSError:
        return None     # cannot tell


def serve(run_dir: str, ready_fd: int | None = None) -> None:
    """Accept start requests on run_dir/forkserver.sock until idle with no shims.

    Spare shims are kept ready (zygotes: each one's init already has fresh
    namespaces and its own cgroup, and waits to learn which container it
    is), so a start costs no fork, no unshare and no cgroup move on the
    caller's time.

    When to make them matters as much.  Moving a spare's init into its v1
    cgroup holds cgroup_mutex for a whole RCU grace period (10-25 ms here),
    and every cgroup rmdir, mkdir or rename on the host waits for it: made
    right after a start, the next spare's move stalled the cleanup of a
    container that had just exited (`run --rm` of /bin/true: 26 -> 16 ms
    without the stall, measured).  So when one of SPARES is left after a
    start, the replacement waits for REFILL_QUIET_SECONDS without requests;
    only when none is left is one made at once (back-to-back starts)."""
    from . import linux   # here, not at the top: the client half must not load ctypes
    path = os.path.join(run_dir, SOCKET)
    server = daemons.listen(path, socket.SOCK_STREAM)
    linux.set_name("terrarium-fork")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # shims are reaped by the kernel
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with open(os.path.join(run_dir, "forkserver.pid"), "w") as f:
        f.write(str(os.getpid()))
    from . import cgroups, init, model, shim  # noqa: F401 - load before forking, so shims share it
    linux.cap_last_cap()            # cached for every container's init
    gc.collect()
    gc.freeze()                     # keep refcount churn off the shared pages
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    spares: list[Spare] = []
    # One poll object for the server's life: poll, not select (fds >= 1024),
    # and nothing allocated per wait (pages written here after a fork stop
    # being shared with the shims forked before it).
    waiting = select.poll()
    waiting.register(server, select.POLLIN)
    try:
        idle_since = last_request = time.monotonic()
        while True:
            now = time.monotonic()
            quiet_at = last_request + REFILL_QUIET_SECONDS
            if len(spares) < SPARES and (not spares or now >= quiet_at):
                spares.append(Spare(server, _last_parent))
                continue
            timeout = 5.0 if len(spares) == SPARES else quiet_at - now
            ready = waiting.poll(max(0, int(timeout * 1000) + 1))
            if not ready:
                children = _children(but={sp.pid for sp in spares})
                if time.monotonic() - idle_since > IDLE_EXIT_SECONDS and children == set():
                    break
                continue
            idle_since = last_request = time.monotonic()
            try:
                conn = _accept(server)
            except OSError:
                continue
            _handle(conn, server, spares)
        # Going idle: first make new clients start a new server (no socket file),
        # then answer whoever connected before the unlink, so no request is lost.
        try:
            os.unlink(path)
        except OSError:
            pass
        server.setblocking(False)
        while True:
            try:
                conn = _accept(server)
            except OSError:
                break
            conn.setblocking(True)
            _handle(conn, server, spares)
    finally:
        for sp in spares:
            sp.discard()
        daemons.leave()
    os._exit(0)


_last_parent: str | None = None      # the cgroup parent the next spare prepares under


def _exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _handle(conn: _socket.socket, server: socket.socket, spares: list[Spare]) -> None:
    """Answer one connection; a start takes the oldest spare from spares."""
    from .shim import cgroup_driver, send_reply
    try:
        conn.settimeout(5.0)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            buf += chunk
        req = json.loads(buf)
    except (OSError, ValueError):
        conn.close()
        return
    conn.settimeout(None)
    if req.get("op") == "ping":
        send_reply(conn, {"ok": True, "pid": os.getpid()})
        return
    if req.get("op") == "release-lease":
        conn.close()
        _release_lease(os.path.dirname(server.getsockname()), req.get("id"))
        return
    global _last_parent
    try:
        cgroup_driver(req["cgroup_parent"])      # made once here, inherited by every shim
        _last_parent = req["cgroup_parent"]
    except Exception:  # noqa: BLE001 - the shim will report it to the caller
        pass
    for _ in range(SPARES + 1):             # spares that died meanwhile: the next, or a fresh one
        spare = spares.pop(0) if spares else Spare(server, _last_parent)
        if spare.hand_over(buf, conn):
            break
    conn.close()


def _release_lease(run_dir: str, cid: object) -> None:
    """A --rm shim removed its bridged container: free the network lease (and
    its hosts entries and published ports' rules), which the shim cannot do
    itself: its PID namespace died with init, so it can neither fork (nft) nor
    start a thread (pyroute2's).  In a child, so the server goes on at once;
    the kernel reaps it.  A failure leaves the lease to the next sweep."""
    if not isinstance(cid, str) or len(cid) != 64 or any(c not in "0123456789abcdef" for c in cid):
        return
    if os.fork() != 0:
        return
    try:
        from .network import Networks
        root = os.path.dirname(run_dir)
        Networks(root, os.path.join(root, "containers")).release(cid)
    except BaseException:  # noqa: BLE001 - a child: it must only ever end here
        os._exit(1)
    os._exit(0)


def main(argv: list[str]) -> None:
    """`python -I -S -c ... RUN_DIR CGROUP_PARENT` (daemons.start): daemonise,
    move into the helpers' cgroup (the shims inherit it), then serve."""
    ready_fd = daemons.detach()
    daemons.settle(argv[1], argv[2])
    serve(argv[1], ready_fd=ready_fd)
