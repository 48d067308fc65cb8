"""CVE-2019-5736 class: the processes that exec a container's program run
from a sealed copy of the interpreter, never from the host's binary
(runtime/sealed.py)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time

import pytest

from runtime import Spec, sealed
from tests.conftest import CLI, needs_root

pytestmark = needs_root


def _exe(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def _assert_sealed_image(pid: int) -> None:
    """pid runs from a sealed memfd copy that nobody can write."""
    assert _exe(pid).startswith(f"/memfd:{sealed.NAME}"), (pid, _exe(pid))
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY)
    try:
        assert sealed.seals(fd) == sealed.ALL_SEALS
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        os.open(f"/proc/{pid}/exe", os.O_WRONLY)
    assert e.value.errno in (errno.ETXTBSY, errno.EPERM)


def test_the_copy_is_the_interpreter_and_cannot_be_written():
    fd = sealed.interpreter_fd()
    try:
        assert sealed.seals(fd) == sealed.ALL_SEALS
        with open(sealed.real_executable(), "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want
        with pytest.raises(PermissionError):          # F_SEAL_WRITE, even for root
            os.pwrite(fd, b"x", 0)
        out = subprocess.run([f"/proc/self/fd/{fd}", "-I", "-S", "-c", "print(6 * 7)"],
                             pass_fds=(fd,), capture_output=True, text=True, timeout=30)
        assert out.stdout == "42\n"
    finally:
        os.close(fd)


def test_fork_server_shims_and_waiting_inits_run_from_the_sealed_copy(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "30")))
    with open(os.path.join(rt.run_dir, "forkserver.pid")) as f:
        server = int(f.read())
    _assert_sealed_image(server)
    with open(f"/proc/{c.pid}/stat") as f:
        shim_of_c = int(f.read().rsplit(")", 1)[1].split()[1])
    _assert_sealed_image(shim_of_c)
    with open(f"/proc/{server}/task/{server}/children") as f:
        spares = [int(p) for p in f.read().split()]
    spares.remove(shim_of_c)
    assert spares, "the fork server keeps spare shims"
    for shim in spares:
        _assert_sealed_image(shim)
        with open(f"/proc/{shim}/task/{shim}/children") as f:
            for init in (int(p) for p in f.read().split()):    # a spare's init, before its exec
                _assert_sealed_image(init)
    assert _exe(c.pid) == "/bin/busybox"             # the container's own program, after exec


def test_exec_forks_the_process_from_a_sealed_joiner(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    cli = subprocess.Popen([CLI, "exec", name, "sleep", "4321"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        process = None
        while process is None and time.monotonic() < deadline:
            for pid in rt.cgroups.procs(c.id):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read() == b"sleep\x004321\x00":
                            process = pid
                except OSError:
                    pass
            time.sleep(0.02)
        assert process is not None, cli.stderr.read1() if cli.poll() is not None else "not seen"
        with open(f"/proc/{process}/stat") as f:
            joiner = int(f.read().rsplit(")", 1)[1].split()[1])
        _assert_sealed_image(joiner)                 # what the process was before its exec
        with open(os.path.join(rt.run_dir, "forkserver.pid")) as f:
            server = int(f.read())
        # borrowed from the fork server, not copied again
        assert os.stat(f"/proc/{joiner}/exe").st_ino == os.stat(f"/proc/{server}/exe").st_ino
    finally:
        cli.terminate()
        cli.wait(timeout=10)
