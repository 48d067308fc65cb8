"""A sealed copy of the interpreter, for the processes that become containers.

CVE-2019-5736: a container's program can be a script whose #! line is
/proc/self/exe.  The kernel resolves that link in the process that calls
execve: a container's init, or the process `exec` starts.  Were that
process the host's /usr/bin/python3, the container would run the host's
interpreter and could keep a descriptor to it, to write it once nothing
runs it any more: the next root Python on the host would be the
container's.  runc answers with a copy of itself in a sealed memfd; so
does Terrarium: the fork server (whose forks are every shim and init) and
exec's joiner run from a memfd copy of the interpreter with every seal
set, so writing it fails whatever holds it, and the host's binary is never
the image of a process that execs a container's program.

The copy costs ~17 ms and the interpreter's size in shared memory (6.8 MB
for Debian's python3.11) per fork server; its shims and inits share it.
"""
from __future__ import annotations

import fcntl
import os
import sys

NAME = "terrarium-python"
# fcntl(2): F_ADD_SEALS / F_GET_SEALS and the seals (linux/fcntl.h)
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def interpreter_fd(donor: int | None = None) -> int:
    """A close-on-exec descriptor of a sealed copy of this interpreter, to
    execve through /proc/self/fd/N (the kernel opens the file before it
    closes close-on-exec descriptors).  A process that already runs from
    one hands out its own; so does donor (a pid, e.g. the fork server's)
    when it runs from one, which saves the copy."""
    for pid in ("self", donor):
        fd = _sealed_exe(pid) if pid is not None else None
        if fd is not None:
            return fd
    fd = os.memfd_create(NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(real_executable(), "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            while done < size:
                sent = os.sendfile(fd, src.fileno(), done, size - done)
                if sent == 0:
                    raise OSError(f"{src.name} shrank while it was copied")
                done += sent
        fcntl.fcntl(fd, F_ADD_SEALS, ALL_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sealed_exe(pid: int | str) -> int | None:
    """An O_RDONLY descriptor of pid's image if that is a fully sealed copy."""
    try:
        fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{NAME}") and seals(fd) == ALL_SEALS:
        return fd
    os.close(fd)
    return None


def real_executable() -> str:
    """The interpreter's path on the host, also in a process that runs from
    a sealed copy (whose sys.executable the starter set back to it)."""
    return os.path.realpath(sys.executable)


def seals(fd: int) -> int:
    """The seals of the file behind fd (0 for a file that cannot have any)."""
    try:
        return fcntl.fcntl(fd, F_GET_SEALS)
    except OSError:
        return 0
