"""Host pages (namespaces like lsns, cgroups like systemd-cgtop) and the
detail page's down-sampled history.  Read-only; each page polls its own
fragment every 2 s (the reads behind it are shared, at most one a second)."""
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.containers.roles import CAN_OPERATE
from dashboard.containers.views import can_view

from . import selectors

REFRESH_MS = 2000


def _page(request, template: str, fragment: str, context: dict):
    """The whole page, or only its live part with ?fragment=1."""
    context["refresh_ms"] = REFRESH_MS
    return render(request, fragment if request.GET.get("fragment") else template, context)


@require_GET
@can_view
def host_namespaces(request):
    """Command lines (passwords, tokens) only for operators; viewers see every figure."""
    full = request.user.has_perm(CAN_OPERATE)
    return _page(request, "live/host_namespaces.html", "live/_host_namespaces.html", {
        "namespaces": selectors.host_namespace_rows(with_cmdline=full),
        "processes": selectors.host_process_rows(with_cmdline=full), "cmdlines_hidden": not full})


@require_GET
@can_view
def host_cgroups(request):
    return _page(request, "live/host_cgroups.html", "live/_host_cgroups.html",
                 {"hierarchies": selectors.host_cgroup_rows()})


@require_GET
@can_view
def container_history(request, container_id):
    return JsonResponse(selectors.container_history(container_id=container_id))
