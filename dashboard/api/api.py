"""The JSON API: what the pages do, for scripts (django-ninja).

Every route calls the selectors and services the pages call
(dashboard/containers, layers, oom), so an action through the API is checked,
audited, mirrored and published exactly as the same button press.  The roles
are the pages' (roles.py): viewers read, with environment values masked;
operators act and export; administrators also read the audit log.  A refused
action is audited as "denied", as on the pages.

Authentication is an API token in an `Authorization: Bearer` header and
nothing else: no session cookie (so no CSRF to check), never a token in the
URL (URLs end up in logs and shell histories; such a request is refused).

Errors are JSON, `{"detail": "..."}` with the runtime's message: 400 bad
input, 401 no or bad token, 403 not for your role, 404 no such container,
image or event, 409 the container's state does not allow it, 503 the runtime
cannot be read.
"""
from __future__ import annotations

import logging
from functools import wraps
from typing import Literal

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from ninja import File, Form, NinjaAPI, Query, Router, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.files import UploadedFile
from ninja.parser import Parser
from ninja.security import HttpBearer

from runtime import Conflict, InvalidArgument, NotFound, TerrariumError
from runtime.errors import Forbidden
from runtime.agent_client import AccessDenied, AgentUnavailable

from dashboard.containers import selectors, services
from dashboard.containers.models import Container, OomEvent
from dashboard.containers.roles import CAN_AUDIT, CAN_OPERATE, CAN_VIEW, role_of
from dashboard.layers import selectors as layer_selectors
from dashboard.layers import services as layer_services
from dashboard.live import selectors as live_selectors
from dashboard.oom import selectors as oom_selectors

from . import schemas as s
from . import tokens

log = logging.getLogger(__name__)

# Query parameters that would carry a token in the URL: refused, whatever else the request holds.
URL_TOKEN_NAMES = {"token", "access_token", "api_key", "apikey", "key", "bearer", "authorization"}


class TokenAuth(HttpBearer):
    """`Authorization: Bearer trm_...`; the user must be active (checked on every request)."""

    def __call__(self, request: HttpRequest):
        for key, values in request.GET.lists():
            if key.lower() in URL_TOKEN_NAMES or any(v.startswith(tokens.PREFIX) for v in values):
                raise HttpError(400, "API tokens go in the Authorization header (Bearer), never in a "
                                     "URL: URLs are logged and kept in histories")
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, token: str):
        user = tokens.token_user(token.strip())
        if user is not None:
            request.user = user          # for the request log and anything reading request.user
        return user


class ObjectParser(Parser):
    """Bodies are JSON objects: a list or null is refused (400), not read as "all defaults"
    (which, for PUT .../limits, would lift every limit)."""

    def parse_body(self, request):
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data


def _docs_access(view):
    """The OpenAPI document and the docs page: for a token, or a logged-in session
    (read-only pages; the browser is sent to log in)."""
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.headers.get("Authorization"):
            try:
                ok = bool(TokenAuth()(request))
            except HttpError as e:
                return JsonResponse({"detail": str(e)}, status=e.status_code)
            if not ok:
                return _unauthorized()
        elif not request.user.is_authenticated:
            if request.path == reverse("api:openapi-json"):
                return _unauthorized()
            return redirect(f"{reverse('login')}?next={request.path}")
        return view(request, *args, **kwargs)
    return wrapper


def _unauthorized():
    r = JsonResponse({"detail": "an API token is needed, in an \"Authorization: Bearer <token>\" header; "
                                "make one on /account/tokens/"}, status=401)
    r["WWW-Authenticate"] = 'Bearer realm="terrarium"'
    return r


class TerrariumAPI(NinjaAPI):
    def _get_urls(self):
        # The site's LoginRequiredMiddleware would send API clients to the login
        # page: the API authenticates its own requests (TokenAuth, _docs_access).
        urls = super()._get_urls()
        for pattern in urls:
            login_not_required(pattern.callback)
        return urls


api = TerrariumAPI(
    title="Terrarium API", version="1",
    description=__doc__.split("\n\n", 1)[1], auth=TokenAuth(), urls_namespace="api",
    docs_decorator=_docs_access, parser=ObjectParser(),
)


# ------------------------------------------------------------------- errors
def _error(request, status: int, detail: str, **extra):
    response = api.create_response(request, {"detail": detail, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="terrarium"'
    return response


@api.exception_handler(AuthenticationError)
def _on_unauthenticated(request, exc):
    return _unauthorized()


@api.exception_handler(ValidationError)
def _on_invalid(request, exc):
    parts = []
    for err in exc.errors:
        where = ".".join(str(x) for x in err.get("loc", ())[1:] if x not in ("body", "payload"))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors]
    return _error(request, 400, "; ".join(parts) or "invalid input", errors=errors)


@api.exception_handler(Http404)
def _on_404(request, exc):
    return _error(request, 404, str(exc) or "not found")


@api.exception_handler(Exception)
def _on_bug(request, exc):
    log.exception("API %s %s failed", request.method, request.path)
    return _error(request, 500, f"internal error: {type(exc).__name__}")


def _status_of(exc: BaseException | None, default: int) -> int:
    """The HTTP status for a runtime error (a ServiceError's cause)."""
    for kind, status in ((NotFound, 404), (InvalidArgument, 400), (Conflict, 409),
                         (AccessDenied, 403), (Forbidden, 403), (AgentUnavailable, 503)):
        if isinstance(exc, kind):
            return status
    return default


def _failed(e: Exception, default: int = 409) -> HttpError:
    return HttpError(_status_of(e.__cause__ or e.__context__, default), str(e))


# -------------------------------------------------------------------- roles
def _may(request, perm: str, *, action: str = "", ref: str = "") -> None:
    """403 unless the token's user holds perm; a refused action is audited."""
    if request.auth.has_perm(perm):
        return
    if action:
        services.audit_denied(user=request.auth, action=action, container_id=ref)
    need = {CAN_VIEW: "viewer", CAN_OPERATE: "operator", CAN_AUDIT: "administrator"}[perm]
    raise HttpError(403, f"not allowed for your role ({role_of(request.auth) or 'none'}): needs {need}")


def _refresh() -> None:
    try:
        services.containers_refresh()
    except (TerrariumError, OSError) as e:
        raise HttpError(503, f"could not read the runtime's state: {e}") from None


def _container(ref: str) -> Container:
    """A container by id, name or unique id prefix; the mirror is brought in step once if needed."""
    row = selectors.container_find(ref=ref)
    if row is None:
        _refresh()
        row = selectors.container_find(ref=ref)
    if row is None:
        raise HttpError(404, f"container {ref[:64]!r} not found")
    return row


# --------------------------------------------------------------- serialisers
def _limits(c: Container) -> dict:
    return {"memory": c.memory_limit, "memory_swap": c.memory_swap_limit, "cpus": c.cpus_limit,
            "pids": c.pids_limit}


def _env(env, user) -> list[dict]:
    return [{"name": n, "value": v} for n, v in selectors.env_entries(env=env, user=user)]


def _summary(c: Container, user) -> dict:
    return {"id": c.id, "name": c.name, "image": c.image, "status": c.status, "pid": c.pid,
            "exit_code": c.exit_code, "oom_killed": c.oom_killed, "created_at": c.created_at,
            "started_at": c.started_at, "finished_at": c.finished_at, "limits": _limits(c),
            "actions": list(selectors.container_actions(container=c, user=user))}


def _detail(c: Container, user) -> dict:
    layers = []
    for entry in selectors.container_layers(container=c):
        meta = entry["layer"]
        layers.append({"position": entry["position"], "path": entry["path"],
                       "digest": meta.digest if meta else None, "size": meta.size if meta else None,
                       "files": meta.files if meta else None})
    return {**_summary(c, user), "cmd": c.cmd, "env": _env(c.env, user), "hostname": c.hostname,
            "workdir": c.workdir, "shim_pid": c.shim_pid, "error": c.error,
            "restart_count": c.restart_count, "cgroup": c.cgroup, "namespaces": c.namespaces,
            "layers": layers, "upperdir": c.upperdir,
            "seccomp": selectors.container_seccomp(container_id=c.id), "lifecycle": c.lifecycle or {}}


def _after(request, container_id: str) -> dict:
    row = selectors.container_get(container_id=container_id)
    if row is None:                        # the mirror missed it: read the runtime
        row = services.container_refresh(container_id=container_id)
    if row is None:
        raise HttpError(404, f"container {container_id[:12]} is gone")
    return _detail(row, request.auth)


def _ref(c) -> dict:
    """A container as {id, name, status}, from a mirror row, a runtime record or a dict."""
    get = c.get if isinstance(c, dict) else (lambda k: getattr(c, k))
    return {"id": get("id"), "name": get("name"), "status": get("status")}


# -------------------------------------------------------------- containers
containers = Router(tags=["containers"])
E = {400: s.ValidationFailure, 401: s.Error, 403: s.Error, 404: s.Error, 409: s.Error, 503: s.Error}


@containers.get("", response={200: list[s.ContainerOut], **E}, summary="List containers")
def container_list(request):
    _may(request, CAN_VIEW)
    _refresh()
    return [_summary(c, request.auth) for c in selectors.container_list()]


@containers.post("", response={201: s.ContainerDetail, **E}, summary="Create (and maybe start) a container")
def container_create(request, body: s.ContainerIn):
    _may(request, CAN_OPERATE, action="create")
    try:
        c = services.container_create(
            user=request.auth, image=body.image, name=body.name, cmd=body.cmd, env=body.env,
            hostname=body.hostname, memory=body.memory, cpus=body.cpus, pids=body.pids,
            seccomp=body.seccomp, setuid=body.setuid, start=body.start, restart=body.restart,
            mounts=[*body.volumes, *body.tmpfs], read_only=body.read_only)
    except services.ServiceError as e:
        raise _failed(e) from None
    return Status(201, _after(request, c.id))


@containers.get("/{ref}", response={200: s.ContainerDetail, **E}, summary="One container, as its page shows it")
def container_detail(request, ref: str):
    _may(request, CAN_VIEW)
    _refresh()
    return _detail(_container(ref), request.auth)


@containers.delete("/{ref}", response={204: None, **E}, summary="Remove a container (not running)")
def container_remove(request, ref: str):
    _may(request, CAN_OPERATE, action="remove", ref=ref)
    c = _container(ref)
    try:
        services.container_remove(user=request.auth, container_id=c.id)
    except services.ServiceError as e:
        raise _failed(e) from None
    return Status(204, None)


@containers.put("/{ref}/limits", response={200: s.ContainerDetail, **E},
                summary="Replace its limits (a missing one: unlimited)")
def container_limits(request, ref: str, body: s.LimitsIn):
    _may(request, CAN_OPERATE, action="update", ref=ref)
    c = _container(ref)
    try:
        services.container_update_limits(user=request.auth, container_id=c.id, memory=body.memory,
                                          cpus=body.cpus, pids=body.pids)
    except services.ServiceError as e:
        raise _failed(e) from None
    return _after(request, c.id)


LOG_JSON_BYTES = 1 << 20         # of a JSON answer; format=text streams any size


@containers.get("/{ref}/logs", response={200: s.LogsOut, **E},
                summary="Its log, filtered as the logs page and `terrarium logs` filter it",
                openapi_extra={"responses": {200: {"content": {"text/plain": {"schema": {
                    "type": "string",
                    "description": "format=text: the filtered log, streamed at the client's pace"}}}}}})
def container_logs(request, ref: str,
                   tail: str = Query("", description="the last N lines of the log (counted before the "
                                                     "filters, as `terrarium logs --tail`), or all; "
                                                     "default 50 (JSON) or all (text)"),
                   lines: int | None = Query(None, ge=1, le=100_000, description="the same as tail (older name)"),
                   stream: Literal["", "stdout", "stderr"] = Query("", description="one stream; empty: both"),
                   q: str = Query("", description="only lines holding this text, ignoring case"),
                   since: str = Query("", description="from this time: 2026-11-30T20:00:00Z, a unix time "
                                                      "or a duration back from now (10m)"),
                   until: str = Query("", description="before this time (same forms as since)"),
                   timestamps: bool = Query(False, description="each line led by its record time"),
                   format: Literal["json", "text"] = Query(  # noqa: A002 - the query parameter's name
                       "json", description=f"json: the text in a JSON object (at most {LOG_JSON_BYTES >> 20} "
                                           "MiB, then truncated); text: a text/plain download of any size")):
    from dashboard.containers.logviews import log_download, log_query
    _may(request, CAN_VIEW)
    c = _container(ref)
    query = {"stream": stream, "q": q, "since": since, "until": until, "tail": tail or (str(lines) if lines else ""),
             "timestamps": "1" if timestamps else ""}
    try:
        filters = log_query(query, tail_default=None if format == "text" else 50)
    except TerrariumError as e:
        raise HttpError(400, str(e)) from None
    if format == "text":
        return log_download(c, filters)
    out, size, truncated = [], 0, False
    gen = selectors.container_log_lines(container_id=c.id, **filters)
    try:
        for chunk in gen:
            if size + len(chunk) > LOG_JSON_BYTES:
                out.append(chunk[:LOG_JSON_BYTES - size])
                truncated = True
                break
            out.append(chunk)
            size += len(chunk)
    except (TerrariumError, OSError) as e:
        raise _failed(e, 404) from None
    finally:
        gen.close()
    return {"container_id": c.id, "lines": filters["tail"], "truncated": truncated,
            "text": b"".join(out).decode("utf-8", "replace")}


TERMINAL_DOC = """A shell in the running container, over a **websocket** at this path
(`ws://HOST/api/containers/{ref}/terminal?rows=24&cols=80`), for operators and
administrators; every session is audited (who, container, shell, size, start,
end, duration, exit code), as the page's terminal is.  The token goes in the
upgrade request's `Authorization: Bearer` header, never in the URL (closed
with 4400).

Client → server, JSON text: `{"input": "ls\\r"}`, `{"resize": [cols, rows]}`,
`{"ack": n}` (n more output bytes consumed: at most TERRARIUM_TERMINAL_WINDOW
bytes are sent ahead of the acknowledgements).
Server → client: the output as binary frames; JSON text
`{"type": "terminal.ready", "rows", "cols", "container"}`,
`{"type": "terminal.exit", "code"}`, `{"type": "terminal.error", "message"}`.

Close codes: 1000 the shell exited, 4400 token in the URL, 4401 no or bad
token (or revoked since), 4403 not an operator, 4404 no such container, 4409
not running or no shell, 4429 too many terminals open.  A plain GET (no
upgrade) gets 426.

    websocat -H 'Authorization: Bearer trm_...' ws://127.0.0.1:8000/api/containers/web/terminal
"""


@containers.get("/{ref}/terminal", response={426: s.Error, **E}, summary="The web terminal (a websocket)",
                description=TERMINAL_DOC,
                openapi_extra={"responses": {101: {"description": "Switching Protocols: the terminal's "
                                                                  "websocket (see above)"}}})
def container_terminal(request, ref: str):
    _may(request, CAN_OPERATE)
    c = _container(ref)
    return Status(426, {"detail": f"the terminal is a websocket: connect to ws://{request.get_host()}"
                                  f"/api/containers/{c.name or c.id}/terminal with the same Authorization "
                                  "header"})


@containers.get("/{ref}/diff", response={200: s.DiffOut, **E},
                summary="What changed in its writable layer")
def container_diff(request, ref: str):
    _may(request, CAN_VIEW)
    c = _container(ref)
    try:
        d = layer_selectors.container_changes(container_id=c.id)
    except layer_selectors.LayerError as e:
        raise _failed(e, 409) from None
    return {"container_id": c.id, "status": d["status"], "upper_bytes": d["upper"]["bytes"],
            "upper_files": d["upper"]["files"], "counts": d["counts"], "total": d["total"],
            "truncated": d["truncated"],
            "changes": [{**{k: v for k, v in ch.items() if k != "from"}, "from_layer": ch["from"]}
                        for ch in d["changes"]]}


@containers.post("/{ref}/commit", response={201: s.CommitOut, **E},
                 summary="Its writable layer as the top of a new image")
def container_commit(request, ref: str, body: s.CommitIn):
    _may(request, CAN_OPERATE, action="commit", ref=ref)
    c = _container(ref)
    try:
        image = layer_services.container_commit(user=request.auth, container_id=c.id,
                                                image_name=body.image, message=body.message,
                                                replace=body.replace)
    except layer_services.ServiceError as e:
        raise _failed(e) from None
    return Status(201, {"image": image.name, "layer": image.layers[-1].digest})


Action = Literal["start", "stop", "restart", "kill", "pause", "resume"]


# Last among the container routes: its {action} would take /limits, /logs... for itself.
@containers.post("/{ref}/{action}", response={200: s.ContainerDetail, **E},
                 summary="start, stop, restart, kill, pause or resume")
def container_action(request, ref: str, action: Action):
    _may(request, CAN_OPERATE, action=action, ref=ref)
    c = _container(ref)
    try:
        services.ACTIONS[action](user=request.auth, container_id=c.id)
    except services.ServiceError as e:
        raise _failed(e) from None
    return _after(request, c.id)


# ------------------------------------------------------------------ images
images = Router(tags=["images"])


def _images_synced():
    try:
        services.images_sync()
        services.containers_refresh()
    except (TerrariumError, OSError) as e:
        raise HttpError(503, f"could not read the image store: {e}") from None


@images.get("", response={200: list[s.ImageOut], **E}, summary="List images")
def image_list(request):
    _may(request, CAN_VIEW)
    _images_synced()
    return [{"name": i.name, "created": i.created, "cmd": i.cmd, "env": _env(i.env, request.auth),
             "workdir": i.workdir, "size": i.total_size,
             "layers": [{"digest": il.layer.digest, "size": il.layer.size, "files": il.layer.files,
                         "created_by": il.layer.created_by} for il in i.imagelayer_set.all()],
             "containers": [_ref(c) for c in i.containers]} for i in selectors.image_list()]


@images.post("/import", response={201: s.ImportOut, **E, 413: s.Error, 507: s.Error},
             summary="Import a docker save or OCI archive (multipart, field \"archive\")")
def image_import(request, archive: UploadedFile = File(...), name: str = Form(""),
                 replace: bool = Form(False, description="move a name that already names an image "
                                                         "(refused with 409 otherwise)")):
    _may(request, CAN_OPERATE, action="image-import")
    try:
        loaded = layer_services.image_import(user=request.auth, upload=archive, name=name.strip(),
                                             replace=replace)
    except layer_services.ServiceError as e:
        raise _failed(e, 400) from None
    return Status(201, {"images": [i.name for i in loaded]})


@images.post("/gc", response={200: s.GcOut, **E}, summary="Remove the layers nothing uses")
def images_gc(request):
    _may(request, CAN_OPERATE, action="image-gc")
    try:
        return {"removed": layer_services.images_gc(user=request.auth)}
    except layer_services.ServiceError as e:
        raise _failed(e) from None


@images.get("/{path:name}/export", response=E, summary="The image as an OCI layout tar",
            openapi_extra={"responses": {"200": {"description": "an OCI layout tar", "content": {
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}}})
def image_export(request, name: str):
    _may(request, CAN_OPERATE)
    try:
        f = layer_services.image_export(user=request.auth, name=name)
    except layer_services.ServiceError as e:
        raise _failed(e, 404) from None
    filename = name.replace("/", "_").replace(":", "_") + ".oci.tar"
    return FileResponse(f, as_attachment=True, filename=filename, content_type="application/x-tar")


@images.get("/{path:name}", response={200: s.ImageDetail, **E},
            summary="Layer stack, config, history, disk use alone vs shared")
def image_detail(request, name: str):
    _may(request, CAN_VIEW)
    try:
        d = layer_selectors.image_detail(name=name)
    except layer_selectors.LayerError as e:
        raise _failed(e, 404) from None
    image = d["image"]
    return {"name": image.name, "created": image.created or None, "cmd": list(image.config.cmd),
            "env": _env(image.config.env, request.auth), "workdir": image.config.workdir,
            "stack": [{"index": e["index"], "digest": e["layer"].digest, "size": e["layer"].size,
                       "files": e["layer"].files, "history": e["history"], "other_images": e["other_images"],
                       "containers": [_ref(c) for c in e["containers"]]} for e in d["stack"]],
            "alone": d["alone"], "shared": d["shared"], "total": d["total"],
            "containers": [_ref(c) for c in d["containers"]]}


@images.delete("/{path:name}", response={204: None, **E}, summary="Remove an image (its layers stay until a GC)")
def image_remove(request, name: str, force: bool = Query(False, description="even while containers use it")):
    _may(request, CAN_OPERATE, action="image-remove")
    try:
        layer_services.image_remove(user=request.auth, name=name, force=force)
    except layer_services.ServiceError as e:
        raise _failed(e) from None
    return Status(204, None)


# ------------------------------------------------------------------ records
records = Router(tags=["audit and OOM kills"])


@records.get("/audit", response={200: list[s.AuditOut], **E}, summary="The audit log, newest first")
def audit_list(request, q: str = "", limit: int = Query(500, ge=1, le=5000)):
    _may(request, CAN_AUDIT)
    rows, _note = selectors.audit_list(query=q.strip(), limit=limit)
    return rows


def _oom(ev: OomEvent) -> dict:
    return {**{f.attname: getattr(ev, f.attname) for f in OomEvent._meta.concrete_fields},
            "container_id": ev.container_key}


@records.get("/oom", response={200: list[s.OomOut], **E}, summary="OOM kills, newest first")
def oom_list(request, container: str = Query("", description="a name or an id prefix"),
             scope: Literal["", "container", "host"] = "", since: Literal["", "1h", "24h", "7d"] = "",
             limit: int = Query(500, ge=1, le=5000)):
    _may(request, CAN_VIEW)
    return [_oom(ev) for ev in oom_selectors.oom_event_list(container=container.strip(), scope=scope,
                                                            since=since, limit=limit)]


@records.get("/oom/{int:event_id}", response={200: s.OomDetail, **E},
             summary="One OOM kill: the kernel's lines, the memory record and process tree before it")
def oom_detail(request, event_id: int):
    _may(request, CAN_VIEW)
    ev = oom_selectors.oom_event_get(event_id=event_id)
    if ev is None:
        raise HttpError(404, f"no OOM event {event_id}")
    return _oom(ev)


host = Router(tags=["host"])


@host.get("/processes", response={200: list[s.HostProcess], **E},
          summary="The host's process tree (command lines for operators)")
def host_processes(request):
    _may(request, CAN_VIEW)
    full = request.auth.has_perm(CAN_OPERATE)
    rows = live_selectors.host_process_rows(with_cmdline=full)
    return [{"depth": r.depth, "pid": r.info.pid, "ppid": r.info.ppid, "ns_pids": list(r.info.ns_pids),
             "user": r.info.user, "state": r.info.state, "comm": r.info.comm,
             "cmdline": list(r.info.cmdline) if full else None, "rss": r.info.rss,
             "threads": r.info.threads, "role": r.role, "container_id": r.container[0] if r.container else None,
             "container_name": r.container[1] if r.container else None} for r in rows]


@host.get("/namespaces", response={200: list[s.HostNamespace], **E},
          summary="Every namespace, as lsns (commands: only the program for viewers)")
def host_namespaces(request):
    _may(request, CAN_VIEW)
    rows = live_selectors.host_namespace_rows(with_cmdline=request.auth.has_perm(CAN_OPERATE))
    return [{"type": r.ns.type, "inode": r.ns.inode, "nprocs": r.ns.nprocs, "pid": r.ns.pid,
             "command": r.ns.command, "container_id": r.ns.container, "container_name": r.container_name}
            for r in rows]


@records.get("/me", response={200: s.Me, **E}, summary="Whose token this is, and their role")
def me(request):
    user = request.auth
    return {"username": user.username, "role": role_of(user), "can_operate": user.has_perm(CAN_OPERATE),
            "can_audit": user.has_perm(CAN_AUDIT)}


api.add_router("/containers", containers)
api.add_router("/images", images)
api.add_router("/host", host)
api.add_router("", records)

@login_not_required
def not_found(request, rest=""):
    """Any other /api/ URL: a JSON 404, not the site's HTML page."""
    return JsonResponse({"detail": f"no API route {request.path}"}, status=404)
