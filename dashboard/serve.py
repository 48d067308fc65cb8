"""Daphne, with request bodies refused before they are buffered.

Twisted reads a whole request body before Daphne hands it to Django: into
memory up to 100 kB, beyond that into an unbounded temporary file, and with
`Transfer-Encoding: chunked` no Content-Length tells anyone how much is
coming.  Daphne's `--http-timeout` starts only once the body is complete, so
a slowly sent body holds a connection (and its temp file) for as long as the
sender likes.  This launcher runs Daphne's own command line with a request
class that:

- answers 413 as soon as Content-Length, or the chunked body so far, is over
  the limit of the URL: TERRARIUM_MAX_UPLOAD for the image upload,
  TERRARIUM_MAX_BODY (1m) for every other URL, logged in or not;
- answers 408 when the head and body take longer than TERRARIUM_BODY_TIMEOUT
  seconds (30) plus one second per BODY_MIN_RATE bytes received, so a big
  upload on a decent link finishes and a trickle does not hold on forever;
- sends a streamed response at the client's pace.  Daphne writes each body
  chunk an application sends into Twisted's buffer for the connection and
  returns at once, so a download to a slow reader (a big log) would be read
  from the runtime as fast as it can be and held here, all of it.  Each
  request registers a producer with its connection, which Twisted pauses
  while the connection's write buffer is full (64 KiB past the kernel's
  socket buffer) and resumes once it drains; the server's `send` for a body
  chunk waits while it is paused, so the application's `await send(...)`
  (Django's StreamingHttpResponse loop) waits too, and reads nothing more.

    python -m dashboard.serve -b 127.0.0.1 -p 8000 dashboard.asgi:application
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time

from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

logger = logging.getLogger("dashboard.serve")

BODY_MIN_RATE = 256 << 10    # bytes a second that buy a slow body another second
LINGER = 3.0                 # seconds the rest of a refused body is read and dropped


class _Limits:
    """The settings, read once Django is set up (the app is loaded first)."""
    _loaded = None

    @classmethod
    def get(cls) -> "_Limits":
        if cls._loaded is None:
            cls._loaded = cls()
        return cls._loaded

    def __init__(self):
        from django.conf import settings
        from django.urls import reverse
        self.upload_paths = {reverse(n).encode() for n in ("layers:image_import", "api:image_import")}
        self.upload = settings.TERRARIUM_MAX_UPLOAD_BYTES
        self.body = settings.TERRARIUM_MAX_BODY_BYTES
        self.timeout = settings.TERRARIUM_BODY_TIMEOUT

    def for_path(self, path: bytes) -> tuple[int, str]:
        """(limit in bytes, the setting that says so) for a request target."""
        if path.split(b"?", 1)[0] in self.upload_paths:
            return self.upload, "TERRARIUM_MAX_UPLOAD"
        return self.body, "TERRARIUM_MAX_BODY"


def _size(n: int) -> str:
    from django.template.defaultfilters import filesizeformat
    return str(filesizeformat(n)).replace("\xa0", " ")


@implementer(IPushProducer)
class _Pace:
    """A response's producer: Twisted pauses it while the connection's write
    buffer is full and resumes it when the buffer drains; `ready` is set
    while more may be written."""

    def __init__(self):
        self.ready = asyncio.Event()
        self.ready.set()

    def pauseProducing(self):
        self.ready.clear()

    def resumeProducing(self):
        self.ready.set()

    def stopProducing(self):             # the connection is going: let the sender go on (to nothing)
        self.ready.set()


class LimitedRequest(WebRequest):
    """Daphne's request with a size limit and a deadline on head and body,
    whose response is written at the client's pace."""

    def __init__(self, *args, **kwargs):
        self.pace = None
        self._refused = False
        self._received = 0
        self._limit, self._setting = None, None
        self._deadline_call = None
        super().__init__(*args, **kwargs)
        # made when the request line arrives: the deadline covers the headers too
        self._begun = time.monotonic()
        self._deadline_call = reactor.callLater(_Limits.get().timeout, self._check_deadline)

    def gotLength(self, length):
        # the channel knows the target before the request does (requestReceived sets .path)
        self._limit, self._setting = _Limits.get().for_path(getattr(self.channel, "_path", b""))
        if length is not None and length > self._limit:
            self.content = io.BytesIO()
            self._refuse(413, b"Content Too Large", self._too_large(length))
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:        # chunked: no length said up front
            self._refuse(413, b"Content Too Large", self._too_large(None))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        self._cancel_deadline()                 # the body is in: --http-timeout from here
        super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        self._cancel_deadline()
        self._stop_pacing()
        super().connectionLost(reason)

    def handle_reply(self, message):
        if message.get("type") == "http.response.start" and self.pace is None and not self.finished \
                and self.channel is not None:
            pace = _Pace()
            try:
                self.registerProducer(pace, True)
            except (RuntimeError, ValueError) as e:     # another producer on the channel: unpaced, said
                logger.warning("response to %s not paced: %s", self.client_addr, e)
            else:
                self.pace = pace
                if getattr(self.channel, "_waitingForTransport", False):   # full already
                    pace.pauseProducing()
        super().handle_reply(message)

    def finish(self):
        self._stop_pacing()                     # before: the channel takes the next request's producer
        super().finish()

    def _stop_pacing(self):
        pace, self.pace = self.pace, None
        if pace is not None:
            if self.producer is pace and self.channel is not None:
                self.unregisterProducer()
            pace.ready.set()

    async def writable(self):
        """Until the connection's write buffer has room (at once if it has, or if it is gone)."""
        pace = self.pace
        if pace is not None:
            await pace.ready.wait()

    def _too_large(self, length: int | None) -> str:
        limit = _size(self._limit)
        if self._setting == "TERRARIUM_MAX_UPLOAD":
            told = f"The upload is {_size(length)}" if length is not None else "The upload is larger"
            return f"{told}; the largest this dashboard accepts is {limit} (TERRARIUM_MAX_UPLOAD)."
        return f"The request body is over {limit}, the largest accepted here (TERRARIUM_MAX_BODY)."

    def _cancel_deadline(self):
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    def _check_deadline(self):
        self._deadline_call = None
        due = self._begun + _Limits.get().timeout + self._received / BODY_MIN_RATE
        now = time.monotonic()
        if now < due:
            self._deadline_call = reactor.callLater(due - now, self._check_deadline)
            return
        self._refuse(408, b"Request Timeout", "The request took too long to arrive (TERRARIUM_BODY_TIMEOUT).",
                     linger=0)

    def _refuse(self, status: int, reason: bytes, message: str, linger: float = LINGER):
        """Answer now and drop the rest of the body without storing it: reading
        it for a moment lets the client see the answer instead of a reset."""
        self._refused = True
        self._cancel_deadline()
        channel = self.channel
        logger.warning("refused %s %s from %s: %s", status, getattr(channel, "_path", b"?").decode("latin-1"),
                       self.getClientAddress(), message)
        # the answer goes out now, so no "100 Continue" after it (allHeadersReceived sends one)
        self.requestHeaders.removeHeader(b"expect")
        if self.requestHeaders.getRawHeaders(b"x-requested-with") == [b"fetch"]:
            body, ctype = json.dumps({"ok": False, "message": message}).encode(), b"application/json"
        else:
            body, ctype = message.encode() + b"\n", b"text/plain; charset=utf-8"
        channel.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                                b"Connection: close\r\n\r\n%s" % (status, reason, ctype, len(body), body))

        def drop(*args):
            return None
        # Twisted's parser must not go on: no body decoding, no request to Django
        for name in ("dataReceived", "lineReceived", "rawDataReceived", "allContentReceived"):
            setattr(channel, name, drop)
        channel.setTimeout(None)
        if linger:
            reactor.callLater(linger, channel.transport.loseConnection)
        else:
            channel.transport.loseConnection()


class PacedServer(daphne_server.Server):
    """Daphne's server whose `send` of a body chunk returns once the
    connection can take more (LimitedRequest.writable)."""

    async def handle_reply(self, protocol, message):
        await super().handle_reply(protocol, message)
        if message.get("type") == "http.response.body" and message.get("more_body"):
            writable = getattr(protocol, "writable", None)
            if writable is not None:
                await writable()


class LimitedHTTPFactory(HTTPFactory):
    def __init__(self, server):
        super().__init__(server)
        # idle connections (nothing sent yet, or kept alive between requests) close
        # after this long instead of Twisted's 12 hours
        self.timeOut = _Limits.get().timeout

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = LimitedRequest
        return protocol


def main(argv: list[str] | None = None) -> None:
    from django.core.exceptions import ImproperlyConfigured
    # Server.run() builds its factory from this module global: the one hook there is
    daphne_server.HTTPFactory = LimitedHTTPFactory
    cli = CommandLineInterface()
    cli.server_class = PacedServer
    try:
        cli.run(sys.argv[1:] if argv is None else argv)
    except ImproperlyConfigured as e:     # a setting refused (dashboard/settings.py): one line
        sys.exit(f"serve: {e}")


if __name__ == "__main__":
    main()
