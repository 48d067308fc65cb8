"""Refuse request bodies that are too large, or that the disk cannot hold,
before Django copies them.

An image upload is copied several times on its way in: Daphne buffers the
body (Twisted, before any Python of ours runs), Django's multipart parser
writes the file to FILE_UPLOAD_TEMP_DIR (in CsrfViewMiddleware, which
reads request.POST), and the import unpacks it into the layer store.  This
middleware sits before CSRF, so an archive over TERRARIUM_MAX_UPLOAD, or
larger than the free space left for those copies, gets one clear answer
(413 / 507, JSON for the upload form's XHR) instead of filling a disk or
failing half-way.  Bodies over the limit never get this far under
`make run`: dashboard/serve.py refuses them before Twisted stores them.
"""
from __future__ import annotations

import shutil
import tempfile

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.defaultfilters import filesizeformat

from dashboard.containers.runtime_client import get_runtime

CHECK_ABOVE = 1 << 20       # smaller bodies are not worth a statvfs


def _free(path: str) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def refusal(length: int) -> tuple[int, str] | None:
    """(status, message) when a body of `length` bytes must be refused, else None."""
    limit = settings.TERRARIUM_MAX_UPLOAD_BYTES
    if length > limit:
        return 413, (f"The upload is {filesizeformat(length)}; the largest this dashboard accepts is "
                     f"{filesizeformat(limit)} (TERRARIUM_MAX_UPLOAD).")
    for what, path in (("for the upload's temporary copy",
                        settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir()),
                       ("for its layers", get_runtime().root)):
        free = _free(path)
        if free is not None and length > free - settings.TERRARIUM_UPLOAD_SPARE_BYTES:
            return 507, (f"Not enough disk space {what}: the upload is {filesizeformat(length)}, "
                         f"{filesizeformat(max(free, 0))} is free in {path}.")
    return None


class UploadLimitMiddleware:
    """Checks Content-Length of every request with a body (see the module)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > min(CHECK_ABOVE, settings.TERRARIUM_MAX_UPLOAD_BYTES):
            refused = refusal(length)
            if refused is not None:
                status, message = refused
                if request.path.startswith("/api/"):                 # the JSON API's error shape
                    return JsonResponse({"detail": message}, status=status)
                if request.headers.get("X-Requested-With") == "fetch":
                    return JsonResponse({"ok": False, "message": message}, status=status)
                return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
