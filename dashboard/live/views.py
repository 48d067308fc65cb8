"""Host pages (namespaces like lsns, cgroups like systemd-cgtop), the
detail page's down-sampled history and Prometheus' /metrics.  Read-only; each
page polls its own fragment every 2 s (the reads behind it are shared, at most
one a second)."""
import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_safe

from dashboard.containers.roles import CAN_OPERATE
from dashboard.containers.views import can_view

from . import exporter, selectors

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


# --- /metrics ----------------------------------------------------------------

def metrics_allowed(request) -> int:
    """Who may scrape: the status a request gets.  A session never counts
    (/metrics is for machines).

    - a token is configured (TERRARIUM_METRICS_TOKEN or the metrics_token
      file): ``Authorization: Bearer <token>`` -> 200, anything else -> 401,
      from loopback too;
    - no token, TERRARIUM_METRICS_ALLOW_LOCAL=1: a loopback client -> 200,
      any other -> 404;
    - neither: 404 (the endpoint is off, as if it did not exist)."""
    token = getattr(settings, "TERRARIUM_METRICS_TOKEN", None)
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
        return 200 if ok else 401
    if getattr(settings, "TERRARIUM_METRICS_ALLOW_LOCAL", False) and _loopback(request.META.get("REMOTE_ADDR")):
        return 200
    return 404


def _loopback(addr: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@login_not_required
@require_safe
def metrics(request):
    """The running containers' figures in Prometheus' format (dashboard/live/exporter.py)."""
    status = metrics_allowed(request)
    if status == 404:
        raise Http404("/metrics is off: set TERRARIUM_METRICS_TOKEN (or TERRARIUM_METRICS_ALLOW_LOCAL=1)")
    if status == 401:
        response = HttpResponse("a bearer token is required for /metrics\n", status=401,
                                content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="terrarium-metrics"'
        return response
    body, content_type = exporter.render(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)
