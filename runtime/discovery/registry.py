"""Which sources discovery asks, and the one place that asks them.

    default_sources(rt)     every source, in ENGINES order: ours, the
                            engines' APIs, the kernel's (kernel.py: the
                            cgroup tree's recognisers, bare namespaces)
    Discovery(sources)      discover() and get(key) with the last answer
                            kept, control(key, action) through the owner's
                            API, follow(stop, on_key) its engines' events

The agent (root) keeps one Discovery per runtime; an unprivileged web tier
asks it through the agent's verbs (discover, discovered, engine-control).
"""
from __future__ import annotations

import re
import threading
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, TypedDict, runtime_checkable

from ..errors import InvalidArgument, NotFound
from . import ENGINES, Availability, Follow, Found, OnKey, Source, Stop, discover

if TYPE_CHECKING:
    from ..containers import Runtime
    from .terrarium import Lister
    from ..procs import ProcessNode
    from .docker import Layers, UpdateLimits
    from ..overlay import OverlayMount
    from .engine_terminal import EngineTerminal


# What some sources offer beyond Source (an engine's API: docker.EngineSource);
# Discovery asks each source whether it is one.
@runtime_checkable
class GettingSource(Protocol):
    def get(self, ident: str) -> Found: ...


@runtime_checkable
class ControlledSource(Protocol):
    def control(self, ident: str, action: str, *, timeout: float = 10.0, signal: str = "SIGKILL",
                limits: UpdateLimits | None = None) -> None: ...


@runtime_checkable
class LayeredSource(Protocol):
    def layers(self, ident: str) -> Layers: ...


@runtime_checkable
class LoggingSource(Protocol):
    def logs(self, ident: str, *, tail: int | None = None, since: str | None = None, follow: bool = False,
             stop: Stop | None = None) -> Iterator[tuple[str, bytes]]: ...


class FoundJSON(TypedDict):
    """A Found as the agent's verbs send it (to_json / from_json)."""
    key: str
    engine: str
    id: str
    name: str
    image: str
    state: str
    pid: int | None
    cgroup: str
    namespaces: dict[str, int]
    rootfs: str
    upperdir: str
    labels: dict[str, str]
    created_at: float | None
    controls: list[str]
    owner_note: str


class LayerView(TypedDict):
    """Discovery.layers(): a container's root filesystem layers and its writable layer's changes."""
    key: str
    engine: str
    name: str
    state: str
    pid: int | None
    driver: str
    lower: list[str]
    upper: str
    mount: OverlayMount | None
    upper_size: dict[str, int]
    changes: list[dict[str, Any]]
    truncated: bool


def default_sources(rt: Lister | None = None) -> list[Source]:
    """Our own (when given a runtime), the engines' APIs (docker, podman), then
    the kernel's own recognisers (kernel.kernel_sources): cgroup tree, bare namespaces."""
    from .docker import EngineSource
    from .kernel import kernel_sources
    from .terrarium import TerrariumSource
    sources: list[Source] = [EngineSource(engine="docker"), EngineSource(engine="podman"), *kernel_sources()]
    if rt is not None:
        sources.append(TerrariumSource(rt))
    return sorted(sources, key=lambda s: ENGINES.index(s.engine))


# A Found.key: our own 64-hex ids, or "<engine>-<id>" (make_key), never a path.
KEY_RE = re.compile(r"[0-9a-f]{64}|(?:%s)-[A-Za-z0-9._@-]{1,200}" % "|".join(
    e for e in ENGINES if e != "terrarium"))


def is_key(value: object) -> bool:
    return isinstance(value, str) and KEY_RE.fullmatch(value) is not None


def to_json(found: Found) -> FoundJSON:
    return FoundJSON(
        key=found.key, engine=found.engine, id=found.id, name=found.name, image=found.image,
        state=found.state, pid=found.pid, cgroup=found.cgroup, namespaces=dict(found.namespaces),
        rootfs=found.rootfs, upperdir=found.upperdir, labels=dict(found.labels),
        created_at=found.created_at, controls=sorted(found.controls), owner_note=found.owner_note)


def from_json(d: FoundJSON | dict[str, Any]) -> Found:
    """A Found from to_json's dict (fields it lacks take their defaults; others are ignored)."""
    fields: dict[str, Any] = {k: v for k, v in d.items() if k in Found._fields}
    fields["namespaces"] = MappingProxyType(dict(d.get("namespaces") or {}))
    fields["labels"] = MappingProxyType(dict(d.get("labels") or {}))
    fields["controls"] = frozenset(d.get("controls") or ())
    return Found(**fields)


def split_key(key: str) -> tuple[str, str]:
    """(engine, the part after its prefix) of a Found.key; ("terrarium", id) for ours."""
    engine, sep, rest = key.partition("-")
    if sep and engine in ENGINES and engine != "terrarium" and rest:
        return engine, rest
    return "terrarium", key


class Discovery:
    def __init__(self, sources: Iterable[Source]):
        self.sources = list(sources)
        self._lock = threading.Lock()
        self._by_key: dict[str, Found] = {}
        self._at = 0.0

    def source(self, engine: str) -> Source | None:
        return next((s for s in self.sources if s.engine == engine), None)

    def discover(self, engines: Iterable[str] | None = None) -> tuple[list[Found], list[Availability]]:
        """(found, availabilities): every source asked now, or only those of
        ``engines`` (the page filtered to Docker; a pass over Docker's
        containers alone need not read every process on the host for bare
        namespaces).  A partial pass replaces only its engines' keys."""
        if engines is None:
            found, states = discover(self.sources)
            with self._lock:
                self._by_key = {f.key: f for f in found}
                self._at = time.monotonic()
            return found, states
        only = frozenset(engines)
        found, states = discover([s for s in self.sources if s.engine in only])
        with self._lock:
            by_key = {k: f for k, f in self._by_key.items() if f.engine not in only}
            by_key.update((f.key, f) for f in found)
            self._by_key = by_key
        return found, states

    def get(self, key: str, fresh: bool = True) -> Found:
        """One container by its key: asked of its engine when the engine can
        answer for one (an API), else from a discovery pass (at most 1 s old
        unless fresh)."""
        engine, ident = split_key(key)
        source = self.source(engine)
        if isinstance(source, GettingSource):
            found = source.get(ident)
            with self._lock:
                self._by_key[found.key] = found
            return found
        with self._lock:
            found = self._by_key.get(key)
            stale = time.monotonic() - self._at > 1.0
        if found is None or (fresh and stale):
            self.discover()
            with self._lock:
                found = self._by_key.get(key)
        if found is None:
            raise NotFound(f"no container {key!r} on this host")
        return found

    def cached(self, key: str) -> Found:
        """get() without asking the engine again when the key was seen (the sampler's path)."""
        with self._lock:
            found = self._by_key.get(key)
        return found if found is not None and found.pid else self.get(key)

    def control(self, key: str, action: str, *, timeout: float = 10.0, signal: str = "SIGKILL",
                limits: UpdateLimits | None = None) -> Found | None:
        """action through the container's owner; the container after it (None once removed)."""
        found = self.get(key)
        if action not in found.controls:
            raise InvalidArgument(f"{found.engine} container {found.name!r}: {action!r} is not "
                                  f"offered here ({found.owner_note})")
        source = self.source(found.engine)
        if not isinstance(source, ControlledSource):
            raise InvalidArgument(f"{found.engine} container {found.name!r}: no API to act through "
                                  f"({found.owner_note})")
        source.control(found.id, action, timeout=timeout, signal=signal, limits=limits)
        if action == "remove":
            with self._lock:
                self._by_key.pop(key, None)
            return None
        return self.get(key)

    def layers(self, key: str, limit: int = 10000) -> LayerView:
        """Its root filesystem's layers and the writable layer's changes: the
        directories from its engine's API where it gives them (Docker's
        GraphDriver), else from its init's mountinfo; the diff read from the
        upper directory (runtime.overlay.diff), as for our own."""
        import dataclasses

        from .. import overlay
        from ..errors import KernelError
        found = self.get(key)
        source = self.source(found.engine)
        info: Layers = source.layers(found.id) if isinstance(source, LayeredSource) else {}
        mount = None
        if found.pid:
            try:
                mount = overlay.mount_info(found.pid, lower_base=info.get("base"))
            except (NotFound, KernelError):
                mount = None
        upper = info.get("upper") or (mount["upperdir"] if mount else "")
        lower = info.get("lower") or list(reversed(mount["lowerdir"] if mount else []))
        if not upper:
            raise NotFound(f"{found.engine} container {found.name!r} has no overlay writable layer "
                           f"(storage driver: {info.get('driver') or 'not known'})")
        changes = overlay.diff(upper, lower, limit=limit)
        size = overlay.upper_size(upper)
        return LayerView(key=key, engine=found.engine, name=found.name, state=found.state, pid=found.pid,
                         driver=info.get("driver", "overlay"), lower=lower, upper=upper, mount=mount,
                         upper_size={"bytes": size.bytes, "files": size.files},
                         changes=[dataclasses.asdict(c) for c in changes], truncated=changes.truncated)

    def logs(self, key: str, *, tail: int | None = None, since: str | None = None, follow: bool = False,
             stop: Stop | None = None) -> Iterator[tuple[str, bytes]]:
        """Its log through its engine's API as (stream, bytes) pieces, each line
        led by its time (the engine's source.logs); InvalidArgument for a
        source with no logs API (the kernel's own: systemd's journal, a bare
        namespace)."""
        found = self.get(key)
        source = self.source(found.engine)
        if not isinstance(source, LoggingSource):
            raise InvalidArgument(f"{found.engine} container {found.name!r}: no logs API here "
                                  f"({found.owner_note})")
        return source.logs(found.id, tail=tail, since=since, follow=follow, stop=stop)

    def terminal(self, key: str, *, shell: str = "auto", rows: int = 24, cols: int = 80,
                 on_end: Callable[[], None] | None = None) -> EngineTerminal:
        """A shell on a terminal in it through its engine's exec
        (engine_terminal.EngineTerminal: a runtime.terminal.Terminal);
        on_end() once it is over (engine_terminal.open_terminal)."""
        from .engine_terminal import open_terminal
        found = self.get(key)
        return open_terminal(self.source(found.engine), found, shell=shell, rows=rows, cols=cols,
                             on_end=on_end)

    def tree(self, key: str) -> list[ProcessNode]:
        """Its processes as runtime.procs.ProcessNode trees: its cgroup's, or,
        with no cgroup of its own (a bare namespace), its PID namespace's
        (kernel.found_pids)."""
        from .. import procs
        from .kernel import found_pids
        return procs.container_tree(found_pids(self.get(key)))

    def follow(self, stop: Stop, on_key: OnKey) -> list[threading.Thread]:
        """A thread per source that follows (Docker's event stream, the cgroup
        tree's inotify), calling on_key(key) for each change until stop() is
        true, and on_key(None) when a source's stream comes back after a break
        (anything may have changed meanwhile).  Its first start is not one: the
        caller lists everything once after its watch is in place anyway."""
        threads = []
        for source in self.sources:
            follow: Follow | None = getattr(source, "follow", None)
            if follow is not None:
                t = threading.Thread(target=follow, args=(stop, on_key, _AfterFirst(on_key)),
                                     name=f"{source.engine}-events", daemon=True)
                t.start()
                threads.append(t)
        return threads


class _AfterFirst:
    """on_up for a source's follow(): nothing the first time, on_key(None) after."""

    def __init__(self, on_key: OnKey):
        self.on_key, self.calls = on_key, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls > 1:
            self.on_key(None)


_shared: dict[str, Discovery] = {}
_shared_lock = threading.Lock()


def shared(rt: Runtime) -> Discovery:
    """The one Discovery of this process for rt's state root."""
    with _shared_lock:
        d = _shared.get(rt.root)
        if d is None:
            d = _shared[rt.root] = Discovery(default_sources(rt))
        return d
