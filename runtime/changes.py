"""Which containers changed, as the kernel tells it: inotify on the state root.

Every change of a container's state is a record written on disk (runtime/
state.py): config.json by create, pause, resume and update; run.json by the
shim when a run starts; exit.json by the shim when it ends; the directory
itself by create and remove.  Records are written to a temporary name and
renamed, so one IN_MOVED_TO per record (IN_CLOSE_WRITE too, for a writer that
does not rename).  So a consumer (the dashboard's reconciler) need not list
every container every second to notice that one stopped:

    with StateWatch(rt.containers_dir) as w:
        for ids in w.follow(stop.is_set):    # a set of ids; ALL after a queue overflow
            ...

What no record shows -- a shim SIGKILLed together with its container, so
nobody wrote exit.json -- a consumer still finds with a slow full pass.
Watches: one on ROOT/containers and one per container directory (inotify is
not recursive), ~1 kB of kernel memory each.  Standard library only
(runtime/inotify.py): the agent, which runs this, is `python -I -S`.
"""
from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterator

from . import inotify as _in
from .state import CONFIG, EXIT, ID_RE, RUN

ALL = None                       # "anything may have changed": list everything again
# health.json: the health checker's results; restart.json: a restart policy's
# pending restart (runtime/lifecycle.py)
_RECORDS = frozenset((CONFIG, RUN, EXIT, "health.json", "restart.json"))
_TOP = _in.IN_CREATE | _in.IN_DELETE | _in.IN_MOVED_TO | _in.IN_MOVED_FROM | _in.IN_ONLYDIR
_DIR = _in.IN_MOVED_TO | _in.IN_CLOSE_WRITE | _in.IN_DELETE | _in.IN_ONLYDIR


class StateWatch:
    """inotify on a state root's containers directory and each container's own."""

    def __init__(self, containers_dir: str, extra: "KeyFeed | None" = None):
        self.dir = containers_dir
        self.extra = extra              # other owners' containers (runtime/discovery events)
        self.ino = _in.Inotify()
        self._by_wd: dict[int, str] = {}
        try:
            self._top = self.ino.add_watch(containers_dir, _TOP)
            for name in os.listdir(containers_dir):
                self._add(name)
        except BaseException:
            self.ino.close()
            raise

    def fileno(self) -> int:
        return self.ino.fileno()

    def close(self) -> None:
        self.ino.close()

    def __enter__(self) -> "StateWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def watched(self) -> int:
        """Container directories under watch."""
        return len(self._by_wd)

    def _add(self, name: str) -> None:
        if not ID_RE.match(name):
            return
        try:
            self._by_wd[self.ino.add_watch(os.path.join(self.dir, name), _DIR)] = name
        except (FileNotFoundError, NotADirectoryError):
            pass                                    # made and removed at once

    def read(self, timeout_ms: int | None = 0) -> set[str] | None:
        """The ids whose records changed since the last read (waiting up to
        ``timeout_ms`` for the first event; None waits for ever); ALL when the
        kernel's queue overflowed."""
        changed: set[str] = set()
        if self.extra is not None and timeout_ms != 0:
            p = select.poll()
            p.register(self.ino.fileno(), select.POLLIN)
            p.register(self.extra.fileno(), select.POLLIN)
            if not p.poll(timeout_ms):
                return changed
            timeout_ms = 0
        if self.extra is not None:
            keys = self.extra.drain()
            if keys is ALL:
                return ALL
            changed |= keys
        for ev in self.ino.read(timeout_ms):
            if ev.mask & _in.IN_Q_OVERFLOW:
                return ALL
            if ev.wd == self._top:
                if not ID_RE.match(ev.name):
                    continue
                if ev.mask & (_in.IN_CREATE | _in.IN_MOVED_TO):
                    self._add(ev.name)
                changed.add(ev.name)
            elif ev.mask & _in.IN_IGNORED:           # the directory went
                gone = self._by_wd.pop(ev.wd, None)
                if gone:
                    changed.add(gone)
            elif ev.name in _RECORDS:
                cid = self._by_wd.get(ev.wd)
                if cid:
                    changed.add(cid)
        return changed

    def follow(self, stop: Callable[[], bool] | None = None, *, settle: float = 0.05,
               wake: float = 1.0, heartbeat: bool = False) -> Iterator[set[str] | None]:
        """Yield each batch of changed ids as it comes, coalescing what arrives
        within ``settle`` seconds of the first (a burst of 1,000 changes is a
        few batches, not 1,000); call ``stop`` at least every ``wake`` seconds.
        With ``heartbeat``, an empty batch after each quiet ``wake`` (a
        consumer at the far end of a socket can check whether it is still wanted)."""
        while stop is None or not stop():
            batch = self.read(int(wake * 1000))
            if batch is not ALL and not batch:
                if heartbeat:
                    yield batch
                continue
            if batch is not ALL:
                more = self.read(int(settle * 1000))
                batch = ALL if more is ALL else batch | more
            yield batch


class KeyFeed:
    """Keys pushed from other threads (an engine's event stream), read by a
    StateWatch beside its inotify events: a pipe wakes its poll."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._keys: set[str] | None = set()

    def fileno(self) -> int:
        return self._r

    def push(self, key: str | None) -> None:
        """One changed key; None: anything may have changed (list everything)."""
        with self._lock:
            if self._w < 0:
                return                          # closed: the watch has ended
            if key is None:
                self._keys = ALL
            elif self._keys is not ALL:
                self._keys.add(key)
            try:
                os.write(self._w, b"!")
            except OSError:
                pass                            # the pipe is full: already awake

    def drain(self) -> set[str] | None:
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            keys, self._keys = self._keys, set()
        return keys

    def close(self) -> None:
        with self._lock:
            fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
