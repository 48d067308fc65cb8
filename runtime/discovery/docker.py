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

Figures and process trees are not taken from here: the engine gives the
container's init pid, and its cgroup, namespaces and root are read from
/proc/<pid> like any other process's (the engine's stats API is what makes
`docker stats` cost what it costs).
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from types import MappingProxyType

from ..errors import Conflict, InvalidArgument, NotFound, TerrariumError
from . import CONTROLS, Availability, Found, make_key

DEFAULT_DOCKER = "unix:///var/run/docker.sock"
DEFAULT_PODMAN = "unix:///run/podman/podman.sock"
API_TIMEOUT = 10.0              # seconds for one API call (stop waits its own timeout on top)

_STATES = {"created": "created", "running": "running", "paused": "paused", "restarting": "running",
           "exited": "exited", "dead": "exited", "removing": "exited"}
# container events that change what the list shows (exec_*, attach, top... do not)
_EVENTS = frozenset({"create", "start", "restart", "die", "stop", "kill", "pause", "unpause",
                     "destroy", "rename", "update", "oom"})


def docker_host() -> str:
    return os.environ.get("TERRARIUM_DOCKER_HOST") or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER


def podman_host() -> str:
    return os.environ.get("TERRARIUM_PODMAN_HOST") or os.environ.get("CONTAINER_HOST") or DEFAULT_PODMAN


def _sdk():
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
        self._api = None
        self._lock = threading.Lock()
        # id -> ((State, Names) as the list showed them, Found): a container
        # the list shows unchanged, whose init (when running) is still the one
        # inspected (same pid, same PID namespace), is not inspected again; an
        # event about it (follow) drops it.  Not the Status text: "Up 5
        # minutes" moves on by itself; a restart is a new init.
        self._seen: dict[str, tuple[tuple, Found]] = {}

    # -- connection
    def _socket_path(self) -> str | None:
        if self.base_url.startswith("unix://"):
            return self.base_url[len("unix://"):]
        return None

    def _client(self):
        """A connected APIClient, made once; raises docker.errors.DockerException."""
        with self._lock:
            if self._api is None:
                docker = _sdk()
                self._api = docker.APIClient(base_url=self.base_url, timeout=API_TIMEOUT,
                                             version="auto")
                if self._socket_path() is not None:
                    # requests looks up proxy settings in the environment on every
                    # call (a third of a list's CPU here); none applies to a unix socket
                    self._api.trust_env = False
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
            api = self._client()
            api.ping()
        except Exception as e:  # noqa: BLE001 - whatever the SDK raises: the engine refused
            self.close()
            return Availability(self.engine, "refused", f"{self.base_url}: {_reason(e)}")
        return Availability(self.engine, "up", self.base_url)

    # -- listing
    def list(self) -> list[Found]:
        try:
            api = self._client()
            rows = api.containers(all=True)
        except Exception:  # noqa: BLE001 - absent or refusing: availability() says which
            self.close()
            return []
        out, seen = [], {}
        for row in rows:
            mark = (row.get("State"), tuple(row.get("Names") or ()))
            hit = self._seen.get(row["Id"])
            if hit is not None and hit[0] == mark and _same_init(hit[1]):
                found = hit[1]
            else:
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

    def layers(self, ident: str) -> dict:
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

    def found(self, attrs: dict) -> Found:
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        graph = attrs.get("GraphDriver") or {}
        pid = state.get("Pid") or None
        status = _STATES.get(state.get("Status", ""), "unknown")
        if status not in ("running", "paused"):
            pid = None
        cgroup, namespaces = "", {}
        if pid:
            cgroup = _cgroup_of(pid)
            try:
                from ..pidinfo import namespace_inodes
                namespaces = namespace_inodes(pid)
            except OSError:
                pid = None                          # ended between inspect and now
        data = graph.get("Data") or {}
        rootfs = data.get("MergedDir", "") if graph.get("Name") in ("overlay2", "overlay") else ""
        ident = attrs["Id"]
        return Found(
            key=make_key(self.engine, ident), engine=self.engine, id=ident,
            name=(attrs.get("Name") or ident[:12]).lstrip("/"), image=config.get("Image", ""),
            state=status, pid=pid, cgroup=cgroup, namespaces=MappingProxyType(namespaces),
            rootfs=rootfs, upperdir=data.get("UpperDir", "") if rootfs else "",
            labels=MappingProxyType(dict(config.get("Labels") or {})),
            created_at=_unix_time(attrs.get("Created")), controls=CONTROLS,
            owner_note=f"{self.engine.capitalize()} owns this container ({self.base_url}); "
                       f"the buttons act through its Engine API, never on its cgroup files.")

    # -- events
    def follow(self, stop, on_key, on_up=None) -> None:
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
             stop=None):
        """Its log through the API (GET /containers/{id}/logs), as (stream,
        bytes) pieces, each line led by its time as our logs lead theirs
        ("2026-11-30T20:00:00.123456789Z "); since: such a time (the API takes
        unix seconds).  Followed while it runs with follow; stop(), looked at
        every half second, ends a follow that waits for a quiet container."""
        try:
            api = self._client()
            tty = bool((api.inspect_container(ident).get("Config") or {}).get("Tty"))
            params = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow),
                      "tail": "all" if tail is None else str(int(tail))}
            if since:
                params["since"] = _api_time(since)
            res = api._get(api._url("/containers/{0}/logs", ident), params=params, stream=True,
                           timeout=None if follow else API_TIMEOUT)
            api._raise_for_status(res)
            raw = api._get_raw_response_socket(res)
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        return _log_pieces(res, tty, stop, getattr(raw, "_sock", raw))

    def exec_tty(self, ident: str, argv, env, rows: int, cols: int):
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
        try:
            api.exec_resize(ex["Id"], height=rows, width=cols)
        except Exception:  # noqa: BLE001, S110 - the first size is a nicety; the page sends it again
            pass
        return io, sock, ex["Id"]

    def exec_state(self, exec_id: str) -> dict:
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
                limits: dict | None = None) -> None:
        """start | stop | restart | pause | unpause | kill | remove | update, through the API."""
        if action not in CONTROLS:
            raise InvalidArgument(f"unknown action {action!r}")
        try:
            api = self._client()
            if action == "start":
                api.start(ident)
            elif action == "stop":
                api.timeout = API_TIMEOUT + timeout
                api.stop(ident, timeout=int(timeout))
            elif action == "restart":
                api.timeout = API_TIMEOUT + timeout
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
                api._raise_for_status(api._post_json(api._url("/containers/{0}/update", ident), data=body))
        except Exception as e:  # noqa: BLE001
            raise _error(e, self.engine, ident) from None
        finally:
            if self._api is not None:
                self._api.timeout = API_TIMEOUT


def _update_body(limits: dict) -> dict:
    """Our Limits fields (memory bytes, cpus, pids) as the update endpoint's body."""
    out = {}
    if limits.get("memory") is not None:
        out["Memory"] = int(limits["memory"])
        out["MemorySwap"] = int(limits.get("memory_swap") or -1)
    if limits.get("cpus") is not None:
        out["CpuPeriod"], out["CpuQuota"] = 100000, int(round(float(limits["cpus"]) * 100000))
    if limits.get("pids") is not None:
        out["PidsLimit"] = int(limits["pids"])
    if not out:
        raise InvalidArgument("update: no limit given")
    return out


_STREAMS = {1: "stdout", 2: "stderr"}


class _Shut:
    """close() shuts a socket down both ways: a thread blocked reading it wakes."""

    def __init__(self, sock):
        self.sock = sock

    def close(self) -> None:
        import socket
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _log_pieces(res, tty: bool, stop, sock):
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


def _close_when(stop, stream) -> None:
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


def _cgroup_of(pid: int) -> str:
    """The container's cgroup path as /proc/<pid>/cgroup shows it (the memory
    hierarchy on v1, the one v2 hierarchy otherwise)."""
    from ..pidinfo import parse_cgroup
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = parse_cgroup(f.read())
    except OSError:
        return ""
    for key in ("memory", "pids", ""):
        if paths.get(key):
            return paths[key]
    return next(iter(paths.values()), "")


def _unix_time(text) -> float | None:
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
