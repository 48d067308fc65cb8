"""Sampling through the root agent (runtime/agent.py ``sample``, runtime/sampling.py,
AgentStatsReader): a real agent process reading a real container's cgroup and
/proc files for its connection, against the in-process reader."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest

from runtime import InvalidArgument, NotFound, Spec, procs
from runtime.agent import MAX_SAMPLE_IDS, socket_path
from runtime.agent_client import AgentRuntime
from tests.conftest import CLI, is_root, wait_settled

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root")

IDLE = ("sh", "-c", "sleep 100 & sleep 100 & wait")
STATIC = ("kind", "memory_limit", "memsw_limit", "memory_swap_limit", "cpu_quota_us", "cpu_period_us",
          "pids_current", "pids_max")


@pytest.fixture
def agent_rt(rt, session_root, cgroup_parent):
    a = AgentRuntime(session_root, cgroup_parent, user="tester")
    yield a
    a.close()


@pytest.fixture
def idle(rt, cleanup, name):
    c = rt.run(Spec(image="lab", name=name, cmd=IDLE))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 3)
    return c


def _shape(forest):
    return [(d, n.info.pid, n.info.ppid, n.info.ns_pids, n.info.cmdline, n.info.uid, n.info.comm,
             n.info.start_ticks, n.info.kthread, sorted(n.info.sources)) for d, n in procs.walk(forest)]


def _holding(pid: int, cid: str, pids=()) -> list[str]:
    """The agent's descriptors on the container's cgroup files and its processes' /proc files."""
    mine = tuple(f"/proc/{p}/" for p in pids)
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if cid in target or target.startswith(mine):
            out.append(target)
    return out


def _wait(cond, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _session(path: str):
    """A raw connection: send(request dict) -> reply dict."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    f = s.makefile("rb")

    def send(req: dict) -> dict:
        s.sendall(json.dumps(req).encode() + b"\n")
        return json.loads(f.readline())
    return s, send


def test_a_sample_through_the_agent_equals_the_in_process_one(rt, agent_rt, idle):
    local, remote = rt.stats_reader(), agent_rt.stats_reader()
    try:
        for _ in range(50):                     # a moment when nothing moves between the two reads
            raw, forest = remote.read(idle.id)
            ref, ref_forest = local.read(idle.id)
            if all(raw.get(k) == ref.get(k) for k in STATIC if k in ref.figures):
                break
            time.sleep(0.1)
        assert type(raw) is type(ref) and raw.kind == ref.kind
        assert list(raw.figures) == list(ref.figures)               # figures, in the same order
        assert raw.sources == ref.sources
        for k in STATIC:
            assert raw.get(k) == ref.get(k), k
        assert _shape(forest) == _shape(ref_forest)
        assert [n.info.ns_pid for _, n in procs.walk(forest)] == [1, 2, 3]
        assert "NSpid" in forest[0].info.sources["ns_pid"]
        got = remote.read_many([idle.id, "not-an-id", "f" * 64], tree=False)
        assert got[idle.id][1] is None and set(got[idle.id][0].figures) == set(ref.figures)
        assert isinstance(got["not-an-id"], InvalidArgument)         # refused without asking
        assert isinstance(got["f" * 64], NotFound)                    # the others still answered
    finally:
        local.close()
        remote.close()


def test_unchanged_forests_and_sources_keep_their_identity_and_are_not_sent_again(
        rt, agent_rt, idle, session_root, name):
    r = agent_rt.stats_reader()
    try:
        raw, forest = r.read(idle.id)
        for _ in range(6):                      # a slow tick among them: still nothing changed
            raw2, forest2 = r.read(idle.id)
            assert forest2 is forest and raw2.sources is raw.sources
        execp = subprocess.Popen([CLI, "exec", name, "sleep", "30"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            wait_settled(rt, idle.id, 4)
            _, forest3 = r.read(idle.id)
            assert forest3 is not forest
            assert ("sleep", "30") in [n.info.cmdline for _, n in procs.walk(forest3)]
            kept = {n.info.pid: n.info for _, n in procs.walk(forest)}
            for _, n in procs.walk(forest3):     # the processes that did not change: the same objects
                if n.info.pid in kept and n.info == kept[n.info.pid]:
                    assert n.info is kept[n.info.pid]
        finally:
            execp.kill()                         # our own child, by its pid
            execp.wait()
    finally:
        r.close()

    # on the wire: the first reply carries the sources and the processes, the next neither
    s, send = _session(socket_path(session_root))
    with s:
        req = {"verb": "sample", "args": {"ids": [idle.id], "tree": True}}
        first = send(req)["result"][idle.id]
        assert {"raw", "src", "procs", "full"} <= set(first) and len(first["procs"]) >= 3
        for _ in range(50):
            again = send(req)["result"].get(idle.id, {})
            if "procs" not in again:
                break
            time.sleep(0.1)                      # the exec'd process was still going away
        assert set(again) <= {"raw"}             # left out when nothing changed at all
        assert set(again.get("raw", {})) < set(first["raw"])     # only what changed


def test_the_agents_descriptors_go_with_forget_and_with_the_connection(rt, agent_rt, idle):
    pid = agent_rt.call("info")["pid"]
    pids = rt.cgroups.procs(idle.id)
    assert _holding(pid, idle.id, pids) == []
    r = agent_rt.stats_reader()
    try:
        r.read(idle.id)
        held = _holding(pid, idle.id, pids)
        assert len(held) >= 10, held                           # cgroup files and /proc/<pid>/stat
        assert any(t.endswith("/stat") and t.startswith("/proc/") for t in held)
        r.forget(idle.id)
        assert _holding(pid, idle.id, pids) == []              # answered once they are closed
        r.read(idle.id)
        assert _holding(pid, idle.id, pids)
    finally:
        r.close()
    _wait(lambda: not _holding(pid, idle.id, pids), "the agent to close the session's files")


def test_malformed_sample_requests_are_refused(agent_rt, idle, session_root):
    agent_rt.call("info")
    s, send = _session(socket_path(session_root))
    with s:
        for args, message in (
                ({"ids": ["web"]}, "invalid container id 'web': 64 hex digits"),
                ({"ids": ["../../../sys/fs/cgroup"]}, "invalid container id"),
                ({"ids": [idle.id.upper()]}, "invalid container id"),
                ({"ids": [7]}, "invalid container id 7"),
                ({"ids": idle.id}, "invalid container ids: a list of at most"),
                ({"ids": ["a" * 64] * (MAX_SAMPLE_IDS + 1)}, f"a list of at most {MAX_SAMPLE_IDS}"),
                ({"ids": [idle.id], "path": "/sys"}, "unknown argument 'path'"),
                ({"ids": [idle.id], "tree": "yes"}, "expected true or false"),
                ({}, "argument 'ids' is required (no earlier request on this connection")):
            reply = send({"verb": "sample", "args": args})
            assert (reply["ok"], reply["kind"]) == (False, "InvalidArgument"), args
            assert message in reply["error"], (args, reply)
        ok = send({"verb": "sample", "args": {"ids": [idle.id, "e" * 64], "tree": False}})["result"]
        assert ok["e" * 64]["error"]["kind"] == "NotFound" and "raw" in ok[idle.id]
        again = send({"verb": "sample", "args": {"tree": False}})["result"]     # no ids: the same again
        assert again["e" * 64]["error"]["kind"] == "NotFound" and set(again) <= {idle.id, "e" * 64}
        assert send({"verb": "sample-forget", "args": {"ids": ["x"]}})["kind"] == "InvalidArgument"
        assert send({"verb": "sample-forget", "args": {"ids": [idle.id]}}) == {"ok": True, "result": None}


def test_a_session_picks_up_after_a_kill_9_of_the_agent(agent_rt, idle):
    r = agent_rt.stats_reader()
    try:
        raw, forest = r.read(idle.id)
        old = agent_rt.call("info")["pid"]
        fd = os.pidfd_open(old)
        os.kill(old, signal.SIGKILL)
        try:
            assert select.select([fd], [], [], 10)[0] == [fd]
        finally:
            os.close(fd)
        raw2, forest2 = r.read(idle.id)                         # a new agent, a new session
        assert agent_rt.call("info")["pid"] != old
        assert set(raw2.figures) == set(raw.figures) and _shape(forest2) == _shape(forest)
    finally:
        r.close()


def test_a_reader_asked_for_the_tree_every_other_tick_misses_no_process(rt, idle, name):
    """The OOM memory record reads the tree on some ticks only: a process that
    started on a tick without the tree is in the next tree (in-process reader)."""
    r = rt.stats_reader()
    try:
        r.read(idle.id, tree=True)
        for _ in range(6):                       # past the slow tick
            r.read(idle.id, tree=False)
        execp = subprocess.Popen([CLI, "exec", name, "sleep", "30"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            wait_settled(rt, idle.id, 4)
            r.read(idle.id, tree=False)           # saw the task count change, read no process
            _, forest = r.read(idle.id, tree=True)
            assert ("sleep", "30") in [n.info.cmdline for _, n in procs.walk(forest)]
        finally:
            execp.kill()
            execp.wait()
    finally:
        r.close()


def test_a_busy_process_goes_as_what_changed_and_is_rebuilt_whole(rt, cleanup, name):
    """A process that runs between ticks is sent as its changed fields and
    source lines ([pid, start, fields, sources]), not in full, and the client
    rebuilds exactly the ProcessInfo the agent read (sources included)."""
    from runtime import stats
    from runtime.errors import TerrariumError
    from runtime.sampling import PROC_FIELDS, Receiver, Sender
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "while :; do :; done")))
    cleanup.append(c.id)
    sender = Sender(stats.StatsReader(rt.cgroups), lambda e: {"ok": False, "error": str(e)})
    receiver = Receiver(lambda reply: TerrariumError(reply["error"]))
    try:
        kinds = []
        for _ in range(6):
            time.sleep(0.15)
            wire = json.loads(json.dumps(sender.sample([c.id], tree=True, keep=True)))
            e = wire.get(c.id)
            raw, forest = receiver.decode(c.id, e, tree=True, keep=True)
            kinds += [len(p) for p in (e or {}).get("procs", ())]
            sent = [(d, n.info) for d, n in procs.walk(sender.sent[c.id].forest)]
            got = [(d, n.info) for d, n in procs.walk(forest)]     # the same tree, linked as sent
            assert got == sent and [i.sources for _, i in got] == [i.sources for _, i in sent]
        assert kinds[0] == 1 + len(PROC_FIELDS)            # first seen: in full (after its children)
        assert 5 in kinds, kinds                      # the busy shell, as its changes
    finally:
        sender.close()


def test_the_record_crosses_the_wire_whole_and_an_unchanged_one_is_the_same_object(rt, idle):
    """The client rebuilds the agent's very record (kind, every figure, the
    typed fields, sources) from what changed; a reading the agent left out is
    handed back as the same object, as runtime.stats does in process."""
    from runtime import Sample, stats
    from runtime.errors import TerrariumError
    from runtime.sampling import Receiver, Sender
    sender = Sender(stats.StatsReader(rt.cgroups), lambda e: {"ok": False, "error": str(e)})
    receiver = Receiver(lambda reply: TerrariumError(reply["error"]))
    try:
        prev, sizes = None, []
        for _ in range(40):
            wire = json.loads(json.dumps(sender.sample([idle.id], tree=False, keep=True)))
            raw, _ = receiver.decode(idle.id, wire.get(idle.id), tree=False, keep=True)
            assert type(raw) is Sample and raw == sender.sent[idle.id].raw
            if idle.id not in wire:
                assert raw is prev                          # nothing changed: nothing sent, the same record
                break
            sizes.append(len(wire[idle.id].get("raw", ())))
            prev = raw
            time.sleep(0.05)
        else:
            pytest.fail("the idle container's reading never stood still")
        assert sizes[0] == 1 + len(raw.figures)             # in full once: kind and every figure
    finally:
        sender.close()


def test_a_one_off_read_between_kept_ones_leaves_both_sides_in_step(rt, idle):
    """keep=False forgets the container on both sides: the next kept read goes
    in full, and the client rebuilds the same reading as the agent read."""
    from runtime import stats
    from runtime.errors import TerrariumError
    from runtime.sampling import Receiver, Sender
    sender = Sender(stats.StatsReader(rt.cgroups), lambda e: {"ok": False, "error": str(e)})
    receiver = Receiver(lambda reply: TerrariumError(reply["error"]))
    try:
        for keep in (True, False, True, True):
            wire = json.loads(json.dumps(sender.sample([idle.id], tree=True, keep=keep)))
            raw, forest = receiver.decode(idle.id, wire.get(idle.id), tree=True, keep=keep)
            assert (idle.id in sender.sent) == keep == (idle.id in receiver.got)
            ref = stats.StatsReader(rt.cgroups)
            try:
                ref_raw, _ = ref.read(idle.id)
            finally:
                ref.close()
            assert list(raw.figures) == list(ref_raw.figures)  # every figure, in the reader's order
            assert raw.kind == ref_raw.kind and raw.sources == ref_raw.sources
            assert [n.info.pid for _, n in procs.walk(forest)] == rt.cgroups.procs(idle.id)
    finally:
        sender.close()


# ------------------------------------------------------- the live sampler's subscription

def _stream_session(path: str, args: dict):
    """A raw sample-stream connection: (socket, next line as a dict, send a watch-set line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(10)
    f = s.makefile("rb")
    s.sendall(json.dumps({"verb": "sample-stream", "args": args}).encode() + b"\n")
    return s, lambda: json.loads(f.readline()), lambda obj: s.sendall(json.dumps(obj).encode() + b"\n")


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_subscription_pushes_what_changed_follows_its_watch_set_and_goes_with_the_connection(
        rt, agent_rt, idle, session_root):
    pid = agent_rt.call("info")["pid"]
    pids = rt.cgroups.procs(idle.id)
    threads = _threads(pid)
    st = agent_rt.sample_stream(0.05)
    try:
        raw, forest = st.read_many([idle.id])[idle.id]
        mono, wall = st.taken                                   # when the agent's read began
        assert abs(wall - time.time()) < 5 and mono <= time.monotonic()
        assert [n.info.pid for _, n in procs.walk(forest)] == pids
        for _ in range(6):                    # the agent's next ticks: nothing moved, the same objects
            raw2, forest2 = st.read_many([idle.id])[idle.id]
            assert st.taken[0] > mono and forest2 is forest and raw2.sources is raw.sources
            mono = st.taken[0]
        assert len(_holding(pid, idle.id, pids)) >= 10
        assert _threads(pid) == threads + 1                     # the subscription's thread
        got = st.read_many([idle.id, "not-an-id", "f" * 64])     # a new watch set: its frame at once
        assert isinstance(got["not-an-id"], InvalidArgument) and isinstance(got["f" * 64], NotFound)
        assert got[idle.id][1] is forest
        st.forget(idle.id)                                      # out of the set: its files closed
        _wait(lambda: not _holding(pid, idle.id, pids), "the agent to close a forgotten container's files")
        st.read_many([idle.id])
        assert _holding(pid, idle.id, pids)
    finally:
        st.close()
    _wait(lambda: not _holding(pid, idle.id, pids) and _threads(pid) == threads,
          "the agent to close the subscription's files and end its thread")

    # on the wire: a tick of an idle container is a frame with nothing in it
    s, frame, _ = _stream_session(socket_path(session_root), {"ids": [idle.id], "interval": 0.05})
    with s:
        first = frame()["more"]
        assert first["w"] == 1 and {"raw", "src", "procs", "full"} <= set(first["r"][idle.id])
        for _ in range(50):
            nxt = frame()["more"]
            if not nxt["r"]:
                break
        assert nxt == {"w": 1, "t": nxt["t"], "m": nxt["m"], "r": {}}


def test_malformed_subscriptions_are_refused_and_their_number_is_capped(agent_rt, idle, session_root):
    from runtime.agent import MAX_SAMPLE_STREAMS
    agent_rt.call("info")
    path = socket_path(session_root)
    for args, message in (
            ({"ids": ["../../../sys/fs/cgroup"]}, "invalid container id"),
            ({"ids": ["a" * 64] * (MAX_SAMPLE_IDS + 1)}, f"a list of at most {MAX_SAMPLE_IDS}"),
            ({"ids": [idle.id], "interval": 0.001}, "0.05 to 60 seconds"),
            ({"ids": [idle.id], "interval": True}, "invalid interval"),
            ({"ids": [idle.id], "path": "/sys"}, "unknown argument 'path'"),
            ({}, "argument 'ids' is required")):
        s, frame, _ = _stream_session(path, args)
        with s:
            reply = frame()
            assert (reply["ok"], reply["kind"]) == (False, "InvalidArgument"), args
            assert message in reply["error"], (args, reply)
    for line in ({"ids": ["web"]}, {"ids": [idle.id], "verb": "rm"}, "not an object"):
        s, frame, send = _stream_session(path, {"ids": [idle.id], "interval": 0.05})
        with s:
            assert frame()["more"]["w"] == 1
            send(line)                              # a bad watch-set line ends the stream with why
            while "more" in (reply := frame()):
                pass
            assert (reply["ok"], reply["kind"]) == (False, "InvalidArgument"), (line, reply)
    held = []
    try:
        for _ in range(MAX_SAMPLE_STREAMS):         # empty watch sets: a thread each, no ticks
            s, frame, send = _stream_session(path, {"ids": []})
            held.append(s)
        send({"ids": [idle.id]})                    # the last one, given a set, ticks
        assert idle.id in frame()["more"]["r"]
        s, frame, _ = _stream_session(path, {"ids": [idle.id]})
        with s:
            reply = frame()
            assert (reply["ok"], reply["kind"]) == (False, "Conflict"), reply
            assert f"{MAX_SAMPLE_STREAMS} sampling streams" in reply["error"]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10                # their slots come back with the connections
    while True:
        s, frame, _ = _stream_session(path, {"ids": [idle.id], "interval": 0.05})
        with s:
            reply = frame()
        if reply.get("more") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reply["more"]["w"] == 1, reply
