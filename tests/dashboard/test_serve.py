"""Request bodies over the limit are refused by Daphne itself, before Twisted
buffers them, and slow requests are cut off (dashboard/serve.py).  Against a
real Daphne started as `make run` starts it (tests/webstack.py), over raw
sockets so that what is sent, and when, is exact.

What Daphne writes is measured with /proc/<pid>/io's wchar: Twisted spools a
body over 100 kB to a temp file (unlinked at once, so a directory listing
would not show it), and every byte of it is a write()."""
from __future__ import annotations

import json
import re
import select
import socket
import time
import urllib.parse

import pytest
from django.urls import reverse

from tests.webstack import WebStack, login_cookie

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20
UPLOAD_LIMIT = 4 * MiB
BODY_TIMEOUT = 3


@pytest.fixture(scope="module")
def web(rt, tmp_path_factory):
    with WebStack(tmp_path_factory.mktemp("serve"), users=(("otto", "operator"),),
                  env={"TERRARIUM_MAX_UPLOAD": str(UPLOAD_LIMIT),
                       "TERRARIUM_BODY_TIMEOUT": str(BODY_TIMEOUT)}) as stack:
        stack.pid = stack.procs[-1].pid
        yield stack


def _wchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(re.search(r"^wchar: (\d+)$", f.read(), re.M).group(1))


def _connect(web) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.ports[0]), timeout=30)


def _head(method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(s: socket.socket) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(65536)
        if not more:
            raise AssertionError(f"connection closed after {data!r}")
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return int(status_line.split()[1]), headers, body


def _closed_by_server(s: socket.socket, within: float = 30) -> bool:
    """True once the server closes (EOF or reset); False if it still has not after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if select.select([s], [], [], 0.1)[0]:
            try:
                if s.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_body_under_the_limit_reaches_django_and_is_spooled(web):
    # the measure works: 600 kB under the 1 MiB default reach Django (no CSRF token: 403)
    # and Twisted wrote them to its temp file on the way
    before = _wchar(web.pid)
    with _connect(web) as s:
        s.sendall(_head("POST", "/login/", {**FORM, "Content-Length": 600_000}) + b"x" * 600_000)
        status, _, _ = _response(s)
    assert status == 403
    assert _wchar(web.pid) - before >= 600_000


def test_a_big_content_length_is_refused_before_the_body_is_sent(web):
    before = _wchar(web.pid)
    with _connect(web) as s:
        s.sendall(_head("POST", "/login/", {**FORM, "Content-Length": 20 * MiB}))
        status, headers, body = _response(s)            # not a byte of the body sent yet
        assert status == 413
        assert body == b"The request body is over 1.0 MB, the largest accepted here (TERRARIUM_MAX_BODY).\n"
        assert headers["connection"] == "close"
        s.sendall(b"x" * (20 * MiB))                     # read and dropped, then closed
        assert _closed_by_server(s)
    assert _wchar(web.pid) - before < MiB


def test_a_chunked_body_is_refused_once_it_is_over_the_limit(web):
    before = _wchar(web.pid)
    with _connect(web) as s:
        s.sendall(_head("POST", "/login/", {**FORM, "Transfer-Encoding": "chunked"}))
        # one 20 MiB chunk, sent until the answer comes
        s.sendall(b"%x\r\n" % (20 * MiB))
        sent = 0
        while sent < 20 * MiB and not select.select([s], [], [], 0)[0]:
            s.sendall(b"x" * 65536)
            sent += 65536
        status, _, body = _response(s)
        assert _closed_by_server(s)
    assert status == 413 and b"TERRARIUM_MAX_BODY" in body
    # what Twisted spooled stopped at the limit, not at 20 MiB
    assert _wchar(web.pid) - before < 2 * MiB


def test_a_slow_body_is_cut_off(web):
    # Daphne's --http-timeout counts from the complete body: this one never completes
    with _connect(web) as s:
        s.sendall(_head("POST", "/login/", {**FORM, "Content-Length": 100}) + b"x" * 10)
        status, _, body = _response(s)
        assert status == 408 and b"TERRARIUM_BODY_TIMEOUT" in body
        assert _closed_by_server(s)


def test_an_idle_connection_is_closed(web):
    with _connect(web) as s:
        assert _closed_by_server(s)                      # Twisted's own default: 12 hours


def test_an_upload_over_its_limit_is_refused_logged_in_or_not(web):
    url = reverse("layers:image_import")
    with _connect(web) as s:
        s.sendall(_head("POST", url, {"Content-Type": "multipart/form-data; boundary=b",
                                      "Content-Length": 5 * MiB, "X-Requested-With": "fetch"}))
        status, headers, body = _response(s)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"ok": False, "message": "The upload is 5.0 MB; the largest this dashboard "
                                                       "accepts is 4.0 MB (TERRARIUM_MAX_UPLOAD)."}


def test_an_upload_under_its_limit_passes_the_server(web):
    # 2 MiB: over the 1 MiB of other URLs, under the upload's 4 MiB; not a tar, so
    # the import itself refuses it, which shows Django parsed it
    cookie = login_cookie(web.ports[0], *web.users["operator"])
    token = urllib.parse.unquote(re.search(r"csrftoken=([^;]+)", cookie).group(1))
    data = b"\0" * (2 * MiB)
    body = (b"--b\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"junk.tar\"\r\n"
            b"Content-Type: application/x-tar\r\n\r\n" + data + b"\r\n--b--\r\n")
    url = reverse("layers:image_import")
    with _connect(web) as s:
        s.sendall(_head("POST", url, {"Content-Type": "multipart/form-data; boundary=b", "Cookie": cookie,
                                      "X-CSRFToken": token, "Referer": f"http://127.0.0.1:{web.ports[0]}/",
                                      "X-Requested-With": "fetch", "Content-Length": len(body)}) + body)
        status, _, answer = _response(s)
    assert status == 400, answer
    assert json.loads(answer)["message"].startswith("Import refused:")


def test_the_api_upload_has_the_upload_limit_and_other_api_urls_the_body_limit(web):
    # 2 MiB to the API's import passes Daphne (then the API wants a token: 401);
    # the same body to another API URL is over TERRARIUM_MAX_BODY (1 MiB): 413
    body = b"\0" * (2 * MiB)
    answers = {}
    for name in ("api:image_import", "api:container_list"):
        with _connect(web) as s:
            s.sendall(_head("POST", reverse(name), {"Content-Type": "application/octet-stream",
                                                    "Content-Length": len(body)}))
            if name == "api:image_import":
                s.sendall(body)                  # the other is answered on its head alone
            answers[name] = _response(s)[0]
    assert answers == {"api:image_import": 401, "api:container_list": 413}


def test_an_open_websocket_outlives_the_idle_timeout(web):
    # the idle timeout is for HTTP connections; an upgraded socket is the consumer's
    websockets = pytest.importorskip("websockets.sync.client")
    port = web.ports[0]
    cookie = login_cookie(port, *web.users["operator"])
    with websockets.connect(f"ws://127.0.0.1:{port}/ws/events/", additional_headers={"Cookie": cookie},
                            origin=f"http://127.0.0.1:{port}") as ws:
        deadline = time.monotonic() + BODY_TIMEOUT + 2  # longer than the timeout (events may come)...
        while (left := deadline - time.monotonic()) > 0:
            try:
                ws.recv(timeout=left)
            except TimeoutError:
                pass
        assert ws.ping().wait(timeout=10)               # ...and still open
