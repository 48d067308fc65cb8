"""The dashboard with TERRARIUM_AGENT=1: the service layer reaches the runtime
through a real root agent, and each action is on record twice — the
dashboard's AuditEntry and the agent's ROOT/audit.log, both naming the person."""
import json
import os

import pytest
from django.urls import reverse

from dashboard.containers.models import AuditEntry
from dashboard.containers.runtime_client import get_runtime, reset_runtime
from runtime.agent_client import AgentRuntime

pytestmark = pytest.mark.django_db


@pytest.fixture
def through_agent(settings):
    settings.TERRARIUM_AGENT = "1"
    reset_runtime()
    yield
    reset_runtime()


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
