"""The root agent (runtime/agent.py) and its client (runtime/agent_client.py),
against the real kernel: a real agent process, real containers, a real
throwaway user for the SO_PEERCRED check."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from runtime import Conflict, ExecFailed, InvalidArgument, Limits, NotFound, Spec
from runtime.agent import socket_path
from runtime.agent_client import AccessDenied, AgentRuntime, AgentUnavailable
from tests.conftest import CLI, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root")


@pytest.fixture
def agent_rt(rt, session_root, cgroup_parent):
    a = AgentRuntime(session_root, cgroup_parent, user="tester")
    yield a
    a.close()


def _audit(session_root) -> list[dict]:
    try:
        with open(os.path.join(session_root, "audit.log")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def _raw(path: str, *lines: bytes) -> list[dict]:
    """Send request lines on one connection; the replies, one per line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        f = s.makefile("rb")
        out = []
        for line in lines:
            s.sendall(line)
            out.append(json.loads(f.readline()))
        return out


# ---------------------------------------------------------------- round trip

def test_verbs_round_trip_equal_to_in_process(rt, agent_rt, name, cleanup, session_root):
    cleanup.append(name)
    made = agent_rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo hi; sleep 300"),
                                limits=Limits(memory=64 << 20, pids=32)))
    assert made == rt.inspect(name)
    started = agent_rt.start(name)
    assert started.status == "running" and started == rt.inspect(name)
    assert agent_rt.inspect(name) == rt.inspect(name)
    assert agent_rt.list(all=True) == rt.list(all=True)
    assert agent_rt.update(name, Limits(memory=96 << 20)).limits == rt.inspect(name).limits
    assert agent_rt.pause(name) == rt.inspect(name) and rt.inspect(name).status == "paused"
    assert agent_rt.resume(name).status == "running"
    assert agent_rt.diff(name) == rt.diff(name)
    assert agent_rt.layer_of(name, "/bin/sh") == rt.layer_of(name, "/bin/sh")
    assert agent_rt.upper_size(name) == rt.upper_size(name)
    assert agent_rt.mount_info(name) == rt.mount_info(name)
    deadline = time.monotonic() + 5
    while b"hi" not in rt.logs(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent_rt.logs(name, tail=1) == rt.logs(name, tail=1) == b"hi\n"
    assert agent_rt.logs(name, tail=1, max_bytes=2) == b"i\n"     # the dashboard's bounded tail
    assert agent_rt.images.list() == rt.images.list()
    assert agent_rt.images.get("busybox") == rt.images.get("busybox")
    digest = rt.images.get("busybox").layers[0].digest
    assert agent_rt.images.layer(digest) == rt.images.layer(digest)
    stopped = agent_rt.stop(name, timeout=1)
    assert stopped.status == "exited" and stopped == rt.inspect(name)
    rt.image_gc()                     # what earlier tests left collectable (moved names' old images)
    image = agent_rt.commit(name, f"{name.lower()}-img", message="snap")
    assert image == rt.images.get(image.name)
    agent_rt.remove_image(image.name)
    assert agent_rt.image_gc() == [image.layers[-1].digest]
    agent_rt.remove(name)
    with pytest.raises(NotFound):
        rt.inspect(name)
    mine = [(r["verb"], r["user"], r["result"]) for r in _audit(session_root)
            if r.get("target") in (name, image.name) or r["verb"] == "image-gc"]
    assert mine[-9:] == [(v, "tester", "ok") for v in (
        "start", "update", "pause", "resume", "stop", "commit", "rmi", "image-gc", "remove")]
    update = [r for r in _audit(session_root) if r["verb"] == "update" and r["target"] == name][-1]
    assert update["change"] == {"memory": [64 << 20, 96 << 20], "pids": [32, None]}     # before, after
    assert [r["verb"] for r in agent_rt.audit_recent(3)] == ["remove", "image-gc", "rmi"]   # newest first
    st = os.stat(os.path.join(session_root, "audit.log"))
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)


def test_errors_keep_their_type_and_message(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    for call in (lambda r: r.inspect("no-such-container"),
                 lambda r: r.pause(name),
                 lambda r: r.create(Spec(image="busybox", name=name)),
                 lambda r: r.kill(name, "SIGFOO"),
                 lambda r: r.update(name, Limits(memory=1 << 70)),
                 lambda r: r.create(Spec(image="busybox", name=name + "-y",
                                         limits=Limits(memory=1 << 20))),
                 lambda r: r.images.get("no-such-image")):
        with pytest.raises(Exception) as local:
            call(rt)
        with pytest.raises(Exception) as remote:
            call(agent_rt)
        assert (type(remote.value), str(remote.value)) == (type(local.value), str(local.value))
    with pytest.raises(ExecFailed) as e:
        agent_rt.run(Spec(image="busybox", name=name + "-x", cmd=("/no/such/program",)))
    cleanup.append(name + "-x")
    assert e.value.exit_code == 127 and "/no/such/program" in str(e.value)


def test_create_through_the_agent_is_checked_like_make_spec(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    made = agent_rt.create(Spec(image="busybox", name=name, seccomp={"mode": "unconfined"}))
    assert made.seccomp == "unconfined" and made == rt.inspect(name)
    with pytest.raises(InvalidArgument, match="invalid container name"):
        agent_rt.call("create", spec={"image": "busybox", "name": "bad/name"})
    with pytest.raises(InvalidArgument, match="unknown fields"):
        agent_rt.call("create", spec={"image": "busybox", "name": name, "rootfs": "/"})


def test_networks_through_the_agent(rt, agent_rt, name, cleanup, session_root):
    net = name[:30]
    made = agent_rt.networks.create(net, subnet="10.253.9.0/24")
    try:
        assert made["bridge"] and made == rt.networks.inspect(net)
        assert net in [n["name"] for n in agent_rt.networks.list()]
        cleanup.append(name)
        c = agent_rt.run(Spec(image="busybox", name=name, cmd=("sleep", "30"), network=net,
                              ports=("127.0.0.1:18998:80",)))
        assert (c.address, c.ports) == ("10.253.9.2", ("127.0.0.1:18998:80/tcp",))
        assert c == rt.inspect(name)
        with pytest.raises(Conflict, match="in use"):
            agent_rt.networks.remove(net)
        with pytest.raises(InvalidArgument, match="invalid network name"):
            agent_rt.call("network-create", name="bad name")
        # the host's network only when the request says it may (the dashboard: administrators)
        from runtime.errors import Forbidden
        with pytest.raises(Forbidden):
            agent_rt.create(Spec(image="busybox", name=f"{name}-h", network="host"))
        cleanup.append(f"{name}-h")
        assert agent_rt.create(Spec(image="busybox", name=f"{name}-h", network="host"),
                               allow_host_network=True).network == "host"
        rt.remove(name, force=True)
    finally:
        agent_rt.networks.remove(net)
    verbs = [(e["verb"], e["target"]) for e in _audit(session_root) if e["verb"].startswith("network")]
    assert ("network-create", net) in verbs and ("network-remove", net) in verbs


# --------------------------------------------------------------- refusals

def test_paths_outside_the_state_root_are_refused(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    c = rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    with pytest.raises(InvalidArgument, match="'..' is not allowed"):
        agent_rt.layer_of(c.id, "/../../../etc/shadow")
    with pytest.raises(InvalidArgument, match="must be absolute"):
        agent_rt.layer_of(c.id, "etc/shadow")
    with pytest.raises(InvalidArgument, match="unknown argument 'dir'"):
        agent_rt.call("inspect", ref=c.id, dir="/etc")
    with pytest.raises(InvalidArgument, match="unknown argument 'root'"):
        agent_rt.call("list", root="/")
    with pytest.raises(InvalidArgument, match="invalid container reference"):
        agent_rt.call("remove", ref="../../etc")
    with pytest.raises(InvalidArgument, match="invalid image name"):
        agent_rt.call("rmi", name="../layers")
    assert rt.inspect(c.id).status == "created"


def test_host_reads_come_back_as_the_in_process_records(rt, agent_rt, name, cleanup):
    """The dashboard's host pages read every process's /proc (root's): the agent
    serves them, with no arguments, as the records Runtime.host_* returns."""
    from runtime.cgroups.tree import CgroupNode
    from runtime.procs import NamespaceInfo, ProcessInfo, walk
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300"), limits=Limits(memory=32 << 20)))
    c = rt.inspect(c.id)

    def ours(namespaces):
        return sorted((n for n in namespaces if n.container == c.id), key=lambda n: n.type)
    got = ours(agent_rt.host_namespaces())
    assert got == ours(rt.host_namespaces()) and all(isinstance(n, NamespaceInfo) for n in got)
    assert {n.type: n.inode for n in got} == {k: v for k, v in c.namespaces.items()
                                                if any(n.inode == v for n in got)}
    assert {n.type for n in got} >= {"pid", "mnt", "net", "uts", "ipc"}

    def around_init(forest):
        nodes = {n.pid: (d, n) for d, n in walk(forest)}
        depth, shim = nodes[c.shim_pid]
        return depth, shim.info, [(k.info, [g.pid for g in k.children]) for k in shim.children]
    (depth, shim, kids), local = around_init(agent_rt.host_processes()), around_init(rt.host_processes())
    assert (depth, shim, kids) == local and isinstance(shim, ProcessInfo)
    assert [k.pid for k, _ in kids] == [c.pid] and kids[0][0].cmdline == ("sleep", "300")
    assert shim.sources and kids[0][0].sources["pid"].startswith(f"/proc/{c.pid}/stat")

    def memory_node(hierarchies):
        mem = next(h for h in hierarchies if "memory" in h.name.split(",") or h.name == "unified")
        return next(n for n in mem.nodes if n.path == "/" + c.cgroup)
    node = memory_node(agent_rt.host_cgroups())
    assert isinstance(node, CgroupNode) and node.memory_limit == 32 << 20 == memory_node(rt.host_cgroups()).memory_limit
    assert node.sources["memory_limit"]
    for verb in ("host-namespaces", "host-processes", "host-cgroups"):
        with pytest.raises(InvalidArgument, match="unknown argument 'proc'"):
            agent_rt.call(verb, proc="/tmp/fake-proc")


def test_strict_mode_refuses_the_in_process_fallback(agent_rt, monkeypatch):
    """What the agent does not serve (here: cgroups) falls back to an in-process
    Runtime only for root, and not with TERRARIUM_AGENT_STRICT=1: then the
    error names the attribute, and is no TerrariumError a page would soften."""
    from runtime import TerrariumError
    from runtime.agent_client import NeedsAgent
    monkeypatch.setenv("TERRARIUM_AGENT_STRICT", "1")
    fresh = AgentRuntime(agent_rt.root, user="tester")
    try:
        with pytest.raises(NeedsAgent, match=r"^AgentRuntime\.cgroups needs the Terrarium agent to "
                                             r"serve it: .* TERRARIUM_AGENT_STRICT=1") as e:
            fresh.cgroups
        assert not isinstance(e.value, (TerrariumError, AttributeError))
        with pytest.raises(NeedsAgent, match=r"^AgentRuntime\.images\.has_layer needs"):
            fresh.images.has_layer("sha256:" + "0" * 64)
        assert [c.id for c in fresh.list()] == [c.id for c in agent_rt.list()]   # served: fine
        monkeypatch.setenv("TERRARIUM_AGENT_STRICT", "0")
        assert fresh.cgroups is not None                                        # root may
    finally:
        fresh.close()


def test_malformed_requests_get_an_error_and_the_agent_carries_on(agent_rt, session_root):
    agent_rt.call("info")                                        # started
    replies = _raw(socket_path(session_root), b"not json\n", b"[1, 2]\n", b'{"verb": "nope"}\n',
                   b'{"verb": "list", "args": []}\n', b"[" * 100000 + b"\n",
                   b'{"verb": "info"}\n')
    assert [r["ok"] for r in replies] == [False, False, False, False, False, True]
    assert [r.get("kind") for r in replies[:5]] == ["InvalidArgument"] * 5
    assert replies[2]["error"] == "unknown verb 'nope'"


@pytest.fixture
def stranger():
    """A throwaway system user (removed after)."""
    user = f"tt-agent-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                   check=True, capture_output=True)
    try:
        import pwd
        yield pwd.getpwnam(user)
    finally:
        subprocess.run(["userdel", user], check=True, capture_output=True)


def _foreground_agent(session_root, path, *extra):
    """`terrarium agent` on path; returns the process once it answers."""
    proc = subprocess.Popen([CLI, "--root", session_root, "agent", "--socket", path, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            _raw(path, b'{"verb": "info"}\n')
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)


_AS_STRANGER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"verb": "list", "user": "admin"}\\n')
print(s.makefile("rb").readline().decode(), end="")
"""


def test_a_connection_from_an_unrelated_uid_is_refused(rt, session_root, stranger, open_dir):
    sock_dir = os.path.join(open_dir, "agent")
    path = os.path.join(sock_dir, "agent.sock")
    for allow in ((), ("--uids", str(stranger.pw_uid))):
        proc = _foreground_agent(session_root, path, *allow)
        try:
            # open the path to everyone, so that only SO_PEERCRED can refuse
            os.chmod(sock_dir, 0o755)
            os.chmod(path, 0o666)
            out = subprocess.run([sys.executable, "-I", "-c", _AS_STRANGER, path],
                                 user=stranger.pw_uid, group=stranger.pw_gid, cwd="/",
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            reply = json.loads(out.stdout)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=40)
        if not allow:
            assert reply["ok"] is False and reply["kind"] == "AccessDenied"
            assert f"uid {stranger.pw_uid} may not use the Terrarium agent" in reply["error"]
            assert f"refused a connection from uid {stranger.pw_uid}" in err
        else:                                   # the same user, allowed: the socket was reachable
            assert reply["ok"] is True and isinstance(reply["result"], list)
    with pytest.raises(AccessDenied):
        from runtime.agent_client import raise_reply
        raise_reply({"ok": False, "kind": "AccessDenied", "error": "x"})


def test_socket_with_a_group_is_0660_in_a_0750_directory(rt, session_root, stranger, tmp_path):
    import grp
    group = grp.getgrgid(stranger.pw_gid).gr_name
    path = str(tmp_path / "agent" / "agent.sock")
    proc = _foreground_agent(session_root, path, "--group", group)
    try:
        d, s = os.stat(os.path.dirname(path)), os.stat(path)
        assert (d.st_mode & 0o777, d.st_uid, d.st_gid) == (0o750, 0, stranger.pw_gid)
        assert (s.st_mode & 0o777, s.st_uid, s.st_gid) == (0o660, 0, stranger.pw_gid)
    finally:
        proc.terminate()
        proc.communicate(timeout=40)


def test_a_second_agent_on_the_same_socket_is_refused(agent_rt, session_root):
    agent_rt.call("info")
    out = subprocess.run([CLI, "--root", session_root, "agent"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 125                      # refused, as every CLI refusal
    assert "another Terrarium agent already serves" in out.stderr


def test_no_agent_and_no_right_to_start_one_is_a_clear_error(session_root, tmp_path):
    a = AgentRuntime(session_root, socket_path=str(tmp_path / "none.sock"))
    with pytest.raises(AgentUnavailable, match="is not running at .*none.sock; start it as root"):
        a.list()


# ------------------------------------------------------------ concurrency

_OPS = ("start", "stop", "pause", "resume", "kill", "restart")


def test_50_parallel_operations_through_the_agent_and_the_cli_stay_consistent(
        rt, agent_rt, name, cleanup, session_root):
    cleanup.append(name)
    c = rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    rng = random.Random(11)
    plan = [("agent" if i % 2 else "cli", rng.choice(_OPS)) for i in range(50)]
    web = agent_rt.as_user("web-par")
    unexpected = []
    env = {**os.environ, "TERRARIUM_AGENT": "1"}

    def one(via, op):
        try:
            if via == "agent":
                args = {"stop": (1,), "restart": (1,)}.get(op, ())
                getattr(web, op)(c.id, *args)
                return
            verb = {"resume": "unpause"}.get(op, op)
            extra = ["-t", "1"] if op in ("stop", "restart") else []
            out = subprocess.run([CLI, verb, *extra, c.id], capture_output=True, text=True,
                                 timeout=120, env=env)
            if out.returncode != 0 and not ("is not running" in out.stderr
                                            or "is not paused" in out.stderr):
                unexpected.append((via, op, out.returncode, out.stderr))
        except Conflict:
            pass                                # pause/resume/kill in the wrong state
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            unexpected.append((via, op, repr(e)))

    threads = [threading.Thread(target=one, args=p) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert unexpected == []
    final = rt.inspect(c.id)
    assert agent_rt.inspect(c.id) == final
    procs = rt.cgroups.procs(c.id) if final.status in ("running", "paused") else []
    assert (final.status in ("running", "paused")) == bool(procs)
    if final.pid:
        assert final.pid in procs
    records = [r for r in _audit(session_root) if r.get("target") == c.id]
    assert sorted({r["user"] for r in records}) == ["cli:0", "web-par"]
    assert len(records) == 50
    stopped = agent_rt.stop(c.id, timeout=1)
    assert (stopped.status, stopped.pid) == ("exited", None)


def test_containers_outlive_a_kill_9_of_the_agent(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    before = agent_rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    pid = agent_rt.call("info")["pid"]
    fd = os.pidfd_open(pid)
    os.kill(pid, signal.SIGKILL)
    try:
        import select
        assert select.select([fd], [], [], 10)[0] == [fd]
    finally:
        os.close(fd)
    after = rt.inspect(name)
    assert (after.status, after.pid, after.started_at) == ("running", before.pid, before.started_at)
    assert agent_rt.inspect(name) == after                 # a new agent picks up where it was


def test_kill_9_of_the_agent_during_a_start(rt, agent_rt, name, cleanup):
    """Kills land from before the request to after the reply: each time the
    container ends running or cleanly not started, and a new agent serves."""
    lost = 0
    for i in range(6):
        cname = f"{name}-{i}"
        cleanup.append(cname)
        c = rt.create(Spec(image="busybox", name=cname, cmd=("sleep", "300")))
        pid = agent_rt.call("info")["pid"]
        result = {}

        def start():
            try:
                result["c"] = agent_rt.start(c.id)
            except AgentUnavailable as e:
                result["e"] = e
        t = threading.Thread(target=start)
        t.start()
        time.sleep(i * 0.004)                   # stagger the kill across the start
        os.kill(pid, signal.SIGKILL)
        t.join(timeout=60)
        assert not t.is_alive()
        # a start the fork server already took still completes without the agent
        deadline = time.monotonic() + 3
        while (state := rt.inspect(c.id)).status != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        if state.status != "running":
            assert "e" in result and state.status == "created" and state.pid is None
            assert state.error in (None, "the last start did not complete")
        lost += "e" in result
        assert agent_rt.call("info")["pid"] != pid          # a new agent serves
        assert agent_rt.start(c.id).status == "running"     # and the container's lock is free
        agent_rt.remove(c.id, force=True)
    assert lost >= 1                            # at least one kill landed before the reply


def test_sigterm_lets_a_request_under_way_finish_and_the_next_goes_to_a_new_agent(
        rt, agent_rt, name, cleanup, session_root):
    cleanup.append(name)
    # init catches SIGTERM and carries on: stop waits its whole timeout
    rt.run(Spec(image="busybox", name=name,
                cmd=("sh", "-c", "trap 'echo term' TERM; while :; do sleep 0.05; done")))
    old = agent_rt.call("info")["pid"]
    got = {}

    def stop():
        try:
            got["c"] = agent_rt.stop(name, timeout=2)
        except Exception as e:  # noqa: BLE001 - asserted below
            got["e"] = e
    t = threading.Thread(target=stop)
    t.start()
    deadline = time.monotonic() + 10
    while b"term" not in rt.logs(name) and time.monotonic() < deadline:   # the stop is under way
        time.sleep(0.01)
    assert b"term" in rt.logs(name), got                # else the stop failed or never came: say how
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(socket_path(session_root)) and time.monotonic() < deadline:
        time.sleep(0.01)                              # the old agent is leaving
    assert not os.path.exists(socket_path(session_root))
    assert agent_rt.inspect(name).name == name        # served meanwhile, by a new agent
    assert agent_rt.call("info")["pid"] != old
    t.join(timeout=30)
    assert "e" not in got and got["c"].status == "exited"


def test_allowed_uids_come_from_the_list_and_the_group(stranger):
    import grp

    from runtime.agent import allowed_uids
    group = grp.getgrgid(stranger.pw_gid).gr_name
    assert allowed_uids(None, None) == {0}
    assert allowed_uids(None, f"{stranger.pw_name}, 4242") == {0, stranger.pw_uid, 4242}
    assert allowed_uids(group, None) == {0, stranger.pw_uid}       # its primary group
    with pytest.raises(InvalidArgument, match="TERRARIUM_AGENT_UIDS: no user 'no-such-user-x'"):
        allowed_uids(None, "no-such-user-x")
    with pytest.raises(InvalidArgument, match="TERRARIUM_AGENT_GROUP: no group 'no-such-group-x'"):
        allowed_uids("no-such-group-x", None)


def test_an_over_long_request_is_refused_and_its_connection_closed(agent_rt, session_root):
    from runtime.agent import MAX_LINE
    agent_rt.call("info")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path(session_root))
        s.sendall(b"x" * (MAX_LINE + 10) + b"\n")
        f = s.makefile("rb")
        reply = json.loads(f.readline())
        assert reply == {"ok": False, "kind": "InvalidArgument",
                         "error": f"request longer than {MAX_LINE} bytes"}
        assert f.readline() == b""                     # closed: the rest cannot be framed
    assert agent_rt.call("info")["protocol"] == 1      # and the agent carries on


def test_an_agent_started_on_first_use_leaves_when_unused(rt, session_root, cgroup_parent,
                                                          monkeypatch):
    from runtime.agent import stop_agent
    stop_agent(session_root)
    monkeypatch.setenv("TERRARIUM_AGENT_IDLE_EXIT", "0.3")
    a = AgentRuntime(session_root, cgroup_parent)
    pid = a.call("info")["pid"]
    a.close()                                           # no connection left
    fd = os.pidfd_open(pid)
    try:
        import select
        assert select.select([fd], [], [], 30)[0] == [fd]
    finally:
        os.close(fd)
    assert not os.path.exists(socket_path(session_root))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_shipped_systemd_unit_verifies(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "contrib", "terrarium-agent.service")) as f:
        unit = f.read()
    assert "ExecStart=/opt/terrarium/.venv/bin/terrarium agent\n" in unit
    assert "KillMode=process\n" in unit                 # containers outlive a restart
    path = tmp_path / "terrarium-agent.service"         # this checkout's command in its place
    path.write_text(unit.replace("/opt/terrarium/.venv/bin/terrarium", CLI))
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stderr) == (0, "")


def test_the_shipped_web_unit_verifies_and_drops_every_capability(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "contrib", "terrarium-web.service")) as f:
        unit = f.read()
    for line in ("User=terrarium", "CapabilityBoundingSet=", "AmbientCapabilities=", "NoNewPrivileges=yes",
                 "Environment=TERRARIUM_AGENT=1", "Environment=TERRARIUM_AGENT_SOCKET=/run/terrarium/agent.sock"):
        assert line + "\n" in unit
    path = tmp_path / "terrarium-web.service"            # this checkout in its place
    path.write_text(unit.replace("/opt/terrarium", repo))
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stderr) == (0, "")


def test_a_socket_directory_is_changed_only_when_it_is_the_sockets_own(rt, tmp_path):
    from runtime import TerrariumError
    from runtime.agent import prepare_socket_dir
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "other-file").write_text("x")
    prepare_socket_dir(str(shared / "agent.sock"), rt.run_dir, 0)
    assert shared.stat().st_mode & 0o777 == 0o755                 # not ours: left alone
    own = tmp_path / "own"
    prepare_socket_dir(str(own / "agent.sock"), rt.run_dir, None)
    assert own.stat().st_mode & 0o777 == 0o700
    everyone = tmp_path / "tmp-like"
    everyone.mkdir()
    everyone.chmod(0o1777)
    with pytest.raises(TerrariumError, match="writable by everyone"):
        prepare_socket_dir(str(everyone / "agent.sock"), rt.run_dir, None)


# --------------------------------------------------- image import and export

def _archive(path, seed: str, files: int = 2, size: int = 64):
    """A docker save archive of one image of two layers (distinct per seed)."""
    from tests.runtime.test_import import docker_archive, layer_tar
    layers = [layer_tar(*((f"{seed}/{n}/f{i}", os.urandom(size)) for i in range(files)))
              for n in ("a", "b")]
    docker_archive(path, layers, tags=(f"agent-{seed}:1",))
    return layers


def _send_with_fds(path: str, request: bytes, fds: list[int]) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [request], fds)
        return json.loads(s.makefile("rb").readline())


def test_a_load_that_moves_a_name_is_audited_with_both_digests(rt, agent_rt, session_root, tmp_path):
    """The same tag loaded twice with other layers: the name moves, the
    reply says which image it moved off, and the audit line has old and new."""
    seed = secrets.token_hex(3)
    _archive(tmp_path / "a.tar", seed)
    _archive(tmp_path / "b.tar", seed)             # same tag, other (random) layers
    try:
        [first] = agent_rt.as_user("alice").load_image(str(tmp_path / "a.tar"))
        assert first.replaced == ""
        [second] = agent_rt.as_user("alice").load_image(str(tmp_path / "b.tar"))
        assert second.replaced == first.id != second.id
        row = _audit(session_root)[-1]
        assert (row["verb"], row["images"], row["digests"], row["moved"]) == (
            "load", [f"agent-{seed}:1"], {f"agent-{seed}:1": second.id},
            [{"name": f"agent-{seed}:1", "old": first.id, "new": second.id}])
        assert agent_rt.images.get(first.id).name == ""      # by id, until gc
    finally:
        rt.remove_image(f"agent-{seed}:1", force=True)
        rt.image_gc()


def test_load_and_save_go_through_the_agent_as_descriptors(rt, agent_rt, session_root, tmp_path):
    seed = secrets.token_hex(3)
    _archive(tmp_path / "a.tar", seed)
    try:
        with open(tmp_path / "a.tar", "rb") as f:
            loaded = agent_rt.as_user("alice").load_image(f, label="a.tar")
        assert loaded == [rt.images.get(f"agent-{seed}:1")]
        row = _audit(session_root)[-1]
        assert (row["user"], row["verb"], row["target"], row["images"]) == \
            ("alice", "load", "a.tar", [f"agent-{seed}:1"])
        with tempfile.TemporaryFile() as out:
            out.write(b"old content, to be replaced " * 1000)
            digest = agent_rt.as_user("bob").save_image(f"agent-{seed}:1", out)
            out.seek(0)
            with tempfile.TemporaryFile() as local:
                assert rt.save_image(f"agent-{seed}:1", local) == digest
                local.seek(0)
                assert out.read() == local.read()       # the same tar, old bytes gone
        assert _audit(session_root)[-1]["user"] == "bob"
    finally:
        rt.remove_image(f"agent-{seed}:1", force=True)
        rt.image_gc()


def test_load_and_save_take_descriptors_never_paths(agent_rt, session_root, tmp_path):
    path = socket_path(session_root)
    agent_rt.call("info")
    with pytest.raises(InvalidArgument, match="unknown argument 'path'"):
        agent_rt.call("load", path="/etc/shadow")
    with pytest.raises(InvalidArgument, match=r"load: takes 1 descriptor\(s\) .*got 0"):
        agent_rt.call("load", label="x")
    with open("/etc/hostname", "rb") as f:                 # a verb without descriptors
        reply = _send_with_fds(path, b'{"verb": "list"}\n', [f.fileno()])
    assert (reply["kind"], reply["error"]) == \
        ("InvalidArgument", "list: takes 0 descriptor(s) sent with the request (SCM_RIGHTS), got 1")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reply = _send_with_fds(path, b'{"verb": "load"}\n', [fd])
    finally:
        os.close(fd)
    assert reply["error"] == "the descriptor sent is not a regular file"
    (tmp_path / "x").write_bytes(b"")
    with open(tmp_path / "x", "rb") as f, pytest.raises(InvalidArgument, match="not open for writing"):
        agent_rt.save_image("busybox", f)
    with open(tmp_path / "x", "wb") as f, pytest.raises(NotFound, match="no-such"):
        agent_rt.save_image("no-such", f)
    with open(tmp_path / "x", "wb") as f:               # not a tar: one sentence, nothing added
        f.write(b"this is not an archive")
    with open(tmp_path / "x", "rb") as f, pytest.raises(InvalidArgument, match="^cannot read 'x'"):
        agent_rt.load_image(f, label="'x'")


def test_cli_load_and_save_through_the_agent(rt, agent_rt, session_root, tmp_path):
    seed = secrets.token_hex(3)
    _archive(tmp_path / "a.tar", seed)
    env = {**os.environ, "TERRARIUM_AGENT": "1"}
    try:
        out = subprocess.run([CLI, "--root", session_root, "load", "-i", str(tmp_path / "a.tar")],
                             capture_output=True, text=True, timeout=120, env=env)
        assert (out.returncode, out.stdout) == (0, f"Loaded image: agent-{seed}:1\n"), out.stderr
        assert _audit(session_root)[-1]["user"] == "cli:0"
        out = subprocess.run([CLI, "--root", session_root, "save", "-o", str(tmp_path / "b.tar"),
                              f"agent-{seed}:1"], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        assert _audit(session_root)[-1]["verb"] == "save"
        with tempfile.TemporaryFile() as local:
            rt.save_image(f"agent-{seed}:1", local)
            local.seek(0)
            assert (tmp_path / "b.tar").read_bytes() == local.read()
        assert sorted(os.listdir(tmp_path)) == ["a.tar", "b.tar"]      # no partial left
    finally:
        rt.remove_image(f"agent-{seed}:1", force=True)
        rt.image_gc()


def _leftovers(store) -> list[str]:
    from runtime.images.store import _SWEPT
    try:
        return sorted(n for n in os.listdir(store.tmp_dir) if n.startswith(_SWEPT))
    except FileNotFoundError:
        return []


def test_kill_9_of_the_agent_during_an_image_import(rt, agent_rt, tmp_path):
    """Killed once its first layer is in place and the second is being
    unpacked: the image is absent, and the next import sweeps the layer and
    the work dir away, then completes."""
    seed = secrets.token_hex(3)
    first, second = _archive(tmp_path / "big.tar", seed, files=3000, size=8192)
    from tests.runtime.test_import import sha
    store, ref = rt.images, f"agent-{seed}:1"
    try:
        pid = agent_rt.call("info")["pid"]
        errors = []

        def load():
            try:
                with open(tmp_path / "big.tar", "rb") as f:
                    agent_rt.load_image(f)
            except AgentUnavailable as e:
                errors.append(e)
        t = threading.Thread(target=load)
        t.start()
        deadline = time.monotonic() + 120
        while not (store.has_layer(sha(first)) and any(
                n.startswith("layer-") and os.path.isdir(os.path.join(store.tmp_dir, n, "fs", seed))
                for n in os.listdir(store.tmp_dir))):
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
        t.join(timeout=60)
        assert len(errors) == 1 and "ended during the request" in str(errors[0])
        with pytest.raises(NotFound):                         # absent, not half there
            agent_rt.images.get(ref)
        assert [n.split("-")[0] for n in _leftovers(store)] == ["import", "layer"]
        assert store.has_layer(sha(first))                    # until the next import sweeps it

        with open(tmp_path / "none.tar", "wb") as f:          # a failed import still sweeps
            f.write(b"not a tar")
        with open(tmp_path / "none.tar", "rb") as f, pytest.raises(InvalidArgument):
            agent_rt.load_image(f)
        assert agent_rt.call("info")["pid"] != pid            # a new agent served it
        assert _leftovers(store) == []
        assert not store.has_layer(sha(first)) and not store.has_layer(sha(second))

        with open(tmp_path / "big.tar", "rb") as f:           # and the import now completes
            assert [i.name for i in agent_rt.load_image(f)] == [ref]
        assert [l.digest for l in rt.images.get(ref).layers] == [sha(first), sha(second)]
        assert _leftovers(store) == []
    finally:
        t.join(timeout=60)
        try:
            rt.remove_image(ref, force=True)
        except NotFound:
            pass
        rt.image_gc()


# ----------------------------------------------------------- audit rotation

def test_the_audit_log_is_rotated_and_stays_0600(tmp_path):
    from runtime.agent import AuditLog
    log = AuditLog(str(tmp_path / "audit.log"), max_size=4096, max_file=3)
    for i in range(1000):
        log.write({"n": i, "pad": "x" * 80})
    assert sorted(os.listdir(tmp_path)) == ["audit.log", "audit.log.1", "audit.log.2"]
    kept = []
    for n in ("audit.log.2", "audit.log.1", "audit.log"):
        st = os.stat(tmp_path / n)
        assert (st.st_mode & 0o777, st.st_size < 4096 + 120) == (0o600, True), n
        kept += [json.loads(line)["n"] for line in (tmp_path / n).read_text().splitlines()]
    assert kept == list(range(kept[0], 1000)) and kept[0] > 850     # the newest, in order
    one = AuditLog(str(tmp_path / "one.log"), max_size=4096, max_file=1)
    for i in range(100):
        one.write({"n": i, "pad": "x" * 80})
    assert not os.path.exists(tmp_path / "one.log.1")
    assert os.stat(tmp_path / "one.log").st_size < 4096


def test_audit_rotation_is_set_from_the_environment(rt, session_root, tmp_path, monkeypatch):
    from runtime.agent import AuditLog
    monkeypatch.setenv("TERRARIUM_AUDIT_LOG_MAX_SIZE", "64k")
    monkeypatch.setenv("TERRARIUM_AUDIT_LOG_MAX_FILE", "2")
    log = AuditLog.from_env(str(tmp_path / "a.log"))
    assert (log.max_size, log.max_file) == (64 << 10, 2)
    monkeypatch.setenv("TERRARIUM_AUDIT_LOG_MAX_FILE", "0")
    out = subprocess.run([CLI, "--root", session_root, "agent", "--socket", str(tmp_path / "s.sock")],
                         capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stderr) == (125, "terrarium: error: invalid audit log rotation '64k' x '0': "
                                            "TERRARIUM_AUDIT_LOG_MAX_SIZE at least 4k, _MAX_FILE 1 to 100\n")


# ------------------------------------------------------- streams: logs, wait

def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_log_output_and_wait_through_the_agent_equal_in_process(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    agent_rt.run(Spec(image="busybox", name=name,
                      cmd=("sh", "-c", "echo one; echo two >&2; sleep 1; echo three")))
    with pytest.raises(TimeoutError) as remote:
        agent_rt.wait(name, timeout=0.2)
    assert str(remote.value) == f"container {name!r} still running after 0.2s"
    followed = list(agent_rt.log_output(name, follow=True))     # until the container ends
    assert b"".join(d for _, d in followed) == b"one\ntwo\nthree\n"
    assert ("stderr", b"two\n") in followed
    ended = agent_rt.wait(name)
    assert ended == rt.inspect(name) and (ended.status, ended.exit_code) == ("exited", 0)
    # since as each type log_output takes: text, a unix time, a record time (bytes)
    stamped = b"".join(d for _, d in rt.log_output(name, timestamps=True)).splitlines()
    third = stamped[2].split(b" ", 1)[0]                # the record time of "three"
    for kw in ({"tail": 1}, {"timestamps": True}, {"since": "1h"}, {"since": time.time() - 3600},
               {"since": third}, {}):
        assert list(agent_rt.log_output(name, **kw)) == list(rt.log_output(name, **kw)), kw
    assert b"".join(d for _, d in agent_rt.log_output(name, since=third)) == b"three\n"
    assert b"".join(agent_rt.follow_logs(name)) == b"one\ntwo\nthree\n"
    with pytest.raises(NotFound):
        list(agent_rt.log_output("no-such-container", follow=True))


def test_a_follower_or_waiter_that_hangs_up_frees_its_agent_thread(rt, agent_rt, name, cleanup,
                                                                  session_root):
    cleanup.append(name)
    agent_rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    pid = agent_rt.call("info")["pid"]
    base = _threads(pid)
    for request in (b'{"verb": "log-output", "args": {"ref": "%s", "follow": true}}\n',
                    b'{"verb": "wait", "args": {"ref": "%s"}}\n'):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(socket_path(session_root))
        s.sendall(request % name.encode())
        deadline = time.monotonic() + 10
        while _threads(pid) == base:                  # its thread is serving it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        s.close()
        while _threads(pid) != base:                  # and leaves once the client is gone
            assert time.monotonic() < deadline, request
            time.sleep(0.01)
    assert rt.inspect(name).status == "running"


def test_cli_logs_follow_and_wait_through_the_agent(rt, agent_rt, name, cleanup, session_root):
    cleanup.append(name)
    agent_rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo a; sleep 1; echo b >&2; exit 3")))
    env = {**os.environ, "TERRARIUM_AGENT": "1"}
    logs = subprocess.run([CLI, "--root", session_root, "logs", "-f", name], capture_output=True,
                          text=True, timeout=60, env=env)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "a\n", "b\n")
    waited = subprocess.run([CLI, "--root", session_root, "wait", name], capture_output=True,
                            text=True, timeout=60, env=env)
    assert (waited.returncode, waited.stdout) == (0, "3\n")


def test_descriptors_trickled_with_a_request_are_capped_and_closed(agent_rt, session_root):
    pid = agent_rt.call("info")["pid"]
    request = b'{"verb": "load"}\n'

    def holding(path):
        """The agent's descriptors open on path (others come and go: its own are not counted)."""
        out = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    out.append(fd)
            except OSError:
                pass
        return out
    sent = os.path.realpath("/etc/hostname")
    assert holding(sent) == []
    with open(sent, "rb") as f, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path(session_root))
        for byte in request:                         # a descriptor pair with every byte
            socket.send_fds(s, [bytes([byte])], [f.fileno(), f.fileno()])
        reply = json.loads(s.makefile("rb").readline())
        assert reply["error"] == "load: takes 1 descriptor(s) sent with the request (SCM_RIGHTS), got 2"
        deadline = time.monotonic() + 5               # closed just after the reply is sent
        while holding(sent):
            assert time.monotonic() < deadline, holding(sent)
            time.sleep(0.01)


def test_diff_through_the_agent_keeps_truncated_and_its_options(rt, agent_rt, name, cleanup):
    cleanup.append(name)
    agent_rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "for i in 1 2 3 4 5; do echo > /f$i; done")))
    agent_rt.wait(name)
    for kw in ({}, {"implicit": False}, {"limit": 2}):
        local, remote = rt.diff(name, **kw), agent_rt.diff(name, **kw)
        assert (remote, remote.truncated) == (local, local.truncated), kw
    assert agent_rt.diff(name, limit=2).truncated is True


def test_kill_9_of_the_agent_during_an_export_leaves_nothing_after_the_next_gc(rt, agent_rt, tmp_path):
    seed = secrets.token_hex(3)
    _archive(tmp_path / "big.tar", seed, files=3000, size=8192)
    ref = f"agent-{seed}:1"
    rt.load_image(str(tmp_path / "big.tar"))
    store = rt.images
    try:
        pid = agent_rt.call("info")["pid"]
        errors = []

        def save():
            try:
                with tempfile.TemporaryFile() as out:
                    agent_rt.save_image(ref, out)
            except AgentUnavailable as e:
                errors.append(e)
        t = threading.Thread(target=save)
        t.start()
        deadline = time.monotonic() + 120
        while not any(n.startswith("save-") and os.listdir(os.path.join(store.tmp_dir, n))
                      for n in os.listdir(store.tmp_dir)):    # packing its first layer
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
        t.join(timeout=60)
        assert len(errors) == 1
        assert [n.split("-")[0] for n in _leftovers(store)] == ["save"]
        agent_rt.image_gc()                                   # a new agent; its gc sweeps it
        assert _leftovers(store) == []
        assert [i.name for i in agent_rt.images.list() if i.name == ref] == [ref]   # untouched
    finally:
        t.join(timeout=60)
        rt.remove_image(ref, force=True)
        rt.image_gc()


# ----------------------------------------------------------- OOM: the feed

HOG = "head -c 100m /dev/zero | tail"


def _feed_until(stream, want, timeout=20.0) -> list[dict]:
    """The oom-events items read until one satisfies want(item)."""
    import select
    got, deadline = [], time.monotonic() + timeout
    while not any(want(i) for i in got):
        left = deadline - time.monotonic()
        assert left > 0, got
        if select.select([stream], [], [], left)[0]:
            got += stream.read_available()
    return got


def test_the_oom_feed_follows_state_changes_instead_of_listing_every_refresh(rt, name, cleanup):
    """oomfeed.follow (the agent's oom-events) lists the containers once; one
    started later has its counters watched from the state root's change (an
    inspect of it), not from a list every refresh."""
    import threading

    from runtime import oomfeed
    lists = []

    class Counting:
        def __getattr__(self, attr):
            return getattr(rt, attr)

        def list(self, *args, **kwargs):
            lists.append(1)
            return rt.list(*args, **kwargs)
    stop, got = threading.Event(), []
    feed = oomfeed.follow(Counting(), stop.is_set, refresh=0.05)
    assert next(feed)["kind"] == "ready"
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", f"sleep 1; {HOG}; sleep 30"),
                    limits=Limits(memory=20 << 20)))

    def read():
        for item in feed:
            got.append(item)
            if item["kind"] == "counters" and any(e["key"] == c.id and e["new_kills"] for e in item["events"]):
                return
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(20)
    stop.set()
    t.join(5)
    assert not t.is_alive() and got[-1]["kind"] == "counters", got
    assert lists == [1]


def test_oom_events_streams_the_kill_with_what_attribution_needs(rt, agent_rt, name, cleanup,
                                                                 cgroup_parent):
    stream = agent_rt.oom_events(refresh=0.1)
    try:
        (ready,) = _feed_until(stream, lambda i: i["kind"] == "ready")
        assert (ready["parent"], ready["kmsg"]) == (cgroup_parent, None)
        assert ready["memory_root"] == agent_rt.oom_scope()["memory_root"] \
            == rt.cgroups.parent_paths()["memory"][: -len(cgroup_parent) - 1]
        for attempt in range(3):
            # Now and then the kernel also kills the init right after the
            # hog's tail: then its cgroup is gone before it can be compared.
            cleanup.append(f"{name}-{attempt}")
            c = agent_rt.run(Spec(image="busybox", name=f"{name}-{attempt}",
                                  cmd=("sh", "-c", f"{HOG}; sleep 30"), limits=Limits(memory=20 << 20)))
            memcg = f"/{cgroup_parent}/{c.id}"
            got = _feed_until(stream, lambda i: i["kind"] == "report" and i["memcg"] == memcg)

            def counted(i, cid=c.id):
                return i["kind"] == "counters" and any(e["key"] == cid and e["new_kills"]
                                                       for e in i["events"])
            if not any(map(counted, got)):              # the eventfd usually comes first
                got += _feed_until(stream, counted)
            if rt.inspect(c.id).status == "running":
                break
        report = next(i for i in got if i["kind"] == "report" and i["memcg"] == memcg)
        assert report["report"]["comm"] == "tail" and report["report"]["oom_memcg"] == memcg
        assert report["counts"]["oom_kill"] >= 1 and report["proc_memcg"] is None
        moved = [e for i in got if i["kind"] == "counters" for e in i["events"] if e["key"] == c.id]
        assert sum(e["new_kills"] for e in moved) == moved[-1]["counts"]["oom_kill"] >= 1
        # The kernel may kill a second process of the container (not its init) a
        # moment later, even between these two reads: the counter only grows.
        through, here = agent_rt.oom_counts(c.id), rt.oom_counts(c.id)
        assert 1 <= through.oom_kill <= here.oom_kill
        assert dataclasses.replace(through, oom_kill=here.oom_kill) == here
    finally:
        stream.close()


def test_oom_verbs_take_ids_and_numbers_only(agent_rt, session_root):
    replies = _raw(socket_path(session_root),
                   b'{"verb": "oom-events", "args": {"path": "/dev/kmsg"}}\n',
                   b'{"verb": "oom-events", "args": {"refresh": 0}}\n',
                   b'{"verb": "oom-counts", "args": {"ref": "../../sys/fs/cgroup/memory"}}\n',
                   b'{"verb": "oom-scope", "args": {"root": "/"}}\n')
    assert [r["error"] for r in replies] == [
        "oom-events: unknown argument 'path'",
        "invalid refresh 0: 0.05 to 10 seconds",
        "invalid container reference '../../sys/fs/cgroup/memory'",
        "oom-scope: unknown argument 'root'"]
    with pytest.raises(NotFound):
        agent_rt.oom_counts("no-such-container")


def test_an_oom_follower_that_hangs_up_leaves_no_thread_or_descriptor(rt, agent_rt, name, cleanup,
                                                                      session_root):
    cleanup.append(name)
    agent_rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300"), limits=Limits(memory=64 << 20)))
    pid = agent_rt.call("info")["pid"]

    watches = ("anon_inode:[eventfd]", "anon_inode:inotify")      # a v1 or a v2 counter watch

    def kernel_fds():
        """The agent's descriptors on the kernel log, counter watches and epolls."""
        out = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in ("/dev/kmsg", "anon_inode:[eventpoll]", *watches):
                out.append(target)
        return sorted(out)
    base_threads, base_fds = _threads(pid), kernel_fds()
    stream = agent_rt.oom_events(refresh=0.1)
    _feed_until(stream, lambda i: i["kind"] == "ready")
    deadline = time.monotonic() + 5                     # the container's counter is watched
    while sum(map(kernel_fds().count, watches)) == sum(map(base_fds.count, watches)):
        assert time.monotonic() < deadline, kernel_fds()
        time.sleep(0.02)
    assert "/dev/kmsg" in kernel_fds() and _threads(pid) == base_threads + 1
    stream.close()
    deadline = time.monotonic() + 5
    while (_threads(pid), kernel_fds()) != (base_threads, base_fds):
        assert time.monotonic() < deadline, (_threads(pid), kernel_fds())
        time.sleep(0.02)
    assert rt.inspect(name).status == "running"


def _follow_one_kill(root, path, name):
    """As an unprivileged user: the kernel log is closed to us, yet the agent's
    feed reports the kill in the container we start through it."""
    from runtime.agent_client import AgentRuntime
    try:
        open("/dev/kmsg", "rb").close()
        ours = "readable"
    except PermissionError:
        ours = "refused"
    art = AgentRuntime(root, socket_path=path, autostart=False, user="web")
    stream = art.oom_events(refresh=0.1)
    try:
        (ready,) = _feed_until(stream, lambda i: i["kind"] == "ready")
        c = art.run(Spec(image="busybox", name=name, cmd=("sh", "-c", f"{HOG}; sleep 30"),
                         limits=Limits(memory=20 << 20)))
        memcg = f"/{ready['parent']}/{c.id}"
        mine = lambda i: i["kind"] == "report" and i["memcg"] == memcg      # noqa: E731
        report = next(filter(mine, _feed_until(stream, mine)))
        return ours, ready["kmsg"], report["report"]["comm"], report["counts"]["oom_kill"] >= 1
    finally:
        stream.close()
        art.close()


def test_an_unprivileged_client_follows_oom_kills_through_the_agent(rt, session_root, name, cleanup,
                                                                    open_dir):
    from tests.unprivileged import as_user, throwaway_user
    cleanup.append(name)
    sock_dir = os.path.join(open_dir, "agent")
    path = os.path.join(sock_dir, "agent.sock")
    with throwaway_user() as user:
        proc = _foreground_agent(session_root, path, "--uids", str(user.pw_uid))
        try:
            os.chmod(sock_dir, 0o755)
            os.chmod(path, 0o666)
            assert as_user(user, _follow_one_kill, session_root, path, name) == \
                ("refused", None, "tail", True)
        finally:
            proc.terminate()
            proc.communicate(timeout=40)
