"""The logs socket (dashboard/containers/logsocket.py) through the root agent, as
in production: it follows a container across its runs without repeating a
line, and a client that stops acknowledging costs the server a bounded
buffer, then gets a "skipped" count that accounts for every line."""
import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from dashboard.asgi import application
from dashboard.containers import logsocket, reconciler
from runtime import LogConfig, Spec
from tests.dashboard.test_consumers import _headers

pytestmark = pytest.mark.django_db(transaction=True)


def _url(cid, query=""):
    return f"/ws/containers/{cid}/logs/" + (f"?{query}" if query else "")


async def _until(comm, pred, timeout=20, ack=True, got=None):
    """Messages until pred(msg) is true (acknowledging log messages), appended
    to got (a new list by default), which is returned."""
    got, deadline = [] if got is None else got, time.monotonic() + timeout
    while True:
        try:
            msg = await comm.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise AssertionError(f"not seen in {timeout}s; got {got}") from None
        got.append(msg)
        if ack and msg["type"] == "log":
            await comm.send_json_to({"ack": msg["seq"]})
        if pred(msg):
            return got


def _lines(msgs, stream=None):
    text = {"stdout": "", "stderr": ""}
    for m in msgs:
        for s, piece in m.get("pieces", ()):
            text[s] += piece
    streams = [stream] if stream else ["stdout", "stderr"]
    return [line[31:] for s in streams for line in text[s].splitlines()]


def _stopped(msg):
    return msg["type"] == "state" and not msg["following"] and msg["status"] == "exited"


async def _run_out(comm, timeout=20):
    """Messages until the follow of a run ended and all it read was sent."""
    got = await _until(comm, _stopped, timeout)
    if got[-1]["queued"]:
        got += await _until(comm, lambda m: m["type"] == "log" and not m["queued"], timeout)
    return got


def test_follows_each_run_after_start_without_repeating_a_line(through_agent, rt, made, name, viewer):
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo out-$$; echo err-$$ >&2")))
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, _url(c.id, "tail=all"), headers=headers)
        assert (await comm.connect())[0]
        got = []
        try:
            await _until(comm, lambda m: m["type"] == "state" and m["status"] == "created", got=got)
            assert _lines(got) == []
            for n in (1, 2):
                await asyncio.to_thread(rt.start, c.id)
                await _until(comm, lambda m: sorted(_lines(got)) == sorted(["err-1", "out-1"] * n), got=got)
                await asyncio.to_thread(rt.wait, c.id)      # (its lines can come before its end)
            got += await _run_out(comm)      # the end of the read that saw the second run
            return got
        finally:
            await comm.disconnect()
            await reconciler.stop()
    got = async_to_sync(run)()
    # each run's lines once (the init's pid is 1 each time: out-1, err-1), none skipped
    assert _lines(got, "stdout") == ["out-1", "out-1"] and _lines(got, "stderr") == ["err-1", "err-1"]
    assert all(not m.get("skipped") for m in got)
    assert any(m["type"] == "status" for m in got)               # the change events, as they come


def test_a_client_that_does_not_ack_costs_a_bounded_buffer_and_learns_what_it_missed(
        through_agent, rt, made, name, viewer):
    # ~5 MB/s for 2 s (64-byte lines), rotating every 2 MiB: far more than HOLD
    line = "x" * 63
    chunk, n_chunks = 8192, 20                  # lines per chunk of 512 KiB, chunks
    cmd = (f"yes {line} | head -n {chunk} > /tmp/c; i=0; "
           f"while [ $i -lt {n_chunks} ]; do cat /tmp/c; usleep 100000; i=$((i+1)); done")
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", cmd), log=LogConfig(2 << 20, 3)))
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, _url(c.id, "tail=0"), headers=headers)
        assert (await comm.connect())[0]
        try:
            await asyncio.to_thread(rt.start, c.id)
            # not acknowledging: WINDOW messages, then nothing more but state until the end
            got = await _until(comm, _stopped, timeout=60, ack=False)
            logs_before = [m for m in got if m["type"] == "log"]
            assert len(logs_before) == logsocket.WINDOW
            assert got[-1]["queued"] > 0
            for m in logs_before:
                await comm.send_json_to({"ack": m["seq"]})
            rest = await _until(comm, lambda m: m["type"] == "log" and not m["queued"])
            return logs_before, rest
        finally:
            await comm.disconnect()
            await reconciler.stop()
    before, rest = async_to_sync(run)()
    msgs = before + [m for m in rest if m["type"] == "log"]
    skipped = sum(m["skipped"] for m in msgs)
    held_max = max(m["held_max"] for m in msgs)
    received = _lines(msgs)
    print(f"lines {chunk * n_chunks}: received {len(received)}, skipped {skipped}; held at most {held_max} bytes")
    # said at once, on the message after the gap: the first after the acks; on
    # a loaded machine the socket can fall behind before its first message too,
    # which then says so (seq 1: skipped 1,260-3,150 of the 163,840 lines here)
    assert skipped > 0 and rest[0]["skipped"] > 0
    assert sum(m["skipped"] for m in before) + rest[0]["skipped"] == skipped
    assert len(received) + skipped == chunk * n_chunks            # every line shown or counted
    assert set(received) == {line}
    bound = logsocket.HOLD + (logsocket.WINDOW + 1) * logsocket.PIECE_MAX
    assert held_max <= bound


def test_bad_queries_are_one_clear_error(rt, made, name, viewer):
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    headers = _headers(viewer)
    cases = [("since=soon", "invalid since 'soon'"), ("until=2026-13-01", "invalid until '2026-13-01'"),
             ("tail=-1", "invalid tail '-1'"), ("after=yesterday", "invalid after")]

    async def run(query):
        comm = WebsocketCommunicator(application, _url(c.id, query), headers=headers)
        assert (await comm.connect())[0]
        msg = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return msg
    for query, message in cases:
        msg = async_to_sync(run)(query)
        assert msg["type"] == "error" and msg["message"].startswith(message), (query, msg)


def test_unknown_container_and_anonymous_are_refused(viewer):
    async def run(headers):
        comm = WebsocketCommunicator(application, _url("ab" * 32), headers=headers)
        await comm.connect()
        out = await comm.receive_output(timeout=5)
        await comm.wait()
        return out
    assert async_to_sync(run)(_headers(viewer)) == {"type": "websocket.close", "code": 4404}
    assert async_to_sync(run)(_headers()) == {"type": "websocket.close", "code": 4401}


def test_download_through_the_agent_is_the_filtered_log(through_agent, rt, made, name, viewer):
    from django.test import AsyncClient
    c = rt.create(Spec(image="busybox", name=name, cmd=("sh", "-c", "echo Keep-1; echo drop; echo keep-2 >&2")))
    rt.start(c.id)
    rt.wait(c.id)
    url = f"/containers/{c.id}/logs/download/"

    async def get(query, user=viewer):
        client = AsyncClient()
        if user is not None:
            await client.aforce_login(user)
        r = await client.get(url + query)
        body = b"".join([x async for x in r.streaming_content]) if r.streaming else r.content
        return r.status_code, r.get("Content-Disposition"), body.decode()

    status, disposition, body = async_to_sync(get)("?q=KEEP")
    assert (status, disposition) == (200, f'attachment; filename="{name}.log"')
    assert sorted(body.splitlines()) == ["Keep-1", "keep-2"]
    assert async_to_sync(get)("?q=keep&stream=stderr")[2] == "keep-2\n"
    assert async_to_sync(get)("?stream=nope")[::2] == (400, "invalid stream 'nope': use stdout or stderr\n")
    assert async_to_sync(get)("", user=None)[0] == 302                    # to the login page
