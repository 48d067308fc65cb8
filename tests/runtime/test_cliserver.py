"""The `terrarium` command as a thin client of the CLI server (runtime.client,
runtime.cliserver): the command runs in a worker forked from a warm server,
yet behaves as the process the person started — its output, exit code, cwd,
umask, environment, stdin, signals, and its death."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from runtime import cliserver
from tests.conftest import CLI, cli

pytestmark = pytest.mark.root


def server_pid(root: str) -> int | None:
    try:
        with open(os.path.join(root, "run", "cli.pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/comm") as f:
            return pid if f.read().strip() == "terrarium-cli" else None
    except (OSError, ValueError):
        return None


def workers(server: int) -> list[int]:
    """The server's children running a command (the idle spare is still named terrarium-cli)."""
    with open(f"/proc/{server}/task/{server}/children") as f:
        kids = [int(p) for p in f.read().split()]
    out = []
    for pid in kids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "terrarium":
                    out.append(pid)
        except OSError:
            pass
    return out


def gone(pid: int, timeout: float = 5.0) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def wait_for_line(proc: subprocess.Popen, text: bytes, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    seen = b""
    while text not in seen and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    assert text in seen, seen
    return seen


def started_server(session_root: str) -> int:
    assert cli("ps").returncode == 0
    pid = server_pid(session_root)
    assert pid, "the first command should have started a CLI server"
    return pid


def test_a_command_runs_in_a_worker_writing_to_the_clients_stdout(rt, session_root, name, cleanup):
    cleanup.append(name)
    server = started_server(session_root)
    client = subprocess.Popen([CLI, "run", "--name", name, "busybox", "sh", "-c", "echo up; sleep 30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_line(client, b"up\n")
        [worker] = workers(server)
        assert os.readlink(f"/proc/{worker}/fd/1") == os.readlink(f"/proc/{client.pid}/fd/1")
        assert cli("stop", "-t", "1", name).returncode == 0
        assert client.wait(timeout=15) == 137
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert gone(worker)


def test_ctrl_c_reaches_a_foreground_container(rt, session_root):
    started_server(session_root)
    client = subprocess.Popen([CLI, "run", "--rm", "busybox", "sh", "-c",
                               "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_line(client, b"ready\n")
        client.send_signal(signal.SIGINT)
        out, _ = client.communicate(timeout=15)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 7 and b"got-int" in out


def test_the_worker_dies_with_its_client_and_the_container_lives_on(rt, session_root, name, cleanup):
    cleanup.append(name)
    server = started_server(session_root)
    client = subprocess.Popen([CLI, "run", "--name", name, "busybox", "sh", "-c", "echo up; sleep 300"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_line(client, b"up\n")
    [worker] = workers(server)
    client.kill()                                   # SIGKILL: no chance to say goodbye
    client.wait()
    assert gone(worker), "the worker outlived its client"
    assert rt.inspect(name).status == "running"     # as with a killed local command


def test_cwd_umask_environment_and_stdin_are_the_clients(rt, session_root, tmp_path):
    started_server(session_root)
    r = subprocess.run([CLI, "save", "-o", "saved.tar", "busybox"], cwd=tmp_path, umask=0o077,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    saved = tmp_path / "saved.tar"
    assert saved.is_file() and (saved.stat().st_mode & 0o777) == 0o600
    # argparse wraps help at $COLUMNS: the client's, not the server's
    width = {}
    for columns in ("40", "200"):
        r = subprocess.run([CLI, "run", "--help"], env={**os.environ, "COLUMNS": columns},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0
        width[columns] = max(len(line) for line in r.stdout.splitlines())
    assert width["40"] < 60 < width["200"]
    # stdin: the archive goes in through the client's fd 0
    with open(saved, "rb") as f:
        r = subprocess.run([CLI, "load", "-i", "/dev/stdin", "--name", "via-stdin"], stdin=f,
                           capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert "via-stdin" in cli("images").stdout
    finally:
        cli("rmi", "via-stdin")


def test_the_server_has_its_malloc_tunables_and_a_command_the_clients_environment(rt, session_root):
    """GLIBC_TUNABLES (cliserver.MALLOC_TUNABLES) is set for the server, which
    its workers inherit; what a command runs gets the client's environment."""
    if "GLIBC_TUNABLES" in os.environ:
        pytest.skip("the caller set GLIBC_TUNABLES: the server keeps theirs")
    server = started_server(session_root)
    with open(f"/proc/{server}/environ", "rb") as f:
        env = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0") if item)
    # glibc rewrites the variable in place as it parses it (2.36 leaves the first setting there)
    assert env[b"GLIBC_TUNABLES"].decode() in cliserver.MALLOC_TUNABLES.split(":")
    r = cli("run", "--rm", "-e", "SEEN=1", "busybox", "sh", "-c", "env")
    assert r.returncode == 0, r.stderr
    assert "SEEN=1" in r.stdout and "GLIBC_TUNABLES" not in r.stdout


def test_parallel_commands_each_get_their_own_answer(rt, session_root):
    started_server(session_root)
    results: dict[int, subprocess.CompletedProcess] = {}

    def one(i: int) -> None:
        results[i] = subprocess.run([CLI, "run", "--rm", "busybox", "sh", "-c", f"echo {i}; exit {i}"],
                                    capture_output=True, text=True, timeout=60)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: (r.returncode, r.stdout) for i, r in results.items()} == {i: (i, f"{i}\n") for i in range(8)}


def test_a_malformed_request_is_refused_and_the_server_carries_on(rt, session_root):
    server = started_server(session_root)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(os.path.join(session_root, "run", "cli.sock"))
    s.send(b"not the protocol")
    assert s.recv(64) == b"stale"                   # the client's cue to run the command itself
    s.close()
    assert cli("ps").returncode == 0
    assert server_pid(session_root) == server


def test_changed_code_runs_locally_and_the_server_restarts(rt, session_root):
    old = started_server(session_root)
    path = os.path.join(os.path.dirname(cliserver.__file__), "errors.py")
    st = os.stat(path)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        r = cli("ps")
        assert r.returncode == 0 and r.stdout.startswith("CONTAINER ID"), r.stderr
        assert gone(old), "a stale server should leave"
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = started_server(session_root)
    assert new != old


def test_an_idle_server_leaves_and_local_mode_starts_none(tmp_path):
    root = str(tmp_path / "root")
    env = {**os.environ, "TERRARIUM_ROOT": root, "TERRARIUM_CLI_IDLE_EXIT": "0.5"}
    try:
        r = subprocess.run([CLI, "ps", "-a"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        pid = server_pid(root)
        assert pid and gone(pid, timeout=10), "an idle server should leave"
        for left in ("cli.sock", "cli.pid"):
            assert not os.path.exists(os.path.join(root, "run", left))
    finally:
        cliserver.stop_server(os.path.join(root, "run"))
    r = subprocess.run([CLI, "ps", "-a"], env={**env, "TERRARIUM_CLI_LOCAL": "1"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and server_pid(root) is None
    assert not os.path.exists(os.path.join(root, "run", "cli.sock"))


def _private_kb() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f
                   if line.startswith(("Private_Clean:", "Private_Dirty:")))


def test_a_spare_worker_copies_its_pages_ahead_of_need():
    """linux.populate_private_memory() in a fresh fork: what was shared with
    the parent becomes the child's own (the copies a command would otherwise
    fault in one by one)."""
    from runtime import linux
    ballast = bytearray(8 << 20)                    # 8 MB the child shares after fork
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            before = _private_kb()
            asked = linux.populate_private_memory()
            os.write(w, f"{before} {_private_kb()} {asked}".encode())
        finally:
            os._exit(0)
    os.close(w)
    before, after, asked = (int(x) for x in os.read(r, 100).split())
    os.close(r)
    os.waitpid(pid, 0)
    assert asked >= len(ballast)
    assert after - before >= 8 << 10, (before, after)    # kB: at least the ballast
    del ballast
