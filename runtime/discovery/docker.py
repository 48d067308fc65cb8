"""Docker's containers, through its Engine API (the `docker` SDK).

The socket is found as the docker CLI finds it: $TERRARIUM_DOCKER_HOST (the
setting; `make run` and the agent inherit it), else $DOCKER_HOST, else
unix:///var/run/docker.sock.  Podman's Docker-compatible service is the same
API: EngineSource(base_url, engine="podman") (its socket: $CONTAINER_HOST,
else /run/podman/podman.sock).

Never raises into a caller for an engine that is missing or refusing:
availability() says "absent" (no socket) or "refused" (a socket that did not
answer as an engine), and list() is then [].  Control (start, stop, ...)
goes through the same API and raises runtime.errors kinds (NotFound,
Conflict, TerrariumError) with the engine's own message.

Figures and process trees are not taken from here: the container's init pid
is found in its cgroup, and its cgroup, namespaces and root are read from
/proc/<pid> like any other process's (the engine's stats API is what makes
`docker stats` cost what it costs).

A discovery pass (list()) is one containers/json call: it gives id, names,
image, state, labels and creation time, but not the init pid, which only an
inspect gives (one call, and dockerd's CPU, per container).  So the init is
looked for where the engine puts a container's cgroup, named after its id
(CgroupFinder: /docker/<id> or system.slice/docker-<id>.scope for Docker's
cgroupfs and systemd drivers, libpod_parent/libpod-<id> or
machine.slice/libpod-<id>.scope for Podman's, under any --cgroup-parent;
v1 and v2): the process of its cgroup.procs that is PID 1 of its PID
namespace.  A container the tree does not answer for (--pid host, a PID
namespace shared with another container, a layout not known) is inspected.
The storage driver's directories (rootfs, upperdir) are inspect's alone:
list() leaves them "" unless it inspected; get() and layers() ask for them.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import socket
import threading
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol, Sequence, TypedDict, cast

from ..errors import Conflict, InvalidArgument, NotFound, TerrariumError
from ..pidinfo import namespace_inodes, parse_cgroup, read_text
from . import CONTROLS, Availability, Found, OnKey, OnUp, Stop, make_key
from .cgrouptree import pidns_init, read_procs, subtree_procs
from .engine_terminal import Closable, ExecState

if TYPE_CHECKING:
    from docker import APIClient
    from requests import Response

DEFAULT_DOCKER = "unix:///var/run/docker.sock"
DEFAULT_PODMAN = "unix:///run/podman/podman.sock"
API_TIMEOUT = 10                # seconds for one API call (stop waits its own timeout on top)

Mark = tuple[str | None, tuple[str, ...]]     # (State, Names) of a containers/json row

_STATES = {"created": "created", "running": "running", "paused": "paused", "restarting": "running",
           "exited": "exited", "dead": "exited", "removing": "exited"}
# container events that change what the list shows (exec_*, attach, top... do not)
_EVENTS = frozenset({"create", "start", "restart", "die", "stop", "kill", "pause", "unpause",
                     "destroy", "rename", "update", "oom"})


class Row(TypedDict, total=False):
    """A containers/json row, the fields read here."""
    Id: str
    Names: list[str]
    Image: str
    State: str
    Labels: dict[str, str] | None
    Created: int


class Layers(TypedDict, total=False):
    """The storage driver's directories (EngineSource.layers)."""
    driver: str
    lower: list[str]
    upper: str
    base: str


class UpdateLimits(TypedDict, total=False):
    """Our Limits fields a live update changes (control(..., "update", limits=...))."""
    memory: int | None
    memory_swap: int | None
    cpus: float | None
    pids: int | None


def docker_host() -> str:
    return os.environ.get("TERRARIUM_DOCKER_HOST") or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER


def podman_host() -> str:
    return os.environ.get("TERRARIUM_PODMAN_HOST") or os.environ.get("CONTAINER_HOST") or DEFAULT_PODMAN


def _live(state: str | None) -> bool:
    """Whether a containers/json State has an init to find (running or paused)."""
    return _STATES.get(state or "", "") in ("running", "paused")


# A container's cgroup directory as the engines name it: Docker's cgroupfs
# driver "<id>", its systemd driver "docker-<id>.scope"; Podman's cgroupfs
# "libpod-<id>", its systemd "libpod-<id>.scope" (not libpod-conmon-<id>: its monitor)
_CGROUP_NAME = re.compile(r"(?:docker-|libpod-)?([0-9a-f]{64})(?:\.scope)?")
# where they go without a --cgroup-parent (the daemon's or the container's own)
_DEFAULT_PARENTS = {"docker": ("docker", "system.slice"), "podman": ("libpod_parent", "machine.slice")}


class CgroupFinder:
    """Where an engine's containers' cgroups are, found by their ids.

    locate(ids) looks first in the parent directories where this engine's
    containers were found before and in its defaults (one scandir each),
    then, for ids still missing, walks the tree breadth first (MAX_DEPTH
    levels; not into another container's directory: its inner cgroups are
    its own) until it has them all, and remembers the parents it found them
    in.  One hierarchy is looked in:
    v1's pids (the fewest files per directory to list; an engine makes the
    same path in every controller's, relative to its own cgroup there), else
    memory, else the v2 tree; ``root`` points it at a fake tree."""

    MAX_DEPTH = 6
    MAX_PARENTS = 8

    def __init__(self, engine: str = "docker", root: str | None = None):
        self.defaults = _DEFAULT_PARENTS.get(engine, ())
        self.parents: list[str] = []        # learnt, most recent first, relative to the root
        self._root = root

    def root(self) -> str | None:
        if self._root is None:
            from ..cgroups import detect
            layout = detect()
            if layout.kind == "v2":
                self._root = layout.v2 or ""
            else:
                self._root = layout.v1.get("pids") or layout.v1.get("memory") or ""
        return self._root or None

    def locate(self, ids: Iterable[str]) -> dict[str, str]:
        """{id: its cgroup directory} of those of ``ids`` found."""
        root, want, out = self.root(), set(ids), dict[str, str]()
        if root is None or not want:
            return out
        for parent in [*self.parents, *(d for d in self.defaults if d not in self.parents)]:
            self._scan(root, parent, want, out)
            if len(out) == len(want):
                return out
        level = [""]
        for _ in range(self.MAX_DEPTH):
            below: list[str] = []
            for parent in level:
                below.extend(self._scan(root, parent, want, out))
                if len(out) == len(want):
                    return out
            level = below
        return out

    def _scan(self, root: str, parent: str, want: set[str], out: dict[str, str]) -> list[str]:
        """Record the directories in root/parent named after a wanted id;
        → the others to look in next (not other containers')."""
        try:
            it = os.scandir(os.path.join(root, parent) if parent else root)
        except OSError:
            return []
        with it:
            dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        rest = []
        for name in dirs:
            m = _CGROUP_NAME.fullmatch(name)
            if m is None:
                rest.append(f"{parent}/{name}" if parent else name)
            elif m[1] in want and m[1] not in out:
                out[m[1]] = os.path.join(root, parent, name)
                self._learn(parent)
        return rest

    def _learn(self, parent: str) -> None:
        if self.parents[:1] != [parent]:
            self.parents = [parent, *(p for p in self.parents if p != parent)][:self.MAX_PARENTS]


def _sdk() -> ModuleType:
    """The docker SDK; the agent runs `python -I -S` (no site-packages), so
    the venv's are added on first need."""
    try:
        import docker
    except ImportError:
        from ..daemons import use_venv_packages
        use_venv_packages()
        import docker
    return docker


class EngineSource:
    """A Docker Engine API (dockerd, or Podman's compatible service) as a discovery source."""

    def __init__(self, base_url: str | None = None, engine: str = "docker"):
        self.engine = engine
        self.base_url = base_url or (podman_host() if engine == "podman" else docker_host())
        self._api: APIClient | None = None
        self._lock = threading.Lock()
        # id -> ((State, Names) as the list showed them, Found): a container
        # the list shows unchanged, whose init (when running) is still the one
        # found (same pid, same PID namespace), is not looked for again; an
        # event about it (follow) drops it.  Not the Status text: "Up 5
        # minutes" moves on by itself; a restart is a new init.
        self._seen: dict[str, tuple[Mark, Found]] = {}
        self.cgroups = CgroupFinder(engine)

    # -- connection
    def _socket_path(self) -> str | None:
        if self.base_url.startswith("unix://"):
            return self.base_url[len("unix://"):]
        return None

    def _client(self) -> APIClient:
        """A connected APIClient, made once (its API version agreed with the
        engine: one /_ping); raises docker.errors.DockerException."""
        with self._lock:
            if self._api is None:
                docker = _sdk()
                # not version="auto": that asks GET /version, which dockerd answers by
                # asking containerd and running runc and docker-init for theirs (a
                # third of a cold pass's dockerd CPU here); the docker CLI agrees on
                # the version the way done below, from the ping's Api-Version header
                api: APIClient = docker.APIClient(base_url=self.base_url, timeout=API_TIMEOUT,
                                                  version=docker.constants.MINIMUM_DOCKER_API_VERSION)
                if self._socket_path() is not None:
                    # requests looks up proxy settings in the environment on every
                    # call (a third of a list's CPU here); none applies to a unix socket
                    api.trust_env = False
                try:
                    _negotiate(api, docker)
                except BaseException:
                    api.close()
                    raise
                self._api = api
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    def availability(self) -> Availability:
        path = self._socket_path()
        if path is not None and not os.path.exists(path):
            return Availability(self.engine, "absent", f"no socket at {path}")
        try:
            fresh = self._api is None
            api = self._client()
            if not fresh:
                api.ping()                          # a new client has just pinged
        except Exception as e:  # noqa: BLE001 - whatever the SDK raises: the engine refused
            self.close()
            return Availability(self.engine, "refused", f"{self.base_url}: {_reason(e)}")
        return Availability(self.engine, "up", self.base_url)

    # -- listing
    def list(self) -> list[Found]:
        try:
            api = self._client()
            rows = cast(list[Row], api.containers(all=True))
        except Exception:  # noqa: BLE001 - absent or refusing: availability() says which
            self.close()
            return []
        marks = [(row, (row.get("State"), tuple(row.get("Names") or ()))) for row in rows]
        seen: dict[str, tuple[Mark, Found]] = {}
        for row, mark in marks:
            hit = self._seen.get(row["Id"])
            if hit is not None and hit[0] == mark and _same_init(hit[1]):
                seen[row["Id"]] = hit
        # the rest: their inits from the cgroup tree, in one look for all of them
        live = {row["Id"] for row, _ in marks if row["Id"] not in seen and _live(row.get("State"))}
        where = self.cgroups.locate(live) if live else {}
        out = []
        for row, mark in marks:
            hit = seen.get(row["Id"])
            if hit is not None:
                out.append(hit[1])
                continue
            found: Found | None = self.listed(row, where.get(row["Id"]))
            if found is None:                       # the tree did not say: the API does
                try:
                    found = self.found(api.inspect_container(row["Id"]))
                except Exception:  # noqa: BLE001 - removed between the list and the inspect
                    continue
            seen[row["Id"]] = (mark, found)
            out.append(found)
        self._seen = seen
        return out

    def get(self, ident: str) -> Found:
        """One container by the engine's id (or name); NotFound if it has none such."""
        try:
            return self.found(self._client().inspect_container(ident))
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None

    def layers(self, ident: str) -> Layers:
        """The storage driver's directories as the API gives them: {"driver",
        and for overlay2 "lower" (bottom first), "upper", "base" (what the
        mount's relative lowerdirs are relative to)}."""
        try:
            graph = self._client().inspect_container(ident).get("GraphDriver") or {}
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        data, name = graph.get("Data") or {}, graph.get("Name", "")
        if name not in ("overlay2", "overlay") or not data.get("UpperDir"):
            return {"driver": name}
        lower = [d for d in (data.get("LowerDir") or "").split(":") if d]
        return {"driver": name, "lower": lower[::-1], "upper": data["UpperDir"],
                "base": os.path.dirname(os.path.dirname(data["UpperDir"]))}

    def found(self, attrs: dict[str, Any]) -> Found:
        """A container from its inspect."""
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        graph = attrs.get("GraphDriver") or {}
        pid = state.get("Pid") or None
        status = _STATES.get(state.get("Status", ""), "unknown")
        if status not in ("running", "paused"):
            pid = None
        cgroups, namespaces = dict[str, str](), dict[str, int]()
        if pid:
            cgroups = _cgroups_of(pid)
            namespaces = namespace_inodes(pid)
            if not namespaces:
                pid = None                          # ended between inspect and now
        data = graph.get("Data") or {}
        rootfs = data.get("MergedDir", "") if graph.get("Name") in ("overlay2", "overlay") else ""
        ident = attrs["Id"]
        return self._found(ident, (attrs.get("Name") or ident[:12]).lstrip("/"), config.get("Image", ""),
                           status, pid, cgroups, namespaces, rootfs,
                           data.get("UpperDir", "") if rootfs else "", config.get("Labels"),
                           _unix_time(attrs.get("Created")))

    def listed(self, row: Row, directory: str | None) -> Found | None:
        """A container from its containers/json row and, when it runs, its
        cgroup directory (CgroupFinder.locate); None when its init is not
        found there (the caller inspects it)."""
        status = _STATES.get(row.get("State") or "", "unknown")
        pid: int | None = None
        cgroups, namespaces = dict[str, str](), dict[str, int]()
        if _live(row.get("State")):
            if directory is None:
                return None
            pid = pidns_init(read_procs(directory)) or pidns_init(subtree_procs(directory))
            if pid is None:
                return None
            cgroups, namespaces = _cgroups_of(pid), namespace_inodes(pid)
            if not _cgroup_path(cgroups) or not namespaces:
                return None                         # ended meanwhile
        ident = row["Id"]
        names = [n for n in row.get("Names") or () if isinstance(n, str)]
        # a legacy link adds "/<other>/<alias>": its own name is the one with one "/"
        name = next((n for n in names if n.count("/") <= 1), names[0] if names else ident[:12])
        created = row.get("Created")
        return self._found(ident, name.lstrip("/"), row.get("Image") or "", status, pid, cgroups,
                           namespaces, "", "", row.get("Labels"),
                           float(created) if isinstance(created, (int, float)) else _unix_time(created))

    def _found(self, ident: str, name: str, image: str, state: str, pid: int | None,
               cgroups: dict[str, str], namespaces: dict[str, int], rootfs: str, upperdir: str,
               labels: Mapping[str, str] | None, created_at: float | None) -> Found:
        return Found(
            key=make_key(self.engine, ident), engine=self.engine, id=ident, name=name, image=image,
            state=state, pid=pid, cgroup=_cgroup_path(cgroups), cgroups=MappingProxyType(cgroups),
            namespaces=MappingProxyType(namespaces),
            rootfs=rootfs, upperdir=upperdir, labels=MappingProxyType(dict(labels or {})),
            created_at=created_at, controls=CONTROLS,
            owner_note=f"{self.engine.capitalize()} owns this container ({self.base_url}); "
                       f"the buttons act through its Engine API, never on its cgroup files.")

    # -- events
    def follow(self, stop: Stop, on_key: OnKey, on_up: OnUp | None = None) -> None:
        """Call on_key(key) for each container event until stop() is true; on_up()
        each time the event stream (re)connects (what changed meanwhile was missed).
        Reconnects every second or so while the engine is away."""
        import time
        while not stop():
            path = self._socket_path()
            if path is not None and not os.path.exists(path):
                time.sleep(2.0)                     # no engine here (yet)
                continue
            try:
                api = self._client()
                stream = api.events(decode=True, filters={"type": "container"})
            except Exception:  # noqa: BLE001 - not there (yet): try again
                self.close()
                time.sleep(1.0)
                continue
            watcher = threading.Thread(target=_close_when, args=(stop, stream), daemon=True,
                                       name=f"{self.engine}-events-stop")
            watcher.start()
            if on_up is not None:
                on_up()
            try:
                for ev in stream:
                    if stop():
                        break
                    action = (ev.get("Action") or ev.get("status") or "").split(":")[0]
                    ident = (ev.get("Actor") or {}).get("ID") or ev.get("id")
                    if ident and action in _EVENTS:
                        self._seen.pop(ident, None)
                        on_key(make_key(self.engine, ident))
            except Exception:  # noqa: BLE001 - the engine went away or the stream was closed
                self.close()
            finally:
                stream.close()
            if not stop():
                time.sleep(0.5)

    # -- logs and exec
    def logs(self, ident: str, *, tail: int | None = None, since: str | None = None, follow: bool = False,
             stop: Stop | None = None) -> Iterator[tuple[str, bytes]]:
        """Its log through the API (GET /containers/{id}/logs), as (stream,
        bytes) pieces, each line led by its time as our logs lead theirs
        ("2026-11-30T20:00:00.123456789Z "); since: such a time (the API takes
        unix seconds).  Followed while it runs with follow; stop(), looked at
        every half second, ends a follow that waits for a quiet container."""
        try:
            api = self._client()
            tty = bool((api.inspect_container(ident).get("Config") or {}).get("Tty"))
            params: dict[str, int | str] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow),
                                            "tail": "all" if tail is None else str(int(tail))}
            if since:
                params["since"] = _api_time(since)
            private = _raw(api)
            res = private._get(private._url("/containers/{0}/logs", ident), params=params, stream=True,
                               timeout=None if follow else API_TIMEOUT)
            private._raise_for_status(res)
            raw = private._get_raw_response_socket(res)
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        return _log_pieces(res, tty, stop, getattr(raw, "_sock", raw))

    def exec_tty(self, ident: str, argv: Sequence[str], env: Sequence[str], rows: int,
                 cols: int) -> tuple[Closable, socket.socket, str]:
        """A process on a terminal in the container (POST /containers/{id}/exec,
        then its start with the connection taken over): (the connection, a
        raw stream both ways, as a socket; the exec's id)."""
        try:
            api = self._client()
            ex = api.exec_create(ident, list(argv), stdin=True, tty=True, environment=list(env))
            io = api.exec_start(ex["Id"], tty=True, socket=True)
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        sock = getattr(io, "_sock", io)
        exec_id = str(ex["Id"])
        if not isinstance(sock, socket.socket):     # the SDK's SocketIO wraps one (unix, tcp, ssh)
            io.close()
            raise TerrariumError(f"{self.engine}: the exec's connection is not a socket ({type(sock).__name__})")
        try:
            api.exec_resize(exec_id, height=rows, width=cols)
        except Exception:  # noqa: BLE001, S110 - the first size is a nicety; the page sends it again
            pass
        return io, sock, exec_id

    def exec_state(self, exec_id: str) -> ExecState:
        """{"running", "pid" (host), "exit_code"} of an exec."""
        try:
            got = self._client().exec_inspect(exec_id)
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, exec_id) from None
        return {"running": bool(got.get("Running")), "pid": got.get("Pid") or None,
                "exit_code": got.get("ExitCode")}

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        try:
            self._client().exec_resize(exec_id, height=rows, width=cols)
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, exec_id) from None

    # -- control
    def control(self, ident: str, action: str, *, timeout: float = 10.0, signal: str = "SIGKILL",
                limits: UpdateLimits | None = None) -> None:
        """start | stop | restart | pause | unpause | kill | remove | update, through the API."""
        if action not in CONTROLS:
            raise InvalidArgument(f"unknown action {action!r}")
        try:
            api = self._client()
            if action == "start":
                api.start(ident)
            elif action == "stop":
                api.timeout = math.ceil(API_TIMEOUT + timeout)
                api.stop(ident, timeout=int(timeout))
            elif action == "restart":
                api.timeout = math.ceil(API_TIMEOUT + timeout)
                api.restart(ident, timeout=int(timeout))
            elif action == "pause":
                api.pause(ident)
            elif action == "unpause":
                api.unpause(ident)
            elif action == "kill":
                api.kill(ident, signal=signal)
            elif action == "remove":
                api.remove_container(ident, force=True)
            elif action == "update":
                # POST /containers/{id}/update with the Engine API's own names: the
                # SDK's update_container() has no PidsLimit
                body = _update_body(limits or {})
                raw = _raw(api)
                raw._raise_for_status(raw._post_json(raw._url("/containers/{0}/update", ident), data=body))
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        finally:
            if self._api is not None:
                self._api.timeout = int(API_TIMEOUT)


class _PrivateAPI(Protocol):
    """The SDK's own helpers used here (not in its stubs): a request to any
    endpoint (update's PidsLimit, logs' raw stream), its status raised as the
    SDK's errors, the socket under a streamed response; the API version it
    speaks (no setter: it is set once, from the engine's ping)."""

    _version: str

    def _url(self, pathfmt: str, *args: str, versioned_api: bool = True) -> str: ...

    def _get(self, url: str, **kwargs: Any) -> Response: ...

    def _post_json(self, url: str, data: Mapping[str, object], **kwargs: Any) -> Response: ...

    def _raise_for_status(self, response: Response) -> None: ...

    def _get_raw_response_socket(self, response: Response) -> socket.socket: ...


def _raw(api: APIClient) -> _PrivateAPI:
    return cast(_PrivateAPI, api)


def _negotiate(api: APIClient, docker: ModuleType) -> None:
    """Set api's version to the engine's (the Api-Version header of its /_ping,
    as the docker CLI does), at most the SDK's own; the SDK's minimum if the
    engine does not say."""
    raw = _raw(api)
    res = raw._get(raw._url("/_ping", versioned_api=False))
    raw._raise_for_status(res)
    server = res.headers.get("Api-Version") or ""
    if re.fullmatch(r"\d+\.\d+", server) and not docker.utils.version_lt(server, api.api_version):
        newest = docker.constants.DEFAULT_DOCKER_API_VERSION
        raw._version = newest if docker.utils.version_lt(newest, server) else server


def _update_body(limits: UpdateLimits) -> dict[str, int]:
    """Our Limits fields (memory bytes, cpus, pids) as the update endpoint's body."""
    out: dict[str, int] = {}
    memory, cpus, pids = limits.get("memory"), limits.get("cpus"), limits.get("pids")
    if memory is not None:
        out["Memory"] = int(memory)
        out["MemorySwap"] = int(limits.get("memory_swap") or -1)
    if cpus is not None:
        out["CpuPeriod"], out["CpuQuota"] = 100000, int(round(float(cpus) * 100000))
    if pids is not None:
        out["PidsLimit"] = int(pids)
    if not out:
        raise InvalidArgument("update: no limit given")
    return out


_STREAMS = {1: "stdout", 2: "stderr"}


class _Shut:
    """close() shuts a socket down both ways: a thread blocked reading it wakes."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def close(self) -> None:
        import socket
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _log_pieces(res: Response, tty: bool, stop: Stop | None, sock: socket.socket) -> Iterator[tuple[str, bytes]]:
    """The logs endpoint's body as (stream, bytes): a tty's raw output is all
    stdout; otherwise its frames (8-byte header: stream, 0, 0, 0, size)."""
    done, shut = threading.Event(), _Shut(sock)
    if stop is not None:
        threading.Thread(target=_close_when, args=(lambda: done.is_set() or stop(), shut),
                         daemon=True, name="engine-logs-stop").start()
    try:
        if tty:
            for chunk in res.raw.stream(1 << 16, decode_content=False):
                yield "stdout", _fixed_stamps(chunk)
            return
        while True:
            head = res.raw.read(8)
            if len(head) < 8:
                return
            size = int.from_bytes(head[4:8], "big")
            data = res.raw.read(size) if size else b""
            if len(data) < size:
                return
            yield _STREAMS.get(head[0], "stdout"), _fixed_stamps(data)
    except Exception:  # noqa: BLE001 - closed by stop(), or the engine went: the log ends here
        if stop is None or not stop():
            raise
    finally:
        done.set()
        shut.close()            # never back to the pool: the closer thread may shut it later
        res.close()


def _fixed_stamps(data: bytes) -> bytes:
    """Lines led by RFC 3339 times with their nanoseconds in full (Podman
    trims trailing zeros: "...:05.1234Z"), so they sort and compare as ours."""
    if len(data) > 30 and data[29:31] == b"Z " and data.count(b"\n") <= 1:
        return data                                 # Docker's: already so, one line
    out = []
    for line in data.splitlines(keepends=True):
        stamp, sep, rest = line.partition(b" ")
        if sep and stamp.endswith(b"Z") and len(stamp) < 30 and b"T" in stamp:
            head, _, frac = stamp[:-1].partition(b".")
            if len(head) == 19 and frac.isdigit():
                line = b"%s.%sZ %s" % (head, frac.ljust(9, b"0")[:9], rest)
            elif len(head) == 19 and not frac:
                line = b"%s.000000000Z %s" % (head, rest)
        out.append(line)
    return b"".join(out)


def _api_time(stamp: str) -> str:
    """A record time ("2026-11-30T20:00:00.123456789Z") as the API's unix seconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        secs = int(_dt.datetime.fromisoformat(head).replace(tzinfo=_dt.timezone.utc).timestamp())
    except ValueError:
        raise InvalidArgument(f"invalid since {stamp[:40]!r}") from None
    digits = "".join(c for c in frac if c.isdigit())[:9]
    return f"{secs}.{digits.ljust(9, '0')}"


def _close_when(stop: Stop, stream: Closable) -> None:
    """Close the event stream once stop() is true (the reader is blocked in it)."""
    import time
    while not stop():
        time.sleep(0.5)
    try:
        stream.close()
    except Exception:  # noqa: BLE001, S110 - closing a stream already closed
        pass


def _same_init(found: Found) -> bool:
    """Whether a running container's init is still the process inspected
    (its pid in the same PID namespace: a restart is another namespace);
    True for one with no init."""
    if not found.pid:
        return True
    try:
        target = os.readlink(f"/proc/{found.pid}/ns/pid")
    except OSError:
        return False
    return target == f"pid:[{found.namespaces.get('pid')}]"


def _cgroups_of(pid: int) -> dict[str, str]:
    """/proc/<pid>/cgroup, parsed (pidinfo.parse_cgroup); {} once the process is gone."""
    text = read_text(f"/proc/{pid}/cgroup")
    return parse_cgroup(text) if text else {}


def _cgroup_path(paths: Mapping[str, str]) -> str:
    """The container's cgroup path among _cgroups_of's (the memory hierarchy
    on v1, the one v2 hierarchy otherwise); "" when there is none."""
    for key in ("memory", "pids", ""):
        if paths.get(key):
            return paths[key]
    return next(iter(paths.values()), "")


def _unix_time(text: object) -> float | None:
    """Docker's RFC 3339 time with nanoseconds -> unix seconds."""
    if not isinstance(text, str) or not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        t = _dt.datetime.fromisoformat(head).replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in frac if ch.isdigit())
    return t + (float("0." + digits) if digits else 0.0)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _error(e: BaseException, engine: str, ident: str) -> TerrariumError:
    """The SDK's exception as one of ours: NotFound, Conflict (the engine's 409), else TerrariumError."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    text = getattr(e, "explanation", None) or _reason(e)
    if status == 404:
        return NotFound(f"{engine} container {ident[:12]!r} not found")
    if status in (304, 409):
        return Conflict(f"{engine}: {text}")
    return TerrariumError(f"{engine}: {text}")
