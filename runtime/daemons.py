"""Starting and stopping a state root's two helper servers, the fork server
(runtime/forkserver.py) and the CLI server (runtime/cliserver.py), and the first
steps both take (detach, listen).

Each is a fresh `python -I -S` (stdlib only, spawned, never forked from the
caller, so starting one is safe from a threaded process) that daemonises,
records its pid in RUN_DIR/<name>.pid, names itself (comm) and answers on a
socket in RUN_DIR.  Its stderr goes to RUN_DIR/<name>.log.

Right after detaching, a server moves into a cgroup of its own,
<cgroup parent>/_daemons in every hierarchy (settle), and the shims the fork
server forks inherit it: whoever started it -- a shell, a systemd unit -- can
then be stopped with its whole cgroup and the containers keep their shims.
The last helper out removes that cgroup and the empty parent (leave).
"""
from __future__ import annotations

import math
import os
import select
import signal
import socket
import sys

from .fsutil import locked, private_dir

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .cgroups.base import CgroupDriver

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # for `python -I -S` boots


def default_cgroup_parent() -> str:
    """$TERRARIUM_CGROUP_PARENT, else "terrarium"."""
    return os.environ.get("TERRARIUM_CGROUP_PARENT") or "terrarium"


def start(run_dir: str, *, name: str, module: str, answers: Callable[[], bool], cgroup_parent: str,
          sealed: bool = False, environ: Mapping[str, str] | None = None) -> None:
    """Start `runtime.<module>`'s server for run_dir unless answers() says one
    already does (True), holding RUN_DIR/<name>.lock so that only one starts.
    Its cgroup will be <cgroup_parent>/_daemons.  sealed: run it from a
    sealed copy of the interpreter (runtime/sealed.py), as the fork server
    must, since its forks become containers.  environ: variables added to
    the server's environment (this process's).

    Returns once the new server says it is ready; OSError if it did not start."""
    private_dir(os.path.dirname(run_dir))
    private_dir(run_dir)
    with locked(os.path.join(run_dir, f"{name}.lock")):
        if answers():
            return
        import subprocess
        code = (f"import sys; sys.path.insert(0, {PROJECT!r}); "
                f"import runtime.{module} as s; s.main(sys.argv)")
        exe = sys.executable
        fd = None
        if sealed:
            from . import sealed as _sealed
            fd = _sealed.interpreter_fd()
            exe = f"/proc/self/fd/{fd}"
            # The kernel keeps the copy while it runs: the descriptor can go.
            # sys.executable: what the server's own spawns, if any, should run.
            code = f"import os, sys; os.close({fd}); sys.executable = {sys.executable!r}; " + code
        try:
            with open(os.path.join(run_dir, f"{name}.log"), "ab") as log:
                proc = subprocess.run([exe, "-I", "-S", "-c", code, run_dir, cgroup_parent],
                                      executable=exe, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                                      env={**os.environ, **environ} if environ else None,
                                      pass_fds=() if fd is None else (fd,), timeout=30)
        finally:
            if fd is not None:
                os.close(fd)
        if proc.returncode != 0:
            raise OSError(f"the {name} server did not start; see {run_dir}/{name}.log")


def use_venv_packages() -> None:
    """Put the venv's site-packages on sys.path.  The servers run as `python -I
    -S`: no site, so not the venv's packages either (and sys.prefix is the base
    interpreter's: site sets the venv's).  For the few that need one (pyseccomp,
    pyroute2), called when their import fails."""
    import sysconfig
    venv = os.path.dirname(os.path.dirname(sys.executable))
    if os.path.exists(os.path.join(venv, "pyvenv.cfg")):
        purelib = sysconfig.get_path("purelib", scheme="venv", vars={"base": venv, "platbase": venv})
        if purelib not in sys.path:
            sys.path.append(purelib)


def stop(run_dir: str, *, name: str, comm: str, timeout: float = 5.0) -> None:
    """SIGTERM the server recorded in RUN_DIR/<name>.pid, if that pid still
    is one (its comm), and wait up to timeout for it to end."""
    try:
        with open(os.path.join(run_dir, f"{name}.pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != comm:
                return                          # not ours any more: a recycled pid
        fd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        wait_readable([fd], timeout)
    except OSError:
        pass
    finally:
        os.close(fd)


def wait_readable(fds: Iterable[int], timeout: float | None) -> list[int]:
    """The fds of `fds` that are readable (a pidfd: its process ended), waiting up
    to timeout seconds (None: until one is).  poll(), not select(): select
    cannot watch a descriptor numbered 1024 or more (ValueError), and a
    process holding many descriptors gets such numbers for new ones."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    # POLLHUP/POLLERR count too: a pipe whose writer is gone reads EOF at once
    return [fd for fd, _ in p.poll(ms)]


def answers(path: str, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether a server listens on the Unix socket at path (a connect succeeds)."""
    probe = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def listen(path: str, kind: int) -> socket.socket:
    """A server's listening Unix socket at path (a stale file from a server
    that died is replaced), reachable by this user only."""
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


def detach() -> int:
    """Called first by a server that start() spawned: fork; the starter side
    exits 0 when the server writes b"ok" to the returned fd (1 if it never
    does), which is what start() waits for.  The server side leaves the
    starter's session and working directory, and stdin/stdout for /dev/null
    (stderr stays the log)."""
    r, w = os.pipe()
    if os.fork() != 0:
        os.close(w)
        ok = os.read(r, 2)
        os._exit(0 if ok == b"ok" else 1)
    os.close(r)
    os.setsid()
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return w


_settled: tuple[CgroupDriver, int] | None = None    # (driver, lock descriptor) once settle() ran; forks inherit both


def settle(run_dir: str, cgroup_parent: str) -> None:
    """A server's first steps after detach(): its state root private (0700, as
    runtime.Runtime makes it), and out of the starter's cgroup into
    <cgroup_parent>/_daemons.  A failure ends the server before it says ready
    (the traceback is in its log)."""
    global _settled
    private_dir(os.path.dirname(os.path.abspath(run_dir)))
    from . import cgroups
    drv = cgroups.driver(parent=cgroup_parent)
    _settled = (drv, drv.join_daemons())


def leave() -> None:
    """A helper's last step, a server's or a shim's (a fork of the fork server):
    if it is the last helper, out of <parent>/_daemons, which goes with the
    parent unless a container is left in it.  Nothing if settle() never ran."""
    global _settled
    if _settled is None:
        return
    drv, held = _settled
    _settled = None
    from .errors import TerrariumError
    try:
        drv.leave_daemons(held)
    except TerrariumError as e:
        # Exiting anyway: the next helper to leave tries again.
        print(f"leave cgroup {drv.parent}/_daemons: {e}", file=sys.stderr)
