"""A sampling session's wire format: runtime.stats readings sent as what changed.

The root agent's ``sample`` verb (runtime/agent.py) reads containers with a
runtime.stats.StatsReader kept for its connection, and answers each
container's reading as the difference from what it last sent *on that
connection*; the client (runtime/agent_client.AgentStatsReader) keeps what it
received and rebuilds the reading whole:

    {"<id>": {"raw": {...the keys whose value changed...},
              "src": {...}            # raw["sources"], only when it is a new object
              "procs": [...]}}        # the forest, only when it is a new object
    {"<id>": {"error": {"ok": false, "kind": "NotFound", "error": "..."}}}

A container whose reading did not change at all (an idle one, most ticks)
is left out of the reply; the client hands back its last reading.

- ``raw``: every key of the first reading, then only those whose value
  differs from the last one sent (an idle container: the CPU time and little
  else).  ``full: true`` when the keys themselves changed.
- ``src``: sent again only when the reader made a new ``sources`` dict
  (runtime.stats shares one per container), so the client hands back the same
  object tick after tick, and dashboard/live/sampler.py, which rebuilds a
  point's sources only when that identity changes, works as in-process.
- ``procs``: sent only when the reader built a new forest (it reuses the old
  one while no process changed); otherwise the client returns its previous
  decoded forest, the same object, so "unchanged tree, not sent to the
  browser" works through the agent too.  Within a sent forest, a process whose
  ProcessInfo is the very object sent last time goes as ``[pid, start]``; a
  process sent before that changed as ``[pid, start, {field: value},
  {source key: text}]`` (what changed: a running process's CPU ticks, RSS and
  their source lines, not its command line and ten other lines again); a new
  one in full (PROC_FIELDS).  The forest is a function of its
  processes (procs.build_forest sorts by pid), so it is sent flat and built
  again on the client.

A reading taken with ``keep=False`` (a one-off pass) is forgotten on both
sides once sent.  A connection lost means a new session: the client starts
from nothing, as the agent does.
"""
from __future__ import annotations

import dataclasses

from . import procs as _procs

# A ProcessInfo in full, in this order; two items ([pid, start_ticks]) name one sent before,
# four ([pid, start_ticks, fields, sources]) one sent before with what changed since.
PROC_FIELDS = ("pid", "ppid", "ns_pids", "uid", "user", "state", "comm", "cmdline", "rss",
               "cpu_ticks", "start_ticks", "threads", "kthread", "sources")
_DELTA_FIELDS = ("ppid", "ns_pids", "uid", "user", "state", "comm", "cmdline", "rss", "cpu_ticks",
                 "threads", "kthread")
_TUPLES = ("ns_pids", "cmdline")                # JSON lists that are tuples in a ProcessInfo


def _delta(old: _procs.ProcessInfo, new: _procs.ProcessInfo) -> list | None:
    """[pid, start, {field: value}, {source: text}] from ``old`` to ``new``; None
    when the sources lost a key (then the process goes in full)."""
    fields = {f: getattr(new, f) for f in _DELTA_FIELDS if getattr(old, f) != getattr(new, f)}
    a, b = old.sources, new.sources
    if a is b:
        src = {}
    else:
        if not a.keys() <= b.keys():
            return None
        src = {k: v for k, v in b.items() if a.get(k) != v}
    return [new.pid, new.start_ticks, fields, src]


class _Sent:
    """What one connection last sent (agent side) or received (client side) of one container."""
    __slots__ = ("raw", "sources", "forest", "infos")

    def __init__(self):
        self.raw: dict | None = None
        self.sources = None
        self.forest = None
        self.infos: dict = {}               # (pid, start) -> ProcessInfo


# ------------------------------------------------------------------ agent side

class Sender:
    """The agent's half: a StatsReader and what was sent of each container."""

    def __init__(self, reader, error_reply):
        self.reader = reader                  # runtime.stats.StatsReader
        self.error_reply = error_reply        # exception -> the agent's error reply
        self.sent: dict[str, _Sent] = {}

    def __len__(self) -> int:
        return len(self.reader.containers)

    def sample(self, ids, tree: bool, keep: bool) -> dict:
        out = {}
        for cid, got in self.reader.read_many(ids, tree, keep).items():
            if isinstance(got, BaseException):
                self.sent.pop(cid, None)
                out[cid] = {"error": self.error_reply(got)}
                continue
            s = self.sent.get(cid) if keep else None
            if s is None:
                s = _Sent()
                if keep:
                    self.sent[cid] = s
            e = encode(s, *got)
            if e != _SAME:
                out[cid] = e
        return out

    def forget(self, ids) -> None:
        for cid in ids:
            self.reader.forget(cid)
            self.sent.pop(cid, None)

    def close(self) -> None:
        self.reader.close()
        self.sent.clear()


_SAME = {"raw": {}}                       # nothing changed: left out of the reply


def encode(s: _Sent, raw: dict, forest) -> dict:
    """One reading as the change from ``s`` (updated to it)."""
    last = s.raw
    sources = raw.get("sources")
    if last is None or last.keys() != raw.keys():
        e = {"raw": {k: v for k, v in raw.items() if k != "sources"}, "full": True}
    elif raw == last:                       # an idle container, most ticks: one C-level compare
        e = {"raw": {}}
    else:
        e = {"raw": {k: v for k, v in raw.items() if k != "sources" and last[k] != v}}
    s.raw = raw
    if sources is not s.sources or last is None:
        e["src"] = sources
        s.sources = sources
    if forest is not None and forest is not s.forest:
        sent, now, out = s.infos, {}, []
        for _, node in _procs.walk(forest):
            i = node.info
            key = (i.pid, i.start_ticks)
            old = sent.get(key)
            if old is i:
                out.append([i.pid, i.start_ticks])
            else:
                d = _delta(old, i) if old is not None else None
                out.append(d if d is not None else
                           [i.pid, i.ppid, i.ns_pids, i.uid, i.user, i.state, i.comm, i.cmdline, i.rss,
                            i.cpu_ticks, i.start_ticks, i.threads, i.kthread, i.sources])
            now[key] = i
        e["procs"] = out
        s.forest, s.infos = forest, now
    return e


# ----------------------------------------------------------------- client side

class Receiver:
    """The client's half: what was received of each container, and the readings rebuilt."""

    def __init__(self, error_of):
        self.error_of = error_of              # the agent's error reply -> its exception
        self.got: dict[str, _Sent] = {}

    def decode(self, cid: str, e: dict | None, tree: bool, keep: bool):
        """→ (raw, forest), with the previous objects where nothing changed
        (e None: the container was left out of the reply, nothing changed); an
        error entry → the exception it stands for (not raised)."""
        if e is None:                       # the very same reading, as runtime.stats gives it back
            s = self.got[cid]
            return s.raw, (s.forest if tree else None)
        if "error" in e:
            self.got.pop(cid, None)
            return self.error_of(e["error"])
        s = self.got.get(cid)
        if s is None:
            s = _Sent()
            if keep:
                self.got[cid] = s
        elif not keep:
            del self.got[cid]
        raw = {} if e.get("full") or s.raw is None else dict(s.raw)
        raw.update(e["raw"])
        if "src" in e:
            s.sources = e["src"]
        raw["sources"] = s.sources
        s.raw = raw
        if "procs" in e:
            infos, now = [], {}
            for p in e["procs"]:
                if len(p) == 2:
                    info = s.infos[(p[0], p[1])]
                elif len(p) == 4:
                    old = s.infos[(p[0], p[1])]
                    fields = {f: tuple(v) if f in _TUPLES else v for f, v in p[2].items()}
                    if p[3]:
                        fields["sources"] = {**old.sources, **p[3]}
                    info = dataclasses.replace(old, **fields)
                else:
                    (pid, ppid, ns_pids, uid, user, state, comm, cmdline, rss, cpu_ticks, start,
                     threads, kthread, sources) = p
                    info = _procs.ProcessInfo(
                        pid=pid, ppid=ppid, ns_pids=tuple(ns_pids), uid=uid, user=user, state=state,
                        comm=comm, cmdline=tuple(cmdline), rss=rss, cpu_ticks=cpu_ticks,
                        start_ticks=start, threads=threads, kthread=kthread, sources=sources)
                now[(info.pid, info.start_ticks)] = info
                infos.append(info)
            s.infos, s.forest = now, _procs.build_forest(infos)
        return raw, (s.forest if tree else None)

    def forget(self, cid: str) -> None:
        self.got.pop(cid, None)

    def clear(self) -> None:
        self.got.clear()
