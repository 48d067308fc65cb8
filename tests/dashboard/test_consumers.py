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
