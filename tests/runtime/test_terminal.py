"""Terminals for callers with threads (runtime/terminal.py): made by a helper
process, in-process or by the root agent, which hands the pty master and the
helper's control socket over with SCM_RIGHTS."""
import json
import os
import select
import time

import pytest

from runtime import Conflict, ExecFailed, InvalidArgument
from runtime.agent_client import AgentRuntime
from runtime.spec import make_spec
from tests.conftest import cli, needs_root

pytestmark = needs_root


@pytest.fixture(scope="module")
def box(rt):
    r = cli("run", "-d", "--name", "term-rt-box", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    yield r.stdout.strip()
    rt.remove(r.stdout.strip(), force=True)


@pytest.fixture(scope="module")
def agent_rt(rt, session_root, cgroup_parent):
    a = AgentRuntime(session_root, cgroup_parent, user="tess")
    yield a
    a.close()


def _until(term, wanted: bytes, timeout: float = 10.0) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while wanted not in out:
        left = deadline - time.monotonic()
        assert left > 0, out
        select.select([term.master], [], [], left)
        data = term.read()
        if data == b"":
            break
        out += data or b""
    return out


def _exit_code(term, timeout: float = 10.0) -> int:
    assert select.select([term.control], [], [], timeout)[0], "no exit code"
    return term.exit_code()


def test_through_the_agent_the_shell_types_resizes_and_exits(agent_rt, session_root, box):
    ends_before = _agent_log(session_root).count("terminal in 'term-rt-box' ended: exit 3")
    term = agent_rt.terminal(box, rows=30, cols=100)
    try:
        assert term.info["name"] == "term-rt-box" and (term.info["rows"], term.info["cols"]) == (30, 100)
        host_pts = os.stat("/dev/pts/ptmx").st_dev
        assert os.fstat(term.master).st_dev != host_pts          # the container's devpts, not the host's
        term.write(b"echo hello-$((6*7)); stty size; tty\n")
        out = _until(term, b"/dev/pts/0")
        assert b"hello-42\r\n30 100\r\n/dev/pts/0" in out
        term.resize(40, 120)
        assert term.size() == (40, 120)
        term.write(b"stty size\n")
        _until(term, b"40 120")
        term.write(b"exit 3\n")
        assert _exit_code(term) == 3
    finally:
        term.close()
    audit = [json.loads(line) for line in open(os.path.join(session_root, "audit.log"))]
    assert {"user": "tess", "verb": "terminal", "target": box, "result": "ok"}.items() <= audit[-1].items()
    deadline = time.monotonic() + 10                  # the agent reaps the helper and says so
    while _agent_log(session_root).count("terminal in 'term-rt-box' ended: exit 3") == ends_before:
        assert time.monotonic() < deadline, _agent_log(session_root)[-2000:]
        time.sleep(0.05)


def _agent_log(session_root) -> str:
    try:
        with open(os.path.join(session_root, "run", "agent.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("args, message", [
    ({"shell": "zsh"}, "invalid shell 'zsh': one of auto, sh, bash, ash"),
    ({"rows": 0}, "invalid terminal size 0: 1 to 500"),
    ({"cols": 100000}, "invalid terminal size 100000: 1 to 1000"),
])
def test_the_agent_refuses_bad_arguments(agent_rt, box, args, message):
    with pytest.raises(InvalidArgument, match=message):
        agent_rt.terminal(box, **args)


def test_the_agent_refuses_a_command_of_the_clients_choosing(agent_rt, box):
    with pytest.raises(InvalidArgument, match="terminal: unknown argument 'argv'"):
        agent_rt.call("terminal", ref=box, argv=["/bin/sh", "-c", "id"])


def test_a_missing_shell_is_exec_failed_127(agent_rt, box):
    with pytest.raises(ExecFailed, match='"/bin/bash": no such file or directory') as e:
        agent_rt.terminal(box, shell="bash")
    assert e.value.exit_code == 127


def test_closing_hangs_the_shell_up_and_the_helper_is_reaped(rt, box):
    ended = []
    term = rt.terminal(box, shell="sh", on_end=ended.append)
    _until(term, b"# ")
    term.close()
    deadline = time.monotonic() + 10
    while not ended:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ended == [128 + 1]                          # SIGHUP, as a closed terminal gives


def test_a_stopped_container_ends_the_session_and_has_no_terminal(rt, name, cleanup):
    c = rt.run(make_spec(image="busybox", name=name, cmd=["sleep", "600"]))
    cleanup.append(c.id)
    term = rt.terminal(c.id)
    try:
        _until(term, b"# ")
        rt.stop(c.id, timeout=1)
        assert _exit_code(term) == 137                  # killed with its PID namespace
    finally:
        term.close()
    with pytest.raises(Conflict, match="is exited, not running"):
        rt.terminal(c.id)
