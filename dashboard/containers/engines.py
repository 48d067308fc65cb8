"""Other owners' containers (runtime/discovery: Docker, Podman, and whatever
else a source yields): their reads and their actions.

They are shown from discovery, never mirrored in the database.  The owner's
engine is the record (its API, or the cgroup tree): a mirror would be a
second copy to keep in step with something we do not write, names repeat
across engines (our Container has a unique name and a 64-hex pk), and a
container removed behind our back would linger.  What we keep of them is what
we did: audit rows (container_id = the engine's id, details.engine and
details.key) and OOM events, which outlive the container anyway.

Through the agent (TERRARIUM_AGENT=1) the engines' sockets are the agent's,
not the web tier's: runtime.agent_client.AgentDiscovery.
"""
from __future__ import annotations

import time

from runtime import TerrariumError
from runtime.discovery.registry import is_key

from . import events
from .models import AuditEntry
from .roles import CAN_OPERATE
from .runtime_client import get_runtime

# What each state allows, in the engines' own words (Docker's unpause)
STATE_ACTIONS = {
    "created": ("start", "remove"),
    "running": ("stop", "restart", "pause", "kill"),
    "paused": ("unpause", "stop", "kill"),
    "exited": ("start", "remove"),
}
ENGINE_NAMES = {"terrarium": "Terrarium", "docker": "Docker", "podman": "Podman",
                "kubernetes": "Kubernetes", "containerd": "containerd", "crio": "CRI-O",
                "nspawn": "nspawn", "lxc": "LXC", "systemd": "systemd", "bare": "bare namespace"}


class EngineError(Exception):
    """An action the engine refused or could not do; the message says why."""


def is_other(key: str) -> bool:
    """A key of another owner's container (not one of our 64-hex ids)."""
    return is_key(key) and "-" in key


_recent: tuple | None = None        # (monotonic time it began, found, states) of the last pass
# forget() moves it on.  A pass is kept for the next ones only if no forget()
# came while it ran: a change event (a `docker run`'s "start") that arrives
# during a pass begun before it (on its "create") would otherwise be
# overwritten by that pass, and the list drawn again on the event would show
# the container "created" until the pass aged out.
_generation = 0
# The containers of the last discovery pass, kept for owner_of_memcg: unlike
# _recent, a change event does not forget it (an OOM kill is such a change) and
# no age makes it wrong -- an engine's cgroup path names its container's id, so
# a container the pass saw is still the owner of that path after it exited.
_known: list = []


def has_api(found) -> bool:
    """Whether its owner has an API here (Docker, Podman): its logs and
    terminal go through it.  The kernel's own sources have none."""
    return bool(found.controls)


def discovered(*, engine: str | None = None, max_age: float = 0.0):
    """(other owners' containers, [Availability], error text or "").  Never raises.
    max_age: a pass at most that many seconds old will do (the list page's; a
    change event about another owner's container forgets it: forget())."""
    global _recent, _known
    recent = _recent
    if max_age > 0 and recent is not None and time.monotonic() - recent[0] <= max_age:
        found, states = recent[1], recent[2]
    else:
        begun, generation = time.monotonic(), _generation
        try:
            found, states = get_runtime().discovery().discover()
        except (TerrariumError, OSError) as e:
            return [], [], str(e)
        if generation == _generation:           # no change event came while it ran
            _recent = (begun, found, states)
        _known = [f for f in found if f.engine != "terrarium"]
    found = [f for f in found if f.engine != "terrarium" and (engine is None or f.engine == engine)]
    found.sort(key=lambda f: (f.engine, f.name))
    return found, states, ""


def forget() -> None:
    """Another owner's container changed: the next discovered() asks again,
    and a pass running now is not kept."""
    global _recent, _generation
    _generation += 1
    _recent = None


def get(*, key: str):
    """The container of key now (asked of its owner), or None."""
    if not is_other(key):
        return None
    try:
        return get_runtime().discovery().get(key)
    except (TerrariumError, OSError):
        return None


def tree(*, key: str, with_cmdline: bool = True) -> list:
    """(depth, runtime.procs.ProcessInfo) of its processes now, pstree's order:
    for a container with no cgroup of its own (a bare namespace: its PID
    namespace's members), whose tree the live sampler cannot read from a
    cgroup.  Without with_cmdline (viewers), no arguments.  [] if gone."""
    from dataclasses import replace

    from runtime import procs
    try:
        forest = get_runtime().discovery().tree(key)
    except (TerrariumError, OSError):
        return []
    rows = [(depth, node.info) for depth, node in procs.walk(forest)]
    return rows if with_cmdline else [(d, replace(i, cmdline=i.cmdline[:1])) for d, i in rows]


# memcgs a fresh pass did not know (a service's, a session's: not a container)
# → when; asked again after UNKNOWN_FOR seconds
_unknown: dict[str, float] = {}
UNKNOWN_FOR = 60.0


def _owner_in(found, memcg: str):
    for f in found:
        if f.cgroup and (memcg == f.cgroup or memcg.startswith(f.cgroup.rstrip("/") + "/")):
            return f
    parts = memcg.split("/")
    for f in found:
        if len(f.id) >= 12 and any(f.id in p for p in parts):
            return f
    return None


def owner_of_memcg(memcg: str):
    """The other owner's container a memory cgroup belongs to (an OOM report's
    oom_memcg), or None: its cgroup or one below it, or, once it has exited
    (a killed init: the cgroup is gone), the one whose engine id names a
    component of the path ("/docker/<id>", "docker-<id>.scope").

    The last discovery pass's containers are asked first (any page's or an
    earlier kill's); a fresh pass (~0.5 s at 1,000 containers) only when they
    do not know the memcg, and not again for the same unknown memcg within
    UNKNOWN_FOR seconds: every OOM kill outside any container (another
    program's, a test's) cost a full pass."""
    if not memcg:
        return None
    memcg = "/" + memcg.strip("/")
    # A bare namespace's claim is provisional: an engine's container is one
    # while runc sets it up (its init "runc init", not yet in the engine's
    # list), so only an engine's claim from the last pass is taken as it is.
    owner = _owner_in([f for f in _known if f.engine != "bare"], memcg)
    if owner is not None:
        return owner
    now = time.monotonic()
    if now - _unknown.get(memcg, -UNKNOWN_FOR) < UNKNOWN_FOR:
        return None
    found, _, err = discovered()
    if err:
        return None
    owner = _owner_in(found, memcg)
    if owner is None:
        if len(_unknown) >= 256:                     # bounded: drop the oldest
            del _unknown[min(_unknown, key=_unknown.__getitem__)]
        _unknown[memcg] = now
    return owner


def actions(*, found, user) -> tuple[str, ...]:
    """The buttons this user may press for it now: what its owner's API offers
    (none for read-only sources) and its state allows."""
    if not user.has_perm(CAN_OPERATE):
        return ()
    return tuple(a for a in STATE_ACTIONS.get(found.state, ()) if a in found.controls)


def act(*, user, key: str, action: str, timeout: float = 10.0, limits: dict | None = None):
    """action through the container's owner, audited like ours (the row names
    the container and its engine); publishes the change.  The container after
    it (None once removed); EngineError when refused."""
    before = get(key=key)
    name = before.name if before else key[:40]
    details = {"engine": before.engine if before else key.partition("-")[0], "key": key}
    ident = before.id[:255] if before else ""
    kw = {"timeout": timeout} if action in ("stop", "restart") else {}
    if action == "update":
        kw["limits"] = details["limits"] = {k: v for k, v in (limits or {}).items() if v is not None}
    try:
        after = get_runtime(user=user).discovery().control(key, action, **kw)
    except (TerrariumError, OSError) as e:
        _audit(user, action, ident, name, "error", str(e), details)
        raise EngineError(str(e)) from e
    _audit(user, action, ident, name, "ok", "", details)
    if after is None:
        events.publish([events.removed_event(key, name)])
    else:
        events.publish([changed_event(key, after.name)])
    return after


def terminal_open(*, user, key: str, shell: str = "auto", rows: int = 24, cols: int = 80):
    """A shell in its container through its engine's exec (a runtime.terminal.Terminal)
    and the session's audit row, as services.terminal_open makes for ours
    (services.terminal_closed writes its end); services.ServiceError with the reason."""
    import datetime as dt

    from .services import ServiceError
    found = get(key=key)
    name = found.name if found else key[:40]
    details = {"engine": found.engine if found else key.partition("-")[0], "key": key,
               "shell": shell, "rows": rows, "cols": cols}
    ident = found.id[:255] if found else ""
    try:
        if found is None:
            raise TerrariumError(f"no container {key[:80]!r} on this host")
        term = get_runtime(user=user).discovery().terminal(key, shell=shell, rows=rows, cols=cols)
    except (TerrariumError, OSError) as e:
        _audit(user, "terminal", ident, name, "error", str(e), details)
        raise ServiceError(str(e)) from e
    started = dt.datetime.now(dt.timezone.utc)
    entry = _audit(user, "terminal", ident, name, "ok", f"{shell} shell on {cols}x{rows}: open",
                   {**details, "started": started.isoformat(), "ended": None})
    return term, entry


def _audit(user, action, ident, name, result, message, details):
    return AuditEntry.objects.create(
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "username", "") or "(system)", action=action[:32],
        container_id=ident, container_name=f"{name} ({details['engine']})"[:128], result=result,
        message=message, details=details)


def changed_event(key: str, name: str = "") -> dict:
    """container.changed for a key: the pages fetch its row or head again."""
    return {"type": events.CHANGED, "container": {"id": key, "name": name}}


MAX_CHANGES = 2000              # a page shows at most this many changes


def layers(*, key: str) -> dict:
    """Its layers and writable-layer changes in the shape of dashboard.layers'
    changes JSON (static/layers/layers.js draws both); EngineError with the reason."""
    try:
        got = get_runtime().discovery().layers(key, MAX_CHANGES + 1)
    except (TerrariumError, OSError) as e:
        raise EngineError(str(e)) from e
    changes = got["changes"]
    counts = {"A": 0, "C": 0, "D": 0}
    for ch in changes:
        counts[ch["kind"]] += 1
    got.update({
        "status": got["state"], "t": time.time(), "upper_dir": got["upper"], "upper": got["upper_size"],
        "counts": counts,
        "total": len(changes), "truncated": got["truncated"] or len(changes) > MAX_CHANGES,
        "changes": [{"path": ch["path"], "kind": ch["kind"], "dir": ch["is_dir"], "size": ch["size"],
                     "opaque": ch["opaque"], "from": ch["from_layer"], "whiteout": ch["whiteout"],
                     "from_digest": None} for ch in changes[:MAX_CHANGES]]})
    return got
