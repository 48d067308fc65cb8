"""A private registry (Debian's docker-registry) for the pull/push tests and the bench.

    with private_registry() as reg:                 # anonymous
    with private_registry("htpasswd") as reg:       # basic auth: reg.user / reg.password
    with private_registry("token") as reg:          # bearer tokens from a token server in this process
        reg.addr                                    # '127.0.0.1:PORT'
        reg.requests("GET", "/blobs/")              # access-log lines matching
        reg.blob_data(digest)                       # its storage file of a blob

It listens on 127.0.0.1 only, keeps its storage, config and log in one temp
dir, and is stopped by its pid.  The token server (auth "token") is a
ThreadingHTTPServer on another loopback port: it checks the user's
password (basic auth) and signs an RS256 JWT with a throwaway key whose
self-signed certificate is the registry's `rootcertbundle`; anonymous
requests get a token with no access, as Docker Hub gives.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

REGISTRY = "/usr/bin/docker-registry"
USER, PASSWORD = "alice", "s3cret-pw"
SERVICE, ISSUER = "terrarium-test-registry", "terrarium-test-issuer"


def available() -> bool:
    return os.path.exists(REGISTRY)


class Handle:
    def __init__(self, base: str, port: int, proc):
        self.base, self.port, self.proc = base, port, proc
        self.addr = f"127.0.0.1:{port}"
        self.user, self.password = USER, PASSWORD
        self.storage = os.path.join(base, "storage")
        self.log_path = os.path.join(base, "registry.log")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def requests(self, method: str, fragment: str) -> list[str]:
        """Access-log lines of requests `METHOD ...fragment...`."""
        return [line for line in self.log().splitlines()
                if f'"{method} ' in line and fragment in line and "HTTP/1.1" in line]

    def blob_data(self, digest: str) -> str:
        hexpart = digest.partition(":")[2]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexpart[:2], hexpart, "data")


def _token_server(cert_pem_path: str):
    """(server, realm URL): a bearer-token issuer for USER/PASSWORD."""
    import datetime
    import http.server
    import secrets
    import urllib.parse

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "terrarium test token issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(cert_pem_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def token(sub: str, access: list) -> str:
        t = int(time.time())
        head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "x5c": [x5c]}).encode())
        body = b64(json.dumps({"iss": ISSUER, "sub": sub, "aud": SERVICE, "exp": t + 300, "nbf": t - 10,
                               "iat": t, "jti": secrets.token_hex(8), "access": access}).encode())
        sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64(sig)}"

    class H(http.server.BaseHTTPRequestHandler):
        issued: list = []

        def do_GET(self):  # noqa: N802 - http.server's spelling
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            sub, access = "", []
            auth = self.headers.get("Authorization", "")
            if auth:
                try:
                    user, _, pw = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")
                except Exception:
                    user = pw = ""
                if auth.split(" ", 1)[0] != "Basic" or (user, pw) != (USER, PASSWORD):
                    self.send_response(401)
                    self.end_headers()
                    return
                sub = user
                for scope in q.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": repo, "actions": actions.split(",")})
            H.issued.append((sub, q.get("scope", [])))
            data = json.dumps({"token": token(sub, access), "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.issued = H.issued
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/token"


@contextlib.contextmanager
def private_registry(auth: str | None = None, timeout: float = 30.0):
    if not available():
        import pytest
        pytest.skip("needs Debian's docker-registry (scripts/setup.sh installs it)")
    from tests.webstack import free_port
    base = tempfile.mkdtemp(prefix="terrarium-registry-")
    port = free_port()
    config = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
              "storage": {"filesystem": {"rootdirectory": os.path.join(base, "storage")},
                          "delete": {"enabled": True}},
              "http": {"addr": f"127.0.0.1:{port}", "secret": "terrarium-test"}}
    token_srv = None
    if auth == "htpasswd":
        import bcrypt
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        with open(os.path.join(base, "htpasswd"), "w") as f:
            f.write(f"{USER}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "terrarium-test", "path": os.path.join(base, "htpasswd")}}
    elif auth == "token":
        cert = os.path.join(base, "token-cert.pem")
        token_srv, realm = _token_server(cert)
        config["auth"] = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": cert}}
    elif auth is not None:
        raise ValueError(auth)
    cfg = os.path.join(base, "config.yml")
    with open(cfg, "w") as f:
        json.dump(config, f)            # JSON is YAML
    log = open(os.path.join(base, "registry.log"), "wb")
    proc = subprocess.Popen([REGISTRY, "serve", cfg], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    handle = Handle(base, port, proc)
    handle.token_server = token_srv
    try:
        from tests.webstack import wait_port
        wait_port(port, proc, "docker-registry", handle.log_path, timeout=timeout)
        yield handle
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        if token_srv is not None:
            token_srv.shutdown()
            token_srv.server_close()
        shutil.rmtree(base, ignore_errors=True)


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
