"""Pull and push images with registries (the OCI distribution API), and the
credentials `terrarium login` keeps.

    image = pull(store, "localhost:5000/team/app:v1", progress=print)
    digest = push(store, "localhost:5000/team/app:v1")
    login(store.root, "ghcr.io", "user", "token"); logout(store.root, "ghcr.io")

The HTTP client is httpx, not a distribution library.  oras-py (the one on
PyPI) is built for OCI *artifacts*: it pulls whole blobs to files named by
annotations, one at a time, with its own credential lookup, and has no hook
to hash while streaming, to resume a blob with a Range request or to pick a
platform from a manifest list; what is left of the protocol once those are
ours is a dozen requests.  httpx gives what those requests need and urllib
lacks: one connection pool shared by the download threads (keep-alive),
streamed bodies, per-phase timeouts, and redirects (registries send blob GETs
to a CDN) that drop the Authorization header when the origin changes.  A
blob's body, past the first piece httpx hands over, is read from the
connection's socket itself in 1 MiB chunks (_body_socket: h11's own reading
costs four times the CPU).

Pull:
- a manifest list / OCI index picks linux/<this machine's arch> or
  `platform` ("os/arch[/variant]"); Docker schema 2 and OCI manifests;
  gzip, zstd and plain tar layers; schema 1 and foreign layers are refused;
- each layer is unpacked while its blob downloads, in one pass (_Blob):
  socket -> sha256 of the blob and a copy in ROOT/distribution/blobs/sha256/
  `<hex>.partial` -> gunzip/zstd -> sha256 of the tar (the diff_id) -> the
  safe unpack into a work dir (tarsafe).  The layer goes into the store only
  once both digests (and the size) match; the copy is renamed `<hex>` when
  its digest does, kept if the pull fails later (never fetched again: an
  interrupted pull resumes), deleted once the image is in.  A blob cut short
  stays `.partial`; the next pull reads it through the same pass, then asks
  for the rest with a Range request;
- layers come in parallel (TERRARIUM_PULL_PARALLEL, default 3, like Docker's
  max-concurrent-downloads), under the image store's lock and import journal
  from the first layer ready to go in (a killed pull leaves no layer behind,
  see ImageStore.sweep_tmp); the name is written last, so no partial image
  is ever visible.
Push: layers are re-packed from the store as plain tars (their digest is
their diff_id: no gzip pass in Python on the way out); a blob the registry
has (HEAD) is skipped, one another repository of the same registry has (as
remembered from earlier pulls and pushes, ROOT/distribution/layers/) is
mounted (POST ?mount=&from=), the rest are uploaded in one PUT each.

Credentials are kept as Docker keeps them, `{"auths": {"<server>":
{"auth": base64("user:password")}}}`, in ROOT/registry-auth.json (0600) in
the state root rather than the caller's ~/.docker/config.json: pulls and
pushes run in the root agent for every caller (the dashboard's web user
included), which must not read a user's home, and the web tier, which cannot
read the 0700 state root, never sees them.  They travel only in an
Authorization header (Basic to the registry or its token service over TLS,
or a registry that is insecure by request or by being on loopback), never in
a URL, a log line or an audit entry.

Plain HTTP is used only with `insecure=True` (`--insecure-registry`) or, as
Docker does by default, for registries on localhost, 127.0.0.0/8 and ::1:
those are tried over HTTPS first (certificates not checked), then HTTP.
"""
from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from ..errors import InvalidArgument, NotFound, RegistryError
from . import reference

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable, Iterator, Mapping
    from contextlib import AbstractContextManager
    from types import ModuleType

    import httpx
    from _typeshed import SupportsRead

    from ..model import Image
    from _hashlib import HASH

    from .importers import JSONObject, Plan, PlannedLayer
    from .store import ImageStore

    Emit = Callable[[Mapping[str, object]], object]    # progress(event)
    Platform = tuple[str, str, str | None]              # (os, arch, variant)

    class RegistryLayer(PlannedLayer):
        """A layer of a pull's Plan: its blob as the manifest describes it."""
        path: None
        blob_digest: str
        size: int
        mediaType: str

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws")
_INDEXES = (MT_OCI_INDEX, MT_DOCKER_LIST)
_MANIFESTS = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
_ACCEPT = ", ".join((MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST))
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
_FOREIGN = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
_MAX_MANIFEST = 4 << 20          # what distribution itself accepts
_MAX_CONFIG = 16 << 20
_CHUNK = 1 << 20
_DOCKER_HUB = "registry-1.docker.io"
_DOCKER_AUTH_KEY = "https://index.docker.io/v1/"
_PLATFORM = re.compile(r"([a-z0-9_]+)/([a-z0-9_]+)(?:/([a-z0-9_]+))?")
AUTH_FILE = "registry-auth.json"


def _lib(name: str) -> ModuleType:
    """A third-party module (httpx, zstandard): the CLI server and the agent
    run as `python -I -S`, which finds the venv's packages only when told."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        from ..daemons import use_venv_packages
        use_venv_packages()
        return importlib.import_module(name)


def warm() -> None:
    """Import what a pull or push loads: httpx, the transport (httpcore, h11)
    it imports only when its first client is made, zlib-ng and zstandard.
    The CLI server does, once its root has pulled (runtime/cliserver.py):
    ~50 ms a fresh command would otherwise spend before its first request."""
    for name in ("httpx", "httpcore", "zlib_ng.zlib_ng", "zstandard"):
        _lib(name)
    from . import importers, tarsafe  # noqa: F401
    _verifying_context()                  # the CA bundle, for the workers it forks


# (SSL_CERT_FILE, SSL_CERT_DIR) -> the context that checks registries' certificates
_CONTEXTS: dict[tuple[str, str], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _verifying_context() -> ssl.SSLContext:
    """The SSLContext a registry's certificate is checked with, made once a
    process for the CA settings in force (SSL_CERT_FILE, SSL_CERT_DIR, else
    certifi's bundle: httpx.create_ssl_context's choice).  Loading the bundle
    is most of what making an httpx client costs (~55 ms here), and every
    pull, push and login makes one; one context serves every connection and
    thread (httpx sets the same ALPN on it each time)."""
    key = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _CONTEXTS[key] = _lib("httpx").create_ssl_context(verify=True, trust_env=True)
        return ctx


# --------------------------------------------------------------- credentials

def auth_path(root: str) -> str:
    return os.path.join(root, AUTH_FILE)


def server_of(server: str | None) -> str:
    """The registry a `login` argument names: 'docker.io' for none, Docker
    Hub's spellings or 'https://index.docker.io/v1/'; 'host[:port]' otherwise
    (a scheme or path given with it is dropped, as Docker does)."""
    if not server:
        return reference.DEFAULT_DOMAIN
    if not isinstance(server, str) or len(server) > 255 or not server.isascii() \
            or any(c.isspace() or c == "\0" for c in server):
        raise InvalidArgument(f"invalid registry address {ascii(server)[:80]}")
    s = re.sub(r"^https?://", "", server).split("/", 1)[0]
    if s in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return reference.DEFAULT_DOMAIN
    if not reference._DOMAIN.fullmatch(s):
        raise InvalidArgument(f"invalid registry address {server!r}: expected host[:port]")
    return s


def _auth_key(domain: str) -> str:
    return _DOCKER_AUTH_KEY if domain == reference.DEFAULT_DOMAIN else domain


def _read_auths(root: str) -> dict[str, Any]:
    try:
        with open(auth_path(root)) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(f"{auth_path(root)} is unreadable: {type(e).__name__}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    return auths if isinstance(auths, dict) else {}


def credentials(root: str, domain: str) -> tuple[str, str] | None:
    """(user, password) stored for the registry `domain`, or None."""
    entry = _read_auths(root).get(_auth_key(domain))
    if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
        return None
    try:
        user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _write_auths(root: str, auths: dict[str, Any]) -> None:
    path = auth_path(root)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _auth_lock(root: str) -> AbstractContextManager[bool]:
    from ..fsutil import locked
    os.makedirs(root, mode=0o700, exist_ok=True)
    return locked(os.path.join(root, AUTH_FILE + ".lock"))


def login(root: str, server: str | None, user: str, password: str, *, insecure: bool = False) -> str:
    """Check user/password with the registry (its basic or token challenge),
    then keep them; returns the registry's name.  RegistryError if refused."""
    domain = server_of(server)
    if not isinstance(user, str) or not user or ":" in user or "\0" in user or len(user) > 255:
        raise InvalidArgument("a user name is required (no ':' or NUL, at most 255 characters)")
    if not isinstance(password, str) or not password or "\0" in password or len(password) > 4096:
        raise InvalidArgument("a password is required (no NUL, at most 4096 characters)")
    with Registry(domain, creds=(user, password), insecure=insecure) as reg:
        reg.check_login()
    with _auth_lock(root):
        auths = _read_auths(root)
        auths[_auth_key(domain)] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        _write_auths(root, auths)
    return domain


class Login(TypedDict):
    server: str
    username: str


def logins(root: str) -> list[Login]:
    """The registries with kept credentials and their user names (never the passwords)."""
    out: list[Login] = []
    for key, entry in sorted(_read_auths(root).items()):
        server = reference.DEFAULT_DOMAIN if key == _DOCKER_AUTH_KEY else key
        creds = credentials(root, server)
        out.append({"server": server, "username": creds[0] if creds else ""})
    return out


def logout(root: str, server: str | None) -> bool:
    """Forget the registry's credentials; False if none were kept."""
    domain = server_of(server)
    with _auth_lock(root):
        auths = _read_auths(root)
        if auths.pop(_auth_key(domain), None) is None:
            return False
        _write_auths(root, auths)
    return True


# --------------------------------------------------------------- the client

def _loopback(domain: str) -> bool:
    import ipaddress
    host = domain
    if host.startswith("["):
        host = host[1:host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {...})."""
    m = re.match(r"\s*(\w+)\s*(.*)", header or "", re.S)
    if not m:
        return None
    params = dict((k.lower(), v if v is not None else w) for k, v, w in
                  re.findall(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', m.group(2)))
    return m.group(1).lower(), params


def _error_text(resp: httpx.Response) -> str:
    """The registry's own words: its errors[].code/message, or the status."""
    try:
        errors = resp.json().get("errors") or []
        parts = [f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}".strip(": ")
                 for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:300]
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return f"HTTP {resp.status_code} {resp.reason_phrase}"


class Registry:
    """One registry's API, with its authentication, for one pull or push.
    Thread-safe: the download threads share it."""

    _http: httpx.Client

    def __init__(self, domain: str, *, creds: tuple[str, str] | None = None, insecure: bool = False,
                 timeout: float = 60.0):
        httpx = _lib("httpx")
        self.domain = domain
        self.host = _DOCKER_HUB if domain == reference.DEFAULT_DOMAIN else domain
        self.insecure = insecure or _loopback(domain)
        self._creds = creds
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, str] = {}            # scope -> Authorization value
        self._base: str | None = None
        self.read_timeout = timeout
        self._http = httpx.Client(verify=False if self.insecure else _verifying_context(),
                                  follow_redirects=True,
                                  timeout=httpx.Timeout(timeout, connect=15.0),
                                  limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
                                  headers={"User-Agent": "terrarium"})

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def base(self) -> str:
        """https://host, or for an insecure registry the first of https and
        http that answers /v2/ (the answer's challenge is kept)."""
        if self._base is not None:
            return self._base
        httpx = _lib("httpx")
        schemes = ("https", "http") if self.insecure else ("https",)
        last: Exception | None = None
        for scheme in schemes:
            try:
                r = self._http.get(f"{scheme}://{self.host}/v2/")
            except httpx.TransportError as e:
                last = e
                continue
            if r.status_code == 401:
                self._challenge = _challenge(r.headers.get("www-authenticate", ""))
            self._base = f"{scheme}://{self.host}"
            return self._base
        hint = "" if self.insecure else " (a plain-HTTP registry needs --insecure-registry)"
        raise RegistryError(f"registry {self.domain} is unreachable: {_one_line(last)}{hint}")

    def check_login(self) -> None:
        """Whether the credentials open the registry: /v2/ with its challenge answered."""
        self.base()
        if self._challenge is None:
            return                                     # no authentication at all
        r = self.request("GET", "/v2/", scope="")
        r.close()
        if r.status_code != 200:
            raise _status_error(self, r, "login")

    def _authorization(self, scope: str) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        scheme, params = ch
        if scheme == "basic":
            if self._creds is None:
                return None
            if not self.base().startswith("https:") and not self.insecure:
                return None
            return "Basic " + base64.b64encode(":".join(self._creds).encode()).decode()
        if scheme != "bearer":
            raise RegistryError(f"registry {self.domain} asks for {scheme!r} authentication, "
                                "which is not supported (basic and bearer are)")
        with self._lock:
            token = self._tokens.get(scope)
        if token is None:
            token = "Bearer " + self._fetch_token(params, scope)
            with self._lock:
                self._tokens[scope] = token
        return token

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        httpx = _lib("httpx")
        realm = params.get("realm")
        if not realm or not re.match(r"https?://", realm):
            raise RegistryError(f"registry {self.domain} gave no usable token realm")
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for s in scope.split():
            query.append(("scope", s))
        auth = None
        if self._creds is not None:
            if not realm.startswith("https://") and not self.insecure:
                raise RegistryError(f"refusing to send credentials for {self.domain} to "
                                    f"a plain-HTTP token service")
            auth = self._creds
        try:
            r = self._http.get(realm, params=tuple(query), auth=auth)
        except httpx.TransportError as e:
            raise RegistryError(f"token service of {self.domain} is unreachable: {_one_line(e)}") from None
        if r.status_code in (401, 403):
            raise RegistryError(f"{self.domain}: unauthorized: "
                                + ("incorrect username or password" if auth else "authentication required"))
        if r.status_code != 200:
            raise RegistryError(f"token service of {self.domain}: {_error_text(r)}")
        try:
            doc = r.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service of {self.domain} sent no token")
        return token

    def request(self, method: str, path: str, *, scope: str,
                headers: Mapping[str, str] | None = None, stream: bool = False,
                content: bytes | Iterator[bytes] | None = None,
                params: Mapping[str, str] | None = None, retry_auth: bool = True) -> httpx.Response:
        """One request (path '/v2/...' or an absolute upload URL), answering
        a 401 once with the registry's challenge; the response (streamed:
        close it).  Transport errors become RegistryError."""
        httpx = _lib("httpx")
        base = self.base()
        url = path if path.startswith(("http://", "https://")) else base + path
        for attempt in (0, 1):
            h = dict(headers or {})
            a = self._authorization(scope)
            if a:
                h["Authorization"] = a
            try:
                req = self._http.build_request(method, url, headers=h, content=content, params=params)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                raise RegistryError(f"{self.domain}: {method} failed: {_one_line(e)}") from None
            if resp.status_code != 401 or attempt or not retry_auth:
                return resp
            ch = _challenge(resp.headers.get("www-authenticate", ""))
            resp.close()
            if ch is None:
                return resp
            with self._lock:
                self._challenge = ch
                self._tokens.pop(scope, None)
        return resp

    def get_small(self, path: str, scope: str, limit: int,
                  accept: str | None = None) -> tuple[bytes, str]:
        """GET a document of at most `limit` bytes: (bytes, content type)."""
        r = self.request("GET", path, scope=scope, stream=True,
                         headers={"Accept": accept} if accept else None)
        try:
            if r.status_code != 200:
                r.read()
                raise _status_error(self, r, path)
            body = bytearray()
            for chunk in r.iter_raw(_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise RegistryError(f"{self.domain}: {path} is larger than {limit >> 20} MiB")
            return bytes(body), r.headers.get("content-type", "").split(";")[0].strip()
        finally:
            r.close()


def _status_error(reg: Registry, r: httpx.Response, what: str) -> Exception:
    text, domain = _error_text(r), reg.domain
    if r.status_code == 404:
        return NotFound(f"{domain}: {what}: {text}")
    if r.status_code == 401 and reg._creds is not None and reg._challenge \
            and reg._challenge[0] == "basic":
        return RegistryError(f"{domain}: unauthorized: incorrect username or password")
    if r.status_code in (401, 403):
        hint = "" if reg._creds is None else " for this user"
        return RegistryError(f"{domain}: access denied{hint} ({text}); `terrarium login {domain}` may help")
    return RegistryError(f"{domain}: {what}: {text}")


def _one_line(e: object) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


# --------------------------------------------------------------- progress

class Progress:
    """Per-layer progress, reported through `emit(event)` with events
    {"id": "<12 hex>", "status": ..., "current": n, "total": n} and a final
    {"status": "done", ...}; throttled to one byte count per layer per 0.2 s."""

    interval = 0.2

    def __init__(self, emit: Emit | None):
        self._emit = emit
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def __call__(self, digest: str, status: str, current: int = 0, total: int = 0,
                 force: bool = True) -> None:
        if self._emit is None:
            return
        ident = digest.partition(":")[2][:12] if digest else ""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last.get(ident, 0.0) < self.interval:
                return
            self._last[ident] = now
            self._emit({"id": ident, "status": status, "current": current, "total": total})

    def note(self, event: Mapping[str, object]) -> None:
        if self._emit is not None:
            with self._lock:
                self._emit(event)


# --------------------------------------------------------------- pull

def parse_platform(text: object) -> Platform:
    """'linux/amd64' / 'linux/arm/v7' -> (os, arch, variant); None: this machine's."""
    from .store import arch
    if text is None or text == "":
        return ("linux", arch(), None)
    m = _PLATFORM.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise InvalidArgument(f"invalid platform {ascii(text)[:60]}: expected os/arch[/variant] "
                              "(linux/amd64, linux/arm/v7)")
    return m.group(1), m.group(2), m.group(3)


def _pick(index: JSONObject, want: Platform, where: str) -> JSONObject:
    options = index.get("manifests")
    if not isinstance(options, list) or not options:
        raise RegistryError(f"{where}: the manifest list is empty")
    os_, arch_, variant = want
    seen = []
    for d in options:
        if not isinstance(d, dict):
            continue
        p = d.get("platform")
        if not isinstance(p, dict):
            p = {}
        seen.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
        if p.get("os") == os_ and p.get("architecture") == arch_ \
                and (variant is None or p.get("variant") == variant):
            return d
    want_s = "/".join(x for x in want if x)
    raise NotFound(f"{where}: no image for platform {want_s} (the list has: "
                   f"{', '.join(s for s in seen if s)[:200] or 'none'})")


def _json_doc(data: bytes, what: str) -> JSONObject:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(d: object, what: str) -> str:
    if not isinstance(d, str) or not reference._DIGEST.fullmatch(d):
        raise RegistryError(f"{what}: digest {ascii(d)[:80]} is not sha256:<64 hex>")
    return d


class Blob(TypedDict):
    """A layer's blob in a registry: what _Dist remembers and push sends."""
    digest: str
    size: int
    mediaType: str
    diff_id: str


class _Dist:
    """ROOT/distribution: verified blobs waiting for their layer, and what
    each stored layer is known as in registries (for push's skip and mount)."""

    def __init__(self, root: str):
        self.dir = os.path.join(root, "distribution")
        self.blobs = os.path.join(self.dir, "blobs", "sha256")
        self.layers = os.path.join(self.dir, "layers")
        for d in (self.blobs, self.layers):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def blob(self, digest: str) -> str:
        return os.path.join(self.blobs, digest[7:])

    def known(self, diff_id: str) -> list[JSONObject]:
        try:
            with open(os.path.join(self.layers, diff_id[7:] + ".json")) as f:
                doc = json.load(f)
            return [b for b in doc if isinstance(b, dict)] if isinstance(doc, list) else []
        except (OSError, ValueError):
            return []

    def remember(self, diff_id: str, blob: Blob, domain: str, repo: str) -> None:
        """Note that `domain/repo` holds `blob` ({digest, size, mediaType,
        diff_id}) for the stored layer diff_id (the most recent first, at most 20)."""
        from ..fsutil import locked
        path = os.path.join(self.layers, diff_id[7:] + ".json")
        with locked(path + ".lock"):
            entries = [b for b in self.known(diff_id)
                       if not (b.get("digest") == blob["digest"] and b.get("domain") == domain
                               and b.get("repository") == repo)]
            entries.insert(0, {**blob, "domain": domain, "repository": repo})
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(entries[:20], f)
            os.replace(tmp, path)


def sweep(root: str, max_age: float = 86400.0) -> list[str]:
    """Remove verified and partial blobs untouched for max_age seconds (a
    pull given up on: a pull that ends deletes its own); image-gc calls it.
    A partial blob another pull is writing (flocked) is left alone."""
    blobs = os.path.join(root, "distribution", "blobs", "sha256")
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(blobs))
    except FileNotFoundError:
        return removed
    for e in entries:
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(e.path)
            removed.append(e.name)
        except OSError:
            pass                                 # being written, or gone
        finally:
            os.close(fd)
    return removed


def _parallel() -> int:
    try:
        n = int(os.environ.get("TERRARIUM_PULL_PARALLEL", "3"))
    except ValueError:
        n = 3
    return min(max(n, 1), 16)


def pull(store: ImageStore, ref_text: str, *, platform: str | None = None, insecure: bool = False,
         progress: Emit | None = None, creds: tuple[str, str] | None = None) -> Image:
    """Pull `ref_text` into the image store; returns the Image (its
    `replaced` says which image the name moved off).  `progress(event)` gets
    per-layer events.  Credentials: `creds`, else those `login` kept."""
    from . import importers
    ref = reference.parse(ref_text)
    want = parse_platform(platform)
    if creds is None:
        creds = credentials(store.root, ref.domain)
    report = Progress(progress)
    repo = ref.path
    scope = f"repository:{repo}:pull"
    with Registry(ref.domain, creds=creds, insecure=insecure) as reg:
        manifest, mdigest = _manifest(reg, ref, repo, scope, want)
        cfg_desc = manifest.get("config")
        if not isinstance(cfg_desc, dict):
            raise RegistryError(f"manifest {mdigest} has no config")
        cfg_digest = _check_digest(cfg_desc.get("digest"), f"manifest {mdigest}: config")
        data, _ = reg.get_small(f"/v2/{repo}/blobs/{cfg_digest}", scope, _MAX_CONFIG)
        if _sha256(data) != cfg_digest:
            raise RegistryError(f"config {cfg_digest}: digest mismatch (got {_sha256(data)})")
        config = _json_doc(data, f"config {cfg_digest}")
        layers: list[RegistryLayer] = []
        descs = manifest.get("layers")
        if not isinstance(descs, list):
            raise RegistryError(f"manifest {mdigest} has no layer list")
        for i, d in enumerate(descs):
            what = f"manifest {mdigest}: layer {i}"
            if not isinstance(d, dict):
                raise RegistryError(f"{what} is not an object")
            mt = d.get("mediaType")
            if mt in _FOREIGN or d.get("urls"):
                raise RegistryError(f"{what} is a foreign (non-distributable) layer; not supported")
            if mt not in _LAYER_TYPES:
                raise RegistryError(f"{what}: unsupported layer type {ascii(mt)[:80]}")
            size = d.get("size")
            if not isinstance(size, int) or size < 0:
                raise RegistryError(f"{what}: invalid size {ascii(size)[:40]}")
            layers.append({"path": None, "blob_digest": _check_digest(d.get("digest"), what),
                           "size": size, "mediaType": mt})
        try:
            plan = importers._plan([ref.key], config, layers, cfg_digest)
        except InvalidArgument as e:
            raise RegistryError(f"{ref.familiar}: {e}") from None
        return _fetch_and_apply(store, reg, repo, scope, plan, report, ref, mdigest)


def _manifest(reg: Registry, ref: reference.Reference, repo: str, scope: str,
              want: Platform) -> tuple[JSONObject, str]:
    """The image manifest ref names (through a manifest list), and its digest."""
    target = ref.digest or ref.tag or reference.DEFAULT_TAG    # parse() gives one or the other
    for depth in range(3):
        data, ctype = reg.get_small(f"/v2/{repo}/manifests/{target}", scope, _MAX_MANIFEST, _ACCEPT)
        digest = _sha256(data)
        if target.startswith("sha256:") and digest != target:
            raise RegistryError(f"manifest {target}: digest mismatch (got {digest})")
        doc = _json_doc(data, f"manifest {target}")
        mt = doc.get("mediaType") or ctype
        if mt in _SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(f"{ref.familiar}: schema 1 manifests are not supported "
                                "(deprecated by Docker; push the image again with a current tool)")
        if mt in _INDEXES or (mt not in _MANIFESTS and "manifests" in doc):
            chosen = _pick(doc, want, f"{ref.familiar}")
            target = _check_digest(chosen.get("digest"), f"{ref.familiar}: manifest list entry")
            continue
        if mt not in _MANIFESTS and "layers" not in doc:
            raise RegistryError(f"{ref.familiar}: unsupported manifest type {ascii(mt)[:80]}")
        return doc, digest
    raise RegistryError(f"{ref.familiar}: manifest lists nest too deep")


class _Blob:
    """One layer blob as its unpack reads it, in one pass (read(n), as
    tarsafe.Decompressed wants): what an earlier pull left of it (a verified
    file, or a `.partial` one), then the rest from the registry (a Range
    request after a partial one).  Each byte is hashed, counted against the
    manifest's size and appended to `<hex>.partial` as it goes by, so a pull
    cut off resumes.  At the end the digest is checked: a match renames the
    file to its verified name (the layer is committed after that, see
    verify()), a mismatch deletes it and raises RegistryError.

    open() takes the partial file's flock: a second pull of the same blob
    waits for the first, then finds it verified or stored.  It is let go as
    soon as the blob is settled (verified or refused), before the layer goes
    into the store under the store's lock: a pull waiting for that lock
    never holds a blob another pull waits for."""

    def __init__(self, reg: Registry, repo: str, scope: str, layer: RegistryLayer, dist: _Dist,
                 report: Progress, stop: threading.Event):
        self.digest, self.size = layer["blob_digest"], layer["size"]
        self._reg, self._repo, self._scope = reg, repo, scope
        self._report, self._stop = report, stop
        self.final = dist.blob(self.digest)
        self._part = self.final + ".partial"
        self._fd: int | None = None
        self._resp: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending: bytes | bytearray = b""   # a chunk received, not yet read
        self._carry = b""                    # a received piece that did not fit in the last chunk
        self._asked_socket = False           # _body_socket() asked (after the body's first piece)
        self._sock: socket.socket | None = None   # the connection, once the body is read from it directly
        self._left = 0                       # bytes of the body still to read from _sock
        self._file_left = 0                  # bytes of the file on disk not yet read
        self._h: HASH | None = None          # sha256 of every byte read so far; None: verified earlier
        self.have = 0                        # bytes of the blob read so far
        self.verified = False

    def open(self, stored: Callable[[], bool]) -> str:
        """'earlier' (a verified file), 'stored' (the layer is in the store
        by now: nothing to read) or 'fetch'."""
        while True:
            if self._open_verified():
                return "earlier"
            fd = os.open(self._part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)       # another pull of the same blob: wait for it
            try:
                same = os.fstat(fd).st_ino == os.stat(self._part).st_ino
            except FileNotFoundError:
                same = False                     # renamed or deleted while we waited: look again
            if same:
                break
            os.close(fd)
            if stored():
                return "stored"
        self._fd = fd
        if stored() or os.path.exists(self.final):
            if os.fstat(fd).st_size == 0:
                os.unlink(self._part)            # made by the open above: nothing in it
            self._settle()
            return "stored" if stored() else self.open(stored)    # verified meanwhile: read that
        import hashlib
        self._h = hashlib.sha256()
        have = os.fstat(fd).st_size
        if have > self.size:
            os.ftruncate(fd, 0)
            have = 0
        if have < self.size or self.size == 0:
            self._request(have)
        else:
            self._file_left = have               # complete but not renamed: check it
        self._report(self.digest, "Downloading", self._file_left, self.size)
        return "fetch"

    def _open_verified(self) -> bool:
        try:
            self._fd = os.open(self.final, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False                         # none, or deleted by a pull that stored its layer
        self._file_left = self.size
        self.verified = True
        self._report(self.digest, "Verified earlier", self.size, self.size)
        return True

    def _request(self, have: int) -> None:
        assert self._fd is not None              # open() holds the partial file
        headers = {"Range": f"bytes={have}-"} if have else None
        r = self._reg.request("GET", f"/v2/{self._repo}/blobs/{self.digest}", scope=self._scope,
                              stream=True, headers=headers)
        self._resp = r
        if r.status_code == 200 and have:        # no range support: from the start
            os.ftruncate(self._fd, 0)
            have = 0
        elif r.status_code == 206 and not r.headers.get("content-range", "").startswith(f"bytes {have}-"):
            os.ftruncate(self._fd, 0)            # not the part asked for: start again next time
            raise RegistryError(f"blob {self.digest}: the registry answered a Range request with "
                                f"another range ({r.headers.get('content-range', 'none')[:60]})")
        elif r.status_code not in (200, 206):
            r.read()
            raise _status_error(self._reg, r, f"blob {self.digest}")
        self._file_left = have
        self._chunks = r.iter_raw()

    def read(self, n: int | None = -1) -> bytes | bytearray:
        if n is None or n < 0:
            n = _CHUNK
        if self._file_left:
            assert self._fd is not None          # bytes left in the file: it is open
            data = os.read(self._fd, min(n, self._file_left))
            if not data:
                raise RegistryError(f"blob {self.digest}: {self._part} was cut short while read")
            self._file_left -= len(data)
            self.have += len(data)
            if self._h is not None:
                self._h.update(data)
            return data
        if not self._pending:
            if self._chunks is None:
                return self._end()
            if self._stop.is_set():
                raise RegistryError("pull cancelled")
            chunk = self._receive()
            if not chunk:
                return self._end()
            self.have += len(chunk)
            if self.have > self.size:
                self._mismatch()
            assert self._fd is not None and self._h is not None   # fetching: see _request
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]
            self._h.update(chunk)
            self._report(self.digest, "Downloading", self.have, self.size, force=False)
            self._pending = chunk
        out = self._pending
        if len(out) <= n:                        # the whole chunk: no copy (a bytearray's slice is one)
            self._pending = b""
        else:
            out, self._pending = out[:n], out[n:]
        return out

    def _receive(self) -> bytes | bytearray:
        """The next up to _CHUNK bytes of the body (b"" at its end): the
        pieces httpx hands over as each socket read gives them (at most 64
        KiB) joined, so that the hash, the write and the inflate run once a
        MiB.  Not iter_raw(_CHUNK): its re-chunking copies every byte twice
        more through a BytesIO, holding the GIL (55 against 22 ms CPU for a
        13 MB blob from a registry on loopback)."""
        assert self._chunks is not None and self._resp is not None
        if self._sock is not None:
            return self._recv()
        parts = [self._carry] if self._carry else []
        size = len(self._carry)
        self._carry = b""
        try:
            if not self._asked_socket:           # the first piece: what came with the headers
                self._asked_socket = True
                first = next(self._chunks, b"")
                self._sock, self._left = _body_socket(self._resp, len(first), self._reg.read_timeout)
                if self._sock is not None or not first:
                    return first
                parts, size = [first], len(first)
            for piece in self._chunks:
                if size + len(piece) > _CHUNK and parts:
                    self._carry = piece              # the start of the next chunk
                    break
                parts.append(piece)
                size += len(piece)
        except _lib("httpx").TransportError as e:
            raise RegistryError(f"{self._reg.domain}: blob {self.digest}: {_one_line(e)}") from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _recv(self) -> bytes | bytearray:
        """The next up to _CHUNK bytes of the body straight from the socket
        (b"" at its end), into a fresh buffer: one copy, the kernel's."""
        assert self._sock is not None
        n = min(_CHUNK, self._left)
        if not n:
            return b""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                k = self._sock.recv_into(view[got:])
                if not k:
                    raise RegistryError(f"{self._reg.domain}: blob {self.digest}: the connection "
                                        f"closed {self._left - got} bytes before the body's end")
                got += k
        except OSError as e:                     # a timeout, a reset, TLS
            raise RegistryError(f"{self._reg.domain}: blob {self.digest}: "
                                f"{_one_line(e) if str(e) else type(e).__name__}") from None
        self._left -= n
        return buf            # bytes-like: what hashlib, os.write and the decompressors take

    def _end(self) -> bytes | bytearray:
        if self.verified or self._h is None:
            return b""
        if self.have != self.size or "sha256:" + self._h.hexdigest() != self.digest:
            self._mismatch()
        os.rename(self._part, self.final)
        self.verified = True
        self._settle()
        self._report(self.digest, "Verified", self.size, self.size)
        return b""

    def _mismatch(self) -> NoReturn:
        assert self._h is not None               # only a fetched blob is checked
        got = "sha256:" + self._h.hexdigest()
        os.unlink(self._part)                    # nothing of it is worth keeping
        self._settle()
        self._h = None
        if self.have != self.size:
            raise RegistryError(f"blob {self.digest}: size mismatch: the manifest says {self.size} bytes, "
                                f"the registry sent {'more' if self.have > self.size else self.have}")
        raise RegistryError(f"blob {self.digest}: digest mismatch: the registry sent {got}; "
                            "refusing the image")

    def verify(self, limit: int | None = None) -> bool:
        """Read what the unpack left unread (what may follow the tar's end
        marker; after a failed unpack, the rest of the blob: its digest says
        whether the registry sent it damaged) and check the digest.  False,
        leaving it unchecked, if more than `limit` bytes are left."""
        if self._h is None:
            return self.verified
        if limit is not None and self.size - self.have > limit:
            return False
        while self.read(_CHUNK):
            pass
        return self.verified

    def _settle(self) -> None:
        """Nothing more to read: the response and the file closed, the flock let go."""
        self._chunks = None
        self._carry = b""
        self._sock = None                        # the response's close() closes it
        self._file_left = 0
        self.close()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._fd is not None:
            os.close(self._fd)                   # and with it the flock
            self._fd = None


def _body_socket(r: httpx.Response, taken: int, timeout: float) -> tuple[socket.socket | None, int]:
    """The socket of r's connection, to read the rest of its body from
    directly, and how many bytes of it are left, once `taken` bytes came
    through httpx; (None, 0) where that is not the same bytes.

    httpx hands a body over as h11 parses it: a piece per socket read of at
    most 64 KiB, each copied three times (into h11's buffer, out of it, into
    bytes) with Python between, holding the GIL: 22 ms of CPU for a 13 MB
    blob from a registry on loopback, where recv_into a 1 MiB buffer takes
    5.  The first piece (what h11 holds past the headers, all of it: its
    Content-Length reader hands over what it has) comes through httpx; the
    rest is read from the connection's socket (httpcore's "network_stream"
    extension), a plain or TLS socket of an HTTP/1.1 response with a
    Content-Length and no Transfer-Encoding.  Not through a TLS-in-TLS
    proxy tunnel, whose socket is the outer one.  h11 never sees that rest,
    so the response's close() closes the connection rather than pooling it."""
    import socket
    import ssl
    left = r.headers.get("content-length", "")
    if r.http_version != "HTTP/1.1" or "transfer-encoding" in r.headers or not left.isdigit():
        return None, 0
    stream = r.extensions.get("network_stream")
    if stream is None:
        return None, 0
    sock, tls = stream.get_extra_info("socket"), stream.get_extra_info("ssl_object")
    if not isinstance(sock, socket.socket) or isinstance(tls, ssl.SSLObject) \
            or (tls is None) == isinstance(sock, ssl.SSLSocket):
        return None, 0
    if int(left) < taken:
        return None, 0
    sock.settimeout(timeout)
    return sock, int(left) - taken


_VERIFY_AFTER_ERROR = 256 << 20      # after a refused layer, read at most this much more to tell a damaged blob


def _fetch_and_apply(store: ImageStore, reg: Registry, repo: str, scope: str,
                     plan: Plan[RegistryLayer], report: Progress, ref: reference.Reference,
                     mdigest: str) -> Image:
    """Fetch the missing layers, a few at a time (TERRARIUM_PULL_PARALLEL),
    each unpacked while it downloads: one pass from the socket through the
    blob's sha256 (and its `.partial` copy, for a resume) and the
    decompressor to the diff_id's sha256 and the safe unpack (tarsafe) into
    a work dir of the store.  A layer is committed to the store only once
    both digests match, under the store's lock and import journal, taken
    when the first layer is ready (not while the network is slow); the name
    is written last.  On any failure the layers this pull added are removed
    again and only verified blobs stay, for the next pull."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from . import tarsafe
    dist = _Dist(store.root)
    store._make_dirs()
    keep = {layer["diff_id"] for layer in plan["layers"]}
    with store.lock(blocking=False) as free:
        if free:                 # a killed pull's layers go first: they come again from their verified blobs
            store.sweep_tmp()
    needed: list[RegistryLayer] = []
    for layer in plan["layers"]:
        if store.has_layer(layer["diff_id"]):
            report(layer["blob_digest"], "Already exists", layer["size"], layer["size"])
        elif layer["blob_digest"] not in {n["blob_digest"] for n in needed}:
            needed.append(layer)
            report(layer["blob_digest"], "Waiting", 0, layer["size"])
    budget = tarsafe.Budget(store.root)
    cancelled = threading.Event()
    added: list[str] = []
    done_blobs: list[str] = []
    journal: list[Callable[[str], int]] = []    # note(), once the store's lock is held
    guard = threading.Lock()

    with contextlib.ExitStack() as stack:
        def commit(blob: _Blob, layer: RegistryLayer) -> None:
            """Both digests match: the layer may go into the store (called
            just before it is renamed in)."""
            if not blob.verify():
                raise RegistryError(f"blob {blob.digest}: not read to its end")
            with guard:
                if cancelled.is_set():
                    raise RegistryError("pull cancelled")
                if not journal:
                    stack.enter_context(store.lock())
                    store.sweep_tmp(keep=keep)
                    journal.append(stack.enter_context(store.import_journal()))
                journal[0](layer["diff_id"])

        def fetch(layer: RegistryLayer) -> None:
            if cancelled.is_set():
                raise RegistryError("pull cancelled")
            blob = _Blob(reg, repo, scope, layer, dist, report, cancelled)
            try:
                if blob.open(lambda: store.has_layer(layer["diff_id"])) == "stored":
                    report(blob.digest, "Already exists", blob.size, blob.size)
                    return
                try:
                    _, created = store.import_layer(
                        blob, layer["created_by"], expect_digest=layer["diff_id"], budget=budget,
                        compression=_LAYER_TYPES[layer["mediaType"]], _before_commit=lambda: commit(blob, layer))
                except InvalidArgument as e:
                    blob.verify(limit=_VERIFY_AFTER_ERROR)   # a damaged blob says so (RegistryError)
                    raise RegistryError(f"layer {blob.digest}: {e}") from None
            finally:
                blob.close()
            with guard:
                if created:
                    added.append(layer["diff_id"])
                done_blobs.append(blob.final)
            report(blob.digest, "Pull complete", blob.size, blob.size)

        pool = ThreadPoolExecutor(max_workers=_parallel(), thread_name_prefix="pull")
        try:
            for fut in as_completed([pool.submit(fetch, layer) for layer in needed]):
                fut.result()
            with guard:
                if not journal:              # every layer was here already
                    stack.enter_context(store.lock())
            image = store.add_images([(ref.key, [la["diff_id"] for la in plan["layers"]],
                                       plan["config"], plan["history"], plan["created"])],
                                     by_digest=True)[0]
        except BaseException:
            cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for d in added:
                store.remove_layer(d)
            raise
        finally:
            pool.shutdown(wait=True)
    for layer in plan["layers"]:
        dist.remember(layer["diff_id"], {"digest": layer["blob_digest"], "size": layer["size"],
                                         "mediaType": layer["mediaType"], "diff_id": layer["diff_id"]},
                      reg.domain, repo)
    for path in done_blobs:                    # in the store now: the compressed copy is not needed
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    report.note({"status": "done", "image": image.name, "id": image.id, "digest": mdigest,
                 "replaced": image.replaced})
    return image


# --------------------------------------------------------------- push

def push(store: ImageStore, ref_text: str, *, insecure: bool = False, progress: Emit | None = None,
         creds: tuple[str, str] | None = None) -> str:
    """Push the local image `ref_text` to the registry its name says; returns
    the manifest digest."""
    from . import tarsafe
    from .importers import _HashWriter
    from .store import config_document
    ref = reference.parse_name(ref_text)
    image = store.get(ref.key)
    if creds is None:
        creds = credentials(store.root, ref.domain)
    report = Progress(progress)
    repo = ref.path
    dist = _Dist(store.root)
    with Registry(ref.domain, creds=creds, insecure=insecure) as reg:
        push_scope = f"repository:{repo}:pull,push"
        descs: list[JSONObject] = []
        diff_ids: list[str] = []
        for layer in image.layers:
            blob = _reuse(reg, repo, layer.digest, dist, report)
            if blob is None:
                with store._work_dir("save-") as work:
                    tmp = os.path.join(work, "layer.tar")
                    report(layer.digest, "Preparing", 0, layer.size)
                    with open(tmp, "wb") as f:
                        w = _HashWriter(f)
                        tarsafe.pack(layer.path, w)
                    blob = Blob(digest=w.digest, size=w.size, mediaType=MT_OCI_LAYER,
                                diff_id=w.digest)
                    if _exists(reg, repo, push_scope, blob["digest"]):
                        report(layer.digest, "Layer already exists", w.size, w.size)
                    else:
                        with open(tmp, "rb") as f:
                            _upload(reg, repo, push_scope, blob["digest"], blob["size"], f,
                                    functools.partial(report, layer.digest, "Pushing", total=w.size,
                                                      force=False))
                        report(layer.digest, "Pushed", w.size, w.size)
            dist.remember(layer.digest, blob, reg.domain, repo)
            descs.append({"mediaType": blob["mediaType"], "digest": blob["digest"], "size": blob["size"]})
            diff_ids.append(blob["diff_id"])
        cfg = config_document(image.config, diff_ids, image.history, image.created)
        cfg_digest = _sha256(cfg)
        if not _exists(reg, repo, push_scope, cfg_digest):
            import io
            _upload(reg, repo, push_scope, cfg_digest, len(cfg), io.BytesIO(cfg), None)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                               "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg_digest, "size": len(cfg)},
                               "layers": descs}, separators=(",", ":")).encode()
        r = reg.request("PUT", f"/v2/{repo}/manifests/{ref.tag}", scope=push_scope, content=manifest,
                        headers={"Content-Type": MT_OCI_MANIFEST})
        if r.status_code not in (200, 201):
            raise _status_error(reg, r, f"manifest {ref.tag}")
        digest = _sha256(manifest)
        report.note({"status": "done", "image": ref.familiar, "digest": digest, "size": len(manifest)})
        return digest


def _exists(reg: Registry, repo: str, scope: str, digest: str) -> bool:
    r = reg.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
    r.close()
    if r.status_code == 200:
        return True
    if r.status_code == 404:
        return False
    raise _status_error(reg, r, f"blob {digest}")


def _reuse(reg: Registry, repo: str, diff_id: str, dist: _Dist, report: Progress) -> Blob | None:
    """A blob of this layer the registry has in `repo` already, or mounts
    from another repository of its own; None if it has to be uploaded."""
    push_scope = f"repository:{repo}:pull,push"
    for blob in dist.known(diff_id):
        if blob.get("domain") != reg.domain:
            continue
        try:
            digest = _check_digest(blob.get("digest"), "remembered blob")
            _check_digest(blob.get("diff_id"), "remembered blob")
        except RegistryError:
            continue
        if blob.get("mediaType") not in _LAYER_TYPES or not isinstance(blob.get("size"), int):
            continue
        if _exists(reg, repo, push_scope, digest):
            report(diff_id, "Layer already exists", blob["size"], blob["size"])
            return _clean(blob)
        src = blob.get("repository")
        if isinstance(src, str) and src != repo and reference._PATH_COMPONENT.fullmatch(src.split("/")[0]):
            scope = f"{push_scope} repository:{src}:pull"
            r = reg.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                            params={"mount": digest, "from": src})
            r.close()
            if r.status_code == 201:
                report(diff_id, f"Mounted from {src}", blob["size"], blob["size"])
                return _clean(blob)
            if r.status_code == 202:         # no mount: an upload session was opened; drop it
                loc = r.headers.get("location")
                if loc:
                    reg.request("DELETE", _absolute(reg, loc), scope=push_scope).close()
    return None


def _clean(blob: JSONObject) -> Blob:
    return Blob(digest=blob["digest"], size=blob["size"], mediaType=blob["mediaType"],
                diff_id=blob["diff_id"])


def _absolute(reg: Registry, location: str) -> str:
    if location.startswith(("http://", "https://")):
        return location
    return reg.base() + ("" if location.startswith("/") else "/") + location


def _upload(reg: Registry, repo: str, scope: str, digest: str, size: int, f: SupportsRead[bytes],
            on_progress: Callable[[int], object] | None) -> None:
    """A monolithic upload: POST for a session, then one PUT with the bytes."""
    r = reg.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
    r.close()
    if r.status_code != 202 or not r.headers.get("location"):
        raise _status_error(reg, r, "blob upload")
    url = _absolute(reg, r.headers["location"])

    def body() -> Iterator[bytes]:
        sent = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            sent += len(chunk)
            if on_progress:
                on_progress(sent)
            yield chunk

    url += ("&" if "?" in url else "?") + "digest=" + digest.replace(":", "%3A")   # params= would replace _state
    r = reg.request("PUT", url, scope=scope, content=body(),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    retry_auth=False)
    r.close()
    if r.status_code not in (201, 204):
        raise _status_error(reg, r, f"blob {digest} upload")
