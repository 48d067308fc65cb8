"""OOM pages: the history with filters, and one card per kill."""
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.containers.views import can_view

from . import selectors


@require_GET
@can_view
def oom_list(request):
    f = {k: request.GET.get(k, "").strip() for k in ("container", "scope", "since")}
    return render(request, "oom/list.html", {
        "events": selectors.oom_event_list(**f), "filters": f,
        "names": selectors.oom_container_names(), "since_choices": list(selectors.SINCE_CHOICES)})


@require_GET
@can_view
def oom_detail(request, event_id: int):
    ev = selectors.oom_event_get(event_id=event_id)
    if ev is None:
        raise Http404("no such OOM event")
    return render(request, "oom/detail.html", {"ev": ev})
