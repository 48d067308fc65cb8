"""The websocket: refused without a session or from a foreign Origin; events arrive."""
import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from dashboard.asgi import application
from dashboard.containers import events, reconciler

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ws/containers/"


@pytest.fixture(autouse=True)
def _no_reconciler(settings):
    settings.TERRARIUM_RECONCILE_INTERVAL = 0     # these tests drive the group by hand


def _headers(user=None, origin="http://127.0.0.1:8000"):
    h = [(b"host", b"127.0.0.1:8000")]
    if origin:
        h.append((b"origin", origin.encode()))
    if user is not None:
        c = Client()
        c.force_login(user)
        cookie = c.cookies[django_settings.SESSION_COOKIE_NAME].value
        h.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return h


def _group_empty() -> bool:
    return not get_channel_layer().groups.get(events.GROUP)


def test_anonymous_is_closed_with_4401():
    async def run():
        comm = WebsocketCommunicator(application, URL, headers=_headers())
        connected, _ = await comm.connect()
        assert connected
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}
        await comm.wait()
    async_to_sync(run)()
    assert _group_empty()


def test_foreign_origin_is_refused(viewer):
    headers = _headers(viewer, "http://evil.example")

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        connected, _ = await comm.connect()
        assert not connected
    async_to_sync(run)()
    assert _group_empty()


def test_user_without_a_role_is_refused(django_user_model):
    user = django_user_model.objects.create_user("nobody", password="x-nobody-pw-1")

    headers = _headers(user)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        await comm.connect()
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    async_to_sync(run)()


def test_group_events_arrive_and_the_group_is_left(viewer):
    event = {"type": events.CHANGED, "container": {"id": "a" * 64, "name": "x", "status": "running"}}

    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        connected, _ = await comm.connect()
        assert connected
        await get_channel_layer().group_send(events.GROUP, event)
        assert await comm.receive_json_from(timeout=2) == event
        await get_channel_layer().group_send(events.GROUP, events.removed_event("a" * 64, "x"))
        assert (await comm.receive_json_from(timeout=2))["type"] == events.REMOVED
        await comm.send_json_to({"do": "stop"})
        assert await comm.receive_json_from(timeout=2) == {"error": "read-only"}
        await comm.disconnect()
    async_to_sync(run)()
    assert _group_empty()


def test_a_page_drawn_before_a_change_its_socket_missed_is_told_to_resync(viewer):
    """A page says when its data was taken; a change published after that but
    before its socket joined the group never reaches it, so it gets a resync."""
    import time
    headers = _headers(viewer)

    async def run():
        taken = time.time()
        await events.apublish([events.removed_event("b" * 64, "gone")])    # no socket open yet
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "since", "at": taken})
        assert await comm.receive_json_from(timeout=2) == {"type": "resync"}
        await comm.send_json_to({"type": "since", "at": time.time()})      # drawn after it: nothing missed
        assert await comm.receive_nothing(timeout=0.2)
        for bad in ("yesterday", True, None):
            await comm.send_json_to({"type": "since", "at": bad})
            assert await comm.receive_json_from(timeout=2) == {"type": "error", "error": "since takes a unix time"}
        await comm.disconnect()
    async_to_sync(run)()


def test_reconciler_publishes_outside_changes(viewer, rt, made, name, settings):
    """A container made outside the dashboard (as by the CLI) reaches an open socket."""
    from runtime import Spec
    settings.TERRARIUM_RECONCILE_INTERVAL = 0.2

    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        task = reconciler.ensure_started()
        assert task is not None and reconciler.ensure_started() is task     # one per process
        try:
            c = await asyncio.to_thread(rt.create, Spec(image="busybox", name=name, cmd=("true",)))
            for _ in range(50):
                msg = await comm.receive_json_from(timeout=5)
                if msg["container"]["id"] == c.id:
                    break
            assert msg["type"] == events.CHANGED and msg["container"]["status"] == "created"
        finally:
            await reconciler.stop()
            await comm.disconnect()
    async_to_sync(run)()


# ---------------------------------------------------------------- access kept checked
def _logged_in(user):
    """(client, websocket headers) sharing one session."""
    c = Client()
    c.force_login(user)
    cookie = c.cookies[django_settings.SESSION_COOKIE_NAME].value
    return c, [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000"),
               (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode())]


def _closes_with(headers, change, *, timeout=2.0):
    """Open a socket, run change() in a thread, → the close code the socket got."""
    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await asyncio.to_thread(change)
        out = await comm.receive_output(timeout=timeout)
        await comm.wait()
        return out
    out = async_to_sync(run)()
    assert out["type"] == "websocket.close"
    return out["code"]


def test_logout_closes_the_sessions_open_socket_at_once(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60               # the signal, not the periodic check
    client, headers = _logged_in(viewer)
    assert _closes_with(headers, lambda: client.post("/logout/")) == 4401
    assert _group_empty()


def test_logout_of_another_session_leaves_this_socket_open(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)
    other, _ = _logged_in(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await asyncio.to_thread(other.post, "/logout/")
        await get_channel_layer().group_send(events.GROUP, events.removed_event("a" * 64, "x"))
        assert (await comm.receive_json_from(timeout=2))["type"] == events.REMOVED
        await comm.disconnect()
    async_to_sync(run)()


def test_deactivated_user_is_closed_at_once(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)

    def deactivate():
        viewer.is_active = False
        viewer.save()
    assert _closes_with(headers, deactivate) == 4401


def test_role_removed_closes_with_4403(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)
    assert _closes_with(headers, viewer.groups.clear) == 4403


def test_group_losing_its_permission_closes_its_members(viewer, settings):
    from django.contrib.auth.models import Group, Permission
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)
    group = Group.objects.get(name="viewer")
    perm = Permission.objects.get(codename="view_container")
    assert _closes_with(headers, lambda: group.permissions.remove(perm)) == 4403


def test_password_changed_elsewhere_ends_the_old_sessions_sockets(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)

    def change():
        viewer.set_password("a-new-password-77")
        viewer.save()
    assert _closes_with(headers, change) == 4401


def test_periodic_recheck_catches_a_session_deleted_behind_its_back(viewer, settings):
    """No signal fires for a queryset delete (as from another process): the timer does."""
    from django.contrib.sessions.models import Session
    settings.TERRARIUM_WS_RECHECK = 0.2
    _, headers = _logged_in(viewer)
    assert _closes_with(headers, lambda: Session.objects.all().delete(), timeout=5) == 4401
    assert _group_empty()


def test_socket_stays_open_while_access_holds(viewer, settings, monkeypatch):
    from dashboard.containers import access
    settings.TERRARIUM_WS_RECHECK = 0.05
    _, headers = _logged_in(viewer)
    results = []
    real = access.socket_access
    monkeypatch.setattr(access, "socket_access", lambda **kw: results.append(real(**kw)) or results[-1])

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        deadline = asyncio.get_running_loop().time() + 10
        while len(results) < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await get_channel_layer().group_send(events.GROUP, events.removed_event("a" * 64, "x"))
        assert (await comm.receive_json_from(timeout=2))["type"] == events.REMOVED
        await comm.disconnect()
    async_to_sync(run)()
    assert len(results) >= 5 and set(results) == {None}
    assert _group_empty()


def test_reconciler_prunes_old_records(viewer, settings, monkeypatch):
    """Retention runs in the reconciler's loop: an old audit row goes soon after it starts."""
    import datetime as dt

    from dashboard.containers import services
    from dashboard.containers.models import AuditEntry
    monkeypatch.setattr(services, "containers_reconcile", lambda ids=None: [])   # no runtime needed here
    settings.TERRARIUM_RECONCILE_INTERVAL = 0.05
    settings.TERRARIUM_AUDIT_KEEP_DAYS = 1
    old = AuditEntry.objects.create(username="x", action="start", result="ok")
    AuditEntry.objects.filter(pk=old.pk).update(at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    new = AuditEntry.objects.create(username="x", action="stop", result="ok")

    async def run():
        reconciler.ensure_started()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while await asyncio.to_thread(AuditEntry.objects.filter(pk=old.pk).exists):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        finally:
            await reconciler.stop()
    async_to_sync(run)()
    assert list(AuditEntry.objects.all()) == [new]


def test_deleted_user_is_closed_at_once(viewer, settings):
    settings.TERRARIUM_WS_RECHECK = 60
    _, headers = _logged_in(viewer)
    assert _closes_with(headers, viewer.delete) == 4401


def test_a_role_change_inside_a_transaction_is_announced_after_the_commit(viewer, monkeypatch):
    """As the admin saves (in a transaction): a re-check before the commit would see the old role."""
    from django.db import transaction

    from dashboard.containers import access
    sent = []
    monkeypatch.setattr(access, "_send", lambda group, kind: sent.append((group, kind)))
    with transaction.atomic():
        viewer.groups.clear()
        assert sent == []
    assert sent == [(access.user_group(viewer.pk), access.CHANGED)]


def test_a_socket_that_fell_behind_gets_a_resync_after_what_reached_it(viewer):
    """150 changes in one burst into a queue of 100: the browser gets the 100
    that fit, in order, then one resync saying 50 were dropped -- never a
    silently stale list."""
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        connected, _ = await comm.connect()
        assert connected
        layer = get_channel_layer()
        for _ in range(50):                            # until the consumer has joined the group
            if layer.groups.get(events.GROUP):
                break
            await asyncio.sleep(0.02)
        for i in range(150):                           # no await yields inside: one burst
            await layer.group_send(events.GROUP, {"type": events.REMOVED,
                                                  "container": {"id": f"{i:064x}", "name": f"c{i}"}})
        got = [await comm.receive_json_from(timeout=5) for _ in range(101)]
        assert [g["container"]["name"] for g in got[:100]] == [f"c{i}" for i in range(100)]
        assert got[100] == {"type": "resync", "dropped": 50}
        assert await comm.receive_nothing(timeout=0.2)
        await comm.disconnect()
        assert not layer.dropped
    async_to_sync(run)()


def test_image_transfer_sockets_are_for_operators(viewer, operator):
    """A viewer's Pull and Push sockets are closed with 4403; an operator's
    take requests, and bad input is answered with a message (no runtime reached)."""
    viewer_headers, operator_headers = _headers(viewer), _headers(operator)

    async def run(verb):
        url = f"/ws/images/{verb}/"
        comm = WebsocketCommunicator(application, url, headers=viewer_headers)
        await comm.connect()
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
        comm = WebsocketCommunicator(application, url, headers=operator_headers)
        connected, _ = await comm.connect()
        assert connected
        await comm.send_json_to({"ref": "Not A Reference"})
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] == "error" and "invalid reference format" in reply["error"]
        if verb == "push":
            await comm.send_json_to({"ref": "busybox", "as": "busybox@sha256:" + "0" * 64})
            reply = await comm.receive_json_from(timeout=5)
            assert reply["type"] == "error" and "refusing to create a tag with a digest" in reply["error"]
        await comm.disconnect()
    for verb in ("pull", "push"):
        async_to_sync(run)(verb)
