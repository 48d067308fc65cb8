"""A sampling session's wire format: runtime.stats readings sent as what changed.

The root agent's ``sample`` verb (runtime/agent.py) reads containers with a
runtime.stats.StatsReader kept for its connection, and answers each
container's reading as the difference from what it last sent *on that
connection*; the client (runtime/agent_client.AgentStatsReader) keeps what it
received and rebuilds the reading whole:

    {"<id>": {"raw": {...the figures whose value changed...},   # only when some did
              "src": {...}            # the sample's sources, only when it is a new object
              "procs": [...]}}        # the forest, only when it is a new object
    {"<id>": {"error": {"ok": false, "kind": "NotFound", "error": "..."}}}

A container whose reading is the one sent last time (runtime.stats hands back
the very same objects while nothing moved: an idle container, most ticks) is
left out of the reply at the cost of two identity checks; the client hands
back its last reading, the same objects.  A request without ``ids`` repeats
the connection's previous ``ids`` (the dashboard's watched set, most ticks),
so neither side encodes, parses nor checks the ids again.

- ``raw``: the sample's ``kind`` and every figure of the first reading (with
  ``full: true``, also when the figures themselves changed), then only the
  figures whose value differs from the last one sent (an idle container that
  ran: its CPU time and little else).  Left out when no value changed; the
  client then hands back the same record.  The client rebuilds the typed
  record (runtime/cgroups/record.py ``Sample``) from the figures, as the
  readers do, so a row added to the table needs no edit here either.
- ``src``: sent again only when the reader made a new ``sources`` dict
  (runtime.stats shares one per container), so the client hands back the same
  object tick after tick, and dashboard/live/sampler.py, which rebuilds a
  point's sources only when that identity changes, works as in-process.
- ``procs``: sent only when the reader built a new forest (it reuses the old
  one while no process changed); otherwise the client returns its previous
  forest, the same object, so "unchanged tree, not sent to the browser" works
  through the agent too.  The forest goes in display order (procs.walk), each
  process led by its number of children, so the client links the nodes as
  the agent's procs.build_forest did, without sorting again.  A process whose
  ProcessInfo is the very object sent last time goes as ``[n, pid, start]``;
  a process sent before that changed as ``[n, pid, start, {field: value},
  {source key: text}]`` (what changed: a running process's CPU ticks, RSS and
  their source lines, not its command line and ten other lines again); a new
  one in full (``[n, *PROC_FIELDS]``).

A reading taken with ``keep=False`` (a one-off pass) is forgotten on both
sides once sent: it goes in full (the agent's reader keeps no descriptor of
it, only its files' last bytes, for its next one-off pass).  A connection lost means a new session: the client starts
from nothing, as the agent does.

The dashboard's live sampler does not ask each tick: it subscribes
(``sample-stream``, stream() below) and the agent reads on its own clock,
pushing one frame per tick on the connection:

    {"ok": true, "more": {"w": 2, "t": <time.time()>, "m": <time.monotonic()>,
                          "r": {...the readings as above, what changed...}}}

``t``/``m``: when the tick's read began (the point's time and the interval of
its rates); ``w``: how many watch sets the stream has had, so the client
knows which frames are for the set it sent last.  An idle container is left
out of ``r`` as above, so a tick of idle containers is a frame of ~80 bytes:
the web tier sends nothing, and reads and decodes that.  The client changes
the watch set by sending its arguments again as a line of their own
(``{"ids": [...], "tree": true, "interval": 1.0}``); the containers it
leaves out are forgotten (their files closed) before the next frame, which
comes at once.  An empty set stops the ticks.  The connection's end ends it
all.  What a tick through the agent still costs beyond the reads is mostly
the agent's wake-up (two processes wake per tick instead of one): see
bench/README.md "Sampling through the agent".
"""
from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypedDict, TypeVar

from . import procs as _procs
from .cgroups.record import Figure, Sample
from .errors import InvalidArgument, TerrariumError
from .stats import Forest, Reading, StatsReader

_T = TypeVar("_T")
# A process on the wire: a JSON array [children, pid, start, ...] of one of
# three lengths (see the module docstring), so its items are of mixed types.
WireProc = list[Any]
InfoKey = tuple[int, int]                       # (pid, start ticks)


class Entry(TypedDict, total=False):
    """One container's part of a reply or frame (the module docstring)."""
    raw: Mapping[str, Figure | str]     # what changed; with "full", "kind" and every figure
    full: bool
    src: Mapping[str, str]
    procs: list[WireProc]
    error: dict[str, Any]               # runtime/agent.error_reply: JSON of an exception

# A ProcessInfo in full, in this order, after its number of children: two items
# ([n, pid, start_ticks]) name one sent before, four ([n, pid, start_ticks,
# fields, sources]) one sent before with what changed since.
PROC_FIELDS = ("pid", "ppid", "ns_pids", "uid", "user", "state", "comm", "cmdline", "rss",
               "cpu_ticks", "start_ticks", "threads", "kthread", "sources")
_DELTA_FIELDS = ("ppid", "ns_pids", "uid", "user", "state", "comm", "cmdline", "rss", "cpu_ticks",
                 "threads", "kthread")
_TUPLES = ("ns_pids", "cmdline")                # JSON lists that are tuples in a ProcessInfo
_SAME, _CHANGED, _FULL = 3, 5, 1 + len(PROC_FIELDS)    # the lengths of a process's three forms


def _frozen(cls: type[_T], fields: Mapping[str, Any]) -> _T:
    """What cls(**fields) makes, for a frozen dataclass without __post_init__
    (ProcessInfo, ProcessNode): the instance dict filled in one update, not
    through object.__setattr__ field by field (dataclasses.replace and the
    constructor were half of a busy container's decode)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _delta(old: _procs.ProcessInfo, new: _procs.ProcessInfo) -> list[dict[str, Any]] | None:
    """[{field: value}, {source: text}] from ``old`` to ``new``; None when the
    sources lost a key (then the process goes in full)."""
    a, b = old.__dict__, new.__dict__
    fields = {f: b[f] for f in _DELTA_FIELDS if a[f] != b[f]}
    sa, sb = a["sources"], b["sources"]
    if sa is sb:
        return [fields, {}]
    if not sa.keys() <= sb.keys():
        return None
    return [fields, {k: v for k, v in sb.items() if sa.get(k) != v}]


class _Sent:
    """What one connection last sent (agent side) or received (client side) of one container."""
    __slots__ = ("raw", "sources", "forest", "infos")

    def __init__(self) -> None:
        self.raw: Sample | None = None
        self.sources: Mapping[str, str] | None = None
        self.forest: Forest | None = None
        self.infos: dict[InfoKey, _procs.ProcessInfo] = {}


# ------------------------------------------------------------------ agent side

class Sender:
    """The agent's half: a StatsReader, what was sent of each container, and
    the ids of the last request (which a request without ids repeats)."""

    def __init__(self, reader: StatsReader, error_reply: Callable[[BaseException], dict[str, Any]]):
        self.reader = reader
        self.error_reply = error_reply        # exception -> the agent's error reply
        self.sent: dict[str, _Sent] = {}
        self.ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.reader.containers)

    def sample(self, ids: Iterable[str], tree: bool, keep: bool) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        sent = self.sent
        for cid, got in self.reader.read_many(ids, tree, keep).items():
            if isinstance(got, BaseException):
                sent.pop(cid, None)
                out[cid] = {"error": self.error_reply(got)}
                continue
            raw, forest = got
            if keep:
                s = sent.get(cid)
            else:
                sent.pop(cid, None)           # a one-off: forgotten, as the reader and the client do
                s = None
            if s is None:
                s = _Sent()
                if keep:
                    sent[cid] = s
            elif raw is s.raw and (forest is None or forest is s.forest):
                continue                      # the reading sent last time: left out
            e = encode(s, raw, forest)
            if e:
                out[cid] = e
        return out

    def forget(self, ids: Iterable[str]) -> None:
        for cid in ids:
            self.reader.forget(cid)
            self.sent.pop(cid, None)

    def close(self) -> None:
        self.reader.close()
        self.sent.clear()


class Lines(Protocol):
    """The agent's request reader of a connection (runtime/agent._Reader)."""
    def pending(self) -> bool: ...
    def readline(self) -> tuple[bytes, list[int]]: ...


class Frame(TypedDict):
    """One tick of a ``sample-stream`` (the module docstring)."""
    w: int
    t: float
    m: float
    r: dict[str, Entry]


def stream(sender: Sender, conn: socket.socket, lines: Lines, check: Callable[[object], dict[str, Any]],
           ids: list[str], tree: bool, interval: float) -> Iterator[Frame]:
    """The agent's ``sample-stream``: frames (see the module docstring) every
    ``interval`` seconds for the watch set ``ids``, until the client hangs up.
    conn: the connection (waited on between ticks); lines: its request reader
    (runtime/agent._Reader: pending() when a line is buffered, readline());
    check(obj) -> the checked arguments of a watch-set line (raises
    InvalidArgument, which ends the stream with that error)."""
    watch = 1
    due = time.monotonic()
    while True:
        wait: float | None
        if ids:
            now = time.monotonic()
            if now >= due:
                wall = time.time()
                yield {"w": watch, "t": wall, "m": now, "r": sender.sample(ids, tree, True)}
                due += interval
                now = time.monotonic()
                if due <= now:                     # fell behind: skip, don't burst
                    due = now + interval
                continue
            wait = due - now
        else:
            wait = None                            # nothing watched: no ticks until told
        if not lines.pending() and not select.select([conn], [], [], wait)[0]:
            continue
        line, fds = lines.readline()
        for fd in fds:                             # none belong here
            os.close(fd)
        if not line:
            return                                 # the client hung up (or the agent is leaving)
        try:
            args = check(json.loads(line))
        except (ValueError, RecursionError):
            raise InvalidArgument("sample-stream: a watch-set line must be a JSON object") from None
        new = args["ids"]
        keep = set(new)
        sender.forget([c for c in ids if c not in keep])
        ids, tree, interval = new, args.get("tree", tree), args.get("interval", interval)
        watch += 1
        due = time.monotonic()                     # the new set's first frame at once


def encode(s: _Sent, raw: Sample, forest: Forest | None) -> Entry:
    """One reading as the change from ``s`` (updated to it); {} if nothing changed."""
    e: Entry = {}
    last = s.raw
    if raw is not last:
        # the same figures (runtime.stats: always, in one version): what changed
        changed = raw.changes(last) if last is not None and last.kind == raw.kind else None
        if changed is None:
            full: dict[str, Figure | str] = {"kind": raw.kind}
            full.update(raw.figures)
            e["raw"], e["full"] = full, True
        elif changed:
            e["raw"] = changed
        s.raw = raw
    sources = raw.sources
    if sources is not s.sources or last is None:
        e["src"] = s.sources = sources
    if forest is not None and forest is not s.forest:
        e["procs"], s.infos = _encode_forest(forest, s.infos)
        s.forest = forest
    return e


def _encode_forest(forest: Forest, sent: dict[InfoKey, _procs.ProcessInfo]
                   ) -> tuple[list[WireProc], dict[InfoKey, _procs.ProcessInfo]]:
    """The forest's processes in display order, each as [children, ...] (see the
    module docstring), against ``sent``; and the new (pid, start) -> ProcessInfo."""
    now: dict[InfoKey, _procs.ProcessInfo] = {}
    out: list[WireProc] = []
    stack = list(reversed(forest))
    while stack:
        node = stack.pop()
        i, kids = node.info, node.children
        if kids:
            stack.extend(reversed(kids))
        d = i.__dict__
        key = (d["pid"], d["start_ticks"])
        old = sent.get(key)
        if old is i:
            out.append([len(kids), *key])
        else:
            delta = _delta(old, i) if old is not None else None
            out.append([len(kids), *key, *delta] if delta is not None else
                       [len(kids), *[d[f] for f in PROC_FIELDS]])
        now[key] = i
    return out, now


# ----------------------------------------------------------------- client side

class Receiver:
    """The client's half: what was received of each container, and the readings rebuilt."""

    def __init__(self, error_of: Callable[[dict[str, Any]], Exception]):
        self.error_of = error_of              # the agent's error reply -> its exception
        self.got: dict[str, _Sent] = {}

    def decode(self, cid: str, e: Entry | None, tree: bool, keep: bool) -> Reading | Exception:
        """→ (sample, forest), with the previous objects where nothing changed
        (e None: the container was left out of the reply, nothing changed); an
        error entry → the exception it stands for (not raised)."""
        if e is None:                       # the very same reading, as runtime.stats gives it back
            s = self.got[cid]
            if s.raw is None:                   # (the agent repeats only what it sent)
                return TerrariumError(f"sample: no reading of {cid} to repeat")
            return s.raw, (s.forest if tree else None)
        if "error" in e:
            self.got.pop(cid, None)
            return self.error_of(e["error"])
        s = self.got.get(cid) or _Sent()
        if keep:
            self.got[cid] = s
        else:
            self.got.pop(cid, None)
        src = e.get("src", s.sources) or {}
        if "raw" in e or src is not s.sources or s.raw is None:    # a new record: the consumers keep the last one
            s.raw = _record(s.raw, e, src)
            s.sources = src
        if "procs" in e:
            s.forest, s.infos = _decode_forest(e["procs"], s.infos)
        return s.raw, (s.forest if tree else None)

    def forget(self, cid: str) -> None:
        self.got.pop(cid, None)

    def clear(self) -> None:
        self.got.clear()


def _record(last: Sample | None, e: Entry, sources: Mapping[str, str]) -> Sample:
    """The record an entry's ``raw`` (and ``src``) make of the last one received."""
    got = e.get("raw", {})
    if e.get("full") or last is None:
        figures = {k: v for k, v in got.items() if not isinstance(v, str)}
        kind = got.get("kind")
        return Sample.of(kind if isinstance(kind, str) else "v1", figures, sources)
    return last.updated({k: v for k, v in got.items() if not isinstance(v, str)}, sources)


def _decode_forest(items: list[WireProc], got: dict[InfoKey, _procs.ProcessInfo]
                   ) -> tuple[Forest, dict[InfoKey, _procs.ProcessInfo]]:
    """The forest _encode_forest sent, against the ProcessInfos ``got`` before;
    and the new (pid, start) -> ProcessInfo."""
    now: dict[InfoKey, _procs.ProcessInfo] = {}
    infos: list[tuple[int, _procs.ProcessInfo]] = []
    for p in items:
        n = len(p)
        if n == _SAME:
            info = got[(p[1], p[2])]
        elif n == _CHANGED:
            old = got[(p[1], p[2])]
            fields = {**old.__dict__, **p[3]}
            for f in _TUPLES:
                if f in p[3]:
                    fields[f] = tuple(fields[f])
            if p[4]:
                fields["sources"] = {**old.sources, **p[4]}
            info = _frozen(_procs.ProcessInfo, fields)
        else:
            fields = dict(zip(PROC_FIELDS, p[1:]))
            fields["ns_pids"], fields["cmdline"] = tuple(fields["ns_pids"]), tuple(fields["cmdline"])
            info = _frozen(_procs.ProcessInfo, fields)
        now[(p[1], info.start_ticks)] = info
        infos.append((p[0], info))
    # Link bottom-up: in display order a node's children are the subtrees right
    # after it, so walking backwards they are on the stack when it comes.
    stack: list[_procs.ProcessNode] = []
    for n, info in reversed(infos):
        if n:
            kids = tuple(stack[:-n - 1:-1])
            del stack[-n:]
        else:
            kids = ()
        stack.append(_frozen(_procs.ProcessNode, {"info": info, "children": kids}))
    stack.reverse()
    return stack, now
