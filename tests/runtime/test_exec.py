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
        self.pid = None
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
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


def wait_for_process(rt, ref: str, cmdline: bytes, timeout: float = 20.0) -> int:
    """The pid of the container's process running cmdline (NUL-separated, as in /proc)."""
    cid = rt.inspect(ref).id
    deadline = time.monotonic() + timeout
    while True:
        for pid in rt.cgroups.procs(cid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == cmdline:
                        return pid
            except OSError:
                pass
        assert time.monotonic() < deadline, f"no {cmdline!r} in {ref}"
        time.sleep(0.02)


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


def test_the_process_has_pipes_its_own_session_and_no_terminal(running, shell):
    sh = shell()
    sh.read_until(b"HOSTSHELL$ ")
    sh.send(f"{CLI} exec {running} sh -c 'tty; for n in 0 1 2; do readlink /proc/$$/fd/$n; done; "
            f"ls /proc/$$/fd; cut -d\" \" -f1,6,7 /proc/$$/stat'; echo exec-rc=$?\n".encode())
    out = sh.read_until(b"exec-rc=0").replace(b"\r", b"").decode()
    lines = out.split("exec-rc=$?\n")[1].split("exec-rc=0")[0].splitlines()
    assert lines[0] == "not a tty"
    assert [x.split(":")[0] for x in lines[1:4]] == ["pipe", "pipe", "pipe"]
    assert lines[4:7] == ["0", "1", "2"]                  # nothing else of the caller's
    pid, session, tty_nr = lines[7].split()
    assert (session, tty_nr) == (pid, "0")


# ------------------------------------------------------------------ stdin

def test_exec_i_passes_stdin(running):
    r = run_cli("exec", "-i", running, "cat", input=b"hello\n")
    assert (r.returncode, r.stdout) == (0, b"hello\n")


def test_exec_without_i_gives_an_empty_stdin(running):
    r = run_cli("exec", running, "sh", "-c", "cat; echo end", input=b"the caller's data\n")
    assert (r.returncode, r.stdout) == (0, b"end\n")


def test_exec_i_copies_both_ways_at_once(running):
    """3 MB in while 6 MB come out: neither side waits for the other."""
    data = os.urandom(3 << 20)
    r = run_cli("exec", "-i", running, "sh", "-c", "tee /dev/stderr", input=data)
    assert r.returncode == 0
    assert (r.stdout == data, r.stderr == data) == (True, True)


def test_stdout_stderr_and_exit_code_are_kept_apart(running):
    r = run_cli("exec", running, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_a_caller_with_stdin_and_stdout_closed(running):
    """Their numbers are free: the relay's own descriptors must not land there."""
    r = subprocess.run(["/bin/sh", "-c", f'"$0" exec -i {running} sh -c "echo out; echo err >&2; '
                        f'cat; exit 5" <&- >&-', CLI], capture_output=True, timeout=60)
    assert (r.returncode, r.stderr) == (5, b"err\n")


def test_a_missing_workdir_is_one_line_and_126(running):
    r = run_cli("exec", "-w", "/nonexistent", running, "true")
    assert (r.returncode, r.stderr) == (126, b"terrarium: exec: chdir to the working directory "
                                             b"'/nonexistent': No such file or directory\n")


def test_a_background_child_does_not_keep_exec_waiting(running):
    r = run_cli("exec", running, "sh", "-c", "sleep 600 & echo started")
    assert (r.returncode, r.stdout) == (0, b"started\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_to_the_command_reach_the_process(running, sig):
    p = subprocess.Popen([CLI, "exec", running, "sh", "-c",
                          "trap 'echo got-$0; exit 7' TERM INT; echo ready; "
                          "while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(sig)
        out, _ = p.communicate(timeout=20)
    finally:
        p.kill()
        p.wait()
    assert (p.returncode, out) == (7, b"got-sh\n")


def test_the_relay_works_with_descriptors_above_1024(running):
    """select() cannot watch them; every descriptor of the relay is above 1100 here."""
    code = ("import os, resource, sys\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))\n"
            "held = [os.open('/dev/null', os.O_RDONLY) for _ in range(1100)]\n"
            "from runtime.cli import main\n"
            f"sys.exit(main(['exec', '-i', {running!r}, 'sh', '-c', 'cat; exit 4']))\n")
    r = subprocess.run([sys.executable, "-c", code], input=b"through high fds\n",
                       capture_output=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (4, b"through high fds\n", b"")


# ------------------------------------------------------------------ -t

def test_exec_it_is_interactive_with_the_callers_window_size(rt, running, shell):
    sh = shell([CLI, "exec", "-it", running, "sh"], rows=33, cols=111)
    # busybox ash asks the terminal where the cursor is (ESC[6n): answer as a terminal would
    sh.read_until(b"\x1b[6n")
    sh.send(b"\x1b[1;1R")
    sh.send(b"tty; stty size; echo mark-$((6*7))\n")
    out = sh.read_until(b"mark-42").replace(b"\r", b"")
    assert b"\n/dev/pts/0\n33 111\n" in out             # the container's devpts, our size
    fcntl.ioctl(sh.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))   # SIGWINCH to us
    sh.send(b"stty size\n")
    sh.read_until(b"40 120\r\n")
    sh.send(b"sleep 601\n")
    wait_for_process(rt, running, b"sleep\x00601\x00")
    sh.send(b"\x03")                          # Ctrl-C: the container's terminal interrupts sleep
    sh.read_until(b"^C\r\n/ # \x1b[6n")
    sh.send(b"\x1b[1;1R")
    sh.send(b"echo after-$((1+1))\n")
    sh.read_until(b"after-2\r\n")
    sh.send(b"exit 3\n")
    assert sh.wait() == 3


def test_exec_it_keeps_input_typed_ahead_of_a_process_not_yet_reading(running):
    """100 kB typed at once: more than the container's pty takes before the
    process reads (the relay waits for room), and typed before the relay
    made our terminal raw (which must not flush it)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(CLI, [CLI, "exec", "-it", running, "sh", "-c", "stty -echo; sleep 1; wc -c; exit 9"])
    data, out = (b"x" * 99 + b"\n") * 1000 + b"\x04", b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([fd], [fd] if data else [], [], 0.2)
        if readable:
            try:
                chunk = os.read(fd, 65536)
            except OSError:                                # EIO: the command has exited
                break
            out += chunk
        if writable:
            data = data[os.write(fd, data[:4096]):]
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert (os.waitstatus_to_exitcode(status), out[-8:]) == (9, b"100000\r\n")


def test_exec_t_opens_nothing_outside_the_container(rt, name, cleanup, tmp_path):
    """The container's PID 1 chroots into a tree whose /dev is an absolute
    symlink to a host directory holding a FIFO where /dev/pts/ptmx would be;
    a reader waits on the FIFO on the host."""
    evil = tmp_path / "evil-dev"
    (evil / "pts").mkdir(parents=True)
    fifo = evil / "pts" / "ptmx"
    os.mkfifo(fifo)
    got = []

    def reader():
        fd = os.open(fifo, os.O_RDONLY)                  # blocks until a writer opens
        got.append(os.read(fd, 100))
        os.close(fd)
    t = threading.Thread(target=reader)
    t.start()
    try:
        cleanup.append(name)
        r = cli("run", "-d", "--name", name, "busybox", "sh", "-c",
                f"mkdir -p /evil/bin && cp /bin/busybox /evil/bin/ && ln -s {evil} /evil/dev && "
                "exec chroot /evil /bin/busybox sleep 600")
        assert r.returncode == 0, r.stderr
        pid = rt.inspect(name).pid
        deadline = time.monotonic() + 20
        while os.readlink(f"/proc/{pid}/root") != "/evil":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = run_cli("exec", "-t", name, "sh", "-c", "tty; ls -d /evil")
    finally:
        try:                                             # ENXIO: no reader left, it was opened
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"nobody else")
            os.close(fd)
        except OSError as e:
            assert e.errno == errno.ENXIO
        t.join(timeout=20)
    assert got == [b"nobody else"]                       # the first to open it was us
    # and exec worked, in the container's root (where /evil is) and its devpts
    assert (r.returncode, r.stdout) == (0, b"/dev/pts/0\r\n/evil\r\n")


# -------------------------------------------------------------- pid reuse

def test_a_pid_that_no_longer_names_the_init_is_refused(rt, running, tmp_path):
    """The recorded init pid now names a host process: exec must not join it."""
    c = rt.inspect(running)
    recorded = read_json(os.path.join(rt.containers_dir, c.id, "run.json"))["pid_start"]
    host = subprocess.Popen(["sleep", "600"])
    marker = tmp_path / "ran-on-the-host"
    try:
        stale = c._replace(pid=host.pid)
        with pytest.raises(Conflict, match=rf"pid {host.pid} is no longer its init \(started at tick "
                                           rf"\d+, the init at tick {recorded}\)"):
            execute.exec_in(rt, stale, ["/bin/sh", "-c", f"touch {marker}"], [], pid_start=recorded)
    finally:
        host.kill()
        host.wait()
    assert not marker.exists()


def test_the_cli_says_so_when_the_init_is_not_the_recorded_one(rt, running):
    c = rt.inspect(running)
    path = os.path.join(rt.containers_dir, c.id, "run.json")
    run = read_json(path)
    with open(path, "w") as f:                    # as if the init had died and its pid come back
        import json
        json.dump({**run, "pid_start": run["pid_start"] - 1}, f)
    try:
        r = cli("exec", running, "true")
    finally:
        with open(path, "w") as f:
            json.dump(run, f)
    assert (r.returncode, r.stderr.count("\n")) == (125, 1)
    assert f"pid {c.pid} is no longer its init" in r.stderr
