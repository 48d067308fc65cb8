"""ws/containers/<id>/logs/: one container's log, followed live, with backpressure.

Query: tail (lines of the log to start with; default 1000, "all"), since and
until (as `terrarium logs` takes them), after (a record time: go on after
it, what a page that reconnects sends).  The log is read from the runtime
(runtime.logs.read_output, through the agent in production) with each line
led by its time; the pieces go to the page as they are, one stream's lines
per piece, so no step here costs Python per line.

    → {"type": "log", "seq": 7, "skipped": 0, "held_max": 65536, "queued": 0,
       "pieces": [["stdout", "2026-11-30T20:00:00.123456789Z hello\\n"], ...]}
    → {"type": "state", "status": "exited", "following": false, "queued": 0}
    → {"type": "status", "status": "running"}       (a change event of the container)
    → {"type": "error", "message": "invalid since ..."}
    ← {"ack": 7}

state says when a read starts following (the container runs) and when it
ended (following false: all the log there was is read); queued: bytes
read and still to be sent, as of that message (state goes out at once,
log messages only as the window allows).

Backpressure: at most WINDOW messages go out unacknowledged (the page acks
each once it has shown it), so a page that stops reading (a frozen tab, a
client that does not read its socket) holds up at most WINDOW * PIECE_MAX
bytes in Daphne's buffers.  Meanwhile the log is still read (the container
never waits for a viewer) into a buffer of at most HOLD bytes: when more
comes, the oldest pieces are dropped and their lines counted, and the next
message says "skipped" that many lines before what follows.  held_max: the
most this socket has held (buffered and unacknowledged) since it opened.

The follow ends when the container stops; on the container's next change
event (`containers` group: a start, however brief the run) it reads on
after the last line read, so the page shows a started container's output
without a reload and no line twice.
"""
from __future__ import annotations

import asyncio
import base64
import codecs
import json
import logging
import threading
import time
from collections import deque
from urllib.parse import parse_qs

from runtime import TerrariumError, logs
from runtime.logfilter import STAMP, stamp_of

from . import engines, reconciler, selectors
from . import events as container_events
from .access import CLOSE_NOT_FOUND
from .consumers import ViewerSocket

log = logging.getLogger(__name__)

PIECE_MAX = 64 << 10        # bytes of log in one message
WINDOW = 4                  # messages out and not yet acknowledged
HOLD = 512 << 10            # bytes of log held for a page that is behind
RECHECK = 5.0               # seconds between looks at a stopped container (a change event missed)
HANDOFF = 16                # pieces a reading thread may have handed to the loop, not yet taken
DEFAULT_TAIL = 1000
MAX_TAIL = 100_000
LIVE = ("running", "paused")


class LogArgs:
    """The socket's query, checked: InvalidArgument with the reason otherwise."""

    def __init__(self, query: bytes):
        q = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        self.tail = parse_tail(q.get("tail", ""), DEFAULT_TAIL)
        self.since = parse_time(q.get("since"), "since")
        self.until = parse_time(q.get("until"), "until")
        after = q.get("after", "").encode("ascii", "replace")
        if after and (len(after) != STAMP or not stamp_of(after + b" x")):
            raise TerrariumError(f"invalid after {ascii(after[:40])}: a record time")
        self.after = after or None


def parse_time(text: str | None, what: str) -> bytes | None:
    """A since/until as `terrarium logs` takes it, as a record time (None if empty)."""
    if not text or not text.strip():
        return None
    try:
        return logs.parse_since(text)
    except TerrariumError as e:
        raise TerrariumError(str(e).replace("--since", what, 1)) from None


def parse_tail(text: str, default: int | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return default
    if text == "all":
        return None
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_TAIL):
        raise TerrariumError(f"invalid tail {ascii(text[:40])}: a number of lines up to {MAX_TAIL}, or all")
    return int(text)


class LocalReader:
    """Runtime.log_output (in-process, as root) in a thread of its own; each piece
    handed to the loop, at most HANDOFF at a time (the thread waits for the
    loop, never the loop for the thread).  close() stops it within a poll."""

    def __init__(self, loop, on_piece, on_end):
        self.loop, self.on_piece, self.on_end = loop, on_piece, on_end
        self._stop = threading.Event()
        self._room = threading.Semaphore(HANDOFF)

    def start(self, gen) -> None:
        """Read gen (made with on_wait=self.on_wait) in a thread."""
        threading.Thread(target=self._run, args=(gen,), name="terrarium-log-follow", daemon=True).start()

    def _run(self, gen) -> None:
        error = None
        try:
            try:
                for stream, data in gen:
                    while not self._room.acquire(timeout=0.2):
                        if self._stop.is_set():
                            return
                    if self._stop.is_set():
                        return
                    self.loop.call_soon_threadsafe(self._take, stream, data)
            finally:
                gen.close()
        except _Stopped:
            return
        except Exception as e:  # noqa: BLE001 - reported to the page, not lost in a thread
            error = e
        if not self._stop.is_set():
            try:
                self.loop.call_soon_threadsafe(self.on_end, error)
            except RuntimeError:            # the loop is closed
                pass

    def on_wait(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _take(self, stream, data) -> None:
        self._room.release()
        if not self._stop.is_set():
            self.on_piece(stream, data)

    def close(self) -> None:
        self._stop.set()


class _Stopped(Exception):
    pass


class AgentReader:
    """The agent's log-output stream on the loop (add_reader): read as it comes."""

    def __init__(self, loop, stream, on_piece, on_end):
        self.loop, self.stream, self.on_piece, self.on_end = loop, stream, on_piece, on_end
        loop.add_reader(stream.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            items = self.stream.read_available()
        except TerrariumError as e:
            from runtime.agent_client import AgentUnavailable
            self.close()
            self.on_end(None if isinstance(e, AgentUnavailable) else e)
            return
        except (ValueError, OSError) as e:
            self.close()
            self.on_end(e)
            return
        for stream, data in items:
            self.on_piece(stream, base64.b64decode(data))
        if self.stream is not None and self.stream.over:
            self._readable()                # no more will come to wake us: end now

    def close(self) -> None:
        if self.stream is not None:
            self.loop.remove_reader(self.stream.fileno())
            self.stream.close()
            self.stream = None


class ContainerLogsConsumer(ViewerSocket):
    """See the module's docstring."""

    def group_name(self) -> str:
        return container_events.GROUP         # to hear of the container's start

    async def refused(self) -> int | None:
        self.container_id = self.scope["url_route"]["kwargs"]["container_id"]
        if await self._run() is None:
            return CLOSE_NOT_FOUND
        if engines.is_other(self.container_id):
            # a source with no logs API (systemd, a pod, a bare namespace): no log to
            # follow, now or after a retry (its logs page says so and opens no socket)
            found = await asyncio.to_thread(engines.get, key=self.container_id)
            if found is None or not engines.has_api(found):
                return CLOSE_NOT_FOUND
        return None

    async def on_join(self):
        reconciler.ensure_started()
        self.loop = asyncio.get_running_loop()
        self.pieces: deque = deque()          # (stream, bytes) read, not yet sent
        self.buffered = self.flying = 0       # bytes in pieces, in unacknowledged messages
        self.held_max = 0                     # the most of both at once
        self.in_flight: deque = deque()       # (seq, bytes) sent, not acknowledged
        self.seq = self.acked = 0
        self.skipped = 0                      # lines dropped since the last message
        self.decoders = {}
        self.reader = None
        self.done = False                     # until reached, or the container removed
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()        # a change event came for this container
        try:
            args = LogArgs(self.scope.get("query_string", b""))
        except TerrariumError as e:
            await self.send_json({"type": "error", "message": str(e)})
            return
        self.tail, self.since, self.until = args.tail, args.since, args.until
        self.after = args.after               # the last line's time read (resume after it)
        self.resume_after = None              # while set: drop what is stamped at or before it
        self.tasks = [self.loop.create_task(self._sender()), self.loop.create_task(self._follow())]

    async def on_leave(self):
        for task in getattr(self, "tasks", ()):
            task.cancel()
        self._close_reader()

    # ----------------------------------------------------------- the page
    async def receive_json(self, content, **kwargs):
        ack = content.get("ack") if isinstance(content, dict) else None
        if isinstance(ack, int) and not isinstance(ack, bool) and hasattr(self, "in_flight"):
            while self.in_flight and self.in_flight[0][0] <= ack:
                self.flying -= self.in_flight.popleft()[1]
            self.wake.set()

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return json.loads(text_data)
        except ValueError:
            return None             # not ours: ignored

    async def container_changed(self, event):
        c = event.get("container") or {}
        if c.get("id") != self.container_id or not hasattr(self, "changed"):
            return
        self.changed.set()                    # read on from where it was (a run may come and go unseen)
        await self.send_json({"type": "status", "status": c.get("status")})

    async def container_removed(self, event):
        if (event.get("container") or {}).get("id") == self.container_id and hasattr(self, "changed"):
            self.done = True
            self._close_reader()
            await self._state("removed", False)

    # ------------------------------------------------------------ reading
    async def _follow(self):
        """Read (and follow) the log; after each run of the container, wait for the next."""
        while not self.done:
            self.changed.clear()
            run = await self._run()
            status = run[0] if run else None
            if status in LIVE:
                await self._state(status, True)
            ended = self.loop.create_future()
            opened = logs.format_time(time.time_ns())
            try:
                await self._open(ended)
                error = await ended
            except TerrariumError as e:
                error = e
            self._close_reader()
            if self.after is None and error is None:
                self.after = opened           # nothing read (tail=0, an empty log): what comes later
            if error is not None:
                await self.send_json({"type": "error", "message": f"reading the log failed: {error}"})
            if self.done:
                break
            run = await self._run()
            status = run[0] if run else None
            if status is None:
                await self._state("removed", False)
                return
            if status in LIVE and error is None:
                await asyncio.sleep(0.2)      # started again while the last run was read out
                continue
            await self._state(status, False)
            if error is not None:
                await asyncio.sleep(5)        # (the agent restarting): try again
                continue
            await self._next_change(run)

    async def _run(self):
        return await asyncio.to_thread(selectors.container_run, container_id=self.container_id)

    async def _next_change(self, run) -> None:
        """Until a change event for the container, or its state or start time
        differs from run (a look every RECHECK seconds: an event can be missed)."""
        while True:
            try:
                async with asyncio.timeout(RECHECK):     # not wait_for: on 3.11 it can drop a cancel
                    await self.changed.wait()
                return
            except TimeoutError:
                if await self._run() != run:
                    return

    async def _open(self, ended: asyncio.Future) -> None:
        self.resume_after = self.after
        since = self.after or self.since
        tail = None if self.after else self.tail

        def on_end(error):
            if not ended.done():
                ended.set_result(error)
        local = LocalReader(self.loop, self._piece, on_end)
        src = await asyncio.to_thread(selectors.container_log_follow, container_id=self.container_id,
                                      tail=tail, since=since.decode() if since else None, on_wait=local.on_wait)
        if hasattr(src, "read_available"):     # through the agent
            self.reader = AgentReader(self.loop, src, self._piece, on_end)
        else:
            self.reader = local
            local.start(src)

    async def _state(self, status, following: bool) -> None:
        """The container's state and whether its log is followed; queued: bytes
        read before this and still to be sent (state goes out at once)."""
        await self.send_json({"type": "state", "status": status, "following": following, "queued": self.buffered})

    def _close_reader(self) -> None:
        reader, self.reader = getattr(self, "reader", None), None
        if reader is not None:
            reader.close()

    def _piece(self, stream: str, data: bytes) -> None:
        """A piece read (on the loop): keep it, dropping the oldest if over HOLD."""
        if self.done:
            return
        if self.resume_after is not None:
            data = self._after(data)          # resuming: what was read before
            if not data:
                return
        last = _last_stamp(data)
        if self.until is not None and last and last >= self.until:
            data = _before(data, self.until)
            self.done = True
            self._close_reader()
            self.loop.create_task(self._state("until", False))
        if last:
            self.after = min(last, self.until) if self.until else last
        if data:
            self.pieces.append((stream, data))
            self.buffered += len(data)
            while self.buffered > HOLD and len(self.pieces) > 1:
                _, old = self.pieces.popleft()
                self.buffered -= len(old)
                self.skipped += old.count(b"\n") or 1
            self.held_max = max(self.held_max, self.buffered + self.flying)
        self.wake.set()

    def _after(self, data: bytes) -> bytes:
        """data from its first line stamped after resume_after (b"" if none is)."""
        pos = 0
        while pos < len(data):
            stamp = stamp_of(data[pos:pos + STAMP + 1] + b"x")
            if stamp and stamp > self.resume_after:
                self.resume_after = None
                return data[pos:]
            nl = data.find(b"\n", pos)
            if nl < 0:
                return b""
            pos = nl + 1
        return b""

    # ------------------------------------------------------------ sending
    async def _sender(self):
        while True:
            await self.wake.wait()
            self.wake.clear()
            while (self.pieces or self.skipped) and len(self.in_flight) < WINDOW:
                out, size = [], 0
                while self.pieces and (not out or size + len(self.pieces[0][1]) <= PIECE_MAX):
                    stream, data = self.pieces.popleft()
                    size += len(data)
                    self.buffered -= len(data)
                    dec = self.decoders.get(stream)
                    if dec is None:
                        dec = self.decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
                    out.append([stream, dec.decode(data)])
                self.seq += 1
                msg = {"type": "log", "seq": self.seq, "skipped": self.skipped, "held_max": self.held_max,
                       "queued": self.buffered, "pieces": out}
                self.skipped = 0
                self.in_flight.append((self.seq, size))
                self.flying += size
                await self.send(text_data=json.dumps(msg))


def _last_stamp(data: bytes) -> bytes:
    """The time of the last line that starts in data (b"" if none shows one)."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = data.rfind(b"\n", 0, end) + 1
    return stamp_of(data[start:start + STAMP + 1] + b"x")


def _before(data: bytes, until: bytes) -> bytes:
    """data's lines up to the first stamped at or after until."""
    pos = 0
    while pos < len(data):
        stamp = stamp_of(data[pos:pos + STAMP + 1] + b"x")
        if stamp and stamp >= until:
            return data[:pos]
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        pos = nl + 1
    return data
