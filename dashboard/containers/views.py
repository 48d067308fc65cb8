"""Thin views: check permission, call a selector or a service, render."""
import time
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runtime import TerrariumError

from . import selectors, services
from .forms import ContainerCreateForm, LimitsForm
from .roles import CAN_AUDIT, CAN_OPERATE, CAN_VIEW

can_view = permission_required(CAN_VIEW, raise_exception=True)
can_audit = permission_required(CAN_AUDIT, raise_exception=True)


def operates(action: str | None = None):
    """The view needs the operate permission.  A refused POST is written to
    the audit log as "denied", under `action` or else the URL's own <action>
    (start, stop, ...), so that who tried what shows beside who did what."""
    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.user.has_perm(CAN_OPERATE):
                return view(request, *args, **kwargs)
            if request.method == "POST" and request.user.is_authenticated:
                services.audit_denied(user=request.user, action=action or kwargs.get("action", view.__name__),
                                      container_id=kwargs.get("container_id", ""))
            raise PermissionDenied
        return wrapper
    return decorator


def _refreshed(view):
    """Bring the page's container (container_id) in step with the runtime before
    the page is drawn -- that one, not all of them (at 1,000 containers a
    full reconcile made every detail page cost a list of the runtime); report,
    never 500."""
    @wraps(view)
    def wrapper(request, container_id, *args, **kwargs):
        try:
            services.container_refresh(container_id=container_id)
        except (TerrariumError, OSError) as e:
            messages.error(request, f"Could not read the runtime's state: {e}")
        return view(request, container_id, *args, **kwargs)
    return wrapper


def _container_or_404(container_id, refresh=False):
    if refresh:
        container = services.container_refresh(container_id=container_id)
    else:
        container = selectors.container_get(container_id=container_id)
    if container is None:
        raise Http404(f"container {container_id[:12]} not found")
    return container


def _back(request, default):
    nxt = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return redirect(nxt)
    return redirect(default)


def stop_timeout(text: str) -> float:
    """Seconds a stop waits for SIGTERM to work before SIGKILL: 0 to 3600."""
    import re
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", text, re.ASCII) or float(text) > 3600:
        raise ValueError(f"invalid timeout {text[:20]!r}: seconds from 0 to 3600")
    return float(text)


def _wants_json(request) -> bool:
    return request.headers.get("X-Requested-With") == "fetch"


# ------------------------------------------------------------------ pages
@require_GET
@can_view
def container_list(request):
    """Ours (the mirror) and every other owner's (discovery, dashboard/containers/
    engines.py), each with its engine: searched, filtered, sorted and one page of
    them (dashboard/containers/listing.py; the URL holds the query).  The page's
    own fetches (X-Requested-With: fetch) get the parts that change, and skip
    the reconcile while the reconciler keeps the mirror in step."""
    from . import listing, reconciler
    query, notes = listing.parse(request.GET)
    partial = _wants_json(request)
    if not (partial and reconciler.in_step()):
        try:
            services.containers_refresh()
        except (TerrariumError, OSError) as e:
            notes.append(f"Could not read the runtime's state: {e}")
    context = selectors.container_page(query=query, user=request.user)
    if context["error"]:
        notes.append(f"Could not ask the container engines: {context['error']}")
    context.update(query=query, notes=notes, engine=query.engine or None,
                   page_sizes=listing.PAGE_SIZES, states=listing.STATES)
    return render(request, "containers/_list_body.html" if partial else "containers/list.html", context)


@require_GET
@can_view
def container_row(request, container_id):
    """One list row, for the live list to swap in."""
    c = _container_or_404(container_id, refresh=True)
    return render(request, "containers/_row.html",
                  {"c": c, "actions": selectors.container_actions(container=c, user=request.user)})


@require_GET
@can_view
@_refreshed
def container_detail(request, container_id):
    taken_at = time.time()          # before the row is read: a change published after it makes the page ask again
    c = _container_or_404(container_id)
    return render(request, "containers/detail.html", {
        "c": c, "taken_at": taken_at, "actions": selectors.container_actions(container=c, user=request.user),
        "layers": selectors.container_layers(container=c),
        "seccomp": selectors.container_seccomp(container_id=c.id),
        "net": selectors.container_network(container_id=c.id),
        "env": selectors.env_entries(env=c.env, user=request.user),
        "limits_form": LimitsForm(initial={
            "memory": f"{c.memory_limit // (1 << 20)}m" if c.memory_limit else "",
            "cpus": c.cpus_limit or "", "pids": c.pids_limit or ""}),
    })


@require_GET
@can_view
def container_head(request, container_id):
    """The detail page's state: its head (badge, buttons) and the cards that
    show the container's state, rendered from one fresh row, for live updates."""
    taken_at = time.time()
    c = _container_or_404(container_id, refresh=True)
    return render(request, "containers/_live.html", {
        "c": c, "taken_at": taken_at, "actions": selectors.container_actions(container=c, user=request.user),
        "seccomp": selectors.container_seccomp(container_id=c.id)})


@require_GET
@operates("terminal")
def container_terminal(request, container_id):
    """The web terminal's page (the shell itself is its socket's: terminal.py)."""
    c = _container_or_404(container_id, refresh=True)
    return render(request, "containers/terminal.html", {"c": c})


@require_http_methods(["GET", "POST"])
@operates("create")
def container_create(request):
    try:
        services.images_sync()
    except TerrariumError as e:
        messages.error(request, f"Could not read the image store: {e}")
    form = ContainerCreateForm(request.POST or None, image_choices=selectors.image_choices(),
                               network_choices=selectors.network_choices(user=request.user),
                               allow_binds=selectors.may_bind_mount(user=request.user))
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            c = services.container_create(
                user=request.user, image=d["image"], name=d["name"], cmd=d["command"], env=d["env"],
                hostname=d["hostname"], memory=d["memory"], cpus=d["cpus"], pids=d["pids"],
                seccomp=d["seccomp"], setuid=d["setuid"], start=d["start"],
                network=d["network"], ports=d["ports"], restart=d["restart"], healthcheck=d["healthcheck"],
                workdir=d["workdir"], memory_swap=d["memory_swap"], auto_remove=d["auto_remove"],
                mounts=d["mounts"], read_only=d["read_only"])
        except services.ServiceError as e:
            form.add_error(None, str(e))
        else:
            messages.success(request, f"Container {c.name} {'started' if d['start'] else 'created'}.")
            return redirect("containers:detail", container_id=c.id)
    return render(request, "containers/create.html", {"form": form})


@require_POST
@operates()
def container_action(request, container_id, action):
    """start/stop/kill/restart/pause/resume/remove; JSON for fetch(), else redirect."""
    service = services.ACTIONS.get(action)
    if service is None:
        raise Http404(f"no action {action!r}")
    kwargs, status = {}, 409
    try:
        if action in ("stop", "restart") and request.POST.get("timeout", "").strip():
            kwargs["timeout"] = stop_timeout(request.POST["timeout"])
        service(user=request.user, container_id=container_id, **kwargs)
    except ValueError as e:
        ok, text, status = False, f"{action.capitalize()} refused: {e}", 400
    except services.ServiceError as e:
        ok, text = False, f"{action.capitalize()} failed: {e}"
    else:
        ok, text = True, f"{action.capitalize()}: done."
    if _wants_json(request):
        return JsonResponse({"ok": ok, "message": text}, status=200 if ok else status)
    (messages.success if ok else messages.error)(request, text)
    default = reverse("containers:list") if action == "remove" and ok else \
        reverse("containers:detail", args=[container_id])
    return _back(request, default)


@require_POST
@operates()
def container_bulk(request, action):
    """Stop or remove the selected containers (POST id=... repeated): one
    result per container; JSON for fetch(), else a message and back to the list."""
    timeout = 10.0
    try:
        if action == "stop" and request.POST.get("timeout", "").strip():
            timeout = stop_timeout(request.POST["timeout"])
        results = services.containers_bulk(user=request.user, action=action,
                                           container_ids=request.POST.getlist("id"), timeout=timeout)
    except (ValueError, services.ServiceError) as e:
        text = f"{action.capitalize()} refused: {e}"
        if _wants_json(request):
            return JsonResponse({"ok": False, "message": text, "results": []}, status=400)
        messages.error(request, text)
        return _back(request, reverse("containers:list"))
    failed = [r for r in results if not r["ok"]]
    text = f"{action.capitalize()}: {len(results) - len(failed)} of {len(results)} done."
    if failed:
        text += " Failed: " + "; ".join(f"{r['name']}: {r['message']}" for r in failed[:10])
        text += f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
    if _wants_json(request):
        return JsonResponse({"ok": not failed and bool(results), "message": text, "results": results})
    (messages.error if failed or not results else messages.success)(request, text)
    return _back(request, reverse("containers:list"))


@require_POST
@operates("update")
def container_limits(request, container_id):
    form = LimitsForm(request.POST)
    if not form.is_valid():
        for field, errs in form.errors.items():
            messages.error(request, f"{form.fields[field].label}: {' '.join(errs)}")
    else:
        try:
            services.container_update_limits(user=request.user, container_id=container_id,
                                             **form.cleaned_data)
            messages.success(request, "Limits updated.")
        except services.ServiceError as e:
            messages.error(request, f"Update failed: {e}")
    return redirect("containers:detail", container_id=container_id)


@require_GET
@can_view
def image_list(request):
    try:
        services.images_sync()
        services.containers_refresh()
    except TerrariumError as e:
        messages.error(request, f"Could not read the image store: {e}")
    dangling, dangling_error = selectors.dangling_images()
    return render(request, "containers/images.html", {"images": selectors.image_list(), "dangling": dangling,
                                                      "dangling_error": dangling_error})


@require_GET
@can_view
def network_list(request):
    networks, error = selectors.network_list()
    if error:
        messages.error(request, f"Could not read the networks: {error}")
    return render(request, "containers/networks.html", {"networks": networks})


@require_GET
@can_view
def volume_list(request):
    volumes, error = selectors.volume_list()
    if error:
        messages.error(request, f"Could not read the volumes: {error}")
    return render(request, "containers/volumes.html", {"volumes": volumes})


@require_POST
@operates("volume-create")
def volume_create(request):
    name = request.POST.get("name", "").strip()
    try:
        vol = services.volume_create(user=request.user, name=name)
    except services.ServiceError as e:
        messages.error(request, f"Create refused: {e}")
    else:
        messages.success(request, f"Volume {vol['name']} created.")
    return redirect("containers:volumes")


@require_POST
@operates("volume-remove")
def volume_remove(request, name):
    try:
        services.volume_remove(user=request.user, name=name)
    except services.ServiceError as e:
        messages.error(request, f"Remove refused: {e}")
    else:
        messages.success(request, f"Volume {name} removed.")
    return redirect("containers:volumes")


@require_GET
@can_audit
def audit_list(request):
    q = request.GET.get("q", "").strip()
    entries, note = selectors.audit_list(query=q)
    return render(request, "containers/audit.html", {"entries": entries, "q": q, "note": note})
