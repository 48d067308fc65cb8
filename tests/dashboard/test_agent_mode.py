"""The dashboard with TERRARIUM_AGENT=1: the service layer reaches the runtime
through a real root agent, and each action is on record twice — the
dashboard's AuditEntry and the agent's ROOT/audit.log, both naming the person."""
import json
import os
import time

import pytest
from django.urls import reverse

from dashboard.containers.models import AuditEntry
from dashboard.containers.runtime_client import get_runtime
from runtime.agent_client import AgentRuntime

pytestmark = pytest.mark.django_db


def _agent_audit(session_root, target):
    with open(os.path.join(session_root, "audit.log")) as f:
        return [(r["user"], r["verb"], r["result"]) for r in map(json.loads, f) if r["target"] == target]


def test_start_and_stop_buttons_go_through_the_agent_and_are_audited_twice(
        through_agent, idle_container, operator_client, rt, session_root):
    assert isinstance(get_runtime(), AgentRuntime)
    cid = idle_container.id
    for action, status in (("start", "running"), ("stop", "exited")):
        r = operator_client.post(reverse("containers:action", args=[cid, action]),
                                 HTTP_X_REQUESTED_WITH="fetch")
        assert r.status_code == 200, r.content
        assert r.json() == {"ok": True, "message": f"{action.capitalize()}: done."}
        assert rt.inspect(cid).status == status
    assert list(AuditEntry.objects.order_by("id").values_list("username", "action", "result")) == \
        [("otto", "start", "ok"), ("otto", "stop", "ok")]
    assert _agent_audit(session_root, cid) == [("otto", "start", "ok"), ("otto", "stop", "ok")]


def test_a_refused_action_keeps_the_runtimes_message(through_agent, idle_container, operator_client,
                                                      session_root):
    cid = idle_container.id
    r = operator_client.post(reverse("containers:action", args=[cid, "pause"]),
                             HTTP_X_REQUESTED_WITH="fetch")
    assert r.status_code == 409
    assert r.json()["message"] == f"Pause failed: container {idle_container.name!r} is not running"
    assert _agent_audit(session_root, cid) == [("otto", "pause", "error")]


def test_pages_read_through_the_agent(through_agent, idle_container, viewer_client):
    pages = ((reverse("containers:list"), idle_container.name),
             (reverse("containers:detail", args=[idle_container.id]), idle_container.name),
             (reverse("containers:images"), "busybox"))
    for url, shown in pages:
        r = viewer_client.get(url)
        assert r.status_code == 200, url
        assert shown.encode() in r.content, url


def test_the_dashboard_picks_up_after_a_kill_9_of_the_agent(through_agent, idle_container,
                                                           operator_client, rt):
    import signal
    old = get_runtime().call("info")["pid"]          # a pooled connection to this agent
    import select
    fd = os.pidfd_open(old)
    os.kill(old, signal.SIGKILL)
    try:
        assert select.select([fd], [], [], 10)[0] == [fd]        # gone, between two requests
    finally:
        os.close(fd)
    r = operator_client.post(reverse("containers:action", args=[idle_container.id, "start"]),
                             HTTP_X_REQUESTED_WITH="fetch")
    assert (r.status_code, r.json()["ok"]) == (200, True)
    assert rt.inspect(idle_container.id).status == "running"
    assert get_runtime().call("info")["pid"] != old


def test_image_upload_and_export_go_to_the_agent_as_descriptors(
        through_agent, operator_client, operator, rt, session_root, tmp_path):
    import io
    import tarfile

    from tests.runtime.test_agent import _archive
    _archive(tmp_path / "up.tar", "dash")
    try:
        with open(tmp_path / "up.tar", "rb") as f:
            r = operator_client.post(reverse("layers:image_import"), {"archive": f},
                                     HTTP_X_REQUESTED_WITH="fetch")
        assert (r.status_code, r.json()) == (200, {"ok": True, "message": "Imported agent-dash:1."})
        assert _agent_audit(session_root, "up.tar") == [("otto", "load", "ok")]
        r = operator_client.get(reverse("layers:image_export", args=["agent-dash:1"]))
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(b"".join(r.streaming_content))) as tf:
            assert {"oci-layout", "index.json"} <= set(tf.getnames())
        assert _agent_audit(session_root, "agent-dash:1") == [("otto", "save", "ok")]
        assert list(AuditEntry.objects.order_by("id").values_list("username", "action", "result")) \
            == [("otto", "image-import", "ok"), ("otto", "image-export", "ok")]
    finally:
        rt.remove_image("agent-dash:1", force=True)
        rt.image_gc()


def test_an_upload_cut_by_a_kill_9_of_the_agent_leaves_no_image(
        through_agent, operator_client, rt, tmp_path):
    """The person is told the agent ended; the images page shows no half
    image once the next agent serves it, and the upload then succeeds."""
    import signal
    import threading
    import time

    from tests.runtime.test_agent import _archive, _leftovers
    first, _second = _archive(tmp_path / "big.tar", "dashkill", files=3000, size=8192)
    from tests.runtime.test_import import sha
    store = rt.images
    pid = get_runtime().call("info")["pid"]
    killed = []

    def kill_mid_import():          # the request runs in this thread: the test database is its
        deadline = time.monotonic() + 120
        while not store.has_layer(sha(first)) and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic() < deadline)
    t = threading.Thread(target=kill_mid_import)
    t.start()
    try:
        with open(tmp_path / "big.tar", "rb") as f:
            replies = [operator_client.post(reverse("layers:image_import"), {"archive": f},
                                            HTTP_X_REQUESTED_WITH="fetch")]
    finally:
        t.join(timeout=130)
    assert killed == [True]
    try:
        assert replies[0].status_code == 400
        assert "ended during the request" in replies[0].json()["message"]
        r = operator_client.get(reverse("containers:images"))
        assert r.status_code == 200 and b"agent-dashkill" not in r.content
        with open(tmp_path / "big.tar", "rb") as f:
            r = operator_client.post(reverse("layers:image_import"), {"archive": f},
                                     HTTP_X_REQUESTED_WITH="fetch")
        assert r.json() == {"ok": True, "message": "Imported agent-dashkill:1."}
        assert b"agent-dashkill:1" in operator_client.get(reverse("containers:images")).content
        assert _leftovers(store) == []
    finally:
        rt.remove_image("agent-dashkill:1", force=True)
        rt.image_gc()


# ------------------------------------------------------------------ sampling

@pytest.fixture
def limited(rt, cleanup, name):
    from runtime import Limits, Spec
    from tests.conftest import wait_settled
    c = rt.run(Spec(image="lab", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait"),
                    limits=Limits(memory=64 << 20)))
    cleanup.append(c.id)
    wait_settled(rt, c.id, 3)
    return c


def test_the_oom_record_history_and_selectors_sample_through_the_agent(through_agent, limited):
    """No local Runtime is made for any of them (AgentRuntime's fallback for
    `cgroups` would need root).  The OOM record reads through the one
    sampler (with no viewer, not through the viewers' subscription)."""
    import asyncio

    from dashboard.live import history, selectors
    from dashboard.live.sampler import Sampler
    from dashboard.oom.memrecord import MemRecorder
    from dashboard.oom.selectors import WatchTarget
    rt = get_runtime()
    s = Sampler(tick=0.5)
    rec = MemRecorder(interval=0.5, tree_every=2, read_once=s.read_once)
    rec.targets = {limited.id: WatchTarget(limited.id, limited.name, limited.pid, "", True)}
    s.add(rec)
    try:
        for _ in range(3):
            asyncio.run(s.tick_once())
        assert s.reads == 3                         # no viewer: beside the subscription, one reader
        points = rec.points(limited.id)
        assert len(points) == 3 and {p["limit"] for p in points} == {64 << 20}
        t, tree = rec.tree_before(limited.id, points[-1]["t"])
        assert [n["ns_pid"] for n in tree] == [1] and len(tree[0]["children"]) == 2
        assert rec.snapshot_tree(limited.id)[0]["pid"] == limited.pid
        assert selectors.container_raw_sample(container_id=limited.id).memory_limit == 64 << 20
        assert selectors.container_process_forest(container_id=limited.id)[0].info.pid == limited.pid
        history.reset()
        minutes = history.minute_pass(now=time.time(), running=lambda: [limited.id])
        assert [m.container_id for m in minutes] == [limited.id] and minutes[0].mem_limit == 64 << 20
    finally:
        s.remove(rec)
        s._release_unheld()
        s.reader.close()
        history.reset()
    assert rt._local is None


def test_a_live_socket_in_agent_mode_gets_samples_and_a_tree_read_by_the_agent(rt, limited, tmp_path):
    """A real Daphne with TERRARIUM_AGENT=1: the samples and the tree come
    through, the agent holds the container's files while it is watched and
    Daphne none, and the agent lets them go when the viewer leaves."""
    import asyncio

    websockets = pytest.importorskip("websockets")
    from tests.runtime.test_agent_sampling import _holding
    from tests.webstack import WebStack, login_cookie
    agent = AgentRuntime()
    try:
        agent_pid = agent.call("info")["pid"]
    finally:
        agent.close()
    pids = rt.cgroups.procs(limited.id)
    assert _holding(agent_pid, limited.id, pids) == []
    with WebStack(tmp_path, env={"TERRARIUM_AGENT": "1", "TERRARIUM_LIVE_TICK": "0.2"}) as web:
        port, (user, pw) = web.ports[0], web.users["viewer"]
        daphne = web.procs[-1].pid

        async def watch():
            url = f"ws://127.0.0.1:{port}/ws/containers/{limited.id}/live/"
            async with websockets.connect(url, additional_headers={"Cookie": login_cookie(port, user, pw)},
                                          origin=f"http://127.0.0.1:{port}") as ws:
                samples, tree = [], None
                while len(samples) < 3 or tree is None:
                    ev = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
                    assert ev["type"] != "container.gone", ev
                    if ev["type"] == "container.sample":
                        samples.append(ev)
                    elif ev["type"] == "container.procs":
                        tree = ev["tree"]
                held = (_holding(agent_pid, limited.id, pids), _holding(daphne, limited.id, pids))
                return samples, tree, held
        samples, tree, (by_agent, by_daphne) = asyncio.run(watch())
        assert [s["point"]["mem_limit"] for s in samples] == [64 << 20] * len(samples)
        assert "memory.usage_in_bytes" in samples[0]["sources"]["mem"] \
            or "memory.current" in samples[0]["sources"]["mem"]
        assert (tree[0]["pid"], tree[0]["ns_pid"], len(tree[0]["children"])) == (limited.pid, 1, 2)
        assert "NSpid" in tree[0]["sources"]["ns_pid"]
        assert len(by_agent) >= 10 and by_daphne == []
        deadline = time.monotonic() + 10                  # the last viewer left: forgotten
        while _holding(agent_pid, limited.id, pids):
            assert time.monotonic() < deadline, _holding(agent_pid, limited.id, pids)
            time.sleep(0.05)
