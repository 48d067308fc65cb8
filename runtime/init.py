"""The container's init: PID 1 of a new PID namespace, made by its shim.

It joins its cgroup, makes the other namespaces, sets the hostname, mounts
the union filesystem and the system file systems, pivots into the new root,
masks what Docker masks, drops to Docker's capabilities, sets no_new_privs,
loads the seccomp filter, and execs the command.  container_init() does it
in that order, top to bottom: the order is the lesson.  (With
no-new-privileges=false: the filter, then the capabilities, no no_new_privs.)

Runs in a fork of the fork server (runtime/forkserver.py, through the shim
in runtime/shim.py), so nothing here imports outside the standard library
and runtime's own small modules.
"""
from __future__ import annotations

import json
import os
import signal

from . import linux, pidinfo
from .errors import KernelError, TerrariumError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# Paths Docker hides or makes read-only (moby oci/defaults.go), kept in step.
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT,
                  signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def container_init(err_w: int, go_r: int, in_cgroup_r: int, stdin_fd: int, stdout_w: int,
                   stderr_w: int) -> None:
    """Become a container.  Runs as PID 1 of a new PID namespace; never returns.

    It is made ahead of need (by a spare shim, runtime/forkserver.py): the
    namespaces come first, then it waits on go_r to learn which container it is.  Any failure is written to
    err_w as "<exit code>:<message>" for the shim; EOF on go_r with no request
    means the spare was not needed, and it leaves quietly.  stdout_w and
    stderr_w are pipes the shim relays into the container's log."""
    try:
        for sig in RESET_SIGNALS:            # exec keeps SIG_IGN: give the command defaults
            signal.signal(sig, signal.SIG_DFL)
        # 1. the namespaces besides PID (which the shim made for us), and no
        #    mount event may leak back to the host
        host_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)   # for --network host
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.loopback_up()
        # -- ready: which container are we?
        req = _read_request(go_r)
        if req is None:
            os._exit(0)
        net = req.get("net") or {}
        # 1'. --network host or container:NAME: another namespace instead of our
        #     own (which the kernel drops when we leave it).  A bridged one keeps
        #     ours: the runtime gives it a veth pair while we build the root.
        _join_network(net, host_net)
        os.close(host_net)
        seccomp = _read_file(req.get("seccomp"))   # a host path: read before pivot_root
        # 2. cgroup: the shim makes it and moves us in while we build the root
        #    below (two cores, two jobs); we wait for that at step 6, before exec.
        # 3. hostname, in the new UTS namespace
        linux.sethostname(req["hostname"])
        # 4. the union filesystem: image layers below, the container's own layer on top
        rootfs = req["rootfs"]
        _mount_overlay(req)
        _mount_system(rootfs)
        _mount_net_files(rootfs, net)
        # 4'. volumes, bind mounts and tmpfs, in this mount namespace only
        #     (runtime/mounts.py: every target resolved inside the root)
        if req.get("mounts"):
            from .mounts import mount_all
            mount_all(rootfs, req["mounts"])
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
        if req.get("read_only"):                 # --read-only: the overlay only, not the mounts on it
            linux.mount_setattr(linux.AT_FDCWD, "/", linux.MOUNT_ATTR_RDONLY)
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        linux.close_fds_on_exec(3)
        if req.get("no_new_privs", True):
            linux.limit_capabilities(linux.caps_mask())
            # the default (stricter than Docker's): a setuid bit or a file
            # capability in the image lifts nobody; and it lets us load the
            # filter without CAP_SYS_ADMIN, so as the very last step
            linux.set_no_new_privs()
            # 7. the seccomp filter, last: from here on only the syscalls the
            #    profile allows (execve among them), for the command and its children
            linux.seccomp_filter(seccomp)
        else:
            # 7'. --security-opt no-new-privileges=false: setuid files and file
            #    capabilities work for the command.  Without no_new_privs the
            #    kernel loads a filter only for a thread holding CAP_SYS_ADMIN,
            #    so the filter comes first, while we still have it (runc's
            #    order), and the profile must allow the capability drop after it.
            linux.seccomp_filter(seccomp)
            limit_capabilities_under_filter()
        exec_command(req["argv"], req["env"])
    except BaseException as e:  # noqa: BLE001 - report anything, then die
        code = getattr(e, "exit_code", 1) if isinstance(e, TerrariumError) else 1
        try:
            os.write(err_w, f"{code}:{e}".encode()[:4000])
        finally:
            os._exit(code if 0 < code < 256 else 1)


def limit_capabilities_under_filter() -> None:
    """linux.limit_capabilities after the seccomp filter is loaded: a profile
    that refuses prctl or capset gets one sentence, not a bare EPERM."""
    try:
        linux.limit_capabilities(linux.caps_mask())
    except KernelError as e:
        raise KernelError(e.code, "with no-new-privileges=false the seccomp profile is loaded "
                          "before the capabilities are dropped and must allow prctl and capset; "
                          f"{e.what}") from None


def _read_request(fd: int) -> dict[str, Any] | None:
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


def _mount_overlay(req: dict[str, Any]) -> None:
    # Relative lowerdirs after a chdir keep the options under one page
    # (4096 bytes) for images with many layers; see FACTS.md.
    os.chdir(req["layers_dir"])
    lower = ":".join(req["lower"])           # top first, as overlayfs wants
    data = f"lowerdir={lower},upperdir={req['upper']},workdir={req['work']}"
    # nodev: a device node the container makes (CAP_MKNOD is in Docker's set)
    # cannot be opened; see _mount_system for the ones it may use.
    linux.mount("overlay", req["rootfs"], "overlay", linux.MS_NODEV, data)


def _join_network(net: dict[str, Any], host_net: int) -> None:
    if net.get("host"):
        linux.setns(host_net, linux.CLONE_NEWNET)
    elif net.get("join_pid"):
        # open first, then check the pid is still that container's init: a
        # pid reused in between would show another start time
        pid = net["join_pid"]
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = None
        try:
            if fd is None or pidinfo.process_start_time(pid) != net.get("join_start"):
                raise _ExecError(f"container {net.get('join_name')!r} whose network namespace this one "
                                 "joins is not running", 125)
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            if fd is not None:
                os.close(fd)


def _mount_net_files(root: str, net: dict[str, Any]) -> None:
    """/etc/hosts and /etc/resolv.conf: the runtime's files for this container,
    bind-mounted over the image's (made empty in the writable layer if the
    image has none)."""
    from .mounts import bind_file_in_root
    for key, path in (("hosts", "/etc/hosts"), ("resolv", "/etc/resolv.conf")):
        source = net.get(key)
        if source:
            # resolved inside the root: an image whose /etc is a symlink to a
            # host path must not make us create or cover a file there
            bind_file_in_root(root, source, path)


def _mount_system(root: str) -> None:
    """/proc, /sys and /dev (with its devices, devpts, shm), each made from
    descriptors as runtime/mounts.py makes volumes: the target is resolved by
    the kernel inside the root (openat2 RESOLVE_IN_ROOT), so an image whose
    /proc or /dev is a symlink (`/dev -> /host-path`, `../../etc`) gets the
    mount at that place inside its own root, never on a host path; the file
    systems come from fsopen/fsmount and are attached with move_mount."""
    from .mounts import IN_ROOT
    nosuid_nodev_noexec = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # /proc must come from a process inside the new PID namespace: that is us
        # (fsopen takes the caller's PID namespace, as mount(2) does).
        _attach(root_fd, "/proc", linux.fs_mount("proc", {}, nosuid_nodev_noexec), "proc")
        _attach(root_fd, "/sys", linux.fs_mount("sysfs", {}, nosuid_nodev_noexec | linux.MOUNT_ATTR_RDONLY),
                "sysfs")
        # /dev is nodev like the root, and the few devices a container may use are
        # bind mounts of the host's nodes (each its own mount, so usable): mknod
        # stays allowed, as in Docker, but a node made inside cannot be opened.
        # cgroup v1's devices controller says the same; cgroup v2 has none (it
        # would take a BPF program), so on v2 this is the only guard.
        _attach(root_fd, "/dev", linux.fs_mount("tmpfs", {"mode": "755", "size": "65536k"},
                                                linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
                                                | linux.MOUNT_ATTR_STRICTATIME), "tmpfs on /dev")
        # the tmpfs just attached: what /dev names inside the root now
        dev = linux.openat2(root_fd, "dev", os.O_PATH | os.O_DIRECTORY, IN_ROOT)
    finally:
        os.close(root_fd)
    try:
        for name in DEVICES:
            node = linux.open_tree(linux.AT_FDCWD, f"/dev/{name}", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            _attach(dev, name, node, f"/dev/{name}", is_dir=False)     # on an empty file made for it
        _attach(dev, "pts", linux.fs_mount("devpts", {"ptmxmode": "0666", "mode": "0620"},
                                           linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NOEXEC), "devpts")
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        _attach(dev, "shm", linux.fs_mount("tmpfs", {"mode": "1777", "size": "65536k"}, nosuid_nodev_noexec),
                "shm")
        os.mkdir("mqueue", 0o755, dir_fd=dev)
        for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(to, link, dir_fd=dev)
    finally:
        os.close(dev)


def _attach(dir_fd: int, target: str, mnt: int, what: str, is_dir: bool = True) -> None:
    """move_mount the detached mount mnt onto target resolved inside dir_fd
    (runtime/mounts.py's target_fd: a directory, else an empty file, made if
    missing); mnt is closed."""
    from .mounts import target_fd
    try:
        dest = target_fd(linux, dir_fd, target, is_dir)
        try:
            linux.move_mount(mnt, dest, what)
        finally:
            os.close(dest)
    finally:
        os.close(mnt)


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


def exec_command(argv: list[str], env: list[str]) -> NoReturn:
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
