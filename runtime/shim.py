"""The fork server, the per-container shim, and the container's init.

Three processes, from the outside in:

fork server  one small Python per runtime root, started on first use as a
             fresh interpreter (`python -I -S`, stdlib only) in its own
             session, listening on ROOT/run/forkserver.sock.  Callers (the CLI,
             the dashboard's threads) send it a start request; it forks.  A
             fork of this small, single-threaded process is safe and cheap, and
             the shim shares its pages, so each shim costs about a megabyte.
shim         one per running container, forked by the server, its own session.
             It creates the cgroup, forks the container's init into a new PID
             namespace, reports "started" (or why not) to the caller, waits for
             init, records the exit code and the OOM flag in exit.json, and
             removes the cgroup.  It outlives whoever asked for the start.
init         PID 1 of the container: join the cgroup, new namespaces, hostname,
             private mounts, overlay root, pivot_root, /proc, /dev, masks,
             capabilities, seccomp, exec.  See container_init() — the order is the lesson.

Nothing here imports outside the standard library and runtime's own small
modules: the server starts in ~20 ms and forks in well under one.
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import _signal
import _socket
import array
import time

from . import daemons, linux, logs, pidinfo
from .errors import KernelError, TerrariumError

SOCKET = "forkserver.sock"
IDLE_EXIT_SECONDS = 60.0
SPARES = 2                    # spare shims kept ready (one is made at once when none is left)
REFILL_QUIET_SECONDS = 0.03   # the second only after this long without a request (see serve)

# Paths Docker hides or makes read-only (moby oci/defaults.go), kept in step.
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT,
                  signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_drivers: dict = {}


def _cgroups(parent: str):
    """One cgroup driver per parent, made once in the server and shared by forks."""
    drv = _drivers.get(parent)
    if drv is None:
        from . import cgroups
        drv = _drivers[parent] = cgroups.driver(parent=parent)
    return drv


# --------------------------------------------------------------------- init

def container_init(err_w: int, go_r: int, in_cgroup_r: int, stdin_fd: int, stdout_w: int,
                   stderr_w: int) -> None:
    """Become a container.  Runs as PID 1 of a new PID namespace; never returns.

    It is made ahead of need (see Spare): the namespaces come first, then it
    waits on go_r to learn which container it is.  Any failure is written to
    err_w as "<exit code>:<message>" for the shim; EOF on go_r with no request
    means the spare was not needed, and it leaves quietly.  stdout_w and
    stderr_w are pipes the shim relays into the container's log."""
    try:
        for sig in RESET_SIGNALS:            # exec keeps SIG_IGN: give the command defaults
            signal.signal(sig, signal.SIG_DFL)
        # 1. the namespaces besides PID (which the shim made for us), and no
        #    mount event may leak back to the host
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.loopback_up()
        # -- ready: which container are we?
        req = _read_request(go_r)
        if req is None:
            os._exit(0)
        seccomp = _read_file(req.get("seccomp"))   # a host path: read before pivot_root
        # 2. cgroup: the shim makes it and moves us in while we build the root
        #    below (two cores, two jobs); we wait for that at step 6, before exec.
        # 3. hostname, in the new UTS namespace
        linux.sethostname(req["hostname"])
        # 4. the union filesystem: image layers below, the container's own layer on top
        rootfs = req["rootfs"]
        _mount_overlay(req)
        _mount_system(rootfs)
        # 5. make it the root; the old one is detached and gone from view
        os.chdir(rootfs)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        _mask_paths()
        # 6. in our cgroup (limits hold before the command allocates anything),
        #    the command, with Docker's 14 capabilities and no way to gain more
        if os.read(in_cgroup_r, 1) != b"1":
            raise TerrariumError("the container's cgroup could not be set up")
        workdir = req["workdir"]
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        linux.close_fds_on_exec(3)
        linux.limit_capabilities(linux.caps_mask())
        linux.set_no_new_privs()
        # 7. the seccomp filter, last: from here on only the syscalls the
        #    profile allows (execve among them), for the command and its children
        linux.seccomp_filter(seccomp)
        exec_command(req["argv"], req["env"])
    except BaseException as e:  # noqa: BLE001 - report anything, then die
        code = getattr(e, "exit_code", 1) if isinstance(e, TerrariumError) else 1
        try:
            os.write(err_w, f"{code}:{e}".encode()[:4000])
        finally:
            os._exit(code if 0 < code < 256 else 1)


def _read_request(fd: int) -> dict | None:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return json.loads(data) if data else None


def _read_file(path: str | None) -> bytes | None:
    if path is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return data
    finally:
        os.close(fd)


def _mount_overlay(req: dict) -> None:
    # Relative lowerdirs after a chdir keep the options under one page
    # (4096 bytes) for images with many layers; see FACTS.md.
    os.chdir(req["layers_dir"])
    lower = ":".join(req["lower"])           # top first, as overlayfs wants
    data = f"lowerdir={lower},upperdir={req['upper']},workdir={req['work']}"
    # nodev: a device node the container makes (CAP_MKNOD is in Docker's set)
    # cannot be opened; see _mount_system for the ones it may use.
    linux.mount("overlay", req["rootfs"], "overlay", linux.MS_NODEV, data)


def _mount_system(root: str) -> None:
    def target(path: str) -> str:
        full = root + path
        os.makedirs(full, exist_ok=True)
        return full

    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    # /proc must come from a process inside the new PID namespace: that is us.
    linux.mount("proc", target("/proc"), "proc", nosuid_nodev_noexec)
    linux.mount("sysfs", target("/sys"), "sysfs", nosuid_nodev_noexec | linux.MS_RDONLY)
    # /dev is nodev like the root, and the few devices a container may use are
    # bind mounts of the host's nodes (each its own mount, so usable): mknod
    # stays allowed, as in Docker, but a node made inside cannot be opened.
    # cgroup v1's devices controller says the same; cgroup v2 has none (it
    # would take a BPF program), so on v2 this is the only guard.
    dev = target("/dev")
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_STRICTATIME,
                "mode=755,size=65536k")
    for name in DEVICES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        linux.mount(f"/dev/{name}", path, None, linux.MS_BIND)
    os.mkdir(f"{dev}/pts")
    linux.mount("devpts", f"{dev}/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    linux.mount("shm", f"{dev}/shm", "tmpfs", nosuid_nodev_noexec, "mode=1777,size=65536k")
    os.mkdir(f"{dev}/mqueue")
    for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(to, f"{dev}/{link}")


def _mask_paths() -> None:
    for path in MASKED_PATHS:
        try:
            if os.path.isdir(path):
                linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY, "size=0")
            elif os.path.exists(path):
                linux.mount("/dev/null", path, None, linux.MS_BIND)
        except KernelError:
            pass        # a path this kernel does not have: nothing to hide
    for path in READONLY_PATHS:
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY
                        | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


class _ExecError(TerrariumError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def exec_command(argv: list[str], env: list[str]) -> None:
    """execve argv[0] found on the container's PATH; 127/126 like Docker on failure."""
    envd = dict(e.split("=", 1) for e in env)
    prog = argv[0]
    if "/" in prog:
        candidates = [prog]
    else:
        candidates = [os.path.join(d or ".", prog) for d in envd.get("PATH", "/bin:/usr/bin").split(":")]
    denied = False
    for path in candidates:
        try:
            os.execve(path, argv, envd)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:
            denied = True
    if denied:
        raise _ExecError(f'exec: "{prog}": permission denied', 126)
    if "/" in prog:
        raise _ExecError(f'exec: "{prog}": no such file or directory', 127)
    raise _ExecError(f'exec: "{prog}": executable file not found in $PATH', 127)


# --------------------------------------------------------------------- shim

class _Prepared:
    """What a spare shim made ahead of need: its container's init, waiting, and
    (when it could) a cgroup under a temporary name with that init in it."""
    def __init__(self, pid: int, err_r: int, go_w: int, in_cgroup_w: int, out_r: int, stderr_r: int):
        self.pid, self.err_r, self.go_w, self.in_cgroup_w = pid, err_r, go_w, in_cgroup_w
        self.out_r, self.stderr_r = out_r, stderr_r      # init's stdout and stderr, for the log
        self.parent = self.cgroup = None


# The same as signal.signal() on these, without its enum conversions: Python
# code a shim would run (and so copy the server's pages for) on every fork.
_SHIM_IGNORED = tuple(int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE))
_SIGCHLD = int(signal.SIGCHLD)


def run_spare(channel: socket.socket, cgroup_parent: str | None) -> None:
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
                _cgroups(prepared.parent).remove(prepared.cgroup)
            status = 0
            return
        reply = _socket.socket(fileno=fds[0])
        status = _supervise(json.loads(msg), msg, reply, prepared)
    except BaseException as e:  # noqa: BLE001 - the caller must hear about it
        _reply(reply, {"ok": False, "error": str(e) or type(e).__name__, "exit_code": 125})
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


def _received_fds(ancdata) -> list[int]:
    """The descriptors in recvmsg()'s ancillary data, as socket.recv_fds returns them."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    return list(fds)


def _accept(server: socket.socket) -> _socket.socket:
    """server.accept()'s connection, blocking, without the Python wrapper."""
    fd, _ = server._accept()
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)


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
    if cgroup_parent and _cgroups(cgroup_parent).can_rename:
        # Moving a process into a v1 cgroup takes cgroup_threadgroup_rwsem for
        # writing, which waits out a whole RCU grace period (~13 ms measured
        # here) unless another move happened just before: so do it now, ahead
        # of need, and rename the cgroup to the container's id on request.
        drv, name = _cgroups(cgroup_parent), f"spare-{os.getpid()}"
        try:
            drv.create(name, _no_limits())
            drv.attach(name, pid)
            prepared.parent, prepared.cgroup = cgroup_parent, name
        except TerrariumError:
            _quietly(drv.remove, name)
    return prepared


def _no_limits():
    from .model import Limits
    return Limits()


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except TerrariumError:
        pass


def _reply(sock: socket.socket | None, msg: dict) -> None:
    if sock is None:
        return
    try:
        sock.sendall(json.dumps(msg).encode() + b"\n")
        sock.close()
    except OSError:
        pass        # the caller went away; the state files still tell


def _supervise(req: dict, raw: bytes, reply: socket.socket, prepared: _Prepared) -> int:
    """req is the start request, raw the JSON it was read from: init gets raw
    as it came (the same request, without encoding it again here)."""
    cid, cdir, pid = req["id"], req["dir"], prepared.pid
    drv = _cgroups(req["cgroup_parent"])
    from .model import Limits
    os.write(prepared.go_w, raw)
    os.close(prepared.go_w)
    cgroup_error = None
    try:
        _place_in_cgroup(drv, req, prepared, Limits(**req["limits"]))
        os.write(prepared.in_cgroup_w, b"1")
    except TerrariumError as e:
        cgroup_error = str(e)                      # init sees EOF and gives up
    finally:
        os.close(prepared.in_cgroup_w)
    started_at = time.time()
    error = b""
    while chunk := os.read(prepared.err_r, 4096):   # EOF: exec succeeded
        error += chunk
    os.close(prepared.err_r)
    if error or cgroup_error:
        code_s, _, message = error.decode(errors="replace").partition(":")
        if cgroup_error:
            code_s, message = "125", cgroup_error
        os.waitpid(pid, 0)
        drv.remove(cid)
        logs.write_message(req["log"], f"terrarium: {message}")
        _write_json(f"{cdir}/exit.json", {"generation": req["generation"], "exit_code": int(code_s),
                                         "oom_killed": False, "finished_at": time.time(),
                                         "error": message})
        _reply(reply, {"ok": False, "error": message, "exit_code": int(code_s)})
        return 0
    _write_json(f"{cdir}/run.json", {"generation": req["generation"], "pid": pid,
                                    "pid_start": pidinfo.process_start_time(pid),
                                    "shim_pid": os.getpid(),
                                    "shim_start": pidinfo.process_start_time(os.getpid()),
                                    "started_at": started_at})
    _reply(reply, {"ok": True, "pid": pid, "shim_pid": os.getpid()})
    reply = None
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
    # The oom_kill counter rises before the exit is visible (FACTS.md): no race.
    kills = drv.oom_kills(cid)
    oom = code == 137 and kills > 0                # init itself died of it
    # The exit first (what `wait` waits for), then the cleanup: removing a v1
    # cgroup can take milliseconds, and start/remove wait for this shim anyway.
    _write_json(f"{cdir}/exit.json", {"generation": req["generation"], "exit_code": code,
                                     "oom_killed": oom, "oom_kills": kills,
                                     "finished_at": time.time()})
    drv.remove(cid)                                 # waits while the namespace's rest exits
    if req.get("auto_remove"):
        _auto_remove(req)
    return 0


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))     # made once, in the server


def _write_json(path: str, obj) -> None:
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


def _place_in_cgroup(drv, req: dict, prepared: _Prepared, limits) -> None:
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
        _quietly(_cgroups(prepared.parent).remove, prepared.cgroup)


def _auto_remove(req: dict) -> None:
    """--rm: remove the container unless an API call holds its lock (it will do it).
    This shim has removed the cgroup already."""
    from . import state
    from .fsutil import locked
    with locked(f"{req['dir']}/{state.LOCK}", blocking=False) as held:
        if held:
            state.remove(req["containers_dir"], req["names_dir"], req["id"])


# --------------------------------------------------------------- fork server

class Spare:
    """The server's handle on a spare shim: its pid and the channel to it."""

    def __init__(self, listening: socket.socket, cgroup_parent: str | None):
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            listening.close()
            ours.close()
            run_spare(theirs, cgroup_parent)
        theirs.close()
        self.pid, self.channel = pid, ours

    def hand_over(self, request: bytes, conn: socket.socket) -> bool:
        """Give the spare a request and the caller's connection; False if it is gone."""
        try:
            self.channel.sendmsg([request], [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", [conn.fileno()]))])
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
    path = os.path.join(run_dir, SOCKET)
    server = daemons.listen(path, socket.SOCK_STREAM)
    linux.set_name("terrarium-fork")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # shims are reaped by the kernel
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with open(os.path.join(run_dir, "forkserver.pid"), "w") as f:
        f.write(str(os.getpid()))
    from . import cgroups, model  # noqa: F401 - load before forking, so shims share it
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


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def _handle(conn: socket.socket, server: socket.socket, spares: list[Spare]) -> None:
    """Answer one connection; a start takes the oldest spare from spares."""
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
        _reply(conn, {"ok": True, "pid": os.getpid()})
        return
    global _last_parent
    try:
        _cgroups(req["cgroup_parent"])      # made once here, inherited by every shim
        _last_parent = req["cgroup_parent"]
    except Exception:  # noqa: BLE001 - the shim will report it to the caller
        pass
    for _ in range(SPARES + 1):             # spares that died meanwhile: the next, or a fresh one
        spare = spares.pop(0) if spares else Spare(server, _last_parent)
        if spare.hand_over(buf, conn):
            break
    conn.close()


def main(argv: list[str]) -> None:
    """`python -I -S -c ... RUN_DIR CGROUP_PARENT` (daemons.start): daemonise,
    move into the helpers' cgroup (the shims inherit it), then serve."""
    ready_fd = daemons.detach()
    daemons.settle(argv[1], argv[2])
    serve(argv[1], ready_fd=ready_fd)

