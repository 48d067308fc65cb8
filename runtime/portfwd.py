"""Published ports in userland, where nftables is absent (runtime/network.py).

With nftables a published port is a DNAT rule and no process is involved.
Without it the container's shim (runtime/shim.py) binds each host port
itself, before the container's command runs (a port taken by something
else fails the start, as Docker's does), and once the container runs forks
one *forwarder* for all of them (``terrarium-ports``), beside it as the
health checker is: in the host's PID and network namespaces, with the
listening sockets and nothing else of the shim's.  It lives exactly as long
as the container's init: it watches init's pidfd and exits when init does
(also when the shim was SIGKILLed meanwhile), and the shim SIGKILLs and
reaps it when it sees init exit, before it records the exit.

- TCP: each accepted connection gets its own connection to the container's
  address and port and two threads copying bytes, one each way; EOF one way
  is passed on as a half close (shutdown SHUT_WR), so request/response
  protocols that close their sending side work.
- UDP: each client address gets its own socket connected to the container's
  port (so replies find their client), dropped after UDP_IDLE seconds
  without traffic.

The container sees connections coming from its bridge's gateway address (as
with Docker's userland proxy), not from the client.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .network import Forward

UDP_IDLE = 60.0
CONNECT_TIMEOUT = 5.0
BUF = 65536
_Address = tuple[str, int]            # an IPv4 socket address


def bind(forwards: list[Forward]) -> list[tuple[socket.socket, Forward]]:
    """Listening sockets for the start request's ``net["forward"]`` entries
    ({proto, host_ip, host_port, container_port, address}); the error names
    the port that could not be bound, and no socket is left open."""
    out: list[tuple[socket.socket, Forward]] = []
    try:
        for f in forwards:
            udp = f["proto"] == "udp"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            out.append((s, f))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((f.get("host_ip") or "0.0.0.0", f["host_port"]))
            except OSError as e:
                raise OSError(e.errno, f"port {f.get('host_ip') or '0.0.0.0'}:{f['host_port']}/{f['proto']} "
                                       f"cannot be published: {e.strerror}") from None
            if not udp:
                s.listen(128)
    except BaseException:
        for s, _ in out:
            s.close()
        raise
    return out


def spawn(listeners: list[tuple[socket.socket, Forward]], init_pid: int, close_fds: Iterable[int] = ()) -> int:
    """In the shim, once the container runs: fork the forwarder (its pid).
    The shim's copies of the listening sockets are closed here."""
    from .lifecycle import _host_pid_namespace
    _host_pid_namespace()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            for fd in close_fds:
                os.close(fd)
            _serve(listeners, init_pid)
        except BaseException:  # noqa: BLE001 - a child of the shim: never back into its code
            status = 1
        finally:
            os._exit(status)
    for s, _ in listeners:
        s.close()
    return pid


def _serve(listeners: list[tuple[socket.socket, Forward]], init_pid: int) -> None:
    from . import linux
    linux.set_name("terrarium-ports")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    pidfd = os.pidfd_open(init_pid)
    poll = select.poll()
    poll.register(pidfd, select.POLLIN)
    by_fd: dict[int, tuple[socket.socket, Forward, _Udp | None]] = {}
    for s, f in listeners:
        s.setblocking(False)
        poll.register(s.fileno(), select.POLLIN)
        by_fd[s.fileno()] = (s, f, _Udp(s, f, poll) if f["proto"] == "udp" else None)
    while True:
        for fd, _ in poll.poll(int(UDP_IDLE * 1000 / 4)):
            if fd == pidfd:
                return                                 # init exited: so does the forwarder
            if fd in by_fd:
                s, f, udp = by_fd[fd]
                if udp is None:
                    _accept(s, f)
                else:
                    udp.from_client()
            else:
                for _, _, udp in by_fd.values():
                    if udp is not None and udp.from_container(fd):
                        break
        for _, _, udp in by_fd.values():
            if udp is not None:
                udp.expire()


def _accept(listener: socket.socket, f: Forward) -> None:
    try:
        client, _ = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    threading.Thread(target=_connect, args=(client, (f["address"], f["container_port"])), daemon=True).start()


def _connect(client: socket.socket, target: _Address) -> None:
    client.setblocking(True)
    try:
        upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
    except OSError:
        client.close()                                 # nothing listens in the container: refused
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    back.start()
    _copy(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """src → dst until EOF (then half-close dst) or an error (then both ways end)."""
    try:
        while data := src.recv(BUF):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Udp:
    """One published UDP port: a socket per client towards the container."""

    def __init__(self, listener: socket.socket, f: Forward, poll: select.poll) -> None:
        self.listener, self.target, self.poll = listener, (f["address"], f["container_port"]), poll
        self.by_client: dict[_Address, tuple[socket.socket, float]] = {}
        self.by_fd: dict[int, _Address] = {}

    def from_client(self) -> None:
        try:
            data, client = self.listener.recvfrom(BUF)            # an _Address: AF_INET
        except (BlockingIOError, InterruptedError):
            return
        got = self.by_client.get(client)
        if got is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.setblocking(False)
            try:
                up.connect(self.target)
            except OSError:
                up.close()
                return
            self.by_fd[up.fileno()] = client
            self.poll.register(up.fileno(), select.POLLIN)
        else:
            up = got[0]
        self.by_client[client] = (up, time.monotonic())
        try:
            up.send(data)
        except OSError:
            pass

    def from_container(self, fd: int) -> bool:
        client = self.by_fd.get(fd)
        if client is None:
            return False
        up, _ = self.by_client[client]
        try:
            data = up.recv(BUF)
            self.listener.sendto(data, client)
            self.by_client[client] = (up, time.monotonic())
        except OSError:
            pass
        return True

    def expire(self) -> None:
        cut = time.monotonic() - UDP_IDLE
        for client, (up, seen) in list(self.by_client.items()):
            if seen < cut:
                self.poll.unregister(up.fileno())
                del self.by_fd[up.fileno()], self.by_client[client]
                up.close()
