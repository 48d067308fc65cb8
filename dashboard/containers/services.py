"""Every write the dashboard makes: runtime calls, mirror rows, audit, events.

Each action function calls the runtime, records an AuditEntry with the result,
brings the mirror row in step and publishes on the `containers` group.  Runtime
errors come back as ServiceError with the runtime's own message, which views
show to the person.
"""
from __future__ import annotations

import datetime as dt
import logging
import signal

from django.conf import settings
from django.db import transaction

from runtime import Container as RtContainer
from runtime import Limits, NotFound, TerrariumError
from runtime.spec import make_spec

from . import events, selectors, signals
from .models import AuditEntry, Container, Image, ImageLayer, Layer, OomEvent
from .runtime_client import get_runtime

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An action failed; str(e) is a message for the person."""


# ------------------------------------------------------------------ mirror
def _ts(t: float | None):
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc) if t else None


def _row_fields(c: RtContainer) -> dict:
    return {
        "name": c.name, "image": c.image, "cmd": list(c.cmd), "env": list(c.env),
        "hostname": c.hostname, "workdir": c.workdir, "status": c.status,
        "memory_limit": c.limits.memory, "memory_swap_limit": c.limits.memory_swap,
        "cpus_limit": c.limits.cpus, "pids_limit": c.limits.pids,
        "pid": c.pid, "shim_pid": c.shim_pid, "created_at": _ts(c.created_at),
        "started_at": _ts(c.started_at), "finished_at": _ts(c.finished_at),
        "exit_code": c.exit_code, "oom_killed": bool(c.oom_killed), "error": c.error or "",
        "cgroup": c.cgroup or "", "namespaces": dict(c.namespaces), "layers": list(c.layers),
        "rootfs": c.rootfs, "upperdir": c.upperdir, "log_path": c.log_path,
        "restart_count": c.restart_count,
        "lifecycle": _lifecycle(c),
    }


def _lifecycle(c: RtContainer) -> dict:
    """The row's lifecycle: restart policy, health check and results, stopping, restarting."""
    return {k: v for k, v in (("restart_policy", c.restart_policy),
                              ("restart_history", list(c.restart_history)), ("healthcheck", c.healthcheck),
                              ("health", c.health), ("stopping", c.stopping),
                              ("restarting", c.restarting)) if v not in (None, "no", [])}


def _upsert(c: RtContainer, existing: Container | None) -> Container | None:
    """Write the row if it differs; returns the row when something changed.
    ``existing``: the row as read in the caller's transaction.  A changed row
    is one UPDATE of the fields that changed (a burst of 1,000 stops is 1,000
    statements, not a delete, a select and an update each)."""
    fields = _row_fields(c)
    if existing is not None:
        changed = [k for k, v in fields.items() if getattr(existing, k) != v]
        if not changed:
            return None
        if "name" in changed:
            _free_name(c)
        for k in changed:
            setattr(existing, k, fields[k])
        existing.save(update_fields=[*changed, "synced_at"])
        return existing
    _free_name(c)
    return Container.objects.create(id=c.id, **fields)


def _free_name(c: RtContainer) -> None:
    """A name may pass from a removed container to a new one between two passes."""
    Container.objects.filter(name=c.name).exclude(id=c.id).delete()


def container_sync(*, container: RtContainer) -> list[dict]:
    """Bring one row in step with a runtime state; returns the events to publish."""
    with transaction.atomic():
        row = _upsert(container, Container.objects.filter(id=container.id).first())
    return [events.changed_event(row)] if row else []


def container_refresh(*, container_id: str) -> Container | None:
    """Bring one row in step with the runtime (publishing any change); None if it is gone."""
    try:
        state = get_runtime().inspect(container_id)
    except NotFound:
        row = Container.objects.filter(id=container_id).first()
        if row:
            row.delete()
            events.publish([events.removed_event(container_id, row.name)])
        return None
    events.publish(container_sync(container=state))
    return Container.objects.filter(id=container_id).first()


def containers_reconcile(ids=None) -> list[dict]:
    """The runtime is the truth: upsert every container it knows, drop the rest;
    with ``ids`` (the containers whose state changed on disk, from
    Runtime.changes) only those, one inspect each.

    Returns the events describing what changed (the caller publishes them)."""
    if ids is not None:
        from runtime.state import ID_RE

        from .engines import changed_event
        others = [changed_event(k) for k in ids if not ID_RE.match(k)]    # other owners': not mirrored
        if others:
            from .engines import forget
            forget()
        return _reconcile_some([k for k in ids if ID_RE.match(k)]) + others
    states = get_runtime().list(all=True)
    out = []
    with transaction.atomic():
        # A container the runtime gives back as the very object we last synced
        # (Runtime.list keeps settled ones until a file changes), whose row
        # nobody wrote since, is in step: only the others are compared.
        stamps = dict(Container.objects.values_list("id", "synced_at"))
        todo = [c for c in states if _synced.get(c.id) != (c, stamps.get(c.id))]
        rows = Container.objects.in_bulk([c.id for c in todo])
        for c in todo:
            row = _upsert(c, rows.get(c.id))
            if row:
                out.append(events.changed_event(row))
            _synced[c.id] = (c, row.synced_at if row else stamps.get(c.id))
        live = {c.id for c in states}
        gone = [cid for cid in stamps if cid not in live]
        names = dict(Container.objects.filter(id__in=gone).values_list("id", "name"))
        for cid in gone:
            out.append(events.removed_event(cid, names.get(cid, "")))
            _synced.pop(cid, None)
        Container.objects.filter(id__in=gone).delete()
    signals.reconciled.send(sender=containers_reconcile, containers=states)
    return out


_synced: dict = {}      # id → (the runtime's Container last synced, its row's synced_at)


def _reconcile_some(ids) -> list[dict]:
    rt = get_runtime()
    states, gone = [], []
    for cid in ids:
        try:
            states.append(rt.inspect(cid))
        except NotFound:
            gone.append(cid)
    out = []
    with transaction.atomic():
        rows = Container.objects.in_bulk([c.id for c in states] + gone)
        for c in states:
            row = _upsert(c, rows.get(c.id))
            if row:
                out.append(events.changed_event(row))
        for cid in gone:
            if cid in rows:
                out.append(events.removed_event(cid, rows[cid].name))
        Container.objects.filter(id__in=gone).delete()
    return out


def containers_refresh() -> None:
    """Reconcile and publish (page loads, management commands)."""
    events.publish(containers_reconcile())


def images_sync() -> None:
    """Mirror the image store (building the built-in images when it is empty)."""
    store = get_runtime().images
    images = store.list()
    if not images:
        store.ensure_builtin()
        images = store.list()
    with transaction.atomic():
        for img in images:
            row, _ = Image.objects.update_or_create(name=img.name, defaults={
                "created": _ts(img.created), "cmd": list(img.config.cmd),
                "env": list(img.config.env), "workdir": img.config.workdir,
            })
            ImageLayer.objects.filter(image=row).delete()
            for pos, layer in enumerate(img.layers):
                lrow, _ = Layer.objects.update_or_create(digest=layer.digest, defaults={
                    "size": layer.size, "files": layer.files, "created_by": layer.created_by})
                ImageLayer.objects.create(image=row, layer=lrow, position=pos)
        Image.objects.exclude(name__in=[i.name for i in images]).delete()
        Layer.objects.filter(images__isnull=True).delete()


def volumes_sync() -> None:
    """Mirror the named volumes (the Django admin's read-only list)."""
    from .models import Volume
    volumes = get_runtime().volumes.list()
    with transaction.atomic():
        for v in volumes:
            Volume.objects.update_or_create(name=v["name"], defaults={
                "created": _ts(v.get("created_at")),
                "anonymous": v.get("anonymous", False), "size": v.get("size"), "files": v.get("files"),
                "mountpoint": v.get("mountpoint", ""),
                "containers": [{"id": c.get("id", ""), "name": c.get("name", "")} for c in v.get("containers", ())]})
        Volume.objects.exclude(name__in=[v["name"] for v in volumes]).delete()


# ----------------------------------------------------------------- actions
def _audit(user, action: str, *, container_id: str = "", container_name: str = "",
           result: str, message: str = "", details: dict | None = None) -> AuditEntry:
    return AuditEntry.objects.create(
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "username", "") or "(system)",
        action=action, container_id=container_id, container_name=container_name,
        result=result, message=message, details=details or {})


def audit_denied(*, user, action: str, container_id: str = "") -> AuditEntry | None:
    """A refused attempt (the user's role does not allow it), for the audit log.
    At most TERRARIUM_AUDIT_DENIED_PER_MINUTE rows per user a minute, so that a
    viewer repeating a refused POST cannot grow the table; beyond it, None (the
    request log still has its one line)."""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    recent = AuditEntry.objects.filter(user=user, result="denied", at__gte=since)
    if recent.count() >= settings.TERRARIUM_AUDIT_DENIED_PER_MINUTE:
        return None
    container_id = container_id[:255]             # from the URL: any length (a key is at most 211)
    row = Container.objects.filter(id=container_id).first() if container_id else None
    return _audit(user, action[:32], container_id=container_id,
                  container_name=row.name if row else container_id[:12], result="denied",
                  message="not allowed for this role")


def _act(user, action: str, container_id: str, call, details: dict | None = None) -> RtContainer | None:
    """Run one runtime call on a container: audit, mirror, publish."""
    row = Container.objects.filter(id=container_id).first()
    name = row.name if row else container_id[:12]
    try:
        result = call(get_runtime(user=user), container_id)
    except TerrariumError as e:
        _audit(user, action, container_id=container_id, container_name=name,
               result="error", message=str(e), details=details)
        containers_refresh()
        raise ServiceError(str(e)) from e
    _audit(user, action, container_id=container_id, container_name=name, result="ok", details=details)
    if isinstance(result, RtContainer):
        events.publish(container_sync(container=result))
    else:
        containers_refresh()
    return result


def container_create(*, user, image: str, name: str = "", cmd=(), env=(), hostname: str = "",
                     memory: int | None = None, cpus: float | None = None, pids: int | None = None,
                     seccomp: str = "default", setuid: bool = False,
                     start: bool = False, network: str = "none", ports=(),
                     restart: str = "no", healthcheck=None,
                     workdir: str = "", memory_swap: int | None = None, auto_remove: bool = False,
                     mounts=(), read_only: bool = False) -> RtContainer:
    """Create (and optionally start) a container from validated form data.
    seccomp: "default" or "unconfined" (custom profiles are the CLI's);
    setuid: no_new_privs off (--security-opt no-new-privileges=false);
    network: none, bridge, a network's name, or host (administrators only);
    mounts: runtime.Mount records (bind mounts: administrators only);
    restart: a restart policy; healthcheck: a runtime.Healthcheck or None.
    A start that fails removes the container this call created (so the same
    form, fixed, can be sent again: the name is free)."""
    details = {"image": image, "cmd": list(cmd), "memory": memory, "cpus": cpus, "pids": pids,
               "seccomp": seccomp, "setuid": setuid, "start": start, "network": network,
               "ports": list(ports), "restart": restart,
               "healthcheck": list(healthcheck.test) if healthcheck else None}
    if workdir or memory_swap is not None or auto_remove or mounts or read_only:
        details.update(workdir=workdir, memory_swap=memory_swap, auto_remove=auto_remove,
                       mounts=[f"{m.type}:{m.source}:{m.target}{':ro' if m.read_only else ''}" for m in mounts],
                       read_only=read_only)
    from .roles import ADMINISTRATOR, role_of
    rt = get_runtime(user=user)
    try:
        spec = make_spec(image=image, name=name or None, cmd=tuple(cmd), env=tuple(env),
                         hostname=hostname or None, workdir=workdir or None,
                         limits=Limits(memory=memory, memory_swap=memory_swap, cpus=cpus, pids=pids),
                         seccomp={"mode": seccomp, **({"no_new_privileges": False} if setuid else {})},
                         network=network, ports=tuple(ports), restart=restart, healthcheck=healthcheck,
                         auto_remove=auto_remove, mounts=tuple(mounts), read_only=read_only)
        admin = role_of(user) == ADMINISTRATOR
        created = rt.create(spec, allow_host_network=admin, allow_bind_mounts=admin)
    except TerrariumError as e:
        _audit(user, "create", container_name=name, result="error", message=str(e), details=details)
        raise ServiceError(str(e)) from e
    _audit(user, "create", container_id=created.id, container_name=created.name, result="ok",
           details=details)
    events.publish(container_sync(container=created))
    if start:
        try:
            return container_start(user=user, container_id=created.id)
        except ServiceError as e:
            _remove_failed(user, created)
            raise ServiceError(f"{e} — the container was removed: correct the form and create it "
                               "again") from e
    return created


def _remove_failed(user, created: RtContainer) -> None:
    """Remove what a create-and-start made when its start failed (audited)."""
    try:
        _act(user, "remove", created.id, lambda rt, cid: rt.remove(cid, force=True),
             details={"why": "its start failed"})
    except ServiceError:
        pass                                  # audited; the container stays, shown as exited


def container_start(*, user, container_id: str) -> RtContainer:
    return _act(user, "start", container_id, lambda rt, cid: rt.start(cid))


def container_stop(*, user, container_id: str, timeout: float = 10.0) -> RtContainer:
    return _act(user, "stop", container_id, lambda rt, cid: rt.stop(cid, timeout=timeout))


def container_kill(*, user, container_id: str, sig: int = signal.SIGKILL) -> RtContainer:
    return _act(user, "kill", container_id, lambda rt, cid: rt.kill(cid, sig))


def container_restart(*, user, container_id: str, timeout: float = 10.0) -> RtContainer:
    return _act(user, "restart", container_id, lambda rt, cid: rt.restart(cid, timeout=timeout))


def container_pause(*, user, container_id: str) -> RtContainer:
    return _act(user, "pause", container_id, lambda rt, cid: rt.pause(cid))


def container_resume(*, user, container_id: str) -> RtContainer:
    return _act(user, "resume", container_id, lambda rt, cid: rt.resume(cid))


def container_remove(*, user, container_id: str) -> None:
    _act(user, "remove", container_id, lambda rt, cid: rt.remove(cid))


def container_update_limits(*, user, container_id: str, memory: int | None = None,
                            cpus: float | None = None, pids: int | None = None) -> RtContainer:
    """Replace the limits (None = unlimited)."""
    limits = Limits(memory=memory, cpus=cpus, pids=pids)
    row = Container.objects.filter(id=container_id).first()
    before = ({"memory": row.memory_limit, "cpus": row.cpus_limit, "pids": row.pids_limit}
              if row else {})
    after = {"memory": memory, "cpus": cpus, "pids": pids}
    change = {k: [before.get(k), v] for k, v in after.items() if k not in before or before[k] != v}
    return _act(user, "update", container_id, lambda rt, cid: rt.update(cid, limits),
                details={"change": change})


# ----------------------------------------------------------------- volumes
def volume_create(*, user, name: str = "") -> dict:
    """A named volume (a random name when none is given)."""
    try:
        vol = get_runtime(user=user).volumes.create(name or None)
    except TerrariumError as e:
        _audit(user, "volume-create", result="error", message=str(e),
               details={"volume": name})
        raise ServiceError(str(e)) from e
    _audit(user, "volume-create", result="ok", details={"volume": vol["name"]})
    return vol


def volume_remove(*, user, name: str) -> None:
    """Refused (ServiceError) while any container names it, as Docker does."""
    try:
        get_runtime(user=user).volumes.remove(name)
    except TerrariumError as e:
        _audit(user, "volume-remove", result="error", message=str(e), details={"volume": name})
        raise ServiceError(str(e)) from e
    _audit(user, "volume-remove", result="ok", details={"volume": name})


ACTIONS = {
    "start": container_start, "stop": container_stop, "kill": container_kill,
    "restart": container_restart, "pause": container_pause, "resume": container_resume,
    "remove": container_remove,
}

BULK_ACTIONS = ("stop", "remove")
BULK_MAX = 1000                 # containers in one request
BULK_WORKERS = 8                # stops at once (each may wait out its SIGTERM timeout)


def containers_bulk(*, user, action: str, container_ids, timeout: float = 10.0) -> list[dict]:
    """One action on many containers, each through the same service (and audit
    row) as its single button: ours by id, another owner's by its discovery
    key through its engine (engines.act; a source with no API refuses, as its
    page says).  {"id", "name", "ok", "message"} per container, in the order
    given.  A failure is reported and the rest go on; stops run BULK_WORKERS
    at a time, since each may wait out its timeout."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import close_old_connections
    from runtime.state import ID_RE

    from . import engines
    if action not in BULK_ACTIONS:
        raise ServiceError(f"no bulk action {action[:20]!r} (only {', '.join(BULK_ACTIONS)})")
    ids = list(dict.fromkeys(container_ids))
    if len(ids) > BULK_MAX:
        raise ServiceError(f"{len(ids)} containers in one request: at most {BULK_MAX}")
    names = dict(Container.objects.filter(id__in=[i for i in ids if ID_RE.match(i)]).values_list("id", "name"))

    def other(key: str, out: dict) -> None:
        found = engines.get(key=key)
        if found is None:
            out["message"] = "no such container on this host"
            return
        out["name"] = found.name
        try:
            engines.act(user=user, key=key, action=action, timeout=timeout)
        except engines.EngineError as e:
            out["message"] = str(e)
        else:
            out.update(ok=True, message="done")

    def one(cid: str) -> dict:
        mine = ID_RE.match(cid) is not None
        out = {"id": cid if mine or engines.is_other(cid) else cid[:64],
               "name": names.get(cid, cid[:12]), "ok": False}
        try:
            if not mine:
                if engines.is_other(cid):
                    other(cid, out)
                else:
                    out["message"] = "not a container id"
                return out
            if action == "stop":
                container_stop(user=user, container_id=cid, timeout=timeout)
            else:
                container_remove(user=user, container_id=cid)
        except ServiceError as e:
            out["message"] = str(e)
        else:
            out.update(ok=True, message="done")
        finally:
            close_old_connections()
        return out
    if action == "remove" or len(ids) == 1:
        return [one(cid) for cid in ids]
    with ThreadPoolExecutor(max_workers=BULK_WORKERS, thread_name_prefix="terrarium-bulk") as pool:
        return list(pool.map(one, ids))


# --------------------------------------------------------------- retention
# ----------------------------------------------------------------- terminal
def terminal_open(*, user, container_id: str, shell: str = "auto", rows: int = 24, cols: int = 80):
    """A shell on a terminal in the container (runtime.terminal.Terminal) and
    the audit row of the session (who, which container, from when; its end
    and duration are written by terminal_closed).  ServiceError with the
    runtime's message if there is none (not running, no such shell)."""
    row = Container.objects.filter(id=container_id).first()
    name = row.name if row else container_id[:12]
    details = {"shell": shell, "rows": rows, "cols": cols}
    try:
        term = get_runtime(user=user).terminal(container_id, shell=shell, rows=rows, cols=cols)
    except TerrariumError as e:
        _audit(user, "terminal", container_id=container_id, container_name=name, result="error",
               message=str(e), details=details)
        raise ServiceError(str(e)) from e
    started = dt.datetime.now(dt.timezone.utc)
    entry = _audit(user, "terminal", container_id=container_id, container_name=name, result="ok",
                   message=f"{shell} shell on {cols}x{rows}: open",
                   details={**details, "started": started.isoformat(), "ended": None})
    return term, entry


def terminal_closed(*, entry: AuditEntry, exit_code: int | None, reason: str) -> AuditEntry:
    """The session's end on its audit row: when, how long, the exit code (None:
    the process was hung up because the page went), and why it ended."""
    ended = dt.datetime.now(dt.timezone.utc)
    started = dt.datetime.fromisoformat(entry.details["started"])
    duration = round((ended - started).total_seconds(), 3)
    entry.details = {**entry.details, "ended": ended.isoformat(), "duration_seconds": duration,
                     "exit_code": exit_code, "reason": reason}
    code = "" if exit_code is None else f", exit {exit_code}"
    entry.message = (f"{entry.details['shell']} shell: {duration:.1f} s, "
                     f"{reason}{code}")
    entry.save(update_fields=["details", "message"])
    return entry


def _prune(qs, *, days: float, rows: int, now: dt.datetime) -> int:
    """Delete what is older than days, then all but the newest rows."""
    from django.db.models import Q
    n = qs.filter(at__lt=now - dt.timedelta(days=days)).delete()[0]
    first_old = qs.order_by("-at", "-id").values_list("at", "id")[rows:rows + 1].first()
    if first_old is not None:
        at, pk = first_old
        n += qs.filter(Q(at__lt=at) | Q(at=at, id__lte=pk)).delete()[0]
    return n


def records_prune(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Bounded growth: audit entries and OOM events past their retention are
    deleted (the per-minute history prunes itself, dashboard/live/history.py).
    → rows deleted per kind."""
    now = now or dt.datetime.now(dt.timezone.utc)
    keep = selectors.retention()
    out = {"audit": _prune(AuditEntry.objects.all(), days=keep["audit"][0], rows=keep["audit"][1], now=now),
           "oom": _prune(OomEvent.objects.all(), days=keep["oom"][0], rows=keep["oom"][1], now=now)}
    if any(out.values()):
        log.info("retention: deleted %(audit)d audit entries and %(oom)d OOM events", out)
    return out
