"""AgentRuntime: the Runtime's control and inventory verbs through the root agent.

Same method names, arguments, results and exceptions as runtime.Runtime for
what runtime/agent.py serves, sampling included (stats_reader()); the rest
(exec, cgroups, log_records) runs in this process through a local Runtime,
which needs root: for the root CLI only.  Where that cannot work (this
process is not root), or must not (TERRARIUM_AGENT_STRICT=1, as the agent
mode's tests set), it raises NeedsAgent naming the attribute instead (strict()).

    rt = AgentRuntime(root).as_user("alice")   # requests carry "alice"
    rt.stop("web")                              # audited in ROOT/audit.log

Connections are pooled (one per concurrent caller), so it is as safe to use
from threads as Runtime is.  Errors come back as the runtime's own
exceptions with the agent's message.
"""
from __future__ import annotations

import base64
import builtins
import json
import os
import select
import socket
import threading

from . import agent as _agent
from . import errors
from .errors import ExecFailed, InvalidArgument, KernelError, TerrariumError
from .model import Container, Healthcheck, Image, ImageConfig, Layer, Limits, LogConfig, Mount

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
    from typing import IO, Any, BinaryIO, NoReturn

    from .agent import WireReply
    from .cgroups.tree import Hierarchy
    from .containers import Runtime
    from .discovery import Availability, Found
    from .discovery.engine_terminal import EngineTerminal
    from .model import Spec
    from .network import NetworkView
    from .oom import OomCounts
    from .overlay import Changes, Origin, OverlayMount, UpperSize
    from .procs import NamespaceInfo, ProcessInfo, ProcessNode
    from .terminal import Terminal
    from .volumes import VolumeView

    # (sample, forest) of one container, as runtime.stats.StatsReader reads it and
    # runtime.sampling.Receiver rebuilds it (the sample's record is sampling's business)
    Reading = tuple[Any, list[ProcessNode] | None]


class AgentUnavailable(TerrariumError):
    """No agent answers, and this process may not start one."""


class AccessDenied(TerrariumError, PermissionError):
    """The agent refused this process's uid (SO_PEERCRED)."""


class NeedsAgent(RuntimeError):
    """A Runtime attribute the agent does not serve, asked where it may not be
    done in-process (strict()).  A bug to fix, not a person's error: not a
    TerrariumError, so no page turns it into a polite note and hides it."""


_KINDS = {"AccessDenied": AccessDenied}      # the rest are runtime.errors' own names


def raise_reply(reply: Mapping[str, Any]) -> NoReturn:
    """Raise the exception an error reply stands for (runtime/agent.error_reply)."""
    raise error_of(reply)


def error_of(reply: Mapping[str, Any]) -> Exception:
    """The exception an error reply (a WireReply) stands for."""
    kind, msg = reply.get("kind"), reply.get("error", "the agent gave no reason")
    if kind == "KernelError":
        return KernelError(reply.get("code") or 0, reply.get("what") or "")
    if kind == "ExecFailed":
        return ExecFailed(msg, reply.get("exit_code", 127))
    if kind == "TimeoutError":
        return TimeoutError(msg)
    if kind == "OSError":
        return OSError(reply.get("code") or 0, msg, *([reply["filename"]] if reply.get("filename") else []))
    cls = _KINDS.get(kind or "") or getattr(errors, str(kind), None)
    if not (isinstance(cls, type) and issubclass(cls, TerrariumError)):
        cls = TerrariumError
    return cls(msg)


# ------------------------------------------------------------ records back

def container_of(d: dict[str, Any]) -> Container:
    return Container(**{**d, "cmd": tuple(d["cmd"]), "env": tuple(d["env"]),
                        "limits": Limits(**d["limits"]), "layers": tuple(d["layers"]),
                        "log_config": LogConfig(**d.get("log_config", {})),
                        "ports": tuple(d.get("ports", ())),
                        "restart_history": tuple(d.get("restart_history", ())),
                        "mounts": tuple(Mount(**m) for m in d.get("mounts", ()))})


def image_of(d: dict[str, Any]) -> Image:
    c = d["config"]
    return Image(name=d["name"], layers=tuple(Layer(**x) for x in d["layers"]),
                 config=ImageConfig(cmd=tuple(c["cmd"]), env=tuple(c["env"]), workdir=c["workdir"],
                                    healthcheck=None if c.get("healthcheck") is None else
                                    Healthcheck(**{**c["healthcheck"], "test": tuple(c["healthcheck"]["test"])})),
                 created=d["created"], history=tuple(d["history"]), id=d.get("id", ""),
                 replaced=d.get("replaced", ""))


def process_info_of(d: dict[str, Any]) -> ProcessInfo:
    from .procs import ProcessInfo
    return ProcessInfo(**{**d, "ns_pids": tuple(d["ns_pids"]), "cmdline": tuple(d["cmdline"])})


def hierarchy_of(d: dict[str, Any]) -> Hierarchy:
    from .cgroups.tree import CgroupNode, Hierarchy
    return Hierarchy(d["name"], d["mount"], tuple(CgroupNode(**n) for n in d["nodes"]))


def _spec_dict(spec: object) -> dict[str, Any]:
    from .model import Spec, to_dict
    if not isinstance(spec, Spec):
        raise InvalidArgument("create() takes a runtime.Spec")
    d: dict[str, Any] = to_dict(spec)
    return d


def _limits_dict(limits: object) -> dict[str, Any]:
    if not isinstance(limits, Limits):
        raise InvalidArgument("update() takes a runtime.Limits")
    return limits._asdict()


# -------------------------------------------------------------- connection

class _Pool:
    """Idle connections to one agent socket, shared by an AgentRuntime and its
    as_user() copies."""

    def __init__(self, path: str, root: str, cgroup_parent: str | None, autostart: bool) -> None:
        self.path, self.root, self.autostart = path, root, autostart
        self.cgroup_parent = cgroup_parent
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        return s

    def _open(self) -> socket.socket:
        try:
            return self._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not self.autostart:
                raise AgentUnavailable(
                    f"the Terrarium agent is not running at {self.path}; start it as root "
                    "(`terrarium agent`, or contrib/terrarium-agent.service)") from None
        except PermissionError:
            raise AccessDenied(f"cannot reach the Terrarium agent at {self.path}: permission "
                               "denied (is this user in TERRARIUM_AGENT_GROUP?)") from None
        _agent.ensure_agent(self.root, self.cgroup_parent)
        return self._connect()

    def call(self, request: bytes, retry: bool, fds: tuple[int, ...] = (),
             received: list[int] | None = None) -> WireReply:
        """Send one request line, read one reply (the descriptors it carries
        appended to received, which a verb that passes some gives).  A pooled connection whose agent
        has gone, or an agent that is stopping ("Leaving": nothing was done),
        is replaced; a reply lost mid-request is retried only when the verb
        changes nothing (retry)."""
        lost = False
        for _ in range(4):
            with self._lock:
                pooled = self._idle.pop() if self._idle else None
            fresh = pooled is None
            sock = self._open() if pooled is None else pooled
            try:
                _send(sock, request, fds)
            except OSError:                  # the agent behind a pooled connection ended
                line = _read_line(sock) if fresh else b""     # or refused us first
                sock.close()
                if line:
                    refused: WireReply = json.loads(line)
                    return refused
                if fresh:
                    raise AgentUnavailable(f"the Terrarium agent at {self.path} closed the connection")
                continue
            line = _read_line(sock, received)
            if not line:
                sock.close()
                if not retry or lost:
                    raise AgentUnavailable(f"the Terrarium agent at {self.path} ended during the "
                                           "request; inspect the container to see where it got to")
                lost = True
                continue
            reply: WireReply = json.loads(line)
            if reply.get("kind") == "Leaving":
                sock.close()
                continue
            with self._lock:
                self._idle.append(sock)
            return reply
        raise AgentUnavailable(f"the Terrarium agent at {self.path} does not answer")

    def _open_sending(self, request: bytes) -> socket.socket | WireReply:
        """A connection of its own with the request sent; or the agent's reply
        when it refused before reading the request."""
        sock = self._open()
        try:
            sock.sendall(request)
        except OSError:                          # refused before it was read
            line = _read_line(sock)
            sock.close()
            if line:
                refused: WireReply = json.loads(line)
                return refused
            raise AgentUnavailable(f"the Terrarium agent at {self.path} closed the connection") from None
        return sock

    def stream(self, request: bytes,
               on_wait: Callable[[], object] | None = None) -> Generator[Any, None, WireReply]:
        """Send a stream request on a connection of its own; yield each item
        until the final reply (returned).  Closing the generator closes the
        connection, which tells the agent to stop."""
        for _ in range(4):
            sock = self._open_sending(request)
            if not isinstance(sock, socket.socket):
                return sock                      # refused
            reader = sock.makefile("rb")
            try:
                first = True
                while True:
                    if on_wait is not None and not select.select([sock], [], [], 0)[0]:
                        on_wait()                # nothing more yet: let the caller flush
                    line = reader.readline()
                    if not line:
                        raise AgentUnavailable(f"the Terrarium agent at {self.path} ended during "
                                               "the request")
                    reply: WireReply = json.loads(line)
                    if "more" not in reply:
                        if first and reply.get("kind") == "Leaving":
                            break                # nothing was sent yet: ask the next agent
                        return reply
                    first = False
                    yield reply["more"]
            finally:
                reader.close()
                sock.close()
        raise AgentUnavailable(f"the Terrarium agent at {self.path} does not answer")

    def open_stream(self, request: bytes) -> "AgentStream":
        """Send a stream request on a connection of its own, to be read without
        blocking (AgentStream)."""
        sock = self._open_sending(request)
        if not isinstance(sock, socket.socket):
            raise_reply(sock)                     # refused
        sock.setblocking(False)
        return AgentStream(sock, self.path)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()


class AgentStream:
    """A stream request's items, read without blocking: wait for fileno() to be
    readable (poll, or an event loop's add_reader), then read_available().
    When the stream ends (the agent's final reply, its error, or the agent
    gone) read_available() raises; close() hangs up, which tells the agent
    to stop."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock, self._path, self._buf = sock, path, b""
        self._over: Exception | None = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_available(self) -> list[Any]:
        """The items that have come in; AgentUnavailable once the stream is over
        (or the agent's error, raised as the runtime's).  Items that came in
        with the end are returned first; the next call raises."""
        if self._over is not None:
            raise self._over
        ended = False
        while True:
            try:
                chunk = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            self._buf += chunk
        items = []
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            reply: WireReply = json.loads(line)
            if "more" in reply:
                items.append(reply["more"])
            elif not reply.get("ok"):
                self._over = error_of(reply)
                break
            else:
                ended = True
        if ended and self._over is None:
            self._over = AgentUnavailable(f"the Terrarium agent at {self._path} ended the stream")
        if self._over is not None and not items:
            raise self._over
        return items

    @property
    def over(self) -> bool:
        """The end came in (with the last items): the next read_available raises."""
        return self._over is not None

    def close(self) -> None:
        self._sock.close()


def _send(sock: socket.socket, request: bytes, fds: tuple[int, ...]) -> None:
    """The request, its descriptors riding on the first sendmsg."""
    if not fds:
        sock.sendall(request)
        return
    sent = socket.send_fds(sock, [request], list(fds))
    if sent < len(request):
        sock.sendall(request[sent:])


def _read_line(sock: socket.socket, received: list[int] | None = None) -> bytes:
    """One reply line; b"" if the connection ends first.  received: where the
    descriptors that come with it go (else none are accepted)."""
    chunks = []
    while True:
        try:
            if received is None:
                chunk = sock.recv(1 << 16)
            else:
                chunk, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2, socket.MSG_CMSG_CLOEXEC)
                received.extend(fds)
        except OSError:
            return b""
        if not chunk:
            return b""
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


# ---------------------------------------------------------------- sampling

class AgentStatsReader:
    """runtime.stats.StatsReader's read / read_many / forget / close, through
    a sampling session of the agent (runtime/agent.py ``sample``) on a
    connection of its own: the agent keeps the files open for this
    connection, and each read_many is one request for all the containers.
    Unchanged readings, ``sources`` and forests come back as the same objects
    as last time, and the same ids as last time are not sent again
    (runtime/sampling.py).  A connection lost (the agent restarted) is made
    again, and the session starts over.  Not thread-safe, like StatsReader:
    one per sampling thread."""

    def __init__(self, pool: _Pool, user: str) -> None:
        from .sampling import Receiver
        self._pool, self._user = pool, user
        self._sock: socket.socket | None = None
        self._got = Receiver(error_of)
        self._checked: list[str] | None = None   # the last ids given, all valid and distinct
        self._asked: list[str] | None = None     # the ids of the last sample request on _sock
        self._repeat: dict[tuple[bool, bool], bytes] = {}   # (tree, keep) -> that request without its ids

    @property
    def containers(self) -> Mapping[str, object]:
        """The containers this session holds (their last readings), as StatsReader's."""
        return self._got.got

    def read(self, cid: str, tree: bool = True) -> Reading:
        got = self.read_many([cid], tree)[cid]
        if isinstance(got, BaseException):
            raise got
        return got

    def read_many(self, ids: Iterable[str], tree: bool = True,
                  keep: bool = True) -> dict[str, Reading | Exception]:
        """{id: (raw, forest), or the error of that id}: one request per
        agent.MAX_SAMPLE_IDS containers.  An id that is not one (64 hex
        digits) gets InvalidArgument without asking."""
        ids = list(ids)
        out: dict[str, Reading | Exception] = {}
        if ids == self._checked:                # the sampler's watched set, most ticks
            ask = ids
        else:
            from .discovery.registry import is_key
            ask = []
            for cid in dict.fromkeys(ids):
                if is_key(cid):
                    ask.append(cid)
                else:
                    out[cid] = InvalidArgument(f"invalid container id {cid!r}: 64 hex digits")
            self._checked = ids if len(ask) == len(ids) else None
        decode = self._got.decode
        for i in range(0, len(ask), _agent.MAX_SAMPLE_IDS):
            part = ask[i:i + _agent.MAX_SAMPLE_IDS] if len(ask) > _agent.MAX_SAMPLE_IDS else ask
            result: dict[str, Any] = self._call("sample", ids=part, tree=tree, keep=keep)
            for cid in part:
                out[cid] = decode(cid, result.get(cid), tree, keep)
        return out

    def forget(self, cid: str) -> None:
        """Close what the agent keeps open for cid (nothing to ask if the connection is gone)."""
        self._got.forget(cid)
        if self._sock is not None:
            try:
                self._call("sample-forget", _reconnect=False, ids=[cid])
            except AgentUnavailable:
                pass

    def close(self) -> None:
        """Close the connection: the agent closes every file of the session."""
        sock, self._sock, self._asked = self._sock, None, None
        if sock is not None:
            sock.close()
        self._got.clear()

    def _request(self, verb: str, args: dict[str, Any]) -> bytes:
        """The request line; a sample of the very ids asked last on this connection leaves them out."""
        if verb == "sample" and args["ids"] == self._asked:
            key = (args["tree"], args["keep"])
            line = self._repeat.get(key)
            if line is None:
                line = self._repeat[key] = self._line(verb, {"tree": args["tree"], "keep": args["keep"]})
            return line
        return self._line(verb, args)

    def _line(self, verb: str, args: dict[str, Any]) -> bytes:
        return json.dumps({"verb": verb, "args": args, "user": self._user},
                          separators=(",", ":")).encode() + b"\n"

    def _call(self, verb: str, _reconnect: bool = True, **args: Any) -> Any:
        for _ in range(3):
            if self._sock is None:
                if not _reconnect:
                    raise AgentUnavailable("no sampling session")
                self._sock = self._pool._open()
                self._got.clear()                    # a new session: nothing was sent on it
            try:
                self._sock.sendall(self._request(verb, args))
                line = _read_line(self._sock)
            except OSError:
                line = b""
            reply: WireReply | None = json.loads(line) if line else None
            if reply is None or reply.get("kind") == "Leaving":
                self.close()                         # the agent ended or is leaving: a new one
                continue
            if not reply.get("ok"):
                raise_reply(reply)
            if verb == "sample":
                self._asked = args["ids"]
            return reply.get("result")
        raise AgentUnavailable(f"the Terrarium agent at {self._pool.path} does not answer")


class AgentSampleStream:
    """The live sampler's subscription (runtime/agent.py ``sample-stream``):
    the agent reads the watch set on its own clock and pushes a frame per
    tick (runtime/sampling.py), so a tick costs this side a read and a
    decode, no request.  read_many(ids) sends the watch set when it changed,
    then waits for the next frame (it paces the caller: ``paced``) and
    returns the readings as AgentStatsReader's do, with the tick's times in
    ``taken`` ((monotonic, wall) when the agent's read began).  A connection
    lost (the agent restarted) is made again, the session starting over.
    Not thread-safe: one per sampling thread."""

    paced = True

    def __init__(self, pool: _Pool, user: str, interval: float) -> None:
        from .sampling import Receiver
        self._pool, self._user, self.interval = pool, user, float(interval)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._got = Receiver(error_of)
        self._ids: list[str] | None = None     # the watch set sent last on _sock
        self._tree = True
        self._watch = 0                        # watch sets sent on _sock (the agent's "w")
        self.taken: tuple[float, float] | None = None

    @property
    def containers(self) -> Mapping[str, object]:
        return self._got.got

    def read_many(self, ids: Iterable[str], tree: bool = True,
                  keep: bool = True) -> dict[str, Reading | Exception]:
        """{id: (raw, forest), or the error of that id} from the next frame
        (and any that came before it, applied in order).  An id that is not
        one gets InvalidArgument and is not watched."""
        if not keep:
            raise InvalidArgument("a sampling stream keeps what it watches (keep=False: stats_reader())")
        from .discovery.registry import is_key
        out: dict[str, Reading | Exception] = {}
        ask = []
        for cid in dict.fromkeys(ids):
            if is_key(cid):
                ask.append(cid)
            else:
                out[cid] = InvalidArgument(f"invalid container id {cid!r}: 64 hex digits")
        if len(ask) > _agent.MAX_SAMPLE_IDS:
            raise InvalidArgument(f"a sampling stream watches at most {_agent.MAX_SAMPLE_IDS} containers")
        self.taken = None
        if not ask:
            if self._sock is not None and self._ids:
                self._send_watch([], tree)     # nothing to watch: the agent stops ticking
            return out
        for _ in range(3):
            try:
                if self._sock is None:
                    self._open(ask, tree)
                elif ask != self._ids or tree != self._tree:
                    self._send_watch(ask, tree)
                frames = self._frames()
            except OSError:
                frames = None
            if frames is None:
                self.close()                   # the agent ended or is leaving: a new session
                continue
            out.update(self._apply(frames, ask, tree))
            return out
        raise AgentUnavailable(f"the Terrarium agent at {self._pool.path} does not answer")

    def forget(self, cid: str) -> None:
        """Stop watching cid: the agent closes its files before its next frame."""
        self._got.forget(cid)
        if self._sock is not None and self._ids and cid in self._ids:
            try:
                self._send_watch([c for c in self._ids if c != cid], self._tree)
            except OSError:
                self.close()

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def close(self) -> None:
        """Hang up: the agent stops and closes every file of the session."""
        sock, self._sock = self._sock, None
        self._buf, self._ids, self._watch, self.taken = b"", None, 0, None
        if sock is not None:
            sock.close()
        self._got.clear()

    # ------------------------------------------------------------ internals
    def _args(self, ids: list[str], tree: bool) -> dict[str, Any]:
        return {"ids": ids, "tree": tree, "interval": self.interval}

    def _open(self, ids: list[str], tree: bool) -> None:
        self._sock = sock = self._pool._open()
        self._got.clear()                      # a new session: nothing was sent on it
        sock.sendall(json.dumps({"verb": "sample-stream", "args": self._args(ids, tree),
                                       "user": self._user}, separators=(",", ":")).encode() + b"\n")
        self._ids, self._tree, self._watch = ids, tree, 1

    def _send_watch(self, ids: list[str], tree: bool) -> None:
        if self._sock is None:
            raise OSError("no sampling stream")   # (only called with one open)
        for cid in self._ids or ():
            if cid not in ids:
                self._got.forget(cid)          # the agent forgets it too, before its next frame
        self._sock.sendall(json.dumps(self._args(ids, tree), separators=(",", ":")).encode() + b"\n")
        self._ids, self._tree = ids, tree
        self._watch += 1

    def _frames(self) -> list[dict[str, Any]] | None:
        """Every frame that has come in, waiting for one of the current watch
        set; None when the stream ended (the agent gone or leaving)."""
        frames: list[dict[str, Any]] = []
        sock = self._sock
        if sock is None:
            return None
        while True:
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                reply: WireReply = json.loads(line)
                item = reply.get("more")
                if item is None:
                    if reply.get("ok") or reply.get("kind") == "Leaving":
                        return None            # the stream ended: ask the next agent
                    raise_reply(reply)
                frames.append(item)
            if frames and frames[-1]["w"] == self._watch:
                return frames                  # (one recv takes every frame already there)
            chunk = sock.recv(1 << 16)
            if not chunk:
                return None
            self._buf += chunk

    def _apply(self, frames: list[dict[str, Any]], ask: list[str], tree: bool) -> dict[str, Reading | Exception]:
        """The readings of ask after the frames, applied in order.  Frames of
        an earlier watch set only update containers still watched."""
        got, decode = self._got.got, self._got.decode
        out: dict[str, Reading | Exception] = {}
        for f in frames:
            current = f["w"] == self._watch
            for cid, e in f["r"].items():
                if current or cid in got:
                    out[cid] = decode(cid, e, tree, True)
        for cid in ask:
            if cid not in out:
                out[cid] = (decode(cid, None, tree, True) if cid in got
                            else AgentUnavailable(f"no reading of {cid} in the agent's frame"))
        last = frames[-1]
        self.taken = (last["m"], last["t"])
        return out


# ------------------------------------------------------------------ facade

class AgentRuntime:
    """runtime.Runtime's verbs through the agent (see the module docstring)."""

    def __init__(self, root: str | None = None, cgroup_parent: str | None = None, *,
                 user: str | None = None, socket_path: str | None = None,
                 autostart: bool | None = None) -> None:
        from .containers import default_root
        self.root = os.path.abspath(root or default_root())
        self._cgroup_parent = cgroup_parent
        self.run_dir = os.path.join(self.root, "run")
        self.user = user or f"uid:{os.getuid()}"
        path = socket_path or _agent.socket_path(self.root)
        if autostart is None:        # only root can start it, and only where it will listen
            autostart = os.geteuid() == 0 and path == _agent.socket_path(self.root)
        self._pool = _Pool(path, self.root, cgroup_parent, autostart)
        self._local: Runtime | None = None
        self.images = _AgentImages(self)
        self.networks = _AgentNetworks(self)
        self.volumes = _AgentVolumes(self)

    def as_user(self, user: str) -> "AgentRuntime":
        """A copy whose requests carry `user` (the audit shows it); shares the connections."""
        other = object.__new__(AgentRuntime)
        other.__dict__.update(self.__dict__)
        other.user = user
        other.images = _AgentImages(other)
        other.networks = _AgentNetworks(other)
        other.volumes = _AgentVolumes(other)
        return other

    def call(self, verb: str, _fds: tuple[int, ...] = (), **args: Any) -> Any:
        """One request (with descriptors _fds); the agent's result, or its error
        raised as the runtime's."""
        request = json.dumps({"verb": verb, "args": args, "user": self.user}).encode() + b"\n"
        known = _agent.VERBS.get(verb)
        reply = self._pool.call(request, retry=known is not None and not known.mutating, fds=_fds)
        if not reply.get("ok"):
            raise_reply(reply)
        return reply.get("result")

    def stream(self, verb: str, _on_wait: Callable[[], object] | None = None,
               **args: Any) -> Generator[Any, None, None]:
        """A stream request: yields the agent's items; its error raised as the runtime's."""
        request = json.dumps({"verb": verb, "args": args, "user": self.user}).encode() + b"\n"
        reply = yield from self._pool.stream(request, _on_wait)
        if not reply.get("ok"):
            raise_reply(reply)

    def open_stream(self, verb: str, **args: Any) -> AgentStream:
        """A stream request read without blocking (AgentStream)."""
        request = json.dumps({"verb": verb, "args": args, "user": self.user}).encode() + b"\n"
        return self._pool.open_stream(request)

    def close(self) -> None:
        self._pool.close()

    def terminal(self, ref: str, *, shell: str = "auto", rows: int = 24, cols: int = 80,
                 on_end: Callable[[int], object] | None = None) -> Terminal:
        """Runtime.terminal through the agent, which makes the terminal and hands
        over its pty master and control socket (runtime/terminal.py).  on_end
        is not called: the agent reaps the helper."""
        from .terminal import Terminal
        fds, result = self.call_passing("terminal", ref=ref, shell=shell, rows=rows, cols=cols)
        return Terminal(fds[0], socket.socket(fileno=fds[1]), result)

    def call_passing(self, verb: str, **args: Any) -> tuple[list[int], dict[str, Any]]:
        """A request whose reply hands over a terminal's two descriptors: (fds, result)."""
        request = json.dumps({"verb": verb, "user": self.user, "args": args}).encode() + b"\n"
        fds: list[int] = []
        try:
            reply = self._pool.call(request, retry=False, received=fds)
            if not reply.get("ok"):
                raise_reply(reply)
            if len(fds) != 2:
                raise AgentUnavailable(f"the Terrarium agent at {self._pool.path} sent "
                                       f"{len(fds)} descriptors for a terminal, not 2")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds, reply["result"]

    def stats_reader(self) -> AgentStatsReader:
        """Runtime.stats_reader() through the agent: a sampling session on a connection of its own."""
        return AgentStatsReader(self._pool, self.user)

    def sample_stream(self, interval: float) -> AgentSampleStream:
        """A subscription to the agent's readings every interval seconds (the live sampler's)."""
        return AgentSampleStream(self._pool, self.user, interval)

    @property
    def cgroup_parent(self) -> str:
        if self._cgroup_parent is None:
            parent: str = self.call("info")["cgroup_parent"]
            self._cgroup_parent = parent
        return self._cgroup_parent

    # --- containers
    def list(self, all: bool = True) -> list[Container]:  # noqa: A002 - Runtime's word
        return [container_of(d) for d in self.call("list", all=all)]

    def inspect(self, ref: str) -> Container:
        return container_of(self.call("inspect", ref=ref))

    def create(self, spec: Spec, allow_host_network: bool = False, allow_bind_mounts: bool = False) -> Container:
        args: dict[str, Any] = {"allow_host_network": True} if allow_host_network else {}
        if allow_bind_mounts:
            args["allow_bind_mounts"] = True
        return container_of(self.call("create", spec=_spec_dict(spec), **args))

    def run(self, spec: Spec, allow_host_network: bool = False, allow_bind_mounts: bool = False) -> Container:
        """Runtime.run's create + start (and its cleanup), through the agent."""
        from .containers import Runtime
        # Runtime.run calls only self.create, .start and .remove, which this class serves
        return Runtime.run(self, spec, allow_host_network=allow_host_network,  # type: ignore[arg-type]
                           allow_bind_mounts=allow_bind_mounts)

    def start(self, ref: str) -> Container:
        return container_of(self.call("start", ref=ref))

    def stop(self, ref: str, timeout: float = 10.0) -> Container:
        return container_of(self.call("stop", ref=ref, timeout=timeout))

    def kill(self, ref: str, sig: int | str = 9) -> Container:
        return container_of(self.call("kill", ref=ref, signal=int(sig) if isinstance(sig, int) else sig))

    def restart(self, ref: str, timeout: float = 10.0) -> Container:
        return container_of(self.call("restart", ref=ref, timeout=timeout))

    def pause(self, ref: str) -> Container:
        return container_of(self.call("pause", ref=ref))

    def resume(self, ref: str) -> Container:
        return container_of(self.call("resume", ref=ref))

    unpause = resume

    def update(self, ref: str, limits: Limits | None = None, *, restart: str | None = None) -> Container:
        args: dict[str, Any] = {"limits": _limits_dict(limits)} if limits is not None else {}
        if restart is not None:
            args["restart"] = restart
        return container_of(self.call("update", ref=ref, **args))

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        extra: dict[str, Any] = {"volumes": True} if volumes else {}
        self.call("remove", ref=ref, force=force, **extra)

    def logs(self, ref: str, tail: int | None = None, *, max_bytes: int | None = None) -> bytes:
        """The last `tail` lines (at most agent.MAX_LOG_TAIL; None asks for that many),
        at most max_bytes of them (the agent sends at most agent.MAX_LOG_BYTES)."""
        n = _agent.MAX_LOG_TAIL if tail is None else max(0, min(int(tail), _agent.MAX_LOG_TAIL))
        data = base64.b64decode(self.call("logs", ref=ref, tail=n))
        return data[-max_bytes:] if max_bytes else data

    def wait(self, ref: str, timeout: float | None = None) -> Container:
        args: dict[str, Any] = {"ref": ref} if timeout is None else {"ref": ref, "timeout": timeout}
        return container_of(self.call("wait", **args))

    def log_output(self, ref: str, *, tail: int | None = None, since: str | float | bytes | None = None,
                   follow: bool = False, timestamps: bool = False, attach: bool | IO[bytes] = False,
                   on_wait: Callable[[], object] | None = None) -> Generator[tuple[str, bytes], None, None]:
        """Runtime.log_output through the agent, as it is read; attach (`run` in
        the foreground, with a log file held in this process) reads in-process."""
        if attach:
            local = self._local_runtime("log_output(attach=True)")
            held: Generator[tuple[str, bytes], None, None] = local.log_output(
                ref, tail=tail, since=since, follow=follow, timestamps=timestamps, attach=attach,
                on_wait=on_wait)
            return held
        if tail is not None and tail < 0:
            raise InvalidArgument(f"invalid tail {tail}: must be 0 or more")
        args: dict[str, Any] = {"ref": ref, "follow": follow, "timestamps": timestamps}
        if tail is not None:
            args["tail"] = tail
        if since is not None:
            # a record time (bytes) as its text, which parse_since reads back unchanged
            args["since"] = since.decode("ascii") if isinstance(since, bytes) else str(since)
        return ((stream, base64.b64decode(data))
                for stream, data in self.stream("log-output", _on_wait=on_wait, **args))

    def changes(self, stop: Callable[[], bool] | None = None, *, heartbeat: bool = False,
                engines: bool = False) -> Iterator[set[str] | None]:
        """Runtime.changes through the agent (which holds the inotify watches on
        the state root this process cannot read, and the engines' sockets)."""
        first = True
        extra: dict[str, Any] = {"engines": True} if engines else {}
        for batch in self.stream("changes", **extra):
            if stop is not None and stop():
                return
            if batch is None or batch or heartbeat or first:      # the first: watching from now
                yield None if batch is None else set(batch)
            first = False

    def discovery(self) -> "AgentDiscovery":
        """Runtime.discovery() through the agent: it talks to the engines."""
        return AgentDiscovery(self)

    def follow_logs(self, ref: str, from_start: bool = True) -> Iterator[bytes]:
        """Yield log content as it is written until the container stops."""
        for _, data in self.log_output(ref, tail=None if from_start else 0, follow=True):
            yield data

    # --- OOM: what the OOM watcher reads as root (runtime/oomfeed.py)
    def oom_counts(self, ref: str) -> OomCounts | None:
        from .oomfeed import counts_from_dict
        return counts_from_dict(self.call("oom-counts", ref=ref))

    def oom_scope(self) -> dict[str, Any]:
        scope: dict[str, Any] = self.call("oom-scope")
        return scope

    def oom_events(self, refresh: float = 0.5) -> AgentStream:
        """The agent's OOM feed (runtime.oomfeed.follow), read without blocking."""
        return self.open_stream("oom-events", refresh=refresh)

    # --- layers
    def diff(self, ref: str, implicit: bool = True, limit: int | None = None) -> Changes:
        from .overlay import Change, Changes
        args: dict[str, Any] = {"ref": ref, "implicit": implicit}
        if limit is not None:
            args["limit"] = limit
        got = self.call("diff", **args)
        out = Changes(Change(**d) for d in got["changes"])
        out.truncated = got["truncated"]
        return out

    def layer_of(self, ref: str, path: str) -> Origin:
        from .overlay import Origin
        layer, hidden = self.call("layer-of", ref=ref, path=path)
        return Origin(layer, hidden)

    def mount_info(self, ref: str) -> OverlayMount:
        mount: OverlayMount = self.call("mount-info", ref=ref)
        return mount

    def upper_size(self, ref: str) -> UpperSize:
        from .overlay import UpperSize
        return UpperSize(*self.call("upper-size", ref=ref))

    def commit(self, ref: str, image_name: str, message: str = "", pause: bool = True,
               replace: bool = True) -> Image:
        return image_of(self.call("commit", ref=ref, image=image_name, message=message, pause=pause,
                                  replace=replace))

    def remove_image(self, name: str, force: bool = False) -> None:
        self.call("rmi", name=name, force=force)

    def image_gc(self) -> builtins.list[str]:
        removed: builtins.list[str] = self.call("image-gc")
        return removed

    def pull_image(self, ref: str, *, platform: str | None = None, insecure: bool = False,
                   progress: Callable[[Any], object] | None = None) -> Image:
        """Runtime.pull_image through the agent (which holds the credentials):
        progress(event) for each of its events; the pulled Image."""
        args: dict[str, Any] = {"ref": ref, "insecure": insecure}
        if platform:
            args["platform"] = platform
        done = self._transfer("pull", progress, args)
        return self.images.get(done["image"])._replace(replaced=done.get("replaced", ""))

    def push_image(self, ref: str, *, insecure: bool = False,
                   progress: Callable[[Any], object] | None = None) -> str:
        digest: str = self._transfer("push", progress, {"ref": ref, "insecure": insecure})["digest"]
        return digest

    def _transfer(self, verb: str, progress: Callable[[Any], object] | None,
                  args: dict[str, Any]) -> dict[str, Any]:
        done = None
        for ev in self.stream(verb, **args):
            if isinstance(ev, dict) and ev.get("status") == "done":
                done = ev
            if progress is not None:
                progress(ev)
        if done is None:
            raise TerrariumError(f"the agent's {verb} ended without a result")
        return done

    def registry_logins(self) -> builtins.list[dict[str, Any]]:
        logins: builtins.list[dict[str, Any]] = self.call("registry-logins")
        return logins

    def registry_login(self, server: str, username: str, password: str, insecure: bool = False) -> str:
        said: str = self.call("registry-login", server=server, username=username, password=password,
                              insecure=insecure)
        return said

    def registry_logout(self, server: str) -> bool:
        was: bool = self.call("registry-logout", server=server)
        return was

    def tag_image(self, source: str, target: str) -> Image:
        return image_of(self.call("tag", source=source, target=target))

    def load_image(self, src: str | os.PathLike[str] | IO[bytes], name: str | None = None, *,
                   label: str | None = None, replace: bool = True) -> builtins.list[Image]:
        """Runtime.load_image with the archive sent as a descriptor: `src` an open
        binary file (or a path, opened here read-only) of a tar."""
        if not hasattr(src, "fileno"):
            label = label or os.fspath(src)
            with open(src, "rb") as f:
                return self.load_image(f, name, label=label, replace=replace)
        args: dict[str, Any] = {"label": (label or str(getattr(src, "name", "the archive")))[:255],
                                "replace": replace}
        if name is not None:
            args["name"] = name
        return [image_of(d) for d in self.call("load", _fds=(src.fileno(),), **args)]

    def save_image(self, name: str, out: BinaryIO) -> str:
        """Runtime.save_image: the agent truncates `out` (a regular file open for
        writing) and writes the tar into it; its offset is left at the end."""
        out.flush()
        digest: str = self.call("save", _fds=(out.fileno(),), name=name)
        return digest

    def audit_recent(self, limit: int = 500, others_only: bool = False) -> builtins.list[dict[str, Any]]:
        records: builtins.list[dict[str, Any]] = self.call("audit-recent", limit=limit,
                                                           others_only=others_only)
        return records

    # --- the host pages (Runtime.host_*): the same records, rebuilt
    def host_namespaces(self) -> builtins.list[NamespaceInfo]:
        from .procs import NamespaceInfo
        return [NamespaceInfo(**d) for d in self.call("host-namespaces")]

    def host_processes(self) -> builtins.list[ProcessNode]:
        from .procs import build_forest
        return build_forest(process_info_of(d) for d in self.call("host-processes"))

    def host_cgroups(self) -> builtins.list[Hierarchy]:
        return [hierarchy_of(d) for d in self.call("host-cgroups")]

    # --- the rest, in-process (needs root): exec, cgroups, a held log
    def _local_runtime(self, what: str = "AgentRuntime's in-process fallback") -> Runtime:
        if self._local is None:
            if strict():
                why = ("this process is not root" if os.geteuid() != 0 else
                       "TERRARIUM_AGENT_STRICT=1")
                raise NeedsAgent(f"{what} needs the Terrarium agent to serve it: runtime/agent.py "
                                 f"has no verb for it, and {why}, so it cannot run in-process")
            from .containers import Runtime
            self._local = Runtime(self.root, self._cgroup_parent or self.cgroup_parent)
        return self._local

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the agent does not serve (exec, cgroups,
        # hold_log, image_users, shutdown_servers...).
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._local_runtime(f"AgentRuntime.{name}"), name)


class _AgentImages:
    """The image store's reads the dashboard and CLI use, through the agent;
    the rest (importers' writes) on the local store."""

    def __init__(self, rt: AgentRuntime) -> None:
        self._rt = rt

    def list(self) -> list[Image]:
        return [image_of(d) for d in self._rt.call("images")]

    def dangling(self) -> builtins.list[Image]:
        return [image_of(d) for d in self._rt.call("images", dangling=True)]

    def get(self, name: str) -> Image:
        return image_of(self._rt.call("image", name=name))

    def layer(self, digest: str) -> Layer:
        return Layer(**self._rt.call("image-layer", digest=digest))

    def ensure_builtin(self) -> None:
        self._rt.call("image-builtin")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._rt._local_runtime(f"AgentRuntime.images.{name}").images, name)  # importers


class _AgentNetworks:
    """runtime.network.Networks' verbs through the agent."""

    def __init__(self, rt: AgentRuntime) -> None:
        self._rt = rt

    def list(self) -> list[NetworkView]:
        views: builtins.list[NetworkView] = self._rt.call("networks")
        return views

    def inspect(self, name: str) -> NetworkView:
        view: NetworkView = self._rt.call("network", name=name)
        return view

    def create(self, name: str, subnet: str | None = None, mtu: int | None = None,
               nat: bool = False) -> NetworkView:
        args: dict[str, Any] = {k: v for k, v in (("subnet", subnet), ("mtu", mtu)) if v is not None}
        view: NetworkView = self._rt.call("network-create", name=name, nat=nat, **args)
        return view

    def remove(self, name: str) -> None:
        self._rt.call("network-remove", name=name)


class _AgentVolumes:
    """runtime.volumes.Volumes' verbs through the agent."""

    def __init__(self, rt: AgentRuntime) -> None:
        self._rt = rt

    def list(self) -> list[VolumeView]:
        views: builtins.list[VolumeView] = self._rt.call("volumes")
        return views

    def inspect(self, name: str) -> VolumeView:
        view: VolumeView = self._rt.call("volume", name=name)
        return view

    def create(self, name: str | None = None) -> VolumeView:
        extra: dict[str, Any] = {"name": name} if name is not None else {}
        view: VolumeView = self._rt.call("volume-create", **extra)
        return view

    def remove(self, name: str) -> None:
        self._rt.call("volume-remove", name=name)


# ------------------------------------------------------------------- switch

def strict() -> bool:
    """Whether AgentRuntime may fall back to an in-process Runtime for what the
    agent does not serve: never when this process is not root (it could not
    work), nor with TERRARIUM_AGENT_STRICT=1 (tests run as root in agent mode
    with it, to catch every in-process use left)."""
    if os.geteuid() != 0:
        return True
    return os.environ.get("TERRARIUM_AGENT_STRICT", "").strip().lower() in ("1", "yes", "true", "on")


def wanted(setting: str | None = None) -> bool:
    """Whether to go through the agent: TERRARIUM_AGENT=1 (yes), 0/unset (no),
    auto (when this process is not root)."""
    value = (setting if setting is not None else os.environ.get("TERRARIUM_AGENT", "")).strip().lower()
    if value == "auto":
        return os.geteuid() != 0
    return value in ("1", "yes", "true", "on")


def _log_args(key: str, tail: int | None, since: str | None, follow: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"key": key, "follow": follow}
    if tail is not None:
        args["tail"] = tail
    if since is not None:
        args["since"] = since
    return args


class AgentDiscovery:
    """runtime.discovery.registry.Discovery's calls, answered by the agent."""

    def __init__(self, rt: AgentRuntime) -> None:
        self.rt = rt

    def discover(self) -> tuple[list[Found], list[Availability]]:
        from .discovery import Availability
        from .discovery.registry import from_json
        got = self.rt.call("discover")
        return [from_json(d) for d in got["found"]], [Availability(**a) for a in got["engines"]]

    def get(self, key: str) -> Found:
        from .discovery.registry import from_json
        return from_json(self.rt.call("discovered", key=key))

    def layers(self, key: str, limit: int = 10000) -> dict[str, Any]:
        layers: dict[str, Any] = self.rt.call("engine-layers", key=key, limit=limit)
        return layers

    def logs(self, key: str, *, tail: int | None = None, since: str | None = None, follow: bool = False,
             stop: Callable[[], bool] | None = None) -> Iterator[tuple[str, bytes]]:
        """Discovery.logs through the agent (a generator; open_logs reads without blocking)."""
        return ((stream, base64.b64decode(data)) for stream, data in
                self.rt.stream("engine-logs", **_log_args(key, tail, since, follow)))

    def open_logs(self, key: str, *, tail: int | None = None, since: str | None = None,
                  follow: bool = False) -> AgentStream:
        return self.rt.open_stream("engine-logs", **_log_args(key, tail, since, follow))

    def terminal(self, key: str, *, shell: str = "auto", rows: int = 24, cols: int = 80) -> EngineTerminal:
        """Discovery.terminal through the agent: it hands over the exec's
        connection and the control socket (runtime/discovery/engine_terminal.py)."""
        from .discovery.engine_terminal import EngineTerminal
        fds, reply = self.rt.call_passing("engine-terminal", key=key, shell=shell, rows=rows, cols=cols)
        return EngineTerminal(fds[0], socket.socket(fileno=fds[1]), reply)

    def tree(self, key: str) -> list[ProcessNode]:
        from .procs import build_forest
        return build_forest(process_info_of(d) for d in self.rt.call("engine-tree", key=key))

    def control(self, key: str, action: str, **kw: object) -> Found | None:
        from .discovery.registry import from_json
        given: dict[str, Any] = {k: v for k, v in kw.items() if v is not None}
        got = self.rt.call("engine-control", key=key, action=action, **given)
        return None if got is None else from_json(got)
