"""The terminal's socket (dashboard/containers/terminal.py) through the agent:
a browser that does not acknowledge output gets no more than the window, and a
user's sessions are counted."""
import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from dashboard.asgi import application
from dashboard.containers.access import CLOSE_TOO_MANY
from dashboard.containers.models import AuditEntry
from tests.dashboard.test_consumers import _headers

pytestmark = pytest.mark.django_db(transaction=True)
WINDOW = 4096


@pytest.fixture
def running(rt, made, name):
    from runtime import Spec
    rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    return rt.start(name)


async def _ready(comm) -> dict:
    connected, _ = await comm.connect(timeout=30)
    assert connected
    msg = json.loads((await comm.receive_output(timeout=30))["text"])
    assert msg["type"] == "terminal.ready", msg
    return msg


def test_output_waits_for_acks_and_sessions_per_user_are_bounded(through_agent, settings, running,
                                                                  operator):
    settings.TERRARIUM_TERMINAL_WINDOW = WINDOW
    settings.TERRARIUM_TERMINALS_PER_USER = 1
    url = f"/ws/containers/{running.id}/terminal/?rows=10&cols=40"
    headers = _headers(operator)

    async def run():
        comm = WebsocketCommunicator(application, url, headers=headers)
        await _ready(comm)
        await comm.send_to(text_data=json.dumps({"input": "yes\r"}))     # output without end
        got = 0
        while got < WINDOW:
            got += len((await comm.receive_output(timeout=10))["bytes"])
        assert got == WINDOW
        assert await comm.receive_nothing(timeout=0.5)                  # nothing past the window
        await comm.send_to(text_data=json.dumps({"ack": WINDOW}))
        more = 0
        while more < WINDOW:
            more += len((await comm.receive_output(timeout=10))["bytes"])
        assert more == WINDOW

        second = WebsocketCommunicator(application, url, headers=headers)  # one session per user here
        connected, _ = await second.connect(timeout=10)
        assert connected
        refused = json.loads((await second.receive_output(timeout=10))["text"])
        assert refused == {"type": "terminal.error", "message": "you have 1 terminals open: close one first"}
        assert await second.receive_output(timeout=10) == {"type": "websocket.close", "code": CLOSE_TOO_MANY}

        await comm.send_to(text_data=json.dumps({"input": "\x03exit 7\r"}))     # ^C stops yes
        while True:
            out = await comm.receive_output(timeout=10)
            if "bytes" in out:
                await comm.send_to(text_data=json.dumps({"ack": len(out["bytes"])}))
            elif json.loads(out["text"])["type"] == "terminal.exit":
                break
        assert json.loads(out["text"])["code"] == 7
        assert await comm.receive_output(timeout=10) == {"type": "websocket.close", "code": 1000}
    async_to_sync(run)()
    row = AuditEntry.objects.filter(action="terminal").latest("id")
    assert (row.username, row.container_id, row.result) == ("otto", running.id, "ok")
    assert (row.details["reason"], row.details["exit_code"]) == ("exited", 7)
    assert row.details["duration_seconds"] > 0
