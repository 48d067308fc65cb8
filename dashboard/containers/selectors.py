"""Every read the dashboard makes."""
from __future__ import annotations

import datetime as dt
import time
from typing import NamedTuple

from django.conf import settings
from django.db.models import Count, Prefetch, Q

from runtime import TerrariumError

from .models import AuditEntry, Container, Image, ImageLayer
from .roles import CAN_OPERATE

# What each state allows; the runtime has the last word (Conflict otherwise).
STATE_ACTIONS = {
    "created": ("start", "remove"),
    "running": ("stop", "restart", "pause", "kill"),
    "paused": ("resume", "stop", "kill"),
    "exited": ("start", "remove"),
    "broken": ("remove",),          # its config.json cannot be read (runtime/state.py)
}


def container_list() -> list[Container]:
    return list(Container.objects.all())


def container_get(*, container_id: str) -> Container | None:
    return Container.objects.filter(id=container_id).first()


def container_find(*, ref: str) -> Container | None:
    """A container by its id, its name, or a prefix of its id that only it has (as the CLI takes them)."""
    row = Container.objects.filter(Q(id=ref) | Q(name=ref)).first()
    if row is None and len(ref) >= 4 and all(ch in "0123456789abcdef" for ch in ref):
        rows = list(Container.objects.filter(id__startswith=ref)[:2])
        row = rows[0] if len(rows) == 1 else None
    return row


def container_actions(*, container: Container, user) -> tuple[str, ...]:
    """The buttons this user may press for this container now."""
    if not user.has_perm(CAN_OPERATE):
        return ()
    if container.stopping:          # a stop waits for SIGTERM to work: only SIGKILL cuts it short
        return ("kill",)
    return STATE_ACTIONS.get(container.status, ())


def env_entries(*, env, user) -> list[tuple[str, str | None]]:
    """NAME=value entries as (name, value); the value is None (masked) unless the
    user may operate: environments carry tokens and passwords."""
    show = user.has_perm(CAN_OPERATE)
    out = []
    for entry in env:
        name, _, value = str(entry).partition("=")
        out.append((name, value if show else None))
    return out


LOG_TAIL_BYTES = 256 << 10      # a page shows this much of even one very long line


def container_logs(*, container_id: str, lines: int = 50) -> str:
    """The last lines of the container's log, or a note saying why there are none.
    The runtime reads them from the end of the log, in bounded memory."""
    from .runtime_client import get_runtime
    try:
        return get_runtime().logs(container_id, tail=lines, max_bytes=LOG_TAIL_BYTES).decode("utf-8", "replace")
    except (TerrariumError, OSError) as e:
        return f"(no log: {e})"


def container_run(*, container_id: str) -> tuple[str, float | None] | None:
    """The runtime's state of the container now (running, exited...) and when
    its last run started; None if it is gone."""
    from runtime import NotFound

    from .runtime_client import get_runtime
    if "-" in container_id:                 # another owner's: its state and its init (a new run: a new pid)
        from . import engines
        found = engines.get(key=container_id)
        return None if found is None else (found.state, found.pid)
    try:
        c = get_runtime().inspect(container_id)
    except NotFound:
        return None
    return c.status, c.started_at


def container_log_follow(*, container_id: str, tail: int | None, since: str | None, on_wait=None):
    """The log from since (or its last tail lines) as (stream, bytes) pieces,
    each line led by its time, followed while the container runs
    (dashboard/containers/logsocket.py): through the agent an
    runtime.agent_client.AgentStream to read without blocking, else the
    runtime's generator (on_wait is called while it waits, in its thread)."""
    from runtime.agent_client import AgentRuntime

    from .runtime_client import get_runtime
    rt = get_runtime()
    args = {"tail": tail} if tail is not None else {}
    if since is not None:
        args["since"] = since
    if "-" in container_id:                 # another owner's, through its engine's logs API
        if isinstance(rt, AgentRuntime):
            return rt.discovery().open_logs(container_id, follow=True, **args)
        return rt.discovery().logs(container_id, follow=True, stop=_stopped(on_wait), **args)
    if isinstance(rt, AgentRuntime):
        return rt.open_stream("log-output", ref=container_id, follow=True, timestamps=True, **args)
    return rt.log_output(container_id, follow=True, timestamps=True, on_wait=on_wait, **args)


def _stopped(on_wait):
    """on_wait (raises once the reader is closed) as a stop() that says so."""
    def stop() -> bool:
        if on_wait is None:
            return False
        try:
            on_wait()
        except Exception:  # noqa: BLE001 - its way of saying "stop"
            return True
        return False
    return stop


def container_log_lines(*, container_id: str, since: bytes | None, until: bytes | None,
                        streams, grep: str | None, timestamps: bool, tail: int | None = None):
    """The whole log (no follow), or its last `tail` lines (counted before the
    filter, as `terrarium logs --tail` counts), filtered, as the bytes to
    download, a few lines at a time (runtime/logfilter.py); the runtime reads
    it in bounded memory."""
    from runtime import logfilter

    from .runtime_client import get_runtime
    since_text = since.decode() if since else None
    if "-" in container_id:                 # another owner's, through its engine's logs API
        pieces = get_runtime().discovery().logs(container_id, since=since_text, tail=tail)
    else:
        pieces = get_runtime().log_output(container_id, since=since_text, timestamps=True, tail=tail)
    try:
        batch, size = [], 0
        for line in logfilter.filtered(pieces, streams=streams, grep=grep, until=until):
            out = logfilter.render(line, timestamps)
            batch.append(out)
            size += len(out)
            if size >= 1 << 16:
                yield b"".join(batch)
                batch, size = [], 0
        if batch:
            yield b"".join(batch)
    finally:
        pieces.close()


def container_seccomp(*, container_id: str) -> str:
    """The container's seccomp mode as inspect reports it: default, unconfined or
    custom; and ", no-new-privileges=false" when setuid files work inside."""
    from .runtime_client import get_runtime
    try:
        c = get_runtime().inspect(container_id)
        return c.seccomp + ("" if c.no_new_privileges else ", no-new-privileges=false")
    except TerrariumError as e:
        return f"unknown ({e})"


def container_layers(*, container: Container) -> list[dict]:
    """The container's lower layers bottom first, with the image layer's metadata
    where the store knows it, then its writable upper dir."""
    image = Image.objects.filter(name=container.image).first()
    known = list(ImageLayer.objects.filter(image=image).select_related("layer")) if image else []
    out = []
    for i, path in enumerate(container.layers):
        meta = known[i].layer if i < len(known) else None
        out.append({"position": i, "path": path, "layer": meta})
    return out


def image_list() -> list[Image]:
    layers = Prefetch("imagelayer_set", queryset=ImageLayer.objects.select_related("layer"))
    images = list(Image.objects.prefetch_related(layers))
    users = {}
    for c in Container.objects.only("id", "name", "image", "status"):
        users.setdefault(c.image, []).append(c)
    for img in images:
        img.containers = users.get(img.name, [])
        img.total_size = sum(il.layer.size for il in img.imagelayer_set.all())
    return images


def dangling_images() -> tuple[list[dict], str]:
    """Images a name was moved off (Docker's <none>), kept by id for the
    containers that run their layers until a GC, with those containers; and
    why they could not be read ("" when they could)."""
    from .runtime_client import get_runtime
    try:
        images = get_runtime().images.dangling()
    except TerrariumError as e:
        return [], f"Could not read the untagged images: {e}"
    users: dict[tuple, list[Container]] = {}
    for c in Container.objects.only("id", "name", "status", "layers"):
        key = tuple(p.rstrip("/").rsplit("/", 2)[-2] for p in c.layers or ())
        users.setdefault(key, []).append(c)
    return [{"id": i.id, "created": dt.datetime.fromtimestamp(i.created, dt.timezone.utc) if i.created else None,
             "layers": len(i.layers), "size": sum(layer.size for layer in i.layers),
             "history": i.history[-1] if i.history else "",
             "containers": users.get(tuple(layer.digest[7:] for layer in i.layers), [])}
            for i in images], ""


def image_choices() -> list[tuple[str, str]]:
    return [(i.name, i.name) for i in Image.objects.all()]


class RuntimeAuditRow(NamedTuple):
    """A record of ROOT/audit.log made by another client of the runtime (the
    CLI, "cli:<uid>"), shaped like an AuditEntry for the audit page."""
    at: dt.datetime
    username: str
    action: str
    container_id: str
    container_name: str
    result: str
    message: str
    details: dict
    source: str = "cli"


# the agent's verb names, as the dashboard names the same actions
_RUNTIME_ACTIONS = {"rmi": "image-remove", "load": "image-import", "save": "image-export",
                    "commit": "commit", "unpause": "resume"}


def _runtime_row(rec: dict) -> RuntimeAuditRow | None:
    try:
        at = dt.datetime.fromisoformat(rec["time"])
    except (KeyError, TypeError, ValueError):
        return None
    verb = str(rec.get("verb", ""))
    target = str(rec.get("target", ""))
    details = {k: rec[k] for k in ("change", "images", "digests") if k in rec}
    if verb in ("rmi", "save"):
        details["image"] = target
    return RuntimeAuditRow(at=at, username=str(rec.get("user", "")), action=_RUNTIME_ACTIONS.get(verb, verb),
                           container_id=str(rec.get("id", "")), container_name=target,
                           result="ok" if rec.get("result") == "ok" else "error",
                           message=str(rec.get("error", "")), details=details)


def _runtime_audit(limit: int) -> tuple[list[RuntimeAuditRow], str]:
    """The CLI's records from the runtime's audit log; ([], why) when unreadable."""
    from .runtime_client import get_runtime
    try:
        records = get_runtime().audit_recent(limit, others_only=True)
    except (TerrariumError, OSError) as e:
        return [], f"The runtime's audit log (CLI actions) could not be read: {e}"
    return [row for row in map(_runtime_row, records) if row is not None], ""


def audit_list(*, query: str = "", limit: int = 500) -> tuple[list, str]:
    """The dashboard's audit rows and the CLI's from the runtime's log, newest
    first, and a note when the runtime's log could not be read."""
    qs = AuditEntry.objects.all()
    if query:
        qs = qs.filter(Q(username__icontains=query) | Q(container_name__icontains=query)
                       | Q(container_id__startswith=query) | Q(action__iexact=query))
    rows: list = list(qs[:limit])
    cli, note = _runtime_audit(limit)
    if query:
        q = query.lower()
        cli = [r for r in cli if q in r.username.lower() or q in r.container_name.lower()
               or r.container_id.startswith(query) or r.action == q]
    rows += cli
    rows.sort(key=lambda r: r.at, reverse=True)
    return rows[:limit], note


def container_page(*, query, user) -> dict:
    """One page of the container list for ``query`` (listing.ListQuery): the
    page's rows loaded whole, (c, actions, other) each; the counts, images and
    engines over every container; the engines' error text or ""."""
    from . import engines, listing
    from .engine_views import Shown
    taken_at = time.time()          # before reading anything: a change after it makes the page ask again
    items = listing.ours() if query.engine in ("", "terrarium") else []
    found, states, error = ([], [], "") if query.engine == "terrarium" else \
        engines.discovered(max_age=settings.TERRARIUM_LIST_DISCOVERY_AGE)
    theirs = listing.others(found)
    present = {"terrarium"} if items else set()
    present.update(i.other.engine for i in theirs)
    if query.engine:
        theirs = [i for i in theirs if i.other.engine == query.engine]
    every = items + theirs
    page = listing.paginate(listing.ordered([i for i in every if listing.matches(i, query)], query), query)
    rows = Container.objects.in_bulk([i.key for i in page.items if i.other is None])
    shown = []
    for i in page.items:
        if i.other is None:
            if i.key in rows:
                shown.append((rows[i.key], container_actions(container=rows[i.key], user=user), False))
        else:
            shown.append((Shown(i.other), engines.actions(found=i.other, user=user), True))
    return {"rows": shown, "page": page, "total": len(every), "counts": listing.counts(every),
            "images": sorted({i.image for i in every if i.image}),
            "page_numbers": listing.page_numbers(page),
            "engines": [e for e in states if e.state != "absent" or e.engine in present],
            "error": error, "taken_at": taken_at}


def container_counts() -> dict:
    return dict(Container.objects.values_list("status").annotate(n=Count("id")))


def retention() -> dict[str, tuple[float, int]]:
    """{"audit"|"oom": (days, newest rows kept)}, as configured."""
    return {"audit": (settings.TERRARIUM_AUDIT_KEEP_DAYS, settings.TERRARIUM_AUDIT_KEEP_ROWS),
            "oom": (settings.TERRARIUM_OOM_KEEP_DAYS, settings.TERRARIUM_OOM_KEEP_ROWS)}


def retention_notes() -> dict[str, str]:
    """What is kept how long, as the settings say (shown on the admin pages)."""
    keep, every = retention(), int(settings.TERRARIUM_PRUNE_EVERY // 60) or 1
    line = "{what} are kept {days:g} days, at most the newest {rows:,}; older ones are deleted every " \
           f"{every} min ({{env}})."
    return {
        "audit": line.format(what="Audit entries", days=keep["audit"][0], rows=keep["audit"][1],
                             env="TERRARIUM_AUDIT_KEEP_DAYS, TERRARIUM_AUDIT_KEEP_ROWS"),
        "oom": line.format(what="OOM events", days=keep["oom"][0], rows=keep["oom"][1],
                           env="TERRARIUM_OOM_KEEP_DAYS, TERRARIUM_OOM_KEEP_ROWS"),
        "history": f"Per-minute history is kept {settings.TERRARIUM_HISTORY_HOURS:g} hours "
                   "(TERRARIUM_HISTORY_HOURS).",
    }


# --------------------------------------------------------------- networks

def network_list() -> tuple[list[dict], str | None]:
    """The runtime's networks (runtime/network.py), each with its containers'
    addresses, veth pairs and published ports; and an error to show, if any."""
    from .runtime_client import get_runtime
    try:
        return get_runtime().networks.list(), None
    except (TerrariumError, OSError) as e:
        return [], str(e)


def network_choices(*, user) -> list[tuple[str, str]]:
    """--network values the create form offers this user: host only to administrators."""
    from .roles import ADMINISTRATOR, role_of
    choices = [("none", "none (loopback only)"), ("bridge", "bridge (the default network)")]
    networks, _ = network_list()
    choices += [(n["name"], f"{n['name']} ({n['subnet']})") for n in networks if n["name"] != "bridge"]
    if role_of(user) == ADMINISTRATOR:
        choices.append(("host", "host (the host's own network stack)"))
    return choices


def container_network(*, container_id: str) -> dict:
    """What a container's network is, and, while it runs, what its namespace
    holds: links, addresses and routes through netlink inside it (pyroute2),
    sockets from /proc/<pid>/net/* (the namespace's own tables: /proc/net and
    psutil.net_connections() read the reader's namespace instead)."""
    from runtime import pidinfo
    from runtime.network import read_namespace, veth_name

    from .runtime_client import get_runtime
    rt = get_runtime()
    try:
        c = rt.inspect(container_id)
    except TerrariumError as e:
        return {"error": str(e)}
    out = {"network": c.network, "address": c.address, "ports": list(c.ports), "pid": c.pid,
           "veth": veth_name(rt.root, c.id) if c.address else None, "inside": None, "sockets": []}
    if c.pid and c.status in ("running", "paused"):
        try:
            out["inside"] = read_namespace(c.pid)
            out["sockets"] = [s._asdict() for s in pidinfo.net_sockets(c.pid)]
        except (TerrariumError, OSError) as e:
            out["error"] = f"could not read the namespace: {e}"
    return out


# ---------------------------------------------------------------- volumes

def may_bind_mount(*, user) -> bool:
    """Bind mounts of host paths: administrators only (as --network host)."""
    from .roles import ADMINISTRATOR, role_of
    return role_of(user) == ADMINISTRATOR


def volume_list() -> tuple[list[dict], str | None]:
    """The runtime's volumes (runtime/volumes.py) with their size and the
    containers that name them; and an error to show, if any."""
    from .runtime_client import get_runtime
    import datetime as dt
    try:
        volumes = get_runtime().volumes.list()
    except (TerrariumError, OSError) as e:
        return [], str(e)
    for v in volumes:
        v["created"] = dt.datetime.fromtimestamp(v["created_at"], dt.timezone.utc) if v.get("created_at") else None
    return volumes, None
