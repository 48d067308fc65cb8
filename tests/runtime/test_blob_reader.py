"""The pull's blob reader (distribution._Blob) against a hand-made HTTP
server: the body read from the socket itself after httpx's first piece,
chunks of at most 1 MiB whatever pieces the server sends, and what a
connection cut short, a chunked body and a resumed (Range) one do."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from runtime.errors import RegistryError
from runtime.images import distribution

MIB = 1 << 20


class Server:
    """Answers GET /v2/ with {} and GET of the blob with `body`, sent as
    `pieces` (sizes; the headers go out with the first), over plain HTTP/1.1;
    `chunked`: Transfer-Encoding chunked instead of a Content-Length;
    `cut`: close this many bytes before the end.  Honours `Range: bytes=N-`."""

    def __init__(self, body: bytes, pieces: list[int] | None = None, *, chunked: bool = False,
                 cut: int = 0):
        self.body, self.pieces, self.chunked, self.cut = body, pieces or [], chunked, cut
        self.ranges: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data or buf[:1] == b"\x16" or data[:1] == b"\x16":
                        return                            # gone, or a TLS hello: plain HTTP only
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                headers = dict(line.split(": ", 1) for line in lines[1:])
                if path == "/v2/":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    continue
                self._blob(conn, headers.get("Range") or headers.get("range"))
                return

    def _blob(self, conn: socket.socket, rng: str | None) -> None:
        start = 0
        if rng:
            self.ranges.append(rng)
            start = int(rng.split("=")[1].rstrip("-"))
        body = self.body[start:]
        status = "206 Partial Content" if rng else "200 OK"
        head = f"HTTP/1.1 {status}\r\n"
        if rng:
            head += f"Content-Range: bytes {start}-{len(self.body) - 1}/{len(self.body)}\r\n"
        if self.chunked:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50000]), body[i:i + 50000])
                           for i in range(0, len(body), 50000)) + b"0\r\n\r\n"
        else:
            head += f"Content-Length: {len(body)}\r\n\r\n"
            out = body[:len(body) - self.cut]
        data = head.encode() + out
        first = len(head) + (self.pieces[0] if self.pieces else len(out))
        sizes = [first, *self.pieces[1:]]
        pos = 0
        for size in sizes:
            conn.sendall(data[pos:pos + size])
            pos += size
            time.sleep(0.002)
        conn.sendall(data[pos:])

    def close(self) -> None:
        self.sock.close()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_blob(tmp_path, server: Server, body: bytes) -> tuple[list[int], distribution._Blob]:
    """Read the whole blob through a _Blob; the sizes of the chunks read()
    gave.  Checks they make the body."""
    layer = {"path": None, "blob_digest": sha(body), "size": len(body), "diff_id": sha(b""),
             "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "created_by": ""}
    with distribution.Registry(server.addr) as reg:
        blob = distribution._Blob(reg, "t/app", "repository:t/app:pull", layer,
                                  distribution._Dist(str(tmp_path)), distribution.Progress(None),
                                  threading.Event())
        try:
            assert blob.open(lambda: False) in ("fetch", "earlier")
            got, sizes = [], []
            while chunk := blob.read(MIB):
                got.append(bytes(chunk))
                sizes.append(len(chunk))
        finally:
            blob.close()
    assert b"".join(got) == body
    assert blob.verified and os.path.exists(blob.final)
    return sizes, blob


@pytest.mark.parametrize("pieces", [
    [1000, 70000, 1, 3 * MIB, 5, MIB - 1],     # headers with a little body, then odd sizes
    [0, MIB + 1, 2],                            # the headers alone first
    [5 * MIB],                                  # all at once
])
def test_body_read_from_the_socket_in_chunks_of_at_most_a_mib(tmp_path, monkeypatch, pieces):
    body = os.urandom(5 * MIB + 12345)
    server = Server(body, pieces)
    direct = []
    real = distribution._body_socket

    def spy(*args):
        sock, left = real(*args)
        direct.append((sock is not None, left))
        return sock, left
    monkeypatch.setattr(distribution, "_body_socket", spy)
    try:
        sizes, _ = read_blob(tmp_path, server, body)
    finally:
        server.close()
    assert max(sizes) <= MIB
    assert direct and direct[0][0], "the rest of the body was read through httpx"
    assert direct[0][1] == len(body) - sizes[0]     # httpx's first piece, then the socket


def test_chunked_body_is_read_through_httpx(tmp_path, monkeypatch):
    """No Content-Length (Transfer-Encoding chunked): h11 decodes it; never the socket."""
    body = os.urandom(3 * MIB + 7)
    server = Server(body, chunked=True)
    try:
        sizes, blob = read_blob(tmp_path, server, body)
    finally:
        server.close()
    assert max(sizes) <= MIB and len(sizes) >= 4
    assert blob._sock is None


def test_body_cut_short_is_refused_and_resumes_with_a_range(tmp_path):
    """The connection closes before Content-Length bytes: RegistryError, the
    full chunks kept in `.partial`; the next read asks for the rest."""
    body = os.urandom(4 * MIB + 99)
    server = Server(body, [1000, MIB, MIB], cut=MIB // 2)
    try:
        with pytest.raises(RegistryError, match="closed .* before the body's end"):
            read_blob(tmp_path, server, body)
        part = distribution._Dist(str(tmp_path)).blob(sha(body)) + ".partial"
        kept = os.path.getsize(part)
        assert 0 < kept < len(body)
        with open(part, "rb") as f:
            assert f.read() == body[:kept]
        server.cut = 0
        read_blob(tmp_path, server, body)
        assert server.ranges == [f"bytes={kept}-"]
    finally:
        server.close()


def test_registries_share_one_verifying_context_per_ca_setting(monkeypatch):
    """Loading the CA bundle is most of what a registry client costs (~55 ms
    here): an HTTPS registry's client takes the process's one verifying
    context for the CA settings in force (another SSL_CERT_FILE: another
    context), and a loopback registry (plain HTTP allowed) makes none."""
    import ssl

    import certifi
    import httpx

    from runtime.images import distribution
    made = []
    create = httpx.create_ssl_context

    def counted(*args, **kw):
        made.append(os.environ.get("SSL_CERT_FILE", ""))
        return create(*args, **kw)
    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    monkeypatch.setattr(distribution, "_CONTEXTS", {})
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    for domain in ("registry.example.com", "ghcr.io", "registry.example.com:5000"):
        distribution.Registry(domain).close()
    ctx = distribution._verifying_context()
    assert made == [""] and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    distribution.Registry("127.0.0.1:5000").close()
    assert made == [""]
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    distribution.Registry("ghcr.io").close()
    assert made == ["", certifi.where()] and distribution._verifying_context() is not ctx
