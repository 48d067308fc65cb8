"""OOM pages: the history with filters, and one card per kill."""
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.containers import services
from dashboard.containers.views import can_view
from runtime import TerrariumError

from . import memrecord, selectors


def swap_notes() -> list[dict]:
    """Containers that reached their limit and were swapped instead of killed,
    as the in-process watcher's memory record saw them (memrecord.swap_verdict)."""
    from . import watcher
    w = watcher.current()
    rec = w.recorder if w is not None else None
    return sorted(rec.verdicts.values(), key=lambda v: -v["t"]) if rec else []


@require_GET
@can_view
def oom_list(request):
    f = {k: request.GET.get(k, "").strip() for k in ("container", "scope", "since")}
    notes = [n for n in swap_notes() if not f["container"] or n.get("container_name") == f["container"]]
    return render(request, "oom/list.html", {
        "events": selectors.oom_event_list(**f), "filters": f, "swap_notes": notes,
        "names": selectors.oom_container_names(), "since_choices": list(selectors.SINCE_CHOICES)})


@require_GET
@can_view
def oom_detail(request, event_id: int):
    ev = selectors.oom_event_get(event_id=event_id)
    if ev is None:
        raise Http404("no such OOM event")
    if ev.container_key and not ev.is_init:          # what became of it: from its state now
        try:
            services.container_refresh(container_id=ev.container_key)
        except TerrariumError:
            pass                                     # the page says what the mirror knows
        ev = selectors.oom_event_get(event_id=event_id) or ev
    aftermath, aftermath_text = selectors.oom_aftermath(ev)
    tree = (ev.procs_before or {}).get("tree") or []
    rows = list(memrecord.walk_json(tree))
    victim_in_tree = any(n.get("victim") for _, n in rows)
    window = ev.memory_window or {}
    graph = None
    if window.get("points"):
        graph = {"kill_t": window.get("kill_t"), "limit": window.get("limit"),
                 "points": window["points"]}
    return render(request, "oom/detail.html", {
        "ev": ev, "aftermath": aftermath, "aftermath_text": aftermath_text,
        "tree_rows": rows, "victim_in_tree": victim_in_tree, "graph": graph,
        "tree_age_ms": (round((window.get("kill_t", 0) - ev.procs_before["t"]) * 1000)
                        if ev.procs_before and ev.procs_before.get("t") and window.get("kill_t") else None)})
