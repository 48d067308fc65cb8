import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def bytes_h(n):
    """1073741824 → '1 GiB'; None → '—'."""
    if n is None or n == "":
        return "—"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024


@register.filter
def when(t):
    """The one time format of the pages (js/app.js Terrarium.time too): '2026-11-30 23:05:09 UTC'."""
    if not t:
        return "—"
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def duration_since(start):
    """A compact age: '42s', '5m 3s', '2h 10m', '3d 4h'."""
    if not start:
        return "—"
    s = int((timezone.now() - start).total_seconds())
    s = max(s, 0)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


@register.filter
def cpus_h(v):
    return "—" if v is None else f"{v:g}"


@register.filter
def joinargs(argv):
    import shlex
    return shlex.join(argv or [])


@register.simple_tag
def retention_notes():
    """The retention settings as sentences (the admin index shows them)."""
    from ..selectors import retention_notes as notes
    return list(notes().values())
