"""The shim: one small supervisor per running container.

Forked by the fork server (runtime/forkserver.py) ahead of need as a
*spare*: it forks the container's init (runtime/init.py) into a new PID
namespace at once, and waits.  On a start request it gives that init its
container, creates or renames the cgroup and moves init in, reports
"started" (or why not) to the caller, relays the container's stdout and
stderr into its log (runtime/logs.py), records the exit code and the OOM
flag in exit.json when init exits, and removes the cgroup.  It is in a
session of its own and outlives whoever asked for the start.

Every Python line a shim runs copies pages it would otherwise share with
the fork server, so the way to idle is kept short (see bench/README.md for
what an idle container costs).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import _signal
import _socket
import array
import time

from . import daemons, linux, logs, pidinfo
from .errors import TerrariumError
from .init import container_init

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any
    from .cgroups.base import CgroupDriver
    from .model import Limits

_drivers: dict[str, CgroupDriver] = {}


def cgroup_driver(parent: str) -> CgroupDriver:
    """One cgroup driver per parent, made once in the server and shared by forks."""
    drv = _drivers.get(parent)
    if drv is None:
        from . import cgroups
        drv = _drivers[parent] = cgroups.driver(parent=parent)
    return drv


class _Prepared:
    """What a spare shim made ahead of need: its container's init, waiting, and
    (when it could) a cgroup under a temporary name with that init in it."""
    def __init__(self, pid: int, err_r: int, go_w: int, in_cgroup_w: int, out_r: int, stderr_r: int):
        self.pid, self.err_r, self.go_w, self.in_cgroup_w = pid, err_r, go_w, in_cgroup_w
        self.out_r, self.stderr_r = out_r, stderr_r      # init's stdout and stderr, for the log
        self.parent = self.cgroup = ""                   # the spare cgroup, when it made one


# The same as signal.signal() on these, without its enum conversions: Python
# code a shim would run (and so copy the server's pages for) on every fork.
_SHIM_IGNORED = tuple(int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE))
_SIGCHLD = int(signal.SIGCHLD)


def run_spare(channel: _socket.socket, cgroup_parent: str | None) -> None:
    """A shim made ahead of need.  Runs in a child of the fork server; never returns.

    It forks its init into a new PID namespace at once (init makes the other
    namespaces and waits), then waits on channel for a start request with the caller's connection.  EOF on channel
    (the server stopped, or discarded us) ends both."""
    status = 1
    reply = None
    try:
        os.setsid()
        linux.set_name("terrarium-shim")
        for sig in _SHIM_IGNORED:                 # stop goes to init; the shim must record it
            _signal.signal(sig, _signal.SIG_IGN)
        _signal.signal(_SIGCHLD, _signal.SIG_DFL)
        prepared = _prepare(cgroup_parent)
        msg, ancdata, _, _ = channel.recvmsg(1 << 20, _FD_CMSG_LEN)
        fds = _received_fds(ancdata)
        channel.close()
        if not msg or not fds:
            os.close(prepared.go_w)               # init reads EOF and leaves
            os.waitpid(prepared.pid, 0)
            if prepared.cgroup:
                cgroup_driver(prepared.parent).remove(prepared.cgroup)
            status = 0
            return
        reply = _socket.socket(fileno=fds[0])
        status = _supervise(json.loads(msg), msg, reply, prepared)
    except BaseException as e:  # noqa: BLE001 - the caller must hear about it
        send_reply(reply, {"ok": False, "error": str(e) or type(e).__name__, "exit_code": 125})
    finally:
        # A shim that outlived the servers (stopped, or killed) may be the
        # last helper: then it removes their cgroup and the empty parent.
        daemons.leave()
        os._exit(status)


# Sockets below are _socket's own (socket.socket's Python layer and
# socket.recv_fds/send_fds are the same calls with more Python around them):
# every Python line a shim runs, or the server runs between two forks, copies
# pages the shims would otherwise share with the server.
_SOL_SOCKET, _SCM_RIGHTS = socket.SOL_SOCKET, socket.SCM_RIGHTS
_FD_CMSG_LEN = socket.CMSG_LEN(array.array("i").itemsize)      # room for one fd, as recv_fds(.., 1)


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in recvmsg()'s ancillary data, as socket.recv_fds returns them."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    return list(fds)


def _prepare(cgroup_parent: str | None) -> _Prepared:
    stdin_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    err_r, err_w = os.pipe()                       # init → shim: why it failed (EOF: exec'd)
    go_r, go_w = os.pipe()                         # shim → init: the container to become
    in_cgroup_r, in_cgroup_w = os.pipe()           # shim → init: you are in your cgroup
    out_r, out_w = os.pipe()                       # the container's stdout → shim → log
    stderr_r, stderr_w = os.pipe()                 # and its stderr
    linux.unshare(linux.CLONE_NEWPID)               # our next child is PID 1 there
    pid = os.fork()
    if pid == 0:
        for fd in (err_r, go_w, in_cgroup_w, out_r, stderr_r):
            os.close(fd)
        container_init(err_w, go_r, in_cgroup_r, stdin_fd, out_w, stderr_w)
    for fd in (err_w, go_r, in_cgroup_r, stdin_fd, out_w, stderr_w):
        os.close(fd)
    prepared = _Prepared(pid, err_r, go_w, in_cgroup_w, out_r, stderr_r)
    if cgroup_parent and cgroup_driver(cgroup_parent).can_rename:
        # Moving a process into a v1 cgroup takes cgroup_threadgroup_rwsem for
        # writing, which waits out a whole RCU grace period (~13 ms measured
        # here) unless another move happened just before: so do it now, ahead
        # of need, and rename the cgroup to the container's id on request.
        drv, name = cgroup_driver(cgroup_parent), f"spare-{os.getpid()}"
        try:
            drv.create(name, _no_limits())
            drv.attach(name, pid)
            prepared.parent, prepared.cgroup = cgroup_parent, name
        except TerrariumError:
            _quietly(drv.remove, name)
    return prepared


def _no_limits() -> Limits:
    from .model import Limits
    return Limits()


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except TerrariumError:
        pass


def send_reply(sock: _socket.socket | None, msg: dict[str, Any]) -> None:
    if sock is None:
        return
    try:
        sock.sendall(json.dumps(msg).encode() + b"\n")
        sock.close()
    except OSError:
        pass        # the caller went away; the state files still tell


def _supervise(req: dict[str, Any], raw: bytes, reply: _socket.socket, prepared: _Prepared) -> int:
    """req is the start request, raw the JSON it was read from: init gets raw
    as it came (the same request, without encoding it again here)."""
    cid, cdir, pid = req["id"], req["dir"], prepared.pid
    drv = cgroup_driver(req["cgroup_parent"])
    from .model import Limits
    told = _tell_init(prepared.go_w, raw)
    os.close(prepared.go_w)
    setup_error = None
    net = req.get("net") or {}
    listeners = None                               # published ports without nftables (runtime/portfwd.py)
    try:
        _place_in_cgroup(drv, req, prepared, Limits(**req["limits"]))
        if net.get("wait"):
            setup_error = _await_network(reply, pid)
        if setup_error is None and net.get("forward"):
            from .portfwd import bind
            try:
                listeners = bind(net["forward"])
            except OSError as e:
                setup_error = e.strerror or str(e)
        if setup_error is None and told:
            told = _tell_init(prepared.in_cgroup_w, b"1")
    except TerrariumError as e:
        setup_error = str(e)                       # init sees EOF and gives up
    finally:
        os.close(prepared.in_cgroup_w)
    started_at = time.time()
    error = b""
    while chunk := os.read(prepared.err_r, 4096):   # EOF: exec succeeded
        error += chunk
    os.close(prepared.err_r)
    if not told and not error and not setup_error:  # gone without a word (a signal)
        setup_error = "the container's init ended before it started the command"
    if error or setup_error:
        for s, _ in listeners or ():
            s.close()
        code_s, _, message = error.decode(errors="replace").partition(":")
        if setup_error and (told or not error):     # gone before told: its own error is the cause
            code_s, message = "125", setup_error
        os.waitpid(pid, 0)
        drv.remove(cid)
        logs.write_message(req["log"], f"terrarium: {message}")
        _write_json(f"{cdir}/exit.json", {"generation": req["generation"], "exit_code": int(code_s),
                                         "oom_killed": False, "finished_at": time.time(),
                                         "error": message})
        send_reply(reply, {"ok": False, "error": message, "exit_code": int(code_s)})
        return 0
    _write_json(f"{cdir}/run.json", {"generation": req["generation"], "pid": pid,
                                    "pid_start": pidinfo.process_start_time(pid),
                                    "shim_pid": os.getpid(),
                                    "shim_start": pidinfo.process_start_time(os.getpid()),
                                    "started_at": started_at})
    send_reply(reply, {"ok": True, "pid": pid, "shim_pid": os.getpid()})
    del reply
    forwarder = checker = None
    if listeners:
        from .portfwd import spawn
        forwarder = spawn(listeners, pid, close_fds=(prepared.out_r, prepared.stderr_r))
    if req.get("healthcheck"):
        from .lifecycle import spawn_checker
        checker = spawn_checker(req, pid, close_fds=(prepared.out_r, prepared.stderr_r))
    # Until init exits: its stdout and stderr into the log (poll, not
    # waitpid, so both are watched; its pidfd says when it has exited).
    pidfd = os.pidfd_open(pid)
    logs.relay(prepared.out_r, prepared.stderr_r, pidfd, req["log"],
               req.get("log_max_size", logs.DEFAULT_MAX_SIZE), req.get("log_max_file", logs.DEFAULT_MAX_FILE),
               linux.malloc_trim)
    os.close(pidfd)
    while True:
        try:
            _, wstatus = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            wstatus = 255 << 8
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(wstatus)
    if code < 0:
        code = 128 - code                          # killed by signal N: 128+N, like a shell
    for helper in (checker, forwarder):            # the checker's last result is in before the exit is
        if helper:
            os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
    # The oom_kill counter rises before the exit is visible (FACTS.md): no race.
    kills = drv.oom_kills(cid)
    oom = code == 137 and kills > 0                # init itself died of it
    # The exit first (what `wait` waits for), then the cleanup: removing a v1
    # cgroup can take milliseconds, and start/remove wait for this shim anyway.
    finished_at = time.time()
    _write_json(f"{cdir}/exit.json", {"generation": req["generation"], "exit_code": code,
                                     "oom_killed": oom, "oom_kills": kills,
                                     "finished_at": finished_at})
    drv.remove(cid)                                 # waits while the namespace's rest exits
    if req.get("auto_remove"):
        _auto_remove(req)
    elif _has_restart_policy(cdir):                # (read now: `update --restart` may have set one)
        from .lifecycle import spawn_restarter
        spawn_restarter(req, code, started_at, finished_at)
    return 0


def _has_restart_policy(cdir: str) -> bool:
    """Whether config.json names a restart policy (runtime/lifecycle.py), without
    loading that module for the containers that have none."""
    try:
        with open(f"{cdir}/config.json", "rb") as f:
            return bool(json.loads(f.read()).get("restart", "no") != "no")
    except (OSError, ValueError, AttributeError):
        return False


NETWORK_WAIT_SECONDS = 60.0


def _await_network(reply: _socket.socket, pid: int) -> str | None:
    """A bridged container: tell the starter init's pid, so that it connects
    the namespace (runtime/network.py, with pyroute2, which a shim does not
    load), and wait for its word.  None when done; else why not (the
    starter's error, or its going away: then init never runs the command)."""
    try:
        reply.sendall(b'{"net":%d}\n' % pid)
        reply.settimeout(NETWORK_WAIT_SECONDS)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = reply.recv(65536)
            if not chunk:
                return "network: the starter went away before connecting the container"
            buf += chunk
        reply.settimeout(None)
        answer = json.loads(buf)
    except (OSError, ValueError) as e:
        return f"network: no word from the starter ({e})"
    return None if answer.get("go") else f"network: {answer.get('error') or 'not connected'}"


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))     # made once, in the server


def _write_json(path: str, obj: object) -> None:
    """fsutil.write_json(path, obj): the same bytes, written to a temporary
    file and renamed over path, with os calls only (no text file object, no
    new encoder: Python a shim would otherwise run on its way to idle)."""
    data = _COMPACT_JSON.encode(obj).encode()
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _tell_init(fd: int, data: bytes) -> bool:
    """Write data to init over one of its pipes; False if init has gone
    already (EPIPE).  Init builds the root while the shim places it in its
    cgroup, so a mount that fails can end it before it is told it is there:
    its error then waits on err_r, and is the one to report, not the pipe's."""
    try:
        os.write(fd, data)               # blocking: all of it, or the error
    except BrokenPipeError:
        return False
    return True


def _place_in_cgroup(drv: CgroupDriver, req: dict[str, Any], prepared: _Prepared, limits: Limits) -> None:
    """Give init its container's cgroup: the spare's, renamed, when there is
    one under the same parent; otherwise a new one it is moved into."""
    cid = req["id"]
    if prepared.cgroup and prepared.parent == req["cgroup_parent"]:
        try:
            drv.rename(prepared.cgroup, cid)
            drv.update(cid, limits)
            return
        except TerrariumError:
            pass                                   # e.g. a kernel that will not rename
    drv.create(cid, limits)
    drv.attach(cid, prepared.pid)
    if prepared.cgroup:
        _quietly(cgroup_driver(prepared.parent).remove, prepared.cgroup)


def _auto_remove(req: dict[str, Any]) -> None:
    """--rm: remove the container unless an API call holds its lock (it will do it).
    This shim has removed the cgroup already.  A bridged container's network
    lease (hosts entries, published ports' rules) is freed by the fork server
    on our behalf: with init gone, this process can neither fork nor start a
    thread (the PID namespace it unshared for init is dead)."""
    from contextlib import ExitStack

    from . import state
    from .fsutil import locked
    with ExitStack() as stack:
        try:        # (never made here: see Runtime._lock)
            held = stack.enter_context(locked(f"{req['dir']}/{state.LOCK}", blocking=False, create=False))
        except FileNotFoundError:                   # an API call has removed it meanwhile
            held = False
        if held:
            state.remove(req["containers_dir"], req["names_dir"], req["id"])
            if req.get("anon_volumes"):             # --rm takes its anonymous volumes along
                from .volumes import Volumes
                Volumes(req["volumes_root"], req["containers_dir"]).remove_anonymous(req["anon_volumes"])
    if held and (req.get("net") or {}).get("wait"):
        from .forkserver import SOCKET
        path = os.path.join(os.path.dirname(req["containers_dir"]), "run", SOCKET)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(json.dumps({"op": "release-lease", "id": req["id"]}).encode() + b"\n")
        except OSError:
            pass                                    # the next network call's sweep frees it
