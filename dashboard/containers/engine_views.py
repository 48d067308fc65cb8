"""Pages of other owners' containers (dashboard/containers/engines.py): the
detail page, the list row and the detail head for live updates, and the
actions through the owner's engine.  Thin, as views.py."""
import datetime as dt
import time

from django.contrib import messages
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from runtime.discovery import CONTROLS

from . import engines
from .forms import LimitsForm
from .views import _back, _wants_json, can_view, operates


def _with_api(key):
    """The container, if its owner has an API to read logs or run a shell through; else 404."""
    found = _found_or_404(key)
    if not engines.has_api(found):
        raise Http404(f"{found.engine} container {found.name}: no API here ({found.owner_note})")
    return found


@require_GET
@can_view
def engine_logs(request, container_id):
    """Its logs page (logs.html, read over ws/containers/<key>/logs/: the engine's
    logs API); for a source with none (systemd, a pod, a bare namespace) the same
    page says so and who owns it, with no log view (so no socket)."""
    from .logviews import logs_form
    taken_at = time.time()
    found = _found_or_404(container_id)
    if not engines.has_api(found):
        return render(request, "containers/logs.html", {**_context(request, found, taken_at), "no_logs": True})
    return render(request, "containers/logs.html", {**_context(request, found, taken_at), **logs_form(request.GET)})


@require_GET
@can_view
def engine_logs_download(request, container_id):
    """GET ?stream=&q=&since=&until=&timestamps=1, as logviews.container_logs_download."""
    import re

    from runtime import TerrariumError, logfilter

    from . import selectors
    from .logsocket import parse_time
    from .logviews import _in_threads
    found = _with_api(container_id)
    q = request.GET
    try:
        streams = logfilter.check_stream(q.get("stream") or None)
        grep = logfilter.check_grep(q.get("q") or None)
        since, until = parse_time(q.get("since"), "since"), parse_time(q.get("until"), "until")
    except TerrariumError as e:
        return HttpResponse(f"{e}\n", status=400, content_type="text/plain; charset=utf-8")
    lines = selectors.container_log_lines(container_id=found.key, since=since, until=until, streams=streams,
                                          grep=grep, timestamps=q.get("timestamps") == "1")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", found.name) or found.id[:12]
    response = StreamingHttpResponse(_in_threads(lines), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@operates("terminal")
def engine_terminal(request, container_id):
    """The web terminal's page (its socket: engine_terminal.EngineTerminalConsumer)."""
    return render(request, "containers/terminal.html", {"c": Shown(_with_api(container_id))})


class Shown:
    """A Found as the templates read it: ``id`` is its key (the URLs and the
    live socket), ``found`` the record."""

    def __init__(self, found):
        self.found, self.id = found, found.key
        self.name, self.engine, self.image, self.state = found.name, found.engine, found.image, found.state
        self.engine_name = engines.ENGINE_NAMES.get(found.engine, found.engine)
        self.created = (dt.datetime.fromtimestamp(found.created_at, dt.timezone.utc)
                        if found.created_at else None)
        self.labels = sorted(found.labels.items())
        self.namespaces = dict(found.namespaces)


def _found_or_404(key):
    found = engines.get(key=key)
    if found is None:
        raise Http404(f"no container {key[:60]} on this host")
    return found


def _context(request, found, taken_at: float | None = None) -> dict:
    """taken_at: when found was asked of its owner (the head says so; its
    socket is told to resync if a change was published after it)."""
    return {"c": Shown(found), "taken_at": taken_at, "actions": engines.actions(found=found, user=request.user),
            "limits_form": LimitsForm() if "update" in found.controls else None}


@require_GET
@can_view
def engine_detail(request, container_id):
    from .roles import CAN_OPERATE
    taken_at = time.time()
    found = _found_or_404(container_id)
    ctx = _context(request, found, taken_at)
    if not found.cgroup and found.pid:          # nothing to sample: its namespace's processes, now
        ctx["tree"] = engines.tree(key=found.key, with_cmdline=request.user.has_perm(CAN_OPERATE))
    return render(request, "containers/engine_detail.html", ctx)


@require_GET
@can_view
def engine_row(request, container_id):
    return render(request, "containers/_engine_row.html", _context(request, _found_or_404(container_id)))


@require_GET
@can_view
def engine_head(request, container_id):
    taken_at = time.time()
    return render(request, "containers/_engine_live.html", _context(request, _found_or_404(container_id), taken_at))


@require_POST
@operates()
def engine_action(request, container_id, action):
    """An action through the container's owner; JSON for fetch(), else redirect."""
    if action not in CONTROLS:
        raise Http404(f"no action {action!r}")
    try:
        engines.act(user=request.user, key=container_id, action=action)
    except engines.EngineError as e:
        ok, text = False, f"{action.capitalize()} failed: {e}"
    else:
        ok, text = True, f"{action.capitalize()}: done."
    if _wants_json(request):
        return JsonResponse({"ok": ok, "message": text}, status=200 if ok else 409)
    (messages.success if ok else messages.error)(request, text)
    default = reverse("containers:list") if action == "remove" and ok else \
        reverse("containers:engine-detail", args=[container_id])
    return _back(request, default)


@require_GET
@can_view
def engine_layers(request, container_id):
    found = _found_or_404(container_id)
    try:
        data, error = engines.layers(key=container_id), ""
    except engines.EngineError as e:
        data, error = None, str(e)
    lowers = list(enumerate(data["lower"]))[::-1] if data else []          # top first
    return render(request, "containers/engine_layers.html", {**_context(request, found),
                                                             "layers": data, "lowers": lowers,
                                                             "error": error})


@require_GET
@can_view
def engine_changes(request, container_id):
    """The writable layer's changes now, as JSON (static/layers/layers.js polls it)."""
    try:
        return JsonResponse(engines.layers(key=container_id))
    except engines.EngineError as e:
        return JsonResponse({"error": str(e)}, status=404)


@require_POST
@operates("update")
def engine_limits(request, container_id):
    """Live limits through the owner's engine (Docker's update); an empty field is left as it is."""
    form = LimitsForm(request.POST)
    if not form.is_valid():
        for field, errs in form.errors.items():
            messages.error(request, f"{form.fields[field].label}: {' '.join(errs)}")
    elif not any(v is not None for v in form.cleaned_data.values()):
        messages.error(request, "Give at least one limit.")
    else:
        try:
            engines.act(user=request.user, key=container_id, action="update", limits=form.cleaned_data)
            messages.success(request, "Limits updated.")
        except engines.EngineError as e:
            messages.error(request, f"Update failed: {e}")
    return redirect("containers:engine-detail", container_id=container_id)
