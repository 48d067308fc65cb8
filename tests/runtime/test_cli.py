"""The `terrarium` CLI as a person uses it: fresh processes, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from tests.conftest import CLI, cli

pytestmark = pytest.mark.root


@pytest.fixture
def running(rt, name):
    r = cli("run", "-d", "--name", name, "--memory", "32m", "--cpus", "0.5", "--pids", "30",
            "busybox", "sh", "-c", "echo ready; sleep 300")
    assert r.returncode == 0, r.stderr
    yield name
    cli("rm", "-f", name)


def test_run_foreground_prints_output_and_returns_the_exit_code(rt):
    r = cli("run", "--rm", "busybox", "sh", "-c", "echo hello; exit 42")
    assert (r.returncode, r.stdout) == (42, "hello\n")


def test_python_dash_m_runtime_works_too(rt):
    r = subprocess.run([os.path.join(os.path.dirname(CLI), "python"), "-m", "runtime", "run", "--rm",
                        "busybox", "echo", "via -m"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "via -m\n")


def test_run_rm_leaves_no_container(rt, name):
    r = cli("run", "--rm", "--name", name, "busybox", "true")
    assert r.returncode == 0
    assert name not in cli("ps", "-a").stdout


def test_ps_inspect_logs_update_pause(rt, running):
    ps = cli("ps")
    row = next(line for line in ps.stdout.splitlines() if running in line)
    assert "Up " in row and "busybox" in row
    info = json.loads(cli("inspect", running).stdout)[0]
    assert info["name"] == running and info["status"] == "running"
    assert info["limits"] == {"memory": 32 << 20, "memory_swap": None, "cpus": 0.5, "pids": 30}
    assert set(info["namespaces"]) >= {"pid", "mnt", "net", "uts", "ipc"}
    deadline = time.time() + 5
    while cli("logs", running).stdout != "ready\n" and time.time() < deadline:
        time.sleep(0.05)
    assert cli("logs", running).stdout == "ready\n"
    assert cli("update", "--memory", "64m", running).returncode == 0
    info = json.loads(cli("inspect", running).stdout)[0]
    assert info["limits"]["memory"] == 64 << 20 and info["limits"]["cpus"] == 0.5
    assert cli("pause", running).returncode == 0
    assert "(Paused)" in cli("ps").stdout
    assert cli("unpause", running).returncode == 0
    assert "(Paused)" not in cli("ps").stdout
    assert cli("stop", "-t", "1", running).returncode == 0
    row = next(line for line in cli("ps", "-a").stdout.splitlines() if running in line)
    assert "Exited (137)" in row


def test_exec_joins_the_containers_namespaces(rt, running):
    r = cli("exec", running, "sh", "-c", "hostname; ps -o pid,comm | grep -c sleep; "
                                         "grep CapEff /proc/self/status; cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == running
    assert lines[1] == "1"                          # the container's sleep is visible
    assert lines[2].split()[1] == "00000000a80425fb"
    assert lines[3].startswith("sleep 300")         # /proc is the container's: sh exec'd sleep as PID 1
    c = rt.inspect(running)
    procs_file = os.path.join(rt.cgroups.paths(c.id)["pids"], "cgroup.procs")
    # the exec'd process was in the container's cgroup (it has exited by now)
    assert os.path.exists(procs_file)


def test_exec_exit_codes(rt, running):
    assert cli("exec", running, "sh", "-c", "exit 5").returncode == 5
    r = cli("exec", running, "nope")
    assert r.returncode == 127 and 'exec: "nope": executable file not found' in r.stderr


def test_exec_into_a_stopped_container_is_refused(rt, name, cleanup):
    cleanup.append(name)
    assert cli("create", "--name", name, "busybox", "true").returncode == 0
    r = cli("exec", name, "true")
    assert r.returncode == 125 and "is created, not running" in r.stderr


def test_exec_it_gives_a_terminal(rt, running):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(CLI, [CLI, "exec", "-it", running, "sh"], os.environ.copy())
    out = b""

    def read_until(marker: bytes, timeout=10.0):
        nonlocal out
        deadline = time.time() + timeout
        while marker not in out and time.time() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return marker in out
    # busybox ash asks the terminal where the cursor is (ESC[6n): answer as a terminal would
    assert read_until(b"\x1b[6n"), out
    os.write(fd, b"\x1b[1;1R")
    os.write(fd, b"tty; echo mark-$((6*7))\n")
    assert read_until(b"mark-42"), out
    assert b"\n/dev/pts/0" in out.replace(b"\r", b"")      # the container's devpts, not the host's
    os.write(fd, b"exit 3\n")
    read_until(b"\x00", timeout=3)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3


def test_images_lists_both_builtins_sharing_a_layer(rt):
    r = cli("images")
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["busybox"][2] == "1" and rows["lab"][2] == "2"


def test_errors_on_unknown_container(rt):
    for verb in ("stop", "start", "rm", "logs", "inspect", "pause", "kill"):
        r = cli(verb, "no-such-container")
        assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr, verb


def test_errors_exit_125_on_one_line(rt):
    for args in (["stop", "no-such-container"], ["exec", "no-such-container", "true"],
                 ["load", "-i", "/no/such/archive.tar"], ["rmi", "no-such-image"],
                 ["run", "--no-such-flag", "busybox"], ["stop", "-t", "nan", "x"]):
        r = cli(*args)
        assert r.returncode == 125, (args, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)


def test_an_unexpected_exception_is_one_line_unless_debugging(rt, monkeypatch, capsys):
    from runtime import cli as cli_module

    def broken(_rt, _args):
        raise RuntimeError("a bug\nwith a second line")
    monkeypatch.setitem(cli_module._VERBS, "ps", broken)
    monkeypatch.delenv("TERRARIUM_DEBUG", raising=False)
    assert cli_module.main(["ps"]) == 125
    err = capsys.readouterr().err
    assert err == "terrarium: internal error: RuntimeError: a bug (with a second line)\n"
    monkeypatch.setenv("TERRARIUM_DEBUG", "1")
    assert cli_module.main(["ps"]) == 125
    err = capsys.readouterr().err
    assert err.startswith("terrarium: internal error: RuntimeError") and "Traceback" in err


def test_the_client_never_shows_a_traceback(monkeypatch, capsys):
    from runtime import client

    def broken(_argv):
        raise ValueError("garbage from the server")
    monkeypatch.setattr(client, "_main", broken)
    monkeypatch.delenv("TERRARIUM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        client.main(["ps"])
    assert e.value.code == 125
    assert capsys.readouterr().err == "terrarium: internal error: ValueError: garbage from the server\n"

    def interrupted(_argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(client, "_main", interrupted)
    with pytest.raises(SystemExit) as e:
        client.main(["ps"])
    assert e.value.code == 130 and capsys.readouterr().err == ""
