"""The container list at scale: its query (search, filters, sort, page) read
from the URL, and one page of rows.

A page costs the rows on it: every container is one light tuple (id, name,
image, command, state, times, limits: one query of the mirror, plus the other
owners' containers from discovery), filtered and sorted in Python, and only
the rows of the page are loaded whole and rendered.  The URL holds the whole
query, so links and reloads keep it; a value that makes no sense is dropped
with a message saying so, never a 500.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import NamedTuple
from urllib.parse import urlencode

from runtime.discovery import ENGINES

from .models import Container

STATES = ("created", "running", "paused", "exited")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PER = 50
MAX_QUERY = 200
# column → what it sorts by (memory, CPU: the limit; usage is sampled for the rows on screen only)
SORTS = ("name", "image", "command", "state", "uptime", "created", "memory", "cpu", "pids")
DEFAULT_SORT = "-created"


@dataclass(frozen=True)
class ListQuery:
    q: str = ""
    state: str = ""
    image: str = ""
    engine: str = ""
    sort: str = DEFAULT_SORT          # a SORTS name, "-" first for descending
    page: int = 1
    per: int = DEFAULT_PER

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def url(self, **change) -> str:
        """"?..." of this query with some values changed (only those not at their default)."""
        q = replace(self, **change)
        pairs = [(k, v) for k, v, default in (
            ("q", q.q, ""), ("state", q.state, ""), ("image", q.image, ""), ("engine", q.engine, ""),
            ("sort", q.sort, DEFAULT_SORT), ("per", q.per, DEFAULT_PER), ("page", q.page, 1)) if v != default]
        return "?" + urlencode(pairs) if pairs else "?"

    def sort_url(self, column: str) -> str:
        """Sort by column: ascending first, then flip; back to page 1."""
        flip = "-" + column if self.sort == column else column
        return self.url(sort=flip, page=1)


def parse(params) -> tuple[ListQuery, list[str]]:
    """(the query, what was wrong with it) from request.GET.  Bad values are dropped."""
    errors = []
    q = (params.get("q") or "").strip()
    if len(q) > MAX_QUERY:
        errors.append(f"The search is limited to {MAX_QUERY} characters: cut to that.")
        q = q[:MAX_QUERY]
    state = params.get("state") or ""
    if state and state not in STATES:
        errors.append(f"No state {state[:40]!r}: showing every state (known: {', '.join(STATES)}).")
        state = ""
    engine = params.get("engine") or ""
    if engine and engine not in ENGINES:
        errors.append(f"No engine {engine[:40]!r}: showing every engine (known: {', '.join(ENGINES)}).")
        engine = ""
    sort = params.get("sort") or DEFAULT_SORT
    if sort.lstrip("-") not in SORTS:
        errors.append(f"Cannot sort by {sort[:40]!r}: sorted by creation, newest first "
                      f"(columns: {', '.join(SORTS)}).")
        sort = DEFAULT_SORT
    page = _number(params.get("page"), 1, "page", errors)
    per = _number(params.get("per"), DEFAULT_PER, "page size", errors)
    if per not in PAGE_SIZES:
        errors.append(f"Page size {per} is not offered: {DEFAULT_PER} rows (choose from "
                      f"{', '.join(map(str, PAGE_SIZES))}).")
        per = DEFAULT_PER
    image = (params.get("image") or "")[:MAX_QUERY]
    return ListQuery(q=q, state=state, image=image, engine=engine, sort=sort, page=page, per=per), errors


def _number(text, default: int, what: str, errors: list) -> int:
    if text in (None, ""):
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        errors.append(f"Invalid {what} {text[:20]!r}: a whole number from 1; showing {default}.")
        return default
    return int(text)


class Item(NamedTuple):
    """One container as the list filters and sorts it."""
    key: str                  # our 64-hex id, or another owner's discovery key
    other: object             # None for ours; the Found of another owner's
    name: str
    image: str
    command: str
    state: str
    started: float | None     # unix time, while running or paused (uptime)
    created: float | None
    memory: int | None
    cpus: float | None
    pids: int | None


def _t(d: dt.datetime | None) -> float | None:
    return d.timestamp() if d else None


_ours: tuple | None = None          # (version of the mirror, its items)


def ours() -> list[Item]:
    """Our containers from the mirror, as light tuples.  Kept while the mirror
    is unchanged: every write of a row sets its synced_at (auto_now) and a
    removal lowers the count, so (count, newest synced_at) is one cheap
    aggregate that says whether the 1,000 tuples must be read again."""
    global _ours
    from django.db.models import Count, Max
    version = tuple(Container.objects.aggregate(n=Count("id"), at=Max("synced_at")).values())
    kept = _ours
    if kept is not None and kept[0] == version:
        return kept[1]
    items = _read_ours()
    _ours = (version, items)
    return items


def _read_ours() -> list[Item]:
    rows = Container.objects.values_list("id", "name", "image", "cmd", "status", "started_at", "created_at",
                                         "memory_limit", "cpus_limit", "pids_limit")
    return [Item(cid, None, name, image, " ".join(map(str, cmd or ())), status,
                 _t(started) if status in ("running", "paused") else None, _t(created), mem, cpus, pids)
            for cid, name, image, cmd, status, started, created, mem, cpus, pids in rows]


def others(found) -> list[Item]:
    return [Item(f.key, f, f.name, f.image or "", "", f.state,
                 None, f.created_at, None, None, None) for f in found]


def matches(item: Item, query: ListQuery) -> bool:
    if query.state and item.state != query.state:
        return False
    if query.image and item.image != query.image:
        return False
    if query.q:
        q = query.q.lower()
        if not (q in item.name.lower() or item.key.startswith(q) or q in item.image.lower()
                or q in item.command.lower()
                or (item.other is not None and str(item.other.id).startswith(q))):
            return False
    return True


_SORT_FIELD = {"name": lambda i: i.name.lower(), "image": lambda i: i.image.lower(),
               "command": lambda i: i.command.lower(), "state": lambda i: i.state,
               "uptime": lambda i: -i.started if i.started is not None else None,
               "created": lambda i: i.created, "memory": lambda i: i.memory,
               "cpu": lambda i: i.cpus, "pids": lambda i: i.pids}


def ordered(items: list[Item], query: ListQuery) -> list[Item]:
    """Sorted by the query's column (name breaks ties); rows with no value last either way."""
    field = _SORT_FIELD[query.sort_key]
    items = sorted(items, key=lambda i: (i.name.lower(), i.key))
    have = [i for i in items if field(i) is not None]
    have.sort(key=field, reverse=query.descending)
    return have + [i for i in items if field(i) is None]


class Page(NamedTuple):
    items: list[Item]         # the rows of this page
    matched: int              # rows matching the search and filters
    number: int               # this page, 1-based (the last one if asked past it)
    pages: int
    first: int                # 1-based index of the first row shown (0 when none)
    last: int


def paginate(items: list[Item], query: ListQuery) -> Page:
    pages = max(1, -(-len(items) // query.per))
    number = min(query.page, pages)
    start = (number - 1) * query.per
    shown = items[start:start + query.per]
    return Page(shown, len(items), number, pages, start + 1 if shown else 0, start + len(shown))


def counts(items: list[Item]) -> dict[str, int]:
    """{state: n} over items (the header's "N containers · M running")."""
    out: dict[str, int] = {}
    for i in items:
        out[i.state] = out.get(i.state, 0) + 1
    return out


def page_numbers(page: Page, around: int = 2) -> list[int | None]:
    """The page links to show: first, last and a few around this one; None is a gap."""
    keep = {1, page.pages, *range(page.number - around, page.number + around + 1)}
    out: list[int | None] = []
    for n in range(1, page.pages + 1):
        if n in keep:
            out.append(n)
        elif out and out[-1] is not None:
            out.append(None)
    return out
