"""The root agent: the runtime's control and inventory verbs behind a local socket.

One per state root.  It is the only process that needs to be root for the
verbs below; a client (the dashboard's unprivileged web tier, or the CLI)
sends it one JSON line per request and reads one JSON line back:

    → {"verb": "stop", "args": {"ref": "web", "timeout": 10}, "user": "alice"}
    ← {"ok": true, "result": {...a Container as a dict...}}
    ← {"ok": false, "kind": "NotFound", "error": "container 'web' not found"}

SOCK_STREAM and newline-framed JSON rather than SEQPACKET: a reply (a list
of containers, a diff) has no size limit, and the same framing works over
TCP/TLS when a dashboard later reaches agents on other hosts.  The one
exception is image import and export: `load` and `save` take the archive as
a descriptor the client opened (SCM_RIGHTS on the request's sendmsg), so the
agent never opens a path a client named; a remote agent would need the
archive as a byte stream on the connection instead.  The other way,
`terminal` hands the client the pty master of a shell it started in a
container and the control socket of its helper (runtime/terminal.py), on
the reply's sendmsg (Verb.passes).  A connection carries
any number of requests, one at a time; each connection has its own thread,
so a slow verb (stop waits up to its timeout) holds up only its own caller.

Requests name verbs, container refs, image names, digests and paths *inside*
a container, never host paths: each verb's arguments are checked against its
schema in VERBS, and an unknown argument is refused.  Every connection's
SO_PEERCRED must be uid 0 or an allowed uid (TERRARIUM_AGENT_UIDS, or the
members of TERRARIUM_AGENT_GROUP); others get one error line and are logged.
Every mutating request is appended to ROOT/audit.log (JSON lines, 0600)
with the user the client names, the peer's uid and pid, and the result.

Sampling is a session on a connection of its own: ``sample`` reads the
containers it names with a runtime.stats.StatsReader the agent keeps *for
that connection* (kept-open cgroup and /proc files, unchanged work skipped),
and answers all of them in one reply, each as what changed since the last
reply on that connection (runtime/sampling.py); ``sample-forget`` closes the
files of containers nobody watches, and the end of the connection closes
everything the session held.  The dashboard's live sampler subscribes
instead (``sample-stream``): it sends its watch set once and again when it
changes, and the agent reads it on its own clock and pushes a frame of what
changed each tick, which the sampler's ticks follow (one clock, the agent's;
no request, wake-up, parse or dispatch per tick: bench/README.md).
The descriptors a viewer caused live and die with the connection of the one
process that watches, so a web tier that dies or restarts leaves nothing
open in the agent.

Started on first use by a root client (runtime/daemons.py, like the fork
server), as `terrarium agent` in the foreground, or from
contrib/terrarium-agent.service.  A SIGKILL loses nothing: containers live
in their shims, state is on disk, and the next request starts a new agent.
"""
from __future__ import annotations

import base64
import datetime as _dt
import grp
import json
import os
import pwd
import re
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from typing import NamedTuple

from . import audit as _audit_log, daemons, linux
from .audit import AUDIT_MAX_FILE, AUDIT_MAX_SIZE, AuditLog  # noqa: F401 - re-exported
from .errors import Conflict, ExecFailed, InvalidArgument, KernelError, NotFound, TerrariumError
from .model import to_dict

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from types import FrameType, ModuleType
    from typing import Any, BinaryIO, Literal, NoReturn, Protocol, TypedDict

    from .containers import Runtime
    from .discovery.docker import UpdateLimits
    from .discovery.registry import FoundJSON
    from .model import LogConfig, Limits, Spec
    from .overlay import Change
    from .sampling import Sender

    class WireReply(TypedDict, total=False):
        """One reply line, as a client reads it: {"ok": true, "result": ...},
        a stream's item {"ok": true, "more": ...}, or an error (error_reply):
        {"ok": false, "kind", "error"} and what rebuilds the exception."""
        ok: bool
        result: Any
        more: Any
        kind: str                   # runtime.errors' class name, or KernelError, OSError...
        error: str
        code: int | None            # KernelError, OSError: the errno
        what: str                   # KernelError
        exit_code: int              # ExecFailed
        filename: str | None        # OSError

    # A checker takes an argument's raw JSON value and returns the clean one
    # (or raises InvalidArgument naming it); a schema: name -> (checker, required).
    Checker = Callable[[Any], object]
    Schema = dict[str, tuple[Checker, bool]]
    # Verb.change: (before, result -> after) for the audit record
    AuditChange = Callable[..., tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]]

    class _Closable(Protocol):
        def close(self) -> None: ...

SOCKET = "agent.sock"
MAX_LINE = 1 << 20              # bytes in one request line
MAX_LOG_TAIL = 10000            # lines the logs verb returns at most
MAX_LOG_BYTES = 1 << 20         # and bytes (the last ones)
IDLE_EXIT_SECONDS = 600.0       # an agent started on first use leaves after this long unused
PROTOCOL_VERSION = 1


def socket_path(root: str) -> str:
    """$TERRARIUM_AGENT_SOCKET, or ROOT/run/agent.sock."""
    return os.environ.get("TERRARIUM_AGENT_SOCKET") or os.path.join(root, "run", SOCKET)


# ------------------------------------------------------------------ arguments
# Each checker takes the raw JSON value and returns the clean one, or raises
# InvalidArgument naming the value.

def _ref(v: object) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= 128 or "\0" in v or "/" in v or v.startswith("."):
        raise InvalidArgument(f"invalid container reference {v!r}")
    return v


def _container_ids(limit: int) -> Checker:
    """A list of at most `limit` container ids (64 hex digits, the name of the
    container's cgroup under the runtime's parent): never a name or a path."""
    from .state import ID_RE

    from .discovery.registry import is_key

    def check(v: object) -> list[str]:
        if not isinstance(v, list) or len(v) > limit:
            raise InvalidArgument(f"invalid container ids: a list of at most {limit}")
        for x in v:
            if not isinstance(x, str) or not (ID_RE.match(x) or is_key(x)):
                shown = x[:80] if isinstance(x, str) else x
                raise InvalidArgument(f"invalid container id {shown!r}: 64 hex digits, "
                                      "or another engine's key (docker-<id>)")
        return list(dict.fromkeys(v))
    return check


def _image_name(v: object) -> str:
    """An image reference (runtime/images/reference.py) or an image id."""
    from .images import reference
    if not isinstance(v, str) or not 0 < len(v) <= 512 or "\0" in v:
        raise InvalidArgument(f"invalid image name {ascii(v)[:80]}")
    if reference.image_id_prefix(v) is None:
        try:
            reference.parse(v)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid image name: {e}") from None
    return v


_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def _digest(v: object) -> str:
    if not isinstance(v, str) or not _DIGEST_RE.fullmatch(v):
        raise InvalidArgument(f"invalid layer digest {v!r}: expected sha256:<64 hex digits>")
    return v


def _inner_path(v: object) -> str:
    """A path in the container's view: absolute, no NUL, no '..' component."""
    if not isinstance(v, str) or not v.startswith("/") or len(v) > 4096 or "\0" in v:
        raise InvalidArgument(f"invalid path {v!r}: must be absolute, inside the container")
    if ".." in v.split("/"):
        raise InvalidArgument(f"invalid path {v!r}: '..' is not allowed")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise InvalidArgument(f"expected true or false, not {v!r}")
    return v


def _seconds(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 3600:
        raise InvalidArgument(f"invalid timeout {v!r}: 0 to 3600 seconds")
    return float(v)


def _count(limit: int) -> Checker:
    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
            raise InvalidArgument(f"invalid count {v!r}: 0 to {limit}")
        return v
    return check


def _signal_arg(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and len(v) > 16):
        raise InvalidArgument(f"invalid signal {v!r}")
    from .containers import parse_signal
    return parse_signal(v)


def _text(limit: int) -> Checker:
    def check(v: object) -> str:
        if not isinstance(v, str) or len(v) > limit or "\0" in v:
            raise InvalidArgument(f"invalid text {v[:40] if isinstance(v, str) else v!r}: "
                                  f"a string of at most {limit} characters")
        return v
    return check


def _number_or_none(v: object) -> float | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise InvalidArgument(f"invalid limit {v!r}: a number or null")
    return v


def _limits(v: object) -> Limits:
    """A Limits from a dict of numbers (None = unlimited); the Runtime checks
    the values (spec.check_limits), so the messages are the in-process ones."""
    from .model import Limits
    if not isinstance(v, dict) or set(v) - set(Limits._fields):
        raise InvalidArgument(f"invalid limits {v!r}: an object with {', '.join(Limits._fields)}")
    values: dict[str, Any] = {k: _number_or_none(x) for k, x in v.items()}
    return Limits(**values)


def _limits_dict(v: object) -> dict[str, Any]:
    _limits(v)                                  # checked as Limits; passed on as the dict
    return v if isinstance(v, dict) else {}     # (_limits refused anything but a dict)


def _log_config(v: object) -> LogConfig:
    """A LogConfig from a dict of two whole numbers; make_spec checks the values."""
    from .model import LogConfig
    from .spec import check_log_config
    if not isinstance(v, dict) or set(v) != set(LogConfig._fields) \
            or not all(type(x) is int for x in v.values()):
        raise InvalidArgument(f"invalid log config {v!r}: an object with max_size and max_file")
    return check_log_config(LogConfig(**v))


def _spec(v: object) -> Spec:
    """A Spec as a dict, checked by runtime.spec.make_spec."""
    from .model import Spec
    from .spec import make_spec
    if not isinstance(v, dict) or set(v) - set(Spec._fields):
        unknown = sorted(set(v) - set(Spec._fields)) if isinstance(v, dict) else v
        raise InvalidArgument(f"invalid container spec: unknown fields {unknown!r}")
    fields = dict(v)
    for key in ("cmd", "env", "ports"):
        if key in fields and not (isinstance(fields[key], list)
                                  and all(isinstance(a, str) for a in fields[key])):
            raise InvalidArgument(f"invalid container spec: {key} must be a list of strings")
    for key in ("name", "hostname", "workdir", "network", "restart"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise InvalidArgument(f"invalid container spec: {key} must be a string")
    _image_name(fields.get("image"))
    if "limits" in fields:
        fields["limits"] = _limits(fields["limits"] or {})
    if fields.get("log") is not None:
        fields["log"] = _log_config(fields["log"])
    if fields.get("healthcheck") is not None and not isinstance(fields["healthcheck"], dict):
        raise InvalidArgument("invalid container spec: healthcheck must be an object")
    if "mounts" in fields and not (isinstance(fields["mounts"], list)
                                   and all(isinstance(m, dict) for m in fields["mounts"])):
        raise InvalidArgument("invalid container spec: mounts must be a list of objects")
    if "read_only" in fields:
        _bool(fields["read_only"])
    try:
        return make_spec(**fields)
    except TypeError as e:
        raise InvalidArgument(f"invalid container spec: {e}") from None


# ---------------------------------------------------------------------- verbs

class Verb(NamedTuple):
    """One request kind: handler(rt, **args) -> JSON-ready result; args schema
    name -> (checker, required); mutating verbs are audited; target names the
    argument the audit shows; fds is how many descriptors come with it; a
    stream verb's reply is its items' lines, then {"ok": true, "result": null}."""
    handler: Callable[..., Any]
    args: Schema
    mutating: bool = False
    target: str = "ref"
    fds: int = 0            # descriptors the request carries (SCM_RIGHTS); handler(fds=[...])
    watch: bool = False     # long: handler(gone=...) polls whether the client has hung up
    stream: bool = False    # the handler yields items, each sent as {"ok": true, "more": item}
    session: bool = False   # handler(session=...): the connection's Session (state kept
                            # between its requests, closed with it)
    change: AuditChange | None = None   # (rt, **args) -> (before dict, result -> after dict): the
                                        # audit record's "change", {field: [before, after]}
    passes: bool = False    # the handler returns Passing(result, fds): the reply carries the
                            # descriptors (SCM_RIGHTS), closed here once sent


class Session:
    """What one connection keeps between its requests, for the verbs that
    declare ``session``: objects made on first use, each closed (with every
    descriptor it holds) when the connection ends."""

    def __init__(self) -> None:
        self._items: dict[str, _Closable] = {}
        # The last request line of a session verb, parsed and checked: a sampling
        # session sends the same line every tick (runtime/sampling.py), which is
        # then neither parsed nor checked again.
        self.line: bytes | None = None
        self.parsed: tuple[str, Verb, str, dict[str, Any]] | None = None   # (name, verb, user, args)
        self.conn: socket.socket | None = None    # the connection and its request reader,
        self.lines: _Reader | None = None         # for a verb that reads more of it (sample-stream)

    def get(self, key: str, make: Callable[[], _Closable] | None = None) -> Any:
        """The session's object under key, made by make() if there is none yet (None without make).
        (Any: the verb that keeps it knows its type.)"""
        item = self._items.get(key)
        if item is None and make is not None:
            item = self._items[key] = make()
        return item

    def close(self) -> None:
        items, self._items = self._items, {}
        for item in items.values():
            try:
                item.close()
            except Exception as e:  # noqa: BLE001 - close the others, say why
                _log(f"closing a connection's {type(item).__name__}: {e}")


def _changes(changes: Iterable[Change]) -> list[dict[str, Any]]:
    import dataclasses
    return [dataclasses.asdict(ch) for ch in changes]


def _diff(rt: Runtime, ref: str, implicit: bool = True, limit: int | None = None) -> dict[str, Any]:
    changes = rt.diff(ref, implicit=implicit, limit=limit)
    return {"changes": _changes(changes), "truncated": changes.truncated}


def _logs(rt: Runtime, ref: str, tail: int) -> str:
    data: bytes = rt.logs(ref, tail=tail, max_bytes=MAX_LOG_BYTES)
    return base64.b64encode(data).decode("ascii")


def _network_name(v: object) -> str:
    from .network import check_network_name
    return check_network_name(v)


def _subnet(v: object) -> str | None:
    if v is not None and (not isinstance(v, str) or len(v) > 43):
        raise InvalidArgument(f"invalid subnet {v!r}: an IPv4 CIDR such as 10.89.0.0/16")
    return v


def _mtu(v: object) -> int | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise InvalidArgument(f"invalid MTU {v!r}: a whole number")
    return v


_NETWORK: Schema = {"name": (_network_name, True)}


def _volume_name(v: object) -> str:
    from .mounts import check_volume_name
    return check_volume_name(v)


_VOLUME: Schema = {"name": (_volume_name, True)}


def _info(rt: Runtime) -> dict[str, object]:
    return {"root": rt.root, "cgroup_parent": rt.cgroup_parent, "pid": os.getpid(),
            "protocol": PROTOCOL_VERSION}


def _received_file(fd: int, mode: Literal["rb", "wb"]) -> BinaryIO:
    """A file object on a descriptor the client sent (owned by the connection,
    which closes it): a regular file, opened for what the verb does with it."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument("the descriptor sent is not a regular file")
    import fcntl
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    if mode == "wb" and access == os.O_RDONLY:
        raise InvalidArgument("the descriptor sent for the archive is not open for writing")
    if mode == "rb" and access == os.O_WRONLY:
        raise InvalidArgument("the descriptor sent for the archive is not open for reading")
    return os.fdopen(fd, mode, closefd=False)


def _load(rt: Runtime, fds: list[int], name: str | None = None, label: str = "the archive",
          replace: bool = True) -> Any:
    with _received_file(fds[0], "rb") as f:
        return to_dict(rt.load_image(f, name=name, label=label, replace=replace))


def _save(rt: Runtime, fds: list[int], name: str) -> str:
    rt.images.get(name)                           # NotFound before the file is touched
    with _received_file(fds[0], "wb") as f:
        os.ftruncate(fds[0], 0)
        f.seek(0)
        digest: str = rt.save_image(name, f)
        return digest


class ClientGone(Exception):
    """The client of a long request hung up: stop working for it."""


def _registry_ref(v: object) -> str:
    """A reference to pull or push: [registry/]name[:tag][@digest], parsed as Docker does."""
    from .images import reference
    if not isinstance(v, str) or not 0 < len(v) <= 512:
        raise InvalidArgument(f"invalid image reference {ascii(v)[:80]}")
    reference.parse(v)
    return v


def _platform(v: object) -> str:
    from .images.distribution import parse_platform
    if not isinstance(v, str) or len(v) > 64:
        raise InvalidArgument(f"invalid platform {ascii(v)[:80]}")
    parse_platform(v)
    return v


def _secret(v: object) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= 4096 or "\0" in v:
        raise InvalidArgument("a password is required (no NUL, at most 4096 characters)")
    return v


def _transfer(rt: Runtime, gone: Callable[[], bool], ref: str, push: bool = False,
              platform: str | None = None, insecure: bool = False) -> Iterator[Any]:
    """pull / push: the work in a thread, its progress events streamed as
    they come (the last one {"status": "done", ...} with the image), the
    credentials from the state root's file (runtime.images.distribution);
    a client that hangs up stops the transfer at its next event."""
    import queue
    import threading
    # ("event", a progress event) ... then ("end", None) or ("error", what the work raised)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()

    def progress(ev: object) -> None:
        if stop.is_set():
            raise ClientGone()
        events.put(("event", ev))

    def work() -> None:
        try:
            if push:
                rt.push_image(ref, insecure=insecure, progress=progress)
            else:
                rt.pull_image(ref, platform=platform, insecure=insecure, progress=progress)
            events.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the streaming thread
            events.put(("error", e))

    worker = threading.Thread(target=work, name=f"agent-{'push' if push else 'pull'}", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, item = events.get(timeout=0.5)
            except queue.Empty:
                if gone():
                    raise ClientGone() from None
                continue
            if kind == "event":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        worker.join()


def _wait(rt: Runtime, gone: Callable[[], bool], ref: str, timeout: float | None = None) -> Any:
    """Runtime.wait in one-second slices, so that a client that hangs up does
    not leave a thread waiting for a container that may run for months."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        try:
            return to_dict(rt.wait(ref, timeout=left))
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"container {rt.inspect(ref).name!r} still running "
                                   f"after {timeout:g}s") from None
            if gone():
                raise ClientGone() from None


def _log_output(rt: Runtime, gone: Callable[[], bool], ref: str, tail: int | None = None,
                since: str | None = None, follow: bool = False,
                timestamps: bool = False) -> Iterator[list[str]]:
    def on_wait() -> None:                                # the reader has caught up: still wanted?
        if gone():
            raise ClientGone()
    for stream, data in rt.log_output(ref, tail=tail, since=since, follow=follow,
                                      timestamps=timestamps, on_wait=on_wait if follow else None):
        yield [stream, base64.b64encode(data).decode("ascii")]


def _state_changes(rt: Runtime, gone: Callable[[], bool], engines: bool = False) -> Iterator[list[str] | None]:
    """The ids whose state changed, as batches (None: list everything again),
    and an empty batch each quiet second, on which a client gone is noticed.
    engines: other owners' containers' keys too (their engines' events)."""
    for batch in rt.changes(gone, heartbeat=True, engines=engines):
        yield None if batch is None else sorted(batch)


def _oom_events(rt: Runtime, gone: Callable[[], bool], refresh: float = 0.5) -> Iterator[Any]:
    from . import oomfeed
    yield from oomfeed.follow(rt, gone, refresh=refresh)


def _refresh(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.05 <= v <= 10:
        raise InvalidArgument(f"invalid refresh {v!r}: 0.05 to 10 seconds")
    return float(v)


def _oom_counts(rt: Runtime, ref: str) -> dict[str, Any] | None:
    from .oomfeed import container_counts, counts_to_dict
    return counts_to_dict(container_counts(rt, ref))


def _oom_scope(rt: Runtime) -> Mapping[str, Any]:
    from .oomfeed import memory_scope
    return memory_scope(rt)


MAX_SAMPLE_IDS = 512            # containers one sample request names
MAX_SAMPLED = 4096              # containers one connection keeps open at once


def _sampler(rt: Runtime, session: Session) -> Sender:
    sender: Sender | None = session.get("sample")
    if sender is None:
        from .sampling import Sender
        sender = session.get("sample", lambda: Sender(rt.stats_reader(), error_reply))
    return sender


def _sample(rt: Runtime, session: Session, ids: list[str] | None = None, tree: bool = True,
            keep: bool = True) -> dict[str, Any]:
    """Read every container of ids (its cgroup files, and its processes with
    tree); no ids: the ids of the connection's previous ``sample`` request.
    See runtime/sampling.py for the reply."""
    sender = _sampler(rt, session)
    if ids is None:
        ids = sender.ids
        if ids is None:
            raise InvalidArgument("sample: argument 'ids' is required (no earlier request on this "
                                  "connection to repeat)")
    else:
        if keep and len(sender) + len([c for c in ids if c not in sender.sent]) > MAX_SAMPLED:
            raise InvalidArgument(f"sample: this connection already samples {len(sender)} containers, "
                                  f"at most {MAX_SAMPLED}: forget some first (sample-forget)")
        sender.ids = ids
    readings: dict[str, Any] = sender.sample(ids, tree, keep)
    return readings


MAX_SAMPLE_STREAMS = 64         # sample-stream subscriptions at once, for every client (one per
_sample_streams = threading.BoundedSemaphore(MAX_SAMPLE_STREAMS)   # connection: a thread each)


def _interval(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.05 <= v <= 60:
        raise InvalidArgument(f"invalid interval {v!r}: 0.05 to 60 seconds")
    return float(v)


def _sample_stream(rt: Runtime, session: Session, ids: list[str], tree: bool = True,
                   interval: float = 1.0) -> Iterator[Any]:
    """A subscription: the watch set's readings pushed every interval seconds
    as what changed, until the client hangs up; a line the client sends
    meanwhile is the new watch set (runtime/sampling.py stream()).  One per
    connection (it holds the connection), MAX_SAMPLE_STREAMS in all; the
    connection's end closes every file it kept open."""
    from .sampling import stream
    if session.conn is None or session.lines is None:
        raise InvalidArgument("sample-stream: needs a connection of its own")
    if not _sample_streams.acquire(blocking=False):
        raise Conflict(f"{MAX_SAMPLE_STREAMS} sampling streams are open already")
    try:
        verb = VERBS["sample-stream"]
        yield from stream(_sampler(rt, session), session.conn, session.lines,
                          lambda obj: _check_args("sample-stream", verb, obj), ids, tree, interval)
    finally:
        _sample_streams.release()


def _sample_forget(rt: Runtime, session: Session, ids: list[str]) -> None:
    sender = session.get("sample")
    if sender is not None:
        sender.forget(ids)


def _records(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Flat dataclass records as dicts (not dataclasses.asdict, which deep-copies:
    twice the time for the host's few hundred processes)."""
    import dataclasses
    out = []
    for x in items:
        names = [f.name for f in dataclasses.fields(x)]
        out.append({n: getattr(x, n) for n in names})
    return out


def _host_processes(rt: Runtime) -> list[dict[str, Any]]:
    """The host's processes, flat: the client rebuilds the same forest
    (runtime.procs.build_forest links them by ppid)."""
    from .procs import walk
    return _records(node.info for _, node in walk(rt.host_processes()))


def _host_cgroups(rt: Runtime) -> list[dict[str, Any]]:
    return [{"name": h.name, "mount": h.mount, "nodes": _records(h.nodes)}
            for h in rt.host_cgroups()]


class Passing(NamedTuple):
    """A result and the descriptors its reply hands to the client."""
    result: object
    fds: list[int]


class Reply(dict[str, object]):
    """A reply that carries descriptors (Verb.passes): _send attaches them to
    the line, and release() closes the agent's copies once it is sent."""
    fds: list[int] = []

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


MAX_TERMINALS = 64              # terminals open at once (helper processes), for every client
_terminals = threading.BoundedSemaphore(MAX_TERMINALS)


def _shell(v: object) -> str:
    from .terminal import check_shell
    check_shell(v)                     # InvalidArgument unless the name of one of SHELLS
    return str(v)


def _term_size(limit: int) -> Checker:
    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
            raise InvalidArgument(f"invalid terminal size {v!r}: 1 to {limit}")
        return v
    return check


def _terminal(rt: Runtime, ref: str, shell: str = "auto", rows: int = 24, cols: int = 80) -> Passing:
    """A shell on a pty in running container ref (runtime/terminal.py): the
    pty master and the helper's control socket go to the client, which reads
    the process's exit code on the latter; the helper is reaped here."""
    if not _terminals.acquire(blocking=False):
        raise Conflict(f"{MAX_TERMINALS} terminals are open already: close one first")
    started = time.monotonic()
    try:
        name = rt.inspect(ref).name

        def ended(code: int) -> None:
            _terminals.release()
            _log(f"terminal in {name!r} ended: exit {code} after {time.monotonic() - started:.1f} s")
        term = rt.terminal(ref, shell=shell, rows=rows, cols=cols, on_end=ended)
    except BaseException:
        _terminals.release()
        raise
    fds = [term.master, term.ctl.detach()]
    return Passing({**term.info, "rows": rows, "cols": cols}, fds)


_REF: Schema = {"ref": (_ref, True)}


def _name_change(rt: Runtime, ref: str | None = None, target: str | None = None,
                 **_: object) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]:
    """pull and tag: the image id the name pointed at before and after (a name
    moved off another image shows both)."""
    name = target or ref or ""                    # (pull names ref, tag target)

    def current() -> str | None:
        try:
            image_id: str = rt.images.get(name).id
            return image_id
        except (NotFound, InvalidArgument):
            return None
    return {"image": current()}, lambda _result: {"image": current()}


def _limits_change(rt: Runtime, ref: str,
                   limits: object) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]:
    return to_dict(rt.inspect(ref).limits), lambda result: result["limits"]


# ------------------------------------------------ other owners' containers
# (runtime/discovery): a key names one, an action comes from a fixed set; the
# engine's socket is the agent's own setting, never the caller's.

def _key(v: object) -> str:
    from .discovery.registry import is_key
    if not is_key(v):
        raise InvalidArgument(f"invalid container key {ascii(v)[:80]}: "
                              "64 hex digits or <engine>-<id>")
    return str(v)                      # (a key is a str)


def _action(v: object) -> str:
    from .discovery import CONTROLS
    if v not in CONTROLS:
        raise InvalidArgument(f"invalid action {ascii(v)[:40]}: one of {', '.join(sorted(CONTROLS))}")
    return v


def _signal_name(v: object) -> str:
    import signal as _signal
    sig = _signal_arg(v)
    return _signal.Signals(sig).name


def _discover(rt: Runtime) -> dict[str, Any]:
    from .discovery.registry import to_json
    found, states = rt.discovery().discover()
    return {"found": [to_json(f) for f in found], "engines": [s._asdict() for s in states]}


def _discovered(rt: Runtime, key: str) -> FoundJSON:
    from .discovery.registry import to_json
    return to_json(rt.discovery().get(key))


def _engine_control(rt: Runtime, key: str, action: str, timeout: float = 10.0, signal: str = "SIGKILL",
                    limits: UpdateLimits | None = None) -> FoundJSON | None:
    from .discovery.registry import to_json
    found = rt.discovery().control(key, action, timeout=timeout, signal=signal, limits=limits)
    return None if found is None else to_json(found)


def _engine_logs(rt: Runtime, gone: Callable[[], bool], key: str, tail: int | None = None,
                 since: str | None = None, follow: bool = False) -> Iterator[list[str]]:
    for stream, data in rt.discovery().logs(key, tail=tail, since=since, follow=follow, stop=gone):
        yield [stream, base64.b64encode(data).decode("ascii")]


def _engine_terminal(rt: Runtime, key: str, shell: str = "auto", rows: int = 24, cols: int = 80) -> Passing:
    """A shell in another engine's container through its exec: the connection
    and the control socket go to the client (runtime/discovery/engine_terminal.py);
    this process keeps the watcher that hangs it up when the client goes.  It
    counts toward MAX_TERMINALS as ours do, until its watcher is done."""
    places = _terminals                 # released into the one it was taken from
    if not places.acquire(blocking=False):
        raise Conflict(f"{MAX_TERMINALS} terminals are open already: close one first")
    started = time.monotonic()

    def ended() -> None:
        places.release()
        _log(f"terminal in {key!r} ended after {time.monotonic() - started:.1f} s")
    try:
        term = rt.discovery().terminal(key, shell=shell, rows=rows, cols=cols, on_end=ended)
    except BaseException:
        places.release()
        raise
    return Passing(term.info, [term.master, term.ctl.detach()])


def _engine_tree(rt: Runtime, key: str) -> list[dict[str, Any]]:
    from .procs import walk
    return _records(node.info for _, node in walk(rt.discovery().tree(key)))


def _update_change(rt: Runtime, ref: str, limits: object = None,
                   restart: str | None = None) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]:
    """update's audit change: the limits, and the restart policy when one was given."""
    if restart is None:
        return _limits_change(rt, ref, limits)
    c = rt.inspect(ref)
    return ({**to_dict(c.limits), "restart": c.restart_policy},
            lambda result: {**result["limits"], "restart": result["restart_policy"]})


VERBS: dict[str, Verb] = {
    "info": Verb(_info, {}),
    "list": Verb(lambda rt, all=True: to_dict(rt.list(all=all)), {"all": (_bool, False)}),  # noqa: A006 - as Runtime.list
    "inspect": Verb(lambda rt, ref: to_dict(rt.inspect(ref)), _REF),
    "create": Verb(lambda rt, spec, allow_host_network=False, allow_bind_mounts=False:
                   to_dict(rt.create(spec, allow_host_network=allow_host_network,
                                     allow_bind_mounts=allow_bind_mounts)),
                   {"spec": (_spec, True), "allow_host_network": (_bool, False),
                    "allow_bind_mounts": (_bool, False)},
                   mutating=True, target="spec"),
    "start": Verb(lambda rt, ref: to_dict(rt.start(ref)), _REF, mutating=True),
    "stop": Verb(lambda rt, ref, timeout=10.0: to_dict(rt.stop(ref, timeout)),
                 {**_REF, "timeout": (_seconds, False)}, mutating=True),
    "kill": Verb(lambda rt, ref, signal=9: to_dict(rt.kill(ref, signal)),
                 {**_REF, "signal": (_signal_arg, False)}, mutating=True),
    "restart": Verb(lambda rt, ref, timeout=10.0: to_dict(rt.restart(ref, timeout)),
                    {**_REF, "timeout": (_seconds, False)}, mutating=True),
    "pause": Verb(lambda rt, ref: to_dict(rt.pause(ref)), _REF, mutating=True),
    "resume": Verb(lambda rt, ref: to_dict(rt.resume(ref)), _REF, mutating=True),
    "update": Verb(lambda rt, ref, limits=None, restart=None: to_dict(rt.update(ref, limits, restart=restart)),
                   {**_REF, "limits": (_limits, False), "restart": (_text(32), False)}, mutating=True,
                   change=_update_change),
    "remove": Verb(lambda rt, ref, force=False, volumes=False: rt.remove(ref, force=force, volumes=volumes),
                   {**_REF, "force": (_bool, False), "volumes": (_bool, False)}, mutating=True),
    "logs": Verb(_logs, {**_REF, "tail": (_count(MAX_LOG_TAIL), True)}),
    "images": Verb(lambda rt, dangling=False: to_dict(rt.images.dangling() if dangling
                                                      else rt.images.list()),
                   {"dangling": (_bool, False)}),
    "image": Verb(lambda rt, name: to_dict(rt.images.get(name)), {"name": (_image_name, True)}),
    "image-layer": Verb(lambda rt, digest: to_dict(rt.images.layer(digest)),
                        {"digest": (_digest, True)}),
    "image-builtin": Verb(lambda rt: rt.images.ensure_builtin(), {}, mutating=True, target=""),
    "rmi": Verb(lambda rt, name, force=False: rt.remove_image(name, force=force),
                {"name": (_image_name, True), "force": (_bool, False)}, mutating=True, target="name"),
    "image-gc": Verb(lambda rt: rt.image_gc(), {}, mutating=True, target=""),
    "diff": Verb(_diff, {**_REF, "implicit": (_bool, False), "limit": (_count(1 << 30), False)}),
    "layer-of": Verb(lambda rt, ref, path: list(rt.layer_of(ref, path)),
                     {**_REF, "path": (_inner_path, True)}),
    "mount-info": Verb(lambda rt, ref: rt.mount_info(ref), _REF),
    "upper-size": Verb(lambda rt, ref: list(rt.upper_size(ref)), _REF),
    "commit": Verb(lambda rt, ref, image, message="", pause=True, replace=True:
                   to_dict(rt.commit(ref, image, message=message, pause=pause, replace=replace)),
                   {**_REF, "image": (_image_name, True), "message": (_text(1000), False),
                    "pause": (_bool, False), "replace": (_bool, False)}, mutating=True),
    # networks (runtime/network.py)
    "networks": Verb(lambda rt: rt.networks.list(), {}),
    "network": Verb(lambda rt, name: rt.networks.inspect(name), _NETWORK),
    "network-create": Verb(lambda rt, name, subnet=None, mtu=None, nat=False:
                           rt.networks.create(name, subnet=subnet, mtu=mtu, nat=nat),
                           {**_NETWORK, "subnet": (_subnet, False), "mtu": (_mtu, False), "nat": (_bool, False)},
                           mutating=True, target="name"),
    "network-remove": Verb(lambda rt, name: rt.networks.remove(name), _NETWORK, mutating=True, target="name"),
    # volumes (runtime/volumes.py)
    "volumes": Verb(lambda rt: rt.volumes.list(), {}),
    "volume": Verb(lambda rt, name: rt.volumes.inspect(name), _VOLUME),
    "volume-create": Verb(lambda rt, name=None: rt.volumes.create(name), {"name": (_volume_name, False)},
                          mutating=True, target="name"),
    "volume-remove": Verb(lambda rt, name: rt.volumes.remove(name), _VOLUME, mutating=True, target="name"),
    "wait": Verb(_wait, {**_REF, "timeout": (_seconds, False)}, watch=True),
    "log-output": Verb(_log_output, {**_REF, "tail": (_count(1 << 62), False),
                                     "since": (_text(64), False), "follow": (_bool, False),
                                     "timestamps": (_bool, False)}, watch=True, stream=True),
    "changes": Verb(_state_changes, {"engines": (_bool, False)}, watch=True, stream=True),
    # Every owner's containers (runtime/discovery): list, one, act through its engine.
    "discover": Verb(_discover, {}),
    "discovered": Verb(_discovered, {"key": (_key, True)}),
    "engine-layers": Verb(lambda rt, key, limit=10000: rt.discovery().layers(key, limit),
                          {"key": (_key, True), "limit": (_count(1 << 20), False)}),
    "engine-logs": Verb(_engine_logs, {"key": (_key, True), "tail": (_count(1 << 62), False),
                                       "since": (_text(64), False), "follow": (_bool, False)},
                        watch=True, stream=True),
    "engine-terminal": Verb(_engine_terminal, {"key": (_key, True), "shell": (_shell, False),
                                               "rows": (_term_size(500), False),
                                               "cols": (_term_size(1000), False)},
                            mutating=True, passes=True, target="key"),
    "engine-tree": Verb(_engine_tree, {"key": (_key, True)}),
    "engine-control": Verb(_engine_control, {"key": (_key, True), "action": (_action, True),
                                             "timeout": (_seconds, False),
                                             "signal": (_signal_name, False),
                                             "limits": (_limits_dict, False)},
                           mutating=True, target="key"),
    # The OOM watcher's kernel reads: the kernel log and counters as they move, a
    # running container's counters now, and where the memory hierarchy is.
    "oom-events": Verb(_oom_events, {"refresh": (_refresh, False)}, watch=True, stream=True),
    "oom-counts": Verb(_oom_counts, _REF),
    "oom-scope": Verb(_oom_scope, {}),
    # A terminal: the pty master and the helper's control socket come back (SCM_RIGHTS).
    "terminal": Verb(_terminal, {**_REF, "shell": (_shell, False),
                                 "rows": (_term_size(500), False), "cols": (_term_size(1000), False)},
                     mutating=True, passes=True),
    # Archives come and go as descriptors the client opened, never as paths.
    "load": Verb(_load, {"name": (_image_name, False), "label": (_text(255), False),
                         "replace": (_bool, False)},
                 mutating=True, target="label", fds=1),
    "save": Verb(_save, {"name": (_image_name, True)}, mutating=True, target="name", fds=1),
    # Registries (runtime/images/distribution.py): credentials never cross the socket.
    "pull": Verb(_transfer, {**{"ref": (_registry_ref, True)}, "platform": (_platform, False),
                             "insecure": (_bool, False)}, mutating=True, watch=True, stream=True,
                 change=_name_change),
    "push": Verb(lambda rt, gone, ref, insecure=False: _transfer(rt, gone, ref, push=True, insecure=insecure),
                 {"ref": (_registry_ref, True), "insecure": (_bool, False)},
                 mutating=True, watch=True, stream=True),
    "tag": Verb(lambda rt, source, target: to_dict(rt.tag_image(source, target)),
                {"source": (_image_name, True), "target": (_image_name, True)},
                mutating=True, target="target", change=_name_change),
    # Registry credentials: checked and kept here, shown as user names only; the
    # audit names the registry (the password is in no log, reply or audit line).
    "registry-logins": Verb(lambda rt: rt.registry_logins(), {}),
    "registry-login": Verb(lambda rt, server, username, password, insecure=False:
                           rt.registry_login(server, username, password, insecure),
                           {"server": (_text(255), True), "username": (_text(255), True),
                            "password": (_secret, True), "insecure": (_bool, False)},
                           mutating=True, target="server"),
    "registry-logout": Verb(lambda rt, server: rt.registry_logout(server), {"server": (_text(255), True)},
                            mutating=True, target="server"),
    # Sampling: a session per connection (kept-open files, replies as changes).
    "sample": Verb(_sample, {"ids": (_container_ids(MAX_SAMPLE_IDS), False), "tree": (_bool, False),
                             "keep": (_bool, False)}, session=True),
    "sample-forget": Verb(_sample_forget, {"ids": (_container_ids(MAX_SAMPLED), True)}, session=True),
    # The live sampler's subscription: frames pushed on the agent's clock (runtime/sampling.py).
    "sample-stream": Verb(_sample_stream, {"ids": (_container_ids(MAX_SAMPLE_IDS), True), "tree": (_bool, False),
                                           "interval": (_interval, False)}, session=True, stream=True),
    # ROOT/audit.log's newest records (the dashboard shows the CLI's next to its own)
    "audit-recent": Verb(lambda rt, limit=500, others_only=False: rt.audit_recent(limit, others_only),
                         {"limit": (_count(_audit_log.RECENT_MAX), False), "others_only": (_bool, False)}),
    # The dashboard's host pages: whole-host reads, no arguments.
    "host-namespaces": Verb(lambda rt: _records(rt.host_namespaces()), {}),
    "host-processes": Verb(_host_processes, {}),
    "host-cgroups": Verb(_host_cgroups, {}),
}
MAX_FDS = 2                     # descriptors accepted with one request


def error_reply(e: BaseException) -> dict[str, Any]:
    """The reply for an exception: its kind, message, and what rebuilds it (a WireReply)."""
    reply: dict[str, Any] = {"ok": False, "kind": type(e).__name__, "error": str(e)}
    if isinstance(e, KernelError):
        reply.update(kind="KernelError", code=e.code, what=e.what)
    elif isinstance(e, ExecFailed):
        reply.update(kind="ExecFailed", exit_code=e.exit_code)
    elif isinstance(e, TerrariumError):
        reply["kind"] = next(c.__name__ for c in type(e).__mro__ if c.__module__ == __package__ + ".errors")
    elif isinstance(e, TimeoutError):
        reply["kind"] = "TimeoutError"
    elif isinstance(e, OSError):
        reply.update(kind="OSError", code=e.errno, error=e.strerror or str(e),
                     filename=e.filename if isinstance(e.filename, str) else None)
    return reply


# -------------------------------------------------------------------- access

class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_of(conn: socket.socket) -> Peer:
    return Peer(*struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     struct.calcsize("3i"))))


def allowed_uids(group: str | None, uids: str | None) -> frozenset[int]:
    """uid 0, the uids or user names in `uids` (comma-separated), the members
    of `group` and the users whose primary group it is."""
    out = {0}
    for item in (uids or "").replace(" ", ",").split(","):
        if item:
            try:
                out.add(int(item) if item.isdigit() else pwd.getpwnam(item).pw_uid)
            except KeyError:
                raise InvalidArgument(f"TERRARIUM_AGENT_UIDS: no user {item!r}") from None
    if group:
        g = _group(group)
        out.update(pwd.getpwnam(m).pw_uid for m in g.gr_mem)
        out.update(p.pw_uid for p in pwd.getpwall() if p.pw_gid == g.gr_gid)
    return frozenset(out)


def _group(name: str) -> grp.struct_group:
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise InvalidArgument(f"TERRARIUM_AGENT_GROUP: no group {name!r}") from None


def prepare_socket_dir(path: str, run_dir: str, gid: int | None) -> None:
    """The socket's directory: root's own, 0700, or 0750 root:gid with a group.

    Only a directory of the socket's own (new, or holding nothing else, as
    systemd's RuntimeDirectory) is given that owner and mode: a shared one
    such as /etc keeps its own, and a world-writable one such as /tmp is
    refused.  ROOT/run is never opened to a group (it holds the fork
    server's socket and the logs): a group needs TERRARIUM_AGENT_SOCKET
    elsewhere."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise TerrariumError(f"agent socket directory {d!r} is not a directory owned by root")
    if st.st_mode & stat.S_IWOTH:
        raise TerrariumError(f"agent socket directory {d!r} is writable by everyone: "
                             "use a directory of its own, e.g. /run/terrarium")
    if os.path.abspath(d) == os.path.abspath(run_dir):
        if gid is not None:
            _log(f"note: {d} stays 0700, so the agent group cannot reach {path}; "
                 "set TERRARIUM_AGENT_SOCKET to a path outside the state root")
        return
    if set(os.listdir(d)) - {os.path.basename(path)}:
        _log(f"note: {d} holds other files: its owner and mode are left as they are")
        return
    os.chown(d, 0, 0 if gid is None else gid)
    os.chmod(d, 0o700 if gid is None else 0o750)


# --------------------------------------------------------------------- audit

# AuditLog and its rotation: runtime/audit.py (the in-process CLI writes the same log).


def _log(msg: str) -> None:
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    try:
        sys.stderr.write(f"{stamp} terrarium-agent: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -------------------------------------------------------------------- server

class Agent:
    """The server: a listening socket, a thread per connection, one Runtime."""

    def __init__(self, root: str, cgroup_parent: str | None = None, *, path: str | None = None,
                 group: str | None = None, uids: str | None = None) -> None:
        from .containers import Runtime
        if os.geteuid() != 0:
            raise TerrariumError("the Terrarium agent must run as root")
        self.rt = Runtime(root, cgroup_parent)
        self.path = path or socket_path(self.rt.root)
        self.group = group if group is not None else os.environ.get("TERRARIUM_AGENT_GROUP") or None
        uids = uids if uids is not None else os.environ.get("TERRARIUM_AGENT_UIDS")
        self.allowed = allowed_uids(self.group, uids)
        self.audit = AuditLog.from_env(_audit_log.path_of(self.rt.root))
        self._open: set[socket.socket] = set()     # connections being served
        self._closing = False
        self._pidfile: str | None = None
        self._cond = threading.Condition()
        self._last_active = time.monotonic()

    def listen(self) -> socket.socket:
        """The listening socket; Conflict if another agent answers on the path."""
        from .fsutil import locked
        gid = _group(self.group).gr_gid if self.group else None
        prepare_socket_dir(self.path, self.rt.run_dir, gid)
        with locked(os.path.join(self.rt.run_dir, "agent.listen.lock")):
            if daemons.answers(self.path):
                raise Conflict(f"another Terrarium agent already serves {self.path}")
            listener = daemons.listen(self.path, socket.SOCK_STREAM)
        if gid is not None:
            os.chown(self.path, 0, gid, follow_symlinks=False)
            os.chmod(self.path, 0o660)
        return listener

    def serve(self, ready_fd: int | None = None, idle_exit: float | None = None,
              pidfile: bool = False) -> None:
        """Accept until SIGTERM (or idle_exit seconds with no connection); then
        let requests under way finish (up to 30 s) before leaving.  pidfile:
        record the pid in ROOT/run/agent.pid (the started-on-first-use one,
        which stop_agent() stops)."""
        listener = self.listen()
        linux.set_name("terrarium-agent")
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        self._pidfile = os.path.join(self.rt.run_dir, "agent.pid") if pidfile else None
        if self._pidfile:
            with open(self._pidfile, "w") as f:
                f.write(str(os.getpid()))
        _log(f"serving {self.rt.root} on {self.path} (pid {os.getpid()}, uids "
             f"{sorted(self.allowed)})")
        if ready_fd is not None:
            os.write(ready_fd, b"ok")
            os.close(ready_fd)
        try:
            while True:
                ready, _, _ = select.select([listener], [], [], min(5.0, idle_exit) if idle_exit else None)
                if not ready:
                    with self._cond:
                        idle = (idle_exit is not None and not self._open
                                and time.monotonic() - self._last_active > idle_exit)
                    if idle:
                        break
                    continue
                self._accept(listener)
        finally:
            self._leave(listener)
        os._exit(0)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with self._cond:
            self._open.add(conn)
            self._last_active = time.monotonic()
        threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _leave(self, listener: socket.socket) -> None:
        """Stop without losing a request: nothing new starts (requests get
        "Leaving", which a client retries on a new agent), no client can send
        more (SHUT_RD: its next send fails with EPIPE, which it also retries),
        and the requests under way finish, for up to 30 s."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # a second one must not cut this short
        with self._cond:
            self._closing = True
            for conn in self._open:
                _shut_reading(conn)
        self._unlink()                           # new clients start a new agent
        listener.setblocking(False)
        while True:                              # connected before the unlink
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            with self._cond:
                self._open.add(conn)
            _shut_reading(conn)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()
        listener.close()
        with self._cond:
            self._cond.wait_for(lambda: not self._open, timeout=30.0)
        daemons.leave()                          # the helpers' cgroup, if settle() put us there
        _log("stopped")

    def _unlink(self) -> None:
        for name in filter(None, (self.path, self._pidfile)):
            try:
                os.unlink(name)
            except OSError:
                pass

    def _connection(self, conn: socket.socket) -> None:
        session: Session | None = None
        try:
            peer = peer_of(conn)
            if peer.uid not in self.allowed:
                _log(f"refused a connection from uid {peer.uid} (pid {peer.pid}): not allowed")
                _send(conn, {"ok": False, "kind": "AccessDenied",
                             "error": f"uid {peer.uid} may not use the Terrarium agent at {self.path} "
                                      "(allowed: root, TERRARIUM_AGENT_UIDS, TERRARIUM_AGENT_GROUP)"})
                # Read (and drop) the first request before closing, so that the
                # refusal is its reply rather than an EPIPE on the client's send.
                conn.settimeout(2.0)
                try:
                    conn.recv(MAX_LINE)
                except OSError:
                    pass
                return
            stream = _Reader(conn)
            session = Session()
            session.conn, session.lines = conn, stream
            while True:
                line, fds = stream.readline(MAX_LINE + 1)
                try:
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        _send(conn, {"ok": False, "kind": "InvalidArgument",
                                     "error": f"request longer than {MAX_LINE} bytes"})
                        return                   # the rest of it cannot be framed
                    reply = self.handle(line, peer, fds, conn, session)
                    try:
                        if reply is None or not _send(conn, reply):
                            return               # a client gone mid-stream
                    finally:
                        if isinstance(reply, Reply):
                            reply.release()      # the client has its own copies now
                finally:
                    for fd in fds:
                        os.close(fd)
        finally:
            if session is not None:
                session.close()                  # a sampling session's descriptors
            conn.close()
            with self._cond:
                self._open.discard(conn)
                self._last_active = time.monotonic()
                self._cond.notify_all()

    def handle(self, line: bytes, peer: Peer, fds: Sequence[int] = (),
               conn: socket.socket | None = None, session: Session | None = None) -> dict[str, Any] | None:
        """One request line (and the descriptors that came with it, which the
        caller closes) -> its reply; never raises.  A stream verb's items go
        to conn as they come; None if its client hung up.  session: the
        connection's (the verbs that keep state need one)."""
        req: dict[str, Any] | None
        checked: dict[str, Any] | None
        if session is not None and session.parsed is not None and line == session.line:
            req, (name, verb, user, checked) = None, session.parsed   # a sampling session's tick, again
        else:
            try:
                req = json.loads(line)
            except (ValueError, RecursionError):     # RecursionError: "[[[[..." nested too deep
                return {"ok": False, "kind": "InvalidArgument", "error": "malformed request: not JSON"}
            if not isinstance(req, dict):
                return {"ok": False, "kind": "InvalidArgument", "error": "malformed request: not an object"}
            asked = req.get("verb")
            found = VERBS.get(asked) if isinstance(asked, str) else None
            said = req.get("user")
            user = said if isinstance(said, str) and 0 < len(said) <= 150 and said.isprintable() \
                else f"uid:{peer.uid}"
            if found is None or not isinstance(asked, str):
                return {"ok": False, "kind": "InvalidArgument", "error": f"unknown verb {asked!r}"}
            name, verb, checked = asked, found, None
        with self._cond:
            if self._closing:
                return {"ok": False, "kind": "Leaving", "error": "the agent is stopping; nothing was done"}
        before: dict[str, Any] | None = None
        after_of: Callable[[Any], dict[str, Any]] | None = None
        reply: dict[str, Any]
        try:
            if checked is None:
                args = _check_args(name, verb, (req or {}).get("args", {}))
                if verb.session and not verb.mutating and session is not None:
                    session.line, session.parsed = line, (name, verb, user, dict(args))
            else:
                args = dict(checked)
            if len(fds) != verb.fds:
                raise InvalidArgument(f"{name}: takes {verb.fds} descriptor(s) sent with the "
                                      f"request (SCM_RIGHTS), got {len(fds)}")
            if verb.fds:
                args["fds"] = list(fds)
            if verb.session:
                if session is None:
                    raise InvalidArgument(f"{name}: needs a connection of its own")
                args["session"] = session
            if verb.watch:
                args["gone"] = (lambda: _hung_up(conn)) if conn is not None else (lambda: False)
            if verb.change is not None:
                try:
                    before, after_of = verb.change(self.rt, **args)
                except (TerrariumError, OSError):
                    pass                          # the handler reports the same failure
            if verb.stream:
                for item in verb.handler(self.rt, **args):
                    if conn is None or not _send(conn, {"ok": True, "more": item}):
                        return None
                reply = {"ok": True, "result": None}
            elif verb.passes:
                result, out = verb.handler(self.rt, **args)
                passing = Reply(ok=True, result=result)
                passing.fds = list(out)
                reply = passing
            else:
                reply = {"ok": True, "result": verb.handler(self.rt, **args)}
        except ClientGone:
            return None
        except (TerrariumError, OSError) as e:
            reply = error_reply(e)
        except Exception as e:  # noqa: BLE001 - a bug must not end the agent: logged, answered
            _log(f"internal error in {name!r}: {traceback.format_exc()}")
            reply = {"ok": False, "kind": "TerrariumError",
                     "error": f"internal error in the agent's {name!r}: {type(e).__name__}: {e}"}
        if verb.mutating:
            change = None
            if before is not None and after_of is not None and reply["ok"]:
                change = _audit_log.change(before, after_of(reply["result"]))
            self._audit(name, verb, req or {}, reply, user, peer, change)   # (a mutating verb's req is parsed)
        return reply

    def _audit(self, name: str, verb: Verb, req: dict[str, Any], reply: dict[str, Any], user: str,
               peer: Peer, change: dict[str, Any] | None = None) -> None:
        given = req.get("args")
        raw: dict[str, Any] = given if isinstance(given, dict) else {}
        target = raw.get(verb.target) if verb.target else ""
        if verb.target == "spec":
            target = raw["spec"].get("name") if isinstance(raw.get("spec"), dict) else ""
            if reply["ok"]:
                target = reply["result"]["name"]
        record = {"time": _audit_log.now(), "user": user, "peer_uid": peer.uid, "peer_pid": peer.pid, "verb": name,
                  "target": target if isinstance(target, str) else repr(target)[:100],
                  "result": "ok" if reply["ok"] else "error"}
        if name == "engine-control":
            record["action"] = raw.get("action") if isinstance(raw.get("action"), str) else ""
            if reply["ok"] and reply["result"]:
                record["engine"], record["name"] = reply["result"]["engine"], reply["result"]["name"]
        if verb.target == "spec" and reply["ok"]:
            record["id"] = reply["result"]["id"]
        if name in ("load", "commit") and reply["ok"]:
            images = reply["result"] if name == "load" else [reply["result"]]
            if name == "load":
                record["images"] = [i["name"] for i in images]
            record["digests"] = {i["name"]: i.get("id", "") for i in images}
            moved = [{"name": i["name"], "old": i["replaced"], "new": i.get("id", "")}
                     for i in images if i.get("replaced")]
            if moved:
                record["moved"] = moved             # names moved off another image: old and new
        if change:
            record["change"] = change
        if not reply["ok"]:
            record["error"] = reply["error"]
        try:
            self.audit.write(record)
        except OSError as e:
            _log(f"could not write the audit log {self.audit.path}: {e}")


def _check_args(name: str, verb: Verb, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{name}: args must be an object")
    unknown = sorted(set(raw) - set(verb.args))
    if unknown:
        raise InvalidArgument(f"{name}: unknown argument {unknown[0]!r}")
    out: dict[str, Any] = {}
    for key, (check, required) in verb.args.items():
        if key in raw:
            out[key] = check(raw[key])
        elif required:
            raise InvalidArgument(f"{name}: argument {key!r} is required")
    return out


class _Reader:
    """Request lines from a connection, with the descriptors sent alongside.

    A client sends a request with one sendmsg and waits for its reply, so
    the descriptors received by the time a line is complete are that line's.
    MSG_CMSG_CLOEXEC: the agent forks shims, which must not inherit them."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buf = conn, b""
        self.fds: list[int] = []

    def pending(self) -> bool:
        """A whole line is buffered already (a select on the socket would not show it)."""
        return b"\n" in self.buf

    def readline(self, limit: int = MAX_LINE + 1) -> tuple[bytes, list[int]]:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0 or len(self.buf) >= limit:
                cut = end + 1 if 0 <= end < limit else limit
                line, self.buf = self.buf[:cut], self.buf[cut:]
                fds, self.fds = self.fds, []
                return line, fds
            try:
                data, fds, _, _ = socket.recv_fds(self.conn, 1 << 16, MAX_FDS,
                                                  socket.MSG_CMSG_CLOEXEC)
            except OSError:
                data, fds = b"", []
            for fd in fds:                   # a client trickling descriptors keeps MAX_FDS
                if len(self.fds) < MAX_FDS:
                    self.fds.append(fd)
                else:
                    os.close(fd)
            if not data:
                line, self.buf = self.buf, b""
                fds, self.fds = self.fds, []
                return line, fds
            self.buf += data


_encode = json.JSONEncoder(separators=(",", ":")).encode    # made once (json.dumps with
                                                           # separators makes one per call)
_orjson: ModuleType | None = None


def orjson() -> ModuleType:
    """The orjson package, also in the `python -I -S` agent (from the venv)."""
    global _orjson
    if _orjson is None:
        try:
            import orjson as o
        except ImportError:
            daemons.use_venv_packages()
            import orjson as o
        _orjson = o
    return _orjson


def encode_reply(reply: dict[str, Any]) -> bytes:
    """One reply line.  orjson writes the same JSON as the json module (UTF-8
    rather than \\u escapes) 5-6x faster: a busy sampling reply's encoding was
    a fifth of what sampling through the agent adds.  What only the json
    module writes (a lone surrogate from a non-UTF-8 file name, an int past
    64 bits) goes through it."""
    o = orjson()
    try:
        line: bytes = o.dumps(reply, option=o.OPT_NON_STR_KEYS | o.OPT_APPEND_NEWLINE)
        return line
    except TypeError:                        # orjson.JSONEncodeError
        return _encode(reply).encode() + b"\n"


def _send(conn: socket.socket, reply: dict[str, Any]) -> bool:
    try:
        data = encode_reply(reply)
        if isinstance(reply, Reply) and reply.fds:
            data = data[socket.send_fds(conn, [data], reply.fds):]    # they ride on the first bytes
        conn.sendall(data)
        return True
    except OSError:
        return False


def _hung_up(conn: socket.socket) -> bool:
    """Whether the client has closed its end (or the agent stopped reading:
    SHUT_RD when it leaves).  A client sends nothing while it waits for a
    reply, so readable-at-EOF is the only thing a peek can see."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _shut_reading(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)
    except OSError:
        pass


def _exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


# ------------------------------------------------------------------- control

def ensure_agent(root: str, cgroup_parent: str | None = None) -> None:
    """Start ROOT's agent (daemons.start) unless one answers on socket_path(root)."""
    path = socket_path(root)
    try:
        daemons.start(os.path.join(root, "run"), name="agent", module="agent",
                      answers=lambda: daemons.answers(path),
                      cgroup_parent=cgroup_parent or daemons.default_cgroup_parent())
    except OSError as e:
        raise TerrariumError(str(e)) from None


def stop_agent(root: str) -> None:
    run_dir = os.path.join(root, "run")
    daemons.stop(run_dir, name="agent", comm="terrarium-agent", timeout=35.0)


def _idle_exit_seconds() -> float | None:
    """TERRARIUM_AGENT_IDLE_EXIT seconds (0: never; `make run` starts it so,
    as an unprivileged web tier could not start it again)."""
    try:
        seconds = float(os.environ["TERRARIUM_AGENT_IDLE_EXIT"])
    except (KeyError, ValueError):
        return IDLE_EXIT_SECONDS
    return None if seconds == 0 else max(0.1, seconds)


def main(argv: list[str]) -> None:
    """`python -I -S -c ... RUN_DIR CGROUP_PARENT` (daemons.start): daemonise,
    move into the helpers' cgroup, then serve."""
    ready_fd = daemons.detach()
    daemons.settle(argv[1], argv[2])
    agent = Agent(os.path.dirname(os.path.abspath(argv[1])), argv[2])
    agent.serve(ready_fd=ready_fd, idle_exit=_idle_exit_seconds(), pidfile=True)
