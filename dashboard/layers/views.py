"""Thin views for layers and images: check permission, call a selector or a service."""
from django.contrib import messages
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from dashboard.containers.selectors import env_entries
from dashboard.containers.views import _wants_json, can_audit, can_view, operates

from . import selectors, services


def _answer(request, ok: bool, text: str, default: str, status: int = 409):
    """JSON for fetch()/XHR, else a message and a redirect."""
    if _wants_json(request):
        return JsonResponse({"ok": ok, "message": text}, status=200 if ok else status)
    (messages.success if ok else messages.error)(request, text)
    return redirect(default)


# ------------------------------------------------------------ containers
@require_GET
@can_view
def container_layers(request, container_id):
    try:
        stack = selectors.container_layer_stack(container_id=container_id)
    except selectors.LayerError as e:
        raise Http404(str(e)) from None
    return render(request, "layers/container.html", {
        **stack, "c": stack["container"],
        "mount": selectors.container_mount(container_id=container_id),
    })


@require_GET
@can_view
def container_changes(request, container_id):
    """The writable layer's changes as JSON (the page polls it)."""
    try:
        return JsonResponse(selectors.container_changes(container_id=container_id))
    except selectors.LayerError as e:
        return JsonResponse({"error": str(e)}, status=404)


@require_GET
@can_view
def container_origin(request, container_id):
    path = request.GET.get("path", "").strip()
    if not path.startswith("/"):
        return JsonResponse({"error": "give an absolute path, like /etc/passwd"}, status=400)
    if "\0" in path:
        return JsonResponse({"error": "the path contains a NUL byte"}, status=400)
    try:
        return JsonResponse(selectors.container_path_origin(container_id=container_id, path=path))
    except selectors.LayerError as e:
        return JsonResponse({"error": str(e)}, status=400)


@require_POST
@operates("commit")
def container_commit(request, container_id):
    image_name = request.POST.get("image", "").strip()
    here = reverse("layers:container", args=[container_id])
    if not image_name:
        return _answer(request, False, "Commit: give the new image a name.", here, 400)
    try:
        image = services.container_commit(user=request.user, container_id=container_id,
                                          image_name=image_name,
                                          message=request.POST.get("message", "").strip(),
                                          replace=request.POST.get("replace") == "on")
    except services.ServiceError as e:
        return _answer(request, False, f"Commit failed: {e}", here)
    return _answer(request, True, f"Committed: image {image.name}, new layer "
                   f"{image.layers[-1].digest[:19]}.{services.moved_note([image])}",
                   reverse("layers:image", args=[image.name]))


# ------------------------------------------------------------ images
@require_GET
@can_view
def image_detail(request, name):
    try:
        data = selectors.image_detail(name=name)
    except selectors.LayerError as e:
        raise Http404(str(e)) from None
    data["env"] = env_entries(env=data["image"].config.env, user=request.user)
    return render(request, "layers/image.html", data)


@require_GET
@operates("image-export")
def image_export(request, name):
    """A GET (a download link), but for operators: each export packs the whole
    image to disk, and hands over everything in it."""
    try:
        f = services.image_export(user=request.user, name=name)
    except services.ServiceError as e:
        raise Http404(str(e)) from None
    filename = name.replace("/", "_").replace(":", "_") + ".oci.tar"
    return FileResponse(f, as_attachment=True, filename=filename,
                        content_type="application/x-tar")


@require_POST
@operates("image-import")
def image_import(request):
    upload = request.FILES.get("archive")
    images = reverse("containers:images")
    if upload is None:
        return _answer(request, False, "Import: choose a file.", images, 400)
    try:
        loaded = services.image_import(user=request.user, upload=upload,
                                       name=request.POST.get("name", "").strip(),
                                       replace=request.POST.get("replace") == "on")
    except services.ServiceError as e:
        return _answer(request, False, f"Import refused: {e}", images, 400)
    names = ", ".join(i.name for i in loaded)
    return _answer(request, True, f"Imported {names}.{services.moved_note(loaded)}", images)


@require_POST
@operates("image-remove")
def image_remove(request, name):
    try:
        services.image_remove(user=request.user, name=name, force=request.POST.get("force") == "on")
    except services.ServiceError as e:
        return _answer(request, False, f"Remove refused: {e}", reverse("layers:image", args=[name]))
    return _answer(request, True, f"Removed image {name}; its layers stay until a GC.",
                   reverse("containers:images"))


@require_POST
@operates("image-gc")
def images_gc(request):
    try:
        removed = services.images_gc(user=request.user)
    except services.ServiceError as e:
        return _answer(request, False, f"GC failed: {e}", reverse("containers:images"))
    return _answer(request, True, f"GC removed {len(removed)} unused layer"
                   f"{'' if len(removed) == 1 else 's'}.", reverse("containers:images"))


# ------------------------------------------------------------ registries
@sensitive_post_parameters("password")
@never_cache
@can_audit
def registries(request):
    """Administrators: the registries Terrarium has credentials for (user
    names only), add or replace one (checked with the registry first), forget
    one.  The password goes straight to the runtime (the agent, in agent
    mode), which keeps it in the state root; it is in no log, audit entry or page."""
    page = reverse("layers:registries")
    if request.method == "POST":
        action = request.POST.get("action")
        server = request.POST.get("server", "").strip()
        try:
            if action == "login":
                done = services.registry_login(user=request.user, server=server,
                                               username=request.POST.get("username", "").strip(),
                                               password=request.POST.get("password", ""),
                                               insecure=request.POST.get("insecure") == "on")
                messages.success(request, f"Credentials for {done} checked with the registry and kept.")
            elif action == "logout":
                services.registry_logout(user=request.user, server=server)
                messages.success(request, f"Credentials for {server} removed.")
            else:
                messages.error(request, "Unknown action.")
        except services.ServiceError as e:
            messages.error(request, str(e))
        return redirect(page)
    logins, error = services.registry_logins()
    if error:
        messages.error(request, f"Could not read the registry credentials: {error}")
    return render(request, "layers/registries.html", {"logins": logins})
