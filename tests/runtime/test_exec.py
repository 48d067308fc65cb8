"""`terrarium exec` as Docker does it (runtime/execute.py): the process gets
pipes or a terminal made in the container, never the caller's terminal or
descriptors; it joins by pidfd, checked against the init's start time."""
from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from runtime import execute
from runtime.errors import Conflict
from runtime.fsutil import read_json
from tests.conftest import CLI, REPO, cli

pytestmark = pytest.mark.root

PROBE_SRC = os.path.join(REPO, "tests", "fixtures", "tiocsti_probe.c")


@pytest.fixture
def running(rt, name):
    r = cli("run", "-d", "--name", name, "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    yield name
    cli("rm", "-f", name)


def run_cli(*args, input: bytes = b"", timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], input=input, capture_output=True, timeout=timeout)


class PtyShell:
    """A shell on a pty of ours: the terminal a person would run terrarium from."""

    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, {**os.environ, "PS1": "HOSTSHELL$ ", "ENV": ""})
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""

    def read_until(self, marker: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.out and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:            # EIO: the shell has gone
                    break
                if not data:
                    break
                self.out += data
        assert marker in self.out, self.out
        return self.out

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()


@pytest.fixture
def shell():
    shells = []

    def start(argv=("/bin/sh", "-i"), **kw):
        s = PtyShell(list(argv), **kw)
        shells.append(s)
        return s
    yield start
    for s in shells:
        s.kill()


def wait_for_file(path: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    with open(path) as f:
        return f.read()


# ------------------------------------------------- no terminal without -t

def test_tiocsti_from_the_container_types_nothing_into_the_callers_shell(rt, running, shell, tmp_path):
    """The review's exploit: a background child of the exec'd process pushes a
    command into the terminal it was given, after exec returned."""
    probe = tmp_path / "probe"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(probe), PROBE_SRC], check=True)
    r = run_cli("exec", "-i", running, "sh", "-c", "cat > /probe && chmod 755 /probe",
                input=probe.read_bytes())
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "injected"
    sh = shell()
    sh.read_until(b"HOSTSHELL$ ")
    sh.send(f"{CLI} exec {running} /probe 'touch {marker}'; echo exec-rc=$?\n".encode())
    out = sh.read_until(b"exec-rc=0").replace(b"\r", b"").decode()
    assert "fd0-isatty=0\nfd1-isatty=0\nfd2-isatty=0\n" in out
    assert f"devtty-errno={errno.ENXIO}\n" in out           # no controlling terminal at all
    sid, pid = _sid_pid(out)
    assert sid == pid                                        # a session of its own
    # exec has returned; now the background child tries
    assert run_cli("exec", running, "touch", "/tmp/go").returncode == 0
    result = wait_for_file(os.path.join(rt.inspect(running).upperdir, "tmp", "result"))
    assert result == (f"fd0 {errno.ENOTTY}\nfd1 {errno.ENOTTY}\nfd2 {errno.ENOTTY}\n"
                      f"devtty-open {errno.ENXIO}\n")
    # anything pushed would be read by the shell before this line
    sh.send(b"echo shell-$((40+2))\n")
    sh.read_until(b"shell-42")
    assert not marker.exists()


def _sid_pid(out: str) -> tuple[int, int]:
    line = next(x for x in out.splitlines() if x.startswith("sid="))
    sid, pid = (int(f.split("=")[1]) for f in line.split())
    return sid, pid
