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


_CHANGE_UNITS = {"memory": bytes_h, "memory_swap": bytes_h, "cpus": cpus_h}


def _limit_h(key, v):
    if v is None:
        return "unlimited"
    return _CHANGE_UNITS.get(key, str)(v)


@register.filter
def audit_change(details):
    """What an audit row changed, in words: 'memory 64 MiB → 128 MiB',
    'image busybox', 'images a, b'; '' when the row says nothing more."""
    if not isinstance(details, dict):
        return ""
    parts = []
    change = details.get("change")
    if isinstance(change, dict):
        for key, pair in change.items():
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                parts.append(f"{key} {_limit_h(key, pair[0])} → {_limit_h(key, pair[1])}")
    if details.get("image"):
        parts.append(f"image {details['image']}")
    if details.get("volume"):
        parts.append(f"volume {details['volume']}")
    images = details.get("images")
    if isinstance(images, list) and images:
        parts.append("images " + ", ".join(map(str, images)))
    elif isinstance(details.get("digests"), dict) and not details.get("image"):
        parts.append("image " + ", ".join(details["digests"]))
    return "; ".join(parts)


@register.simple_tag
def retention_notes():
    """The retention settings as sentences (the admin index shows them)."""
    from ..selectors import retention_notes as notes
    return list(notes().values())


@register.filter
def split(text):
    """'stop restart' → ['stop', 'restart'] (lists written in templates)."""
    return str(text).split()


@register.filter
def epoch(t):
    """A unix time (the runtime's records) as an aware datetime, for |when."""
    if t in (None, ""):
        return None
    return datetime.datetime.fromtimestamp(float(t), tz=datetime.timezone.utc)


@register.filter
def healthcheck_h(hc):
    """A health check as one line: 'wget -q -O- localhost every 30s (timeout 30s, 3 retries)'."""
    from runtime.lifecycle import describe_healthcheck
    return describe_healthcheck(hc)


@register.simple_tag
def list_url(query, **change):
    """The container list's "?..." with some of its query changed (dashboard/containers/listing.py)."""
    return query.url(**change)


@register.simple_tag
def sort_th(query, column, label, cls=""):
    """A sortable column head: a link that sorts by it (flipping when it is the
    sort already), with aria-sort saying how the list is sorted now."""
    from django.utils.html import format_html
    aria, mark = "none", ""
    if query.sort_key == column:
        aria, mark = ("descending", " ▼") if query.descending else ("ascending", " ▲")
    return format_html('<th class="{}" aria-sort="{}" data-sort="{}"><a href="{}" class="sort">{}{}</a></th>',
                       cls, aria, column, query.sort_url(column), label, mark)
