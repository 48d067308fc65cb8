"""The logs page of a container and the download of its (filtered) log.

The page's lines come over its websocket (logsocket.py); these views draw
the page and send the whole log, filtered as the page filters it: stream,
search (only matching lines), since/until, with or without times."""
import asyncio
import re
import time

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runtime import TerrariumError, logfilter

from . import selectors
from .logsocket import DEFAULT_TAIL, parse_tail, parse_time
from .views import _container_or_404, _refreshed, can_view

TAILS = (100, 1000, 10000)


@require_GET
@can_view
@_refreshed
def container_logs(request, container_id):
    taken_at = time.time()
    c = _container_or_404(container_id)
    return render(request, "containers/logs.html", {
        "c": c, "taken_at": taken_at, "actions": selectors.container_actions(container=c, user=request.user),
        **logs_form(request.GET)})


def logs_form(q) -> dict:
    """The logs page's form as the query string fills it in (ours and another engine's container)."""
    return {"tails": TAILS, "tail": q.get("tail", str(DEFAULT_TAIL)), "since": q.get("since", ""),
            "until": q.get("until", ""), "search": q.get("q", "")}


def log_query(q, *, tail_default: int | None = None) -> dict:
    """The filters of a log request (the download, the API's logs): stream=stdout|stderr,
    q=TEXT (only lines holding it, any case), since=/until= (as `terrarium logs`
    takes them), tail=N|all (counted before the filter), timestamps=1|true; the
    keyword arguments of selectors.container_log_lines.  TerrariumError if one is bad."""
    return {"streams": logfilter.check_stream(q.get("stream") or None),
            "grep": logfilter.check_grep(q.get("q") or None),
            "since": parse_time(q.get("since"), "since"), "until": parse_time(q.get("until"), "until"),
            "tail": parse_tail(q.get("tail", ""), tail_default),
            "timestamps": (q.get("timestamps") or "").lower() in ("1", "true", "on", "yes")}


def log_download(container, filters: dict) -> StreamingHttpResponse:
    """The filtered log as a text file, streamed: each chunk is read from the
    runtime only when the last one has left (dashboard/serve.py holds Daphne
    to the client's pace), so a slow reader costs bounded memory."""
    lines = selectors.container_log_lines(container_id=container.id, **filters)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", container.name) or container.id[:12]
    response = StreamingHttpResponse(_in_threads(lines), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@can_view
def container_logs_download(request, container_id):
    """GET ?stream=stdout|stderr&q=TEXT&since=&until=&tail=&timestamps=1: a text file."""
    c = _container_or_404(container_id, refresh=True)
    try:
        filters = log_query(request.GET)
    except TerrariumError as e:
        return HttpResponse(f"{e}\n", status=400, content_type="text/plain; charset=utf-8")
    return log_download(c, filters)


async def _in_threads(gen):
    """A blocking generator as an async one (each step in a worker thread), so
    the ASGI handler streams it rather than reading it all into memory first;
    closed if the download is abandoned."""
    done = object()
    try:
        while True:
            chunk = await asyncio.to_thread(next, gen, done)
            if chunk is done:
                return
            yield chunk
    finally:
        await asyncio.to_thread(gen.close)
