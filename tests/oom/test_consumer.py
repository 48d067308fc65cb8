"""ws/events/: refused without a session; an oom.killed event reaches the browser."""
import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from dashboard.asgi import application
from dashboard.containers.models import OomEvent
from dashboard.oom import events

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ws/events/"


@pytest.fixture(autouse=True)
def _no_watcher(settings):
    settings.TERRARIUM_OOM_WATCH = False       # these tests drive the group by hand
    settings.TERRARIUM_RECONCILE_INTERVAL = 0


def _headers(user=None, origin="http://127.0.0.1:8000"):
    h = [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]
    if user is not None:
        c = Client()
        c.force_login(user)
        cookie = c.cookies[django_settings.SESSION_COOKIE_NAME].value
        h.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return h


def _event():
    return OomEvent.objects.create(
        at=timezone.now() - dt.timedelta(seconds=1), kernel_usec=123, scope="container",
        container_key="ab" * 32, container_name="hog", killed_pid=4242, killed_command="tail",
        limit_kb=20480, usage_kb=20480, detected_by="kmsg+counter", raw="x")


def test_anonymous_is_closed_with_4401():
    async def run():
        comm = WebsocketCommunicator(application, URL, headers=_headers())
        assert (await comm.connect())[0]
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}
        await comm.wait()
    async_to_sync(run)()
    assert not get_channel_layer().groups.get(events.GROUP)


def test_foreign_origin_is_refused(viewer):
    headers = _headers(viewer, "http://evil.example")

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert not (await comm.connect())[0]
    async_to_sync(run)()


def test_oom_killed_event_arrives_and_group_is_left(viewer):
    headers, payload = _headers(viewer), events.killed_event(_event())

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await get_channel_layer().group_send(events.GROUP, payload)
        got = await comm.receive_json_from(timeout=2)
        assert got["type"] == "oom.killed"
        assert got["event"]["container_name"] == "hog" and got["event"]["killed_pid"] == 4242
        assert got["event"]["url"].startswith("/oom/")
        await comm.disconnect()
    async_to_sync(run)()
    assert not get_channel_layer().groups.get(events.GROUP)


def test_pages_list_filter_and_show_the_card(viewer):
    ev = _event()
    OomEvent.objects.create(at=timezone.now(), scope="host", is_global=True, killed_pid=7,
                            killed_command="stress-ng-vm", detected_by="kmsg")
    c = Client()
    c.force_login(viewer)
    body = c.get("/oom/").content.decode()
    assert "stress-ng-vm" in body and "hog" in body
    body = c.get("/oom/?scope=container").content.decode()
    assert "stress-ng-vm" not in body and "tail" in body
    body = c.get("/oom/?container=nothere").content.decode()
    assert "No OOM kills recorded" in body
    card = c.get(f"/oom/{ev.pk}/").content.decode()
    assert "host pid 4242" in card and "20480 kB" in card and 'id="oom-card"' in card
    assert Client().get("/oom/").status_code == 302           # login required


def test_oom_warning_event_arrives(viewer):
    headers = _headers(viewer)
    payload = events.warning_event({"container_id": "cd" * 32, "container_name": "hog",
                                    "reason": "near-limit", "text": "memory at 95% of the limit",
                                    "usage": 19 << 20, "limit": 20 << 20, "percent": 95.0, "t": 1.0})

    async def run():
        comm = WebsocketCommunicator(application, URL, headers=headers)
        assert (await comm.connect())[0]
        await get_channel_layer().group_send(events.GROUP, payload)
        got = await comm.receive_json_from(timeout=2)
        assert got["type"] == "oom.warning" and got["warning"]["reason"] == "near-limit"
        assert got["warning"]["url"] == f"/containers/{'cd' * 32}/"
        await comm.disconnect()
    async_to_sync(run)()


def test_card_renders_graph_data_and_marked_tree(viewer):
    ev = _event()
    ev.memory_window = {"kill_t": 100.0, "limit": 20 << 20,
                        "points": [[99.0, 18 << 20, 17 << 20], [99.5, 20 << 20, 19 << 20]]}
    ev.before = {"t": 99.5, "usage": 20 << 20, "ws": 19 << 20, "limit": 20 << 20, "failcnt": 0}
    ev.procs_before = {"t": 99.6, "tree": [{"pid": 10, "ns_pid": 1, "comm": "sh", "cmdline": "sh -c x",
                                            "rss": 1 << 20, "children": [
        {"pid": 4242, "ns_pid": 3, "comm": "tail", "cmdline": "tail", "rss": 19 << 20,
         "victim": True, "children": []}]}]}
    ev.victim_ns_pid = 3
    ev.save()
    c = Client()
    c.force_login(viewer)
    card = c.get(f"/oom/{ev.pk}/").content.decode()
    assert 'id="oom-graph-data"' in card and "oom/card.js" in card
    assert "pid 3 inside the container" in card and "← killed" in card
    assert "working set 19 MiB" in card and "Taken -600 ms" not in card


def test_list_shows_swap_notes(viewer, monkeypatch):
    from dashboard.oom import views
    monkeypatch.setattr(views, "swap_notes", lambda: [{
        "container_name": "lab1", "limit": 10 << 20, "peak_usage": 10 << 20, "swap_now": 5 << 20,
        "swap_peak": 6 << 20, "swap_limit": 20 << 20, "host_swap_total": 1 << 30, "t": 1.0}])
    c = Client()
    c.force_login(viewer)
    body = c.get("/oom/").content.decode()
    assert "the kernel swapped instead" in body and "6 MiB" in body
