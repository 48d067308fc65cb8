"""`exec`: start one more process inside a running container.

The new process joins what the container's init has — its cgroup, its IPC,
UTS, network, PID and mount namespaces (setns to the mount namespace also
sets the root) — then takes the same capabilities and no_new_privs, and
execs.  Joining a PID namespace only applies to children, hence the second
fork.  Uses fork: call it from a process without threads (the CLI).
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import termios

from . import linux
from .errors import ExecFailed, KernelError
from .shim import RESET_SIGNALS, exec_command

JOIN_ORDER = ("ipc", "uts", "net", "pid", "mnt")    # mnt last: it changes our root


def exec_in(rt, c, argv: list[str], env: list[str], *, tty: bool, workdir: str) -> int:
    ns_fds = []
    try:
        for ns in JOIN_ORDER:
            ns_fds.append(os.open(f"/proc/{c.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        for fd in ns_fds:
            os.close(fd)
        raise KernelError(e.errno, f"join container {c.name!r}") from None
    master = slave = None
    if tty:
        master, slave = container_pty(c.pid)
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # middle: joins, forks the real one
        os.close(err_r)
        try:
            rt.cgroups.attach(c.id, 0)
            for fd in ns_fds:
                linux.setns(fd, 0)
            child = os.fork()
            if child == 0:
                _become(argv, env, workdir, slave, err_w)
            os.close(err_w)
            while True:
                try:
                    _, status = os.waitpid(child, 0)
                    break
                except InterruptedError:
                    continue
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
        except BaseException as e:  # noqa: BLE001
            os.write(err_w, f"126:{e}".encode())
            os._exit(126)
    for fd in ns_fds:
        os.close(fd)
    os.close(err_w)
    if slave is not None:
        os.close(slave)
    error = b""
    while chunk := os.read(err_r, 4096):
        error += chunk
    os.close(err_r)
    if master is not None and not error:
        _proxy(master)
    if master is not None:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if error:
        code_s, _, message = error.decode(errors="replace").partition(":")
        raise ExecFailed(message, int(code_s))
    return 128 - code if code < 0 else code


_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431


def container_pty(pid: int) -> tuple[int, int]:
    """A pty pair from the container's own devpts instance (as Docker does), so
    `tty` inside names /dev/pts/N and the terminal is the container's."""
    import struct
    master = os.open(f"/proc/{pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))          # unlockpt
        n = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
        slave = os.open(f"/proc/{pid}/root/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        os.close(master)
        raise KernelError(e.errno, "allocate a terminal in the container") from None
    return master, slave


def _become(argv, env, workdir, slave, err_w: int) -> None:
    try:
        for sig in RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(workdir)
        if slave is not None:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
        linux.close_fds_on_exec(3)
        linux.limit_capabilities(linux.caps_mask())
        linux.set_no_new_privs()
        exec_command(argv, env)
    except BaseException as e:  # noqa: BLE001
        code = getattr(e, "exit_code", 126)
        try:
            os.write(err_w, f"{code}:{e}".encode())      # close-on-exec: EOF means exec worked
        finally:
            os._exit(code)


def _proxy(master: int) -> None:
    """Copy between our terminal and the pty until the process closes it."""
    stdin = sys.stdin.fileno()
    old = None
    if os.isatty(stdin):
        import tty as _tty
        old = termios.tcgetattr(stdin)
        try:
            winsz = fcntl.ioctl(stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, winsz)
        except OSError:
            pass
        _tty.setraw(stdin)
    fds = [master, stdin]
    try:
        while True:
            ready, _, _ = select.select(fds, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:          # EIO: the other side has closed
                    break
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    fds.remove(stdin)
                    os.write(master, b"\x04")
                else:
                    os.write(master, data)
    finally:
        if old is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, old)
