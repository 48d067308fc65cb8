"""Containers of every owner on the host, in one shape.

A container is namespaces + cgroups + a root filesystem, whoever made it.
Each *source* knows one kind of owner and turns what it can see into
`Found` records:

    terrarium   this runtime's own containers (runtime.containers)
    docker      dockerd, through its Engine API (the `docker` SDK)
    podman      Podman, through its API socket
    kubernetes  pods' containers, recognised in the cgroup tree (kubepods*)
    containerd / crio   the same, outside Kubernetes' slices
    systemd     services and scopes (system.slice/*.service, *.scope)
    nspawn      systemd-nspawn machines (machine.slice/systemd-nspawn@*)
    lxc         LXC containers (lxc.payload.*, lxc/*)
    bare        a PID namespace that is not the host's and that nobody
                above claims: `unshare --pid --fork --mount-proc bash`

Sources with an API come first and claim their containers' cgroups; the
cgroup-tree recognisers then name what is left; last, any process whose PID
namespace is still unclaimed becomes a `bare` container.  `discover()` runs
them in that order.

Nothing here imports Django.  The agent (root) runs discovery; the web tier
asks it through the agent's verbs like everything else.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Iterable, NamedTuple, Protocol, cast

_EMPTY_NS: MappingProxyType[str, int] = MappingProxyType({})
_EMPTY_LABELS: MappingProxyType[str, str] = MappingProxyType({})
_EMPTY_CGROUPS: MappingProxyType[str, str] = MappingProxyType({})

# a source's follow(stop, on_key, on_up): stop() says when to return; on_key(key)
# for a container that changed (None: anything may have, a stream came back); on_up()
# each time its stream (re)connects
Stop = Callable[[], bool]
OnKey = Callable[[str | None], None]
OnUp = Callable[[], None]
Follow = Callable[[Stop, OnKey, OnUp | None], None]

# engines in the order discover() asks them; the first to claim a cgroup or a
# PID namespace owns it.
ENGINES = ("terrarium", "docker", "podman", "kubernetes", "containerd", "crio",
           "nspawn", "lxc", "systemd", "bare")

# what an engine's API can do to its containers; read-only sources offer none
CONTROLS = frozenset({"start", "stop", "restart", "pause", "unpause", "kill", "remove", "update"})


class Found(NamedTuple):
    """One container as a source sees it.

    key         unique across sources and safe in a URL path: our own
                containers keep their bare id; every other source's is
                "<engine>-<id>" (make_key)
    engine      one of ENGINES
    id          the owner's id: Docker's 64-hex id, a unit name
                ("nginx.service"), a pod container's id, "pidns-<inode>"
    name        what its owner calls it (Docker's name without the "/",
                "<namespace>/<pod>/<container>" for Kubernetes, the unit)
    image       image reference as the owner shows it; "" when none
    state       created | running | paused | exited | unknown
    pid         host pid of its init (None when not running or not known)
    cgroup      its cgroup path relative to each hierarchy's root, as
                /proc/<pid>/cgroup shows it ("/docker/<id>",
                "/system.slice/nginx.service"); "" when it has none of its own
    namespaces  {"pid": inode, "mnt": inode, ...} of its init, when running;
                every source that knows the pid fills at least "pid", so the
                bare source does not report the same namespace again
    rootfs      the mount point of its root filesystem ("" when unknown;
                an engine's list() leaves it so, its get() asks for it)
    upperdir    the writable layer of an overlay root ("" when not overlay,
                or not known: as rootfs)
    labels      the owner's labels / annotations, str -> str
    created_at  unix time, or None
    controls    which of CONTROLS its owner's API offers here (empty: read-only)
    owner_note  one sentence for the page: who owns it and, when controls
                is empty, why there are no buttons
    cgroups     every hierarchy's path of its init as /proc/<pid>/cgroup
                showed it when found (pidinfo.parse_cgroup: {"memory": ...,
                "": ... on v2}), so a reader that starts on it need not read
                that file again; empty when the source did not read it (the
                reader then does).  In-process only: not in to_json
    """
    key: str
    engine: str
    id: str
    name: str = ""
    image: str = ""
    state: str = "unknown"
    pid: int | None = None
    cgroup: str = ""
    namespaces: MappingProxyType[str, int] = _EMPTY_NS
    rootfs: str = ""
    upperdir: str = ""
    labels: MappingProxyType[str, str] = _EMPTY_LABELS
    created_at: float | None = None
    controls: frozenset[str] = frozenset()
    owner_note: str = ""
    cgroups: MappingProxyType[str, str] = _EMPTY_CGROUPS


class Availability(NamedTuple):
    """Whether a source could be asked: state "up" | "absent" (nothing
    installed or no socket: not an error) | "refused" (a socket that refused
    or answered wrongly; detail says what happened)."""
    engine: str
    state: str
    detail: str = ""


class Source(Protocol):
    """One kind of owner.  `engine` is its ENGINES name."""
    engine: str

    def availability(self) -> Availability: ...

    def list(self) -> list[Found]:
        """Every container it owns now, running or not.  Never raises for
        an absent or refusing engine: availability() says so and list()
        returns []."""
        ...


class SkippingSource(Protocol):
    """A source that can leave out PID namespaces claimed already (bare)."""
    engine: str

    def availability(self) -> Availability: ...

    def list(self, skip: frozenset[int] = frozenset()) -> list[Found]: ...


def make_key(engine: str, ident: str) -> str:
    """The Found.key of a container: our own keep their id; others are
    prefixed with their engine and limited to URL-safe characters."""
    if engine == "terrarium":
        return ident
    if ident.isascii() and ident.isalnum():        # an engine's hex id: as it is, no walk per character
        return f"{engine}-{ident}"
    safe = "".join(c if c.isalnum() or c in "._@-" else "_" for c in ident)
    return f"{engine}-{safe}"


def discover(sources: Iterable[Source]) -> tuple[list[Found], list[Availability]]:
    """Ask each source in order; a cgroup or PID namespace claimed by an
    earlier source is not reported again by a later one."""
    found: list[Found] = []
    states: list[Availability] = []
    cgroups: set[str] = set()
    pidns: set[int] = set()
    for source in sources:
        states.append(source.availability())
        # the bare source reads every process of a namespace: not those claimed already
        if source.engine == "bare":
            items = cast(SkippingSource, source).list(skip=frozenset(pidns))
        else:
            items = source.list()
        for item in items:
            if item.cgroup and item.cgroup in cgroups:
                continue
            ns = item.namespaces.get("pid") if item.namespaces else None
            if item.engine == "bare" and ns in pidns:
                continue
            found.append(item)
            if item.cgroup:
                cgroups.add(item.cgroup)
            if ns is not None:
                pidns.add(ns)
    return found, states
