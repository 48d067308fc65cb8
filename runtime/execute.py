"""`exec`: start one more process inside a running container, as Docker does.

Three processes take part, and only the last one is ever in the container:

- the caller (the `terrarium` command) keeps its terminal and descriptors to
  itself.  It gives the process pipes for stdin/stdout/stderr (stdin only
  with -i) and copies between them and its own, or, with -t, a terminal the
  process made inside the container; it forwards signals and returns the
  exit code.
- the joiner, forked from the caller: leaves the caller's session, puts the
  pipes on 0-2 and closes everything else, joins the container's cgroup,
  re-execs itself from a sealed copy of the interpreter (runtime/sealed.py:
  the process it forks will exec a program of the container's choosing,
  which must never find the host's interpreter behind /proc/self/exe), then
  joins all the namespaces at once through a pidfd of the init (setns(2)
  with a pidfd, Linux 5.8).  Joining a PID namespace applies to children only, so
  it forks the process, sends the caller a pidfd of it, waits and exits
  with its code.
- the process: a session of its own (no controlling terminal, so neither
  TIOCSTI nor /dev/tty reaches the caller's), the container's capabilities;
  with -t it opens the container's /dev/pts/ptmx itself, after the drop,
  and passes the master to the caller; no_new_privs; exec.

Nothing opens a path in the container before joining it (a container's PID 1
that chroots could make /proc/<pid>/root lead anywhere on the host), the
init's pid is checked against its recorded start time after the pidfd is
open (pid reuse), and both forks are not dumpable until exec: container
root, which lacks CAP_SYS_PTRACE, can neither trace the process nor open its
/proc/<pid>/fd, exe or mem while it is still Python.

Uses fork: call it from a process without threads (the CLI).
"""
from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import termios

from . import daemons, linux, pidinfo, sealed
from .errors import Conflict, ExecFailed
from .init import RESET_SIGNALS, exec_command, limit_capabilities_under_filter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, NoReturn
    from .containers import Runtime
    from .model import Container

    # hand_off(master, process, joiner): see exec_in
    HandOff = Callable[[int, int, int], object]

# What the init has: the namespaces it made (init is in the container's PID
# namespace; it shares the host's cgroup and user namespaces).  One setns()
# with a pidfd joins them together, mount last, as the kernel orders them.
JOIN_FLAGS = (linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWNET
              | linux.CLONE_NEWPID | linux.CLONE_NEWNS)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441          # open the pty's other side by the master, not by a path (4.13)
_PTMX_RDEV = os.makedev(5, 2)


def exec_in(rt: Runtime, c: Container, argv: list[str], env: list[str], *, pid_start: int | None,
            tty: bool = False, interactive: bool = False, workdir: str = "/",
            seccomp: bytes | None = None, no_new_privs: bool = True,
            size: bytes | None = None, hand_off: HandOff | None = None) -> int:
    """Run argv in container c, whose init is c.pid started at pid_start
    (clock ticks, as recorded at start); returns its exit code.  seccomp:
    the container's filter program (runtime.seccomp), loaded last, after
    no_new_privs; or, no_new_privs False, first, as the container's init does.

    With tty: size is the terminal's first struct winsize (else our own
    terminal's), and hand_off(master, process, joiner), if given, takes the
    pty master (it must close it) instead of our stdin/stdout being relayed,
    and returns once the joiner (a pidfd, readable at its exit) has exited;
    process is the process's pidfd (runtime/terminal.py)."""
    _fill_stdio()
    init = _open_init(c, pid_start)
    ctl = ctl_child = pipes = exe = None
    try:
        exe = sealed.interpreter_fd(donor=_forkserver_pid(rt))
        ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pipes = _Pipes(tty, interactive)
        return _start(rt, c, init, ctl, ctl_child, pipes, argv, env, tty=tty,
                      interactive=interactive, workdir=workdir, seccomp=seccomp, exe=exe,
                      no_new_privs=no_new_privs, size=size, hand_off=hand_off)
    finally:
        for sock in (ctl, ctl_child):
            if sock is not None:
                sock.close()
        if pipes is not None:
            pipes.close()
        if exe is not None:
            os.close(exe)
        os.close(init)


def _start(rt: Runtime, c: Container, init: int, ctl: socket.socket, ctl_child: socket.socket, pipes: _Pipes,
           argv: list[str], env: list[str], *, tty: bool, interactive: bool, workdir: str,
           seccomp: bytes | None = None, exe: int, no_new_privs: bool = True, size: bytes | None = None,
           hand_off: HandOff | None = None) -> int:
    if tty and size is None and hand_off is None:
        size = _window_size()
    relay = _Relay(tty, interactive)
    old = {sig: signal.signal(sig, relay.forward) for sig in FORWARDED}
    if tty:
        old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, relay.resize)
    try:
        pid = os.fork()
        if pid == 0:
            _join(rt, c, init, ctl_child.fileno(), pipes.child, exe,
                  dict(argv=argv, env=env, workdir=workdir, tty=tty, size=size, seccomp=seccomp,
                       no_new_privs=no_new_privs))
        joiner = os.pidfd_open(pid)
        try:
            ctl_child.close()
            pipes.close_child()
            error = _handshake(ctl, relay)
            if error is None and tty and relay.master is None:
                error = ("the process made no terminal", 126)
            if error is None and hand_off is not None:
                if relay.master is None or relay.process is None:   # a joiner killed before it sent them
                    error = ("the process was not started", 126)
                else:
                    master, relay.master = relay.master, None
                    hand_off(master, relay.process, joiner)
            elif error is None:
                relay.run(pipes, joiner)
            code = _reap(pid)
        finally:
            os.close(joiner)
            relay.close()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if error is not None:
        raise ExecFailed(*error)
    return code


def _forkserver_pid(rt: Runtime) -> int | None:
    """The root's fork server, whose sealed interpreter exec can borrow."""
    try:
        with open(os.path.join(rt.run_dir, "forkserver.pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _fill_stdio() -> None:
    """A closed 0, 1 or 2 becomes /dev/null, as a shell would give: else the
    next descriptor we open would take its number and the joiner's dup2 onto
    0-2 would replace it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)       # the lowest free number: fd


def _open_init(c: Container, pid_start: int | None) -> int:
    """A pidfd of the container's init, refused unless the pid still names it."""
    if c.pid is None:
        raise Conflict(f"container {c.name!r} is not running")
    try:
        fd = os.pidfd_open(c.pid)
    except ProcessLookupError:
        raise Conflict(f"container {c.name!r} is not running: its init (pid {c.pid}) has exited") from None
    # Checked after the open: if /proc/<pid> is the init now, the pidfd is too.
    now = pidinfo.process_start_time(c.pid)
    if now is None or now != pid_start:
        os.close(fd)
        if now is None:
            raise Conflict(f"container {c.name!r} is not running: its init (pid {c.pid}) has exited")
        raise Conflict(f"container {c.name!r} is not running: pid {c.pid} is no longer its init "
                       f"(started at tick {now}, the init at tick {pid_start})")
    return fd


def _window_size() -> bytes | None:
    for fd in (0, 1):
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            pass
    return None


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# ----------------------------------------------------------------- joiner

def _join(rt: Runtime, c: Container, init: int, ctl: int, stdio: tuple[int, ...], exe: int,
          what: dict[str, Any]) -> NoReturn:
    """In the fork, on the host side: leave the caller's session, take the
    pipes, join the container's cgroup, then become a sealed copy of the
    interpreter (runtime/sealed.py) and go on in _joined.  Never returns.

    The re-exec is for the CVE-2019-5736 class: the process forked below
    execs the container's program, and a #!/proc/self/exe in it must find
    a sealed copy, never the caller's (the host's) interpreter."""
    try:
        for sig in FORWARDED:               # the caller forwards them; this one only waits
            signal.signal(sig, signal.SIG_IGN)
        linux.set_dumpable(False)
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        _close_all_but(0, 1, 2, init, ctl, exe)
        rt.cgroup_driver(c).attach(c.id, 0)   # its own parent; while the host's /sys is ours
        args = os.memfd_create("terrarium-exec-args", os.MFD_CLOEXEC)
        what = dict(what, name=c.name, init=init, ctl=ctl, args=args,
                    size=what["size"] and base64.b64encode(what["size"]).decode(),
                    seccomp=what["seccomp"] and base64.b64encode(what["seccomp"]).decode())
        data = json.dumps(what).encode()
        while data:
            data = data[os.write(args, data):]
        os.lseek(args, 0, os.SEEK_SET)
        for fd in (init, ctl, args):
            os.set_inheritable(fd, True)
        code = (f"import sys; sys.executable = {sys.executable!r}; sys.path.insert(0, {daemons.PROJECT!r}); "
                f"from runtime.execute import _joined; _joined(int(sys.argv[1]))")
        path = f"/proc/self/fd/{exe}"      # close-on-exec: gone once the kernel has the file
        os.execv(path, [path, "-I", "-S", "-c", code, str(args)])
    except BaseException as e:  # noqa: BLE001 - the caller reports it
        _report(ctl, 126, f"join container {c.name!r}: {e}")
        os._exit(126)


def _joined(args_fd: int) -> NoReturn:
    """The joiner again, from the sealed copy: join the container's
    namespaces through the init's pidfd, fork the process, pass the caller
    its pidfd, wait, and exit with its code.  Never returns."""
    ctl, name = None, "?"
    try:
        linux.set_dumpable(False)           # exec made us dumpable again; inherited by the fork
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        with os.fdopen(args_fd, "rb") as f:
            what = json.loads(f.read())
        ctl, init, name = what["ctl"], what["init"], what["name"]
        os.set_inheritable(ctl, False)
        os.set_inheritable(init, False)
        size = what["size"] and base64.b64decode(what["size"])
        program = what["seccomp"] and base64.b64decode(what["seccomp"])
        linux.setns(init, JOIN_FLAGS)
        os.close(init)
        child = os.fork()
        if child == 0:
            _become(what["argv"], what["env"], what["workdir"], ctl, what["tty"], size, program,
                    what["no_new_privs"])
        pidfd = os.pidfd_open(child)
        _send_fd(ctl, b"pid", pidfd)
        os.close(pidfd)
        os.close(ctl)
        os._exit(_reap(child))
    except BaseException as e:  # noqa: BLE001 - the caller reports it
        if ctl is not None:
            _report(ctl, 126, f"join container {name!r}: {e}")
        os._exit(126)


def _close_all_but(*keep: int) -> None:
    low = 0
    for fd in sorted(keep) + [2 ** 31 - 1]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _report(ctl: int, code: int, message: str) -> None:
    try:
        os.write(ctl, f"err {code} {message}".encode(errors="replace")[:4000])
    except OSError:
        pass


# ---------------------------------------------------------------- process

def _become(argv: list[str], env: list[str], workdir: str, ctl: int, tty: bool, size: bytes | None,
            seccomp: bytes | None = None, no_new_privs: bool = True) -> NoReturn:
    """The process, in the container's namespaces and cgroup: exec argv.  Never returns."""
    try:
        for sig in RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()                          # no controlling terminal, none of the caller's
        try:
            os.chdir(workdir)
        except OSError as e:
            raise ExecFailed(f"exec: chdir to the working directory {workdir!r}: {e.strerror}", 126) from None
        linux.close_fds_on_exec(3)           # ctl too: EOF on it tells the caller exec worked
        if no_new_privs:
            linux.limit_capabilities(linux.caps_mask())
            if tty:
                _take_terminal(ctl, size)    # as the container's root, in its /dev
            linux.set_no_new_privs()
            linux.seccomp_filter(seccomp)    # the container's filter, last, as init does
        else:
            # no-new-privileges=false: the filter first, while we hold
            # CAP_SYS_ADMIN (the kernel's condition without no_new_privs), as init does
            linux.seccomp_filter(seccomp)
            limit_capabilities_under_filter()
            if tty:
                _take_terminal(ctl, size)
        exec_command(argv, env)
    except BaseException as e:  # noqa: BLE001
        code = getattr(e, "exit_code", 126)
        _report(ctl, code, str(e))
        os._exit(code)


def _take_terminal(ctl: int, size: bytes | None) -> None:
    """A pty of the container's own devpts, as Docker does (`tty` names
    /dev/pts/N inside): the master goes to the caller, the other side
    becomes our controlling terminal and 0-2."""
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    st = os.fstat(master)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _PTMX_RDEV:
        raise ExecFailed("the container's /dev/pts/ptmx is not a terminal multiplexer", 126)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))                # unlockpt
    peer = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if size is not None:
        fcntl.ioctl(peer, termios.TIOCSWINSZ, size)
    _send_fd(ctl, b"pty", master)
    os.close(master)
    fcntl.ioctl(peer, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(peer, fd)
    os.close(peer)


# ----------------------------------------------------------------- caller

class _Pipes:
    """The process's stdin/stdout/stderr: pipes whose other ends the caller
    keeps (not blocking, so one stalled stream never holds another).  With -t
    only the joiner has them: the process takes the pty."""
    stdin: int | None
    stdout: int | None
    stderr: int | None

    def __init__(self, tty: bool, interactive: bool):
        stdin_r, self.stdin = os.pipe()
        self.stdout, out_w = os.pipe()
        self.stderr, err_w = os.pipe()
        self.child: tuple[int, ...] = (stdin_r, out_w, err_w)
        if tty or not interactive:
            self.close_stdin()               # an empty stdin: reads end at once
        if tty:
            os.close(self.stdout)
            os.close(self.stderr)
            self.stdout = self.stderr = None
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                os.set_blocking(fd, False)

    def close_stdin(self) -> None:
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def close_child(self) -> None:
        for fd in self.child:
            os.close(fd)
        self.child = ()

    def close(self) -> None:
        self.close_child()
        self.close_stdin()
        for fd in (self.stdout, self.stderr):
            if fd is not None:
                os.close(fd)
        self.stdout = self.stderr = None


def _send_fd(ctl: int, tag: bytes, fd: int) -> None:
    sock = socket.socket(fileno=ctl)
    try:
        socket.send_fds(sock, [tag], [fd])
    finally:
        sock.detach()                        # ctl stays open: it is closed by exec or _exit


def _handshake(ctl: socket.socket, relay: _Relay) -> tuple[str, int] | None:
    """Read the joiner's and the process's messages until exec (EOF): the
    process's pidfd, the pty master with -t.  Returns (message, code) on failure."""
    while True:
        data, fds, _flags, _addr = socket.recv_fds(ctl, 4096, 2)
        if not data and not fds:
            return None
        if data == b"pid" and len(fds) == 1:
            relay.set_process(fds[0])
        elif data == b"pty" and len(fds) == 1:
            relay.set_master(fds[0])
        else:
            for fd in fds:
                os.close(fd)
            _, code, message = data.decode(errors="replace").split(" ", 2)
            return message, int(code)


class _Relay:
    """Copies between the caller's stdio and the process's pipes or pty until
    the process exits; forwards signals and window size changes."""

    def __init__(self, tty: bool, interactive: bool):
        self.tty, self.interactive = tty, interactive
        self.process: int | None = None
        self.master: int | None = None
        self.pending: list[int] = []
        self.saved_mode: list[Any] | None = None

    # signal handlers: they run in the main thread, and a poll they
    # interrupt resumes after them (PEP 475)
    def forward(self, signum: int, _frame: FrameType | None) -> None:
        if self.process is None:
            self.pending.append(signum)
            return
        try:
            signal.pidfd_send_signal(self.process, signum)
        except ProcessLookupError:
            pass

    def resize(self, _signum: int, _frame: FrameType | None) -> None:
        size = _window_size()
        if self.master is not None and size is not None:
            try:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
            except OSError:
                pass

    def set_process(self, pidfd: int) -> None:
        self.process = pidfd
        for signum in self.pending:
            self.forward(signum, None)
        self.pending = []

    def set_master(self, fd: int) -> None:
        self.master = fd
        os.set_blocking(fd, False)

    def close(self) -> None:
        if self.saved_mode is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved_mode)
            self.saved_mode = None
        for fd in (self.process, self.master):
            if fd is not None:
                os.close(fd)
        self.process = self.master = None

    def run(self, pipes: _Pipes, joiner: int) -> None:
        """Until the joiner (which waits for the process) exits; then what the
        process wrote before it exited, and no more: a background child that
        keeps the pipes open does not keep exec waiting."""
        # poll: epoll refuses a regular file as stdin; select() fails on fds >= 1024
        sel = selectors.PollSelector()
        if self.master is not None:
            outputs = {self.master: 1}
            feed = _Feed(self.master, b"\x04", None) if self.interactive else None
        else:
            # both open here: only -t closes them, and with -t there is a master
            outputs = {fd: n for fd, n in ((pipes.stdout, 1), (pipes.stderr, 2)) if fd is not None}
            feed = _Feed(pipes.stdin, b"", pipes.close_stdin) if pipes.stdin is not None else None
        if feed is not None and self.tty and os.isatty(0):
            import tty as _tty
            self.saved_mode = termios.tcgetattr(0)
            _tty.setraw(0, termios.TCSANOW)       # not TCSAFLUSH: keep what was typed ahead
        open_outputs = set(outputs)
        try:
            while True:
                _watch(sel, joiner, open_outputs, feed)
                for key, events in sel.select():
                    fd = key.fd
                    if fd == joiner:
                        for src, dst in outputs.items():
                            while _copy(src, dst):
                                pass
                        return
                    if fd in open_outputs and events & selectors.EVENT_READ:
                        if _copy(fd, outputs[fd]) == 0:
                            open_outputs.discard(fd)
                    if feed is not None and fd == feed.target and events & selectors.EVENT_WRITE:
                        feed.write()
                    elif feed is not None and fd == 0:
                        feed.read()
        finally:
            sel.close()


def _watch(sel: selectors.BaseSelector, joiner: int, outputs: set[int], feed: _Feed | None) -> None:
    """Set what poll watches: the joiner's exit, the outputs not at EOF, and
    our stdin while the feed is empty, or its target while it is not."""
    want = dict.fromkeys(outputs, selectors.EVENT_READ)
    want[joiner] = selectors.EVENT_READ
    if feed is not None and feed.target is not None:
        if feed.buf:
            want[feed.target] = want.get(feed.target, 0) | selectors.EVENT_WRITE
        elif not feed.done:
            want[0] = selectors.EVENT_READ
    current = {key.fd: key.events for key in sel.get_map().values()}
    for fd, events in current.items():
        if fd not in want:
            sel.unregister(fd)
        elif want[fd] != events:
            sel.modify(fd, want[fd])
    for fd, events in want.items():
        if fd not in current:
            sel.register(fd, events)


class _Feed:
    """Our stdin into the process.  Reads only once the last read is written:
    a process that does not read its stdin cannot make us stop copying its
    output.  At our EOF a pipe is closed, a terminal gets its EOF character."""

    target: int | None                       # None once our stdin is done with

    def __init__(self, target: int, eof: bytes, close_target: Callable[[], None] | None):
        self.target, self.eof, self.close_target = target, eof, close_target
        self.buf = b""
        self.done = False

    def read(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.done, data = True, self.eof
        self.buf = data
        self.write()

    def write(self) -> None:
        if self.target is None:
            return
        try:
            while self.buf:
                self.buf = self.buf[os.write(self.target, self.buf):]
        except BlockingIOError:
            return
        except OSError:                       # the process closed its stdin
            self.buf, self.done = b"", True
        if self.done and not self.buf:
            if self.close_target is not None:
                self.close_target()
            self.target = None


def _copy(src: int, dst: int) -> int | None:
    """One read from src written to dst: bytes copied, 0 at EOF, None if none was ready."""
    try:
        data = os.read(src, 65536)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:              # a pty whose other side is all closed
            return 0
        raise
    _write_all(dst, data)
    return len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:               # our stdout was left non-blocking by someone
            sel = selectors.PollSelector()
            sel.register(fd, selectors.EVENT_WRITE)
            sel.select()
            sel.close()
        except OSError:                       # nobody reads our output any more (EPIPE),
            return                            # or it is closed or hung up: drop it
