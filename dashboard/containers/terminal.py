"""The web terminal's socket: ws/containers/<id>/terminal/?rows=R&cols=C.

Operators only (4403 for anyone else, at connect and while open: a role
taken away or a logout closes it, as every socket of the dashboard).  The
shell runs on a pty of the container's own (runtime/terminal.py), made by
the agent in production, in this process otherwise: the same Terminal
either way.

Browser → server, JSON text:  {"input": "ls\\r"}  {"resize": [cols, rows]}
                              {"ack": n}  (n more output bytes shown)
Server → browser: the terminal's output as binary frames, and JSON text:
                  {"type": "terminal.ready", ...}  {"type": "terminal.exit", "code": N}
                  {"type": "terminal.error", "message": "..."}

Bounds: at most TERRARIUM_TERMINAL_WINDOW output bytes are in flight to a
browser that has not acknowledged them (each read is cut to what is left); beyond it the pty is not read, so
the kernel's pty buffer fills and the shell's writes wait (nothing is
dropped, nothing grows here).  Typed input waiting for a shell that does not
read is capped at MAX_PENDING_INPUT bytes.  A user has at most
TERRARIUM_TERMINALS_PER_USER sessions open (4429 beyond).

The session ends when the process exits (`exit`; the container stopping
kills it), when the socket closes (the helper hangs the shell up), on
logout, or when the user stops being an operator; its audit row then gets
its end and duration.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from runtime.terminal import READ_SIZE, check_size

from dashboard.live.selectors import container_exists

from . import services
from .access import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from .consumers import ViewerSocket
from .roles import CAN_OPERATE

log = logging.getLogger(__name__)

CLOSE_NOT_RUNNING = 4409        # no shell: the container is not running, or it has none
MAX_PENDING_INPUT = 64 << 10
MAX_MESSAGE = 256 << 10         # characters of one message from the browser

ENDED_BY = {CLOSE_UNAUTHENTICATED: "logged out", CLOSE_FORBIDDEN: "no longer an operator"}

_open: Counter = Counter()      # user id -> terminals open in this process (loop only)


def _size(query: bytes) -> tuple[int, int]:
    q = parse_qs(query.decode("latin-1"))
    try:
        return check_size(int(q.get("rows", ["24"])[0]), int(q.get("cols", ["80"])[0]))
    except (ValueError, TypeError):
        return 24, 80


class TerminalConsumer(ViewerSocket):
    """One shell session per socket."""

    perm = CAN_OPERATE

    def group_name(self) -> str:
        return f"terminal.{self.container_id}"

    # ---------------------------------------------------------- hooks
    async def refused(self) -> int | None:
        self.container_id = self.scope["url_route"]["kwargs"]["container_id"]
        if not await asyncio.to_thread(self.exists):
            return CLOSE_NOT_FOUND
        return None

    def exists(self) -> bool:
        return container_exists(container_id=self.container_id)

    def open_terminal(self, *, user, rows: int, cols: int):
        """(Terminal, its audit row); services.ServiceError with the reason."""
        return services.terminal_open(user=user, container_id=self.container_id, rows=rows, cols=cols)

    async def on_join(self):
        user = self.scope["user"]
        if _open[user.pk] >= settings.TERRARIUM_TERMINALS_PER_USER:
            await self.send_json({"type": "terminal.error", "message":
                                  f"you have {_open[user.pk]} terminals open: close one first"})
            return await self._end(CLOSE_TOO_MANY)
        _open[user.pk] += 1
        self.counted = True
        self.window = settings.TERRARIUM_TERMINAL_WINDOW
        self.unacked, self.pending = 0, b""
        self.acked = asyncio.Event()
        rows, cols = _size(self.scope.get("query_string", b""))
        try:
            self.term, self.entry = await database_sync_to_async(self.open_terminal)(
                user=user, rows=rows, cols=cols)
        except services.ServiceError as e:
            await self.send_json({"type": "terminal.error", "message": str(e)})
            return await self._end(CLOSE_NOT_RUNNING)
        if not getattr(self, "joined", False):    # closed while the terminal was being made
            return await self._finish(None, "closed")
        await self.send_json({"type": "terminal.ready", "rows": rows, "cols": cols,
                              "container": self.term.info.get("name", "")})
        self.tasks = [asyncio.get_running_loop().create_task(f()) for f in (self._pump_output, self._await_exit)]

    async def on_leave(self):
        if getattr(self, "counted", False):
            self.counted = False
            _open[self.scope["user"].pk] -= 1
            if _open[self.scope["user"].pk] <= 0:
                del _open[self.scope["user"].pk]
        if getattr(self, "term", None) is not None:
            await self._finish(None, ENDED_BY.get(getattr(self, "end_code", None), "closed by the page"))

    async def _end(self, code: int):
        self.end_code = code
        await super()._end(code)

    # ---------------------------------------------------- from the browser
    async def receive(self, text_data=None, bytes_data=None):
        term = getattr(self, "term", None)
        if term is None or text_data is None or len(text_data) > MAX_MESSAGE:
            return
        try:
            msg = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if isinstance(msg.get("input"), str):
            self._type(msg["input"].encode("utf-8", "replace"))
        elif isinstance(msg.get("resize"), list) and len(msg["resize"]) == 2:
            try:
                cols, rows = msg["resize"]
                term.resize(rows, cols)
            except (ValueError, TypeError, OSError) as e:
                await self.send_json({"type": "terminal.error", "message": str(e)})
        elif isinstance(msg.get("ack"), int) and not isinstance(msg["ack"], bool) and msg["ack"] > 0:
            self.unacked = max(0, self.unacked - msg["ack"])
            self.acked.set()

    def _type(self, data: bytes) -> None:
        """Into the pty; what it does not take now waits (bounded) for it to be writable."""
        if len(self.pending) + len(data) > MAX_PENDING_INPUT:
            data = data[:max(0, MAX_PENDING_INPUT - len(self.pending))]     # the shell is not reading
        was_pending = bool(self.pending)
        self.pending += data
        if not was_pending:
            self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            n = self.term.write(self.pending) if self.pending and self.term.master >= 0 else len(self.pending)
        except OSError:
            n = len(self.pending)
        self.pending = self.pending[n:]
        if self.term.master < 0:
            return
        if self.pending:
            loop.add_writer(self.term.master, self._flush)
        else:
            loop.remove_writer(self.term.master)

    # ----------------------------------------------------- to the browser
    async def _pump_output(self):
        """Output to the browser, at most `window` bytes ahead of its acks."""
        term = self.term
        while True:
            while self.unacked >= self.window:
                self.acked.clear()
                await self.acked.wait()
            data = term.read(min(READ_SIZE, self.window - self.unacked))
            if data is None:
                await _readable(term.master)
                continue
            if not data:
                return                            # its side of the terminal is closed
            self.unacked += len(data)
            await self.send(bytes_data=data)

    async def _await_exit(self):
        """The process's end (its exit code from the helper): the rest of its
        output, the audit row's end, then the exit to the page, then close."""
        await _readable(self.term.control)
        code = self.term.exit_code()
        pump = self.tasks[0]
        try:
            async with asyncio.timeout(1.0):        # not wait_for: on 3.11 it can drop a cancel
                await asyncio.shield(pump)          # what it wrote last
        except TimeoutError:
            pass                                  # a background child keeps the pty open
        await self._finish(code, "exited")           # recorded before the page says so
        if getattr(self, "joined", False):
            await self.send_json({"type": "terminal.exit", "code": code})
            await self._end(1000)

    async def _finish(self, code: int | None, reason: str) -> None:
        """Close the terminal (once) and write the end on its audit row."""
        term, self.term = getattr(self, "term", None), None
        if term is None:
            return
        current = asyncio.current_task()
        others = [t for t in getattr(self, "tasks", ()) if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)     # their readers gone before the close
        asyncio.get_running_loop().remove_writer(term.master)
        term.close()
        try:
            await database_sync_to_async(services.terminal_closed)(entry=self.entry, exit_code=code,
                                                                   reason=reason)
        except Exception:  # noqa: BLE001 - the session is over either way; say why it is not recorded
            log.exception("could not record the end of terminal session %s", self.entry.pk)


async def _readable(fd: int) -> None:
    """Until fd is readable (or hung up)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
