"""What an unprivileged local user can reach: a throwaway user, a way to try
things as that user, and a setuid probe.

    with throwaway_user() as user:
        assert as_user(user, reach, path) == "EACCES"
"""
from __future__ import annotations

import errno
import os
import pickle
import pwd
import secrets
import struct
import subprocess
import time
from contextlib import contextmanager


def _run_retrying(argv: list[str], timeout: float = 30.0) -> None:
    """useradd/userdel: other processes may hold /etc/passwd's lock for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline or "lock" not in r.stderr:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        time.sleep(0.1)


@contextmanager
def throwaway_user():
    """A new local user (no home, no login shell) and group; removed afterwards,
    also when the test fails.  Yields its pwd entry."""
    name = f"tprobe-{secrets.token_hex(4)}"
    _run_retrying(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-U", name])
    try:
        yield pwd.getpwnam(name)
    finally:
        _run_retrying(["userdel", "-r", name])


def as_user(user: pwd.struct_passwd, fn, *args):
    """fn(*args) run in a forked child that is user: its uid and gid, no other
    groups and so no capabilities.  Returns what fn returns (picklable)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            result = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - the parent re-raises it
            result = ("raised", repr(e))
        try:
            os.write(w, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "raised":
        raise AssertionError(f"as uid {user.pw_uid}: {value}")
    return value


def reach(path: str) -> str:
    """"ok" if this process can list (a directory) or read (a file) path, else
    the errno's name."""
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            os.close(os.open(path, os.O_RDONLY))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def run(path: str) -> str:
    """Execute path: "exit N" if it ran (the probe's N is its euid), else the
    errno's name of the failed execve."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.execv(path, [path])
        except OSError as e:
            os.write(w, errno.errorcode[e.errno].encode())
        os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        failed = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return failed or f"exit {os.waitstatus_to_exitcode(status)}"


def euid_probe() -> bytes:
    """A 136-byte static x86-64 ELF program that exits with its effective uid
    (mod 256): geteuid(), then exit() with it.  Nothing to compile, no
    libraries, so it runs on the host and in any container alike; with the
    setuid bit and owner root it exits 0 for any user who can run it."""
    base = 0x400000
    code = (b"\xb8\x6b\x00\x00\x00"      # mov eax, 107 (geteuid)
            b"\x0f\x05"                  # syscall
            b"\x89\xc7"                  # mov edi, eax
            b"\xb8\x3c\x00\x00\x00"      # mov eax, 60 (exit)
            b"\x0f\x05")                 # syscall
    ehsize, phsize = 64, 56
    size = ehsize + phsize + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)     # 64-bit, little endian, SysV
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 0x3E, 1, base + ehsize + phsize,
                         ehsize, 0, 0, ehsize, phsize, 1, 0, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, r-x
    return header + segment + code
