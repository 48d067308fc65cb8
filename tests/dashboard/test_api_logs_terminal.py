"""The API's log filters (GET /api/containers/<ref>/logs: the logs page's and
`terrarium logs`' options) and its web terminal (the websocket
/api/containers/<ref>/terminal, token in the header), for every role."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from dashboard.api import tokens
from dashboard.asgi import application
from dashboard.containers.models import AuditEntry
from dashboard.containers.roles import ADMINISTRATOR, OPERATOR, VIEWER, assign_role
from runtime import Spec

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "viewer", "operator", "administrator")


@pytest.fixture
def api(django_user_model):
    """Role → (Client sending its token, the token); anonymous: no token."""
    out = {"anonymous": (Client(), None)}
    for role, username in ((VIEWER, "vera"), (OPERATOR, "otto"), (ADMINISTRATOR, "ada")):
        user = django_user_model.objects.create_user(username=username, password=None)
        assign_role(user, role)
        _, token = tokens.token_create(user=user, name="tests")
        out[role] = (Client(HTTP_AUTHORIZATION=f"Bearer {token}"), token)
    return out


def test_logs_take_the_pages_filters_for_every_role(api, rt, made, name):
    c = rt.run(Spec(image="busybox", name=name, cmd=(
        "sh", "-c", "echo beta-err >&2; sleep 0.2; echo alpha-out; echo gamma-out; echo BETA-out")))
    rt.wait(c.id, timeout=30)
    records = list(rt.log_records(c.id))
    assert [r.stream for r in records] == ["stderr", "stdout", "stdout", "stdout"]
    url = f"/api/containers/{name}/logs"
    got = {role: client.get(url).status_code for role, (client, _) in api.items()}
    assert got == dict(zip(ROLES, (401, 200, 200, 200)))

    viewer = api["viewer"][0]

    def text(query: str) -> str:
        r = viewer.get(f"{url}?{query}")
        assert r.status_code == 200, r.content
        return r.json()["text"]
    assert text("stream=stderr") == "beta-err\n"
    assert text("q=beta&stream=stdout") == "BETA-out\n"                     # any case
    assert text("tail=2") == "gamma-out\nBETA-out\n"
    assert text("tail=2&stream=stderr") == ""                              # counted before the filter
    stamps = [r.time.decode() for r in records]
    assert text("timestamps=true&stream=stderr") == f"{stamps[0]} beta-err\n"
    assert text(f"since={stamps[1]}") == "alpha-out\ngamma-out\nBETA-out\n"
    assert text(f"until={stamps[1]}") == "beta-err\n"
    r = viewer.get(f"{url}?since=soon")
    assert (r.status_code, r.json()["detail"]) == (400, "invalid since 'soon': use a time such as "
                                                        "2026-11-30T20:00:00Z, a unix time, or a duration such as 10m")
    assert viewer.get(f"{url}?tail=lots").status_code == 400
    assert viewer.get(f"{url}?stream=both").status_code == 400
    # format=text: the whole filtered log as a download, streamed
    r = viewer.get(f"{url}?format=text&q=OUT")
    assert (r.status_code, r["Content-Type"], r["Content-Disposition"]) == (
        200, "text/plain; charset=utf-8", f'attachment; filename="{name}.log"')
    assert r.is_async and async_to_sync(_body)(r) == b"alpha-out\ngamma-out\nBETA-out\n"


async def _body(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


@pytest.fixture
def running(rt, made, name):
    rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    return rt.start(name)


async def _connect(path: str, token: str | None = None, headers=()):
    h = [(b"host", b"127.0.0.1:8000"), *headers]
    if token:
        h.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(application, path, headers=h)
    connected, _ = await comm.connect(timeout=30)
    assert connected
    return comm


async def _closed_with(path: str, token: str | None = None, headers=()) -> int:
    comm = await _connect(path, token, headers)
    out = await comm.receive_output(timeout=30)
    assert out["type"] == "websocket.close", out
    return out["code"]


async def _text(comm) -> dict:
    while True:
        out = await comm.receive_output(timeout=30)
        if "text" in out:
            return json.loads(out["text"])
        assert out["type"] != "websocket.close", out


def test_terminal_websocket_with_a_token_in_the_header_for_operators(api, running, settings):
    settings.TERRARIUM_WS_RECHECK = 0.2
    path = f"/api/containers/{running.name}/terminal?rows=10&cols=40"
    tok = {role: token for role, (_, token) in api.items()}
    browser = Client()                           # the operator, logged in on the pages
    browser.force_login(get_user_model().objects.get(username="otto"))
    name = settings.SESSION_COOKIE_NAME
    cookie = [(b"cookie", f"{name}={browser.cookies[name].value}".encode())]

    async def run():
        assert await _closed_with(path) == 4401                                  # no token
        assert await _closed_with(path, headers=cookie) == 4401                  # a session cookie is no token
        assert await _closed_with(path + "&access_token=x", tok["operator"]) == 4400   # nothing token-like in URLs
        assert await _closed_with(f"/api/containers/{running.name}/terminal?t={tok['operator']}") == 4400
        assert await _closed_with(path, tok["viewer"]) == 4403
        assert await _closed_with("/api/containers/no-such-box/terminal", tok["operator"]) == 4404

        comm = await _connect(path, tok["operator"], headers=[(b"origin", b"http://elsewhere.example")])
        ready = await _text(comm)
        assert (ready["type"], ready["rows"], ready["cols"], ready["container"]) == (
            "terminal.ready", 10, 40, running.name)
        await comm.send_to(text_data=json.dumps({"input": "echo hi-$((40+2)); exit 3\r"}))
        seen = b""
        while True:
            out = await comm.receive_output(timeout=30)
            if "bytes" in out:
                seen += out["bytes"]
                await comm.send_to(text_data=json.dumps({"ack": len(out["bytes"])}))
            else:
                msg = json.loads(out["text"])
                if msg["type"] == "terminal.exit":
                    break
        assert b"hi-42" in seen and msg["code"] == 3

        # an administrator's session ends when their token is revoked
        admin = await _connect(f"/api/containers/{running.id[:12]}/terminal", tok["administrator"])
        assert (await _text(admin))["type"] == "terminal.ready"
        from channels.db import database_sync_to_async
        await database_sync_to_async(lambda: tokens.ApiToken.objects.filter(
            digest=tokens.digest(tok["administrator"])).delete())()
        while True:
            out = await admin.receive_output(timeout=30)
            if out["type"] == "websocket.close":
                break
        assert out["code"] == 4401
        for _ in range(400):                            # its audit row is finished just after the close
            if await database_sync_to_async(lambda: "reason" in AuditEntry.objects.filter(
                    action="terminal", username="ada").latest("id").details)():
                break
            await asyncio.sleep(0.025)
    async_to_sync(run)()
    rows = {r.username: r for r in AuditEntry.objects.filter(action="terminal", container_id=running.id)}
    assert set(rows) == {"otto", "ada"}
    assert (rows["otto"].details["exit_code"], rows["otto"].details["reason"]) == (3, "exited")
    assert rows["ada"].details["reason"] == "token revoked or user deactivated" and rows["ada"].details["duration_seconds"] > 0
    # a plain GET says where the websocket is; the OpenAPI document lists it
    op, viewer = api["operator"][0], api["viewer"][0]
    r = op.get(f"/api/containers/{running.name}/terminal")
    assert r.status_code == 426 and "is a websocket" in r.json()["detail"]
    assert viewer.get(f"/api/containers/{running.name}/terminal").status_code == 403
    doc = viewer.get("/api/openapi.json").json()
    assert "websocket" in doc["paths"]["/api/containers/{ref}/terminal"]["get"]["description"]
    params = {p["name"] for p in doc["paths"]["/api/containers/{ref}/logs"]["get"]["parameters"]}
    assert {"tail", "stream", "q", "since", "until", "timestamps", "format"} <= params
