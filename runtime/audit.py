"""ROOT/audit.log: who changed what, from any client of the runtime.

The agent appends one record per mutating request (runtime/agent.py), the
`terrarium` CLI one per mutating command when it runs in-process as root
(runtime/cli.py), so the log holds CLI actions however the CLI reached the
runtime.  The dashboard keeps its own table of what people did in the pages
and shows this log's other clients next to it (`recent`).

A record: {"time": ISO 8601 UTC, "user": the dashboard user's name, or
"cli:<uid>" / "uid:<uid>" for other clients, "verb", "target", "result":
"ok" | "error", "error"?, "change"?: {field: [before, after]}, ...}.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import IO, Any, BinaryIO, TypeVar
    from .containers import Runtime
    from .model import Container, Image, Limits, Spec

    _T = TypeVar("_T")
    AuditRecord = dict[str, Any]      # see the module's docstring

AUDIT_MAX_SIZE = 10 << 20       # bytes of audit.log before it is rotated
AUDIT_MAX_FILE = 5              # files kept, audit.log and audit.log.1 .. .4
RECENT_MAX = 2000               # records `recent` returns at most


def path_of(root: str) -> str:
    return os.path.join(root, "audit.log")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def change(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, list[object]]:
    """{field: [before, after]} for the fields whose value differs."""
    return {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)}


class AuditLog:
    """One JSON line per record, 0600.

    Rotated as Docker's json-file logs are: once a line takes it past
    max_size, audit.log becomes audit.log.1 (.1 becomes .2, ...), and at most
    max_file files are kept, so a client that floods the agent with
    requests cannot fill the disk with their record."""

    def __init__(self, path: str, max_size: int = AUDIT_MAX_SIZE, max_file: int = AUDIT_MAX_FILE):
        self.path, self.max_size, self.max_file = path, max_size, max_file
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, path: str) -> "AuditLog":
        """With TERRARIUM_AUDIT_LOG_MAX_SIZE (e.g. 10m) and _MAX_FILE (1-100)."""
        from .spec import parse_size
        size = os.environ.get("TERRARIUM_AUDIT_LOG_MAX_SIZE") or AUDIT_MAX_SIZE
        max_size = parse_size(size, "TERRARIUM_AUDIT_LOG_MAX_SIZE")
        count = os.environ.get("TERRARIUM_AUDIT_LOG_MAX_FILE") or str(AUDIT_MAX_FILE)
        if not (count.isascii() and count.isdigit() and 1 <= int(count) <= 100) or max_size < 4096:
            raise InvalidArgument(f"invalid audit log rotation {size!r} x {count!r}: "
                                  "TERRARIUM_AUDIT_LOG_MAX_SIZE at least 4k, _MAX_FILE 1 to 100")
        return cls(path, max_size, int(count))

    def write(self, record: AuditRecord) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                full = os.fstat(fd).st_size >= self.max_size
            finally:
                os.close(fd)
            if full:
                self._rotate()

    def _rotate(self) -> None:
        """audit.log.N-1 -> .N ... audit.log -> .1 (renames keep the 0600 mode);
        with max_file 1 the full log is dropped."""
        if self.max_file == 1:
            os.unlink(self.path)
            return
        for n in range(self.max_file - 1, 0, -1):
            src = f"{self.path}.{n - 1}" if n > 1 else self.path
            try:
                os.rename(src, f"{self.path}.{n}")
            except FileNotFoundError:
                pass


def recent(path: str, limit: int = 500, *, others_only: bool = False) -> list[AuditRecord]:
    """The newest `limit` records, newest first, from audit.log and its rotated
    files.  others_only: only those of clients other than the dashboard (users
    "cli:<uid>" or "uid:<uid>"), which the dashboard's own table lacks.  A
    line that is not a JSON object (a torn write) is skipped."""
    limit = max(0, min(limit, RECENT_MAX))
    out: list[AuditRecord] = []
    n = 0
    while len(out) < limit:
        name = path if n == 0 else f"{path}.{n}"
        try:
            with open(name, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            if n == 0:                     # rotated away with max_file 1, or never written
                n += 1
                if not os.path.exists(f"{path}.1"):
                    break
                continue
            break
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            user = rec.get("user")
            if others_only and not (isinstance(user, str) and user.startswith(("cli:", "uid:"))):
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        n += 1
    return out


class Audited:
    """A Runtime whose changes are recorded as the agent records its clients'
    (the same verbs and targets): what the CLI uses when it runs in-process,
    so `terrarium stop web` typed as root is in the log like a click is.
    Everything else is the Runtime's own (attribute access passes through)."""

    def __init__(self, rt: Runtime, user: str, log: AuditLog | None = None):
        self._rt, self._user = rt, user
        self._log = log if log is not None else AuditLog.from_env(path_of(rt.root))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rt, name)

    def _do(self, verb: str, target: str, call: Callable[[], _T], *, before: Mapping[str, object] | None = None,
            after: Callable[[_T], Mapping[str, object]] | None = None,
            extra: Callable[[_T], Mapping[str, object]] | None = None) -> _T:
        from .errors import TerrariumError
        record: AuditRecord = {"time": now(), "user": self._user, "peer_uid": os.getuid(), "peer_pid": os.getpid(),
                  "verb": verb, "target": target}
        try:
            result = call()
        except TerrariumError as e:
            record.update(result="error", error=str(e))
            self._write(record)
            raise
        record["result"] = "ok"
        if extra is not None:
            record.update(extra(result))
        if before is not None and after is not None:
            moved = change(before, after(result))
            if moved:
                record["change"] = moved
        self._write(record)
        return result

    def _write(self, record: AuditRecord) -> None:
        try:
            self._log.write(record)
        except OSError as e:
            import sys
            print(f"terrarium: warning: could not write the audit log {self._log.path}: {e}",
                  file=sys.stderr)

    def create(self, spec: Spec, allow_host_network: bool = False, allow_bind_mounts: bool = False) -> Container:
        return self._do("create", spec.name or "",
                        lambda: self._rt.create(spec, allow_host_network, allow_bind_mounts),
                        extra=lambda c: {"target": c.name, "id": c.id})

    def start(self, ref: str) -> Container:
        return self._do("start", ref, lambda: self._rt.start(ref))

    def stop(self, ref: str, timeout: float = 10.0) -> Container:
        return self._do("stop", ref, lambda: self._rt.stop(ref, timeout))

    def restart(self, ref: str, timeout: float = 10.0) -> Container:
        return self._do("restart", ref, lambda: self._rt.restart(ref, timeout))

    def kill(self, ref: str, sig: int | str = 9) -> Container:
        return self._do("kill", ref, lambda: self._rt.kill(ref, sig))

    def pause(self, ref: str) -> Container:
        return self._do("pause", ref, lambda: self._rt.pause(ref))

    def resume(self, ref: str) -> Container:
        return self._do("resume", ref, lambda: self._rt.resume(ref))

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        return self._do("remove", ref, lambda: self._rt.remove(ref, force=force, volumes=volumes))

    @property
    def volumes(self) -> _AuditedVolumes:
        return _AuditedVolumes(self)

    def update(self, ref: str, limits: Limits | None = None, *, restart: str | None = None) -> Container:
        from .model import to_dict

        def seen(c: Container) -> dict[str, Any]:      # the limits, and the restart policy when one is set
            return {**to_dict(c.limits), **({"restart": c.restart_policy} if restart is not None else {})}
        try:
            before = seen(self._rt.inspect(ref))
        except Exception:  # noqa: BLE001 - the update itself reports what is wrong
            before = None
        return self._do("update", ref, lambda: self._rt.update(ref, limits, restart=restart), before=before,
                        after=seen)

    def commit(self, ref: str, image_name: str, message: str = "", pause: bool = True,
               replace: bool = True) -> Image:
        return self._do("commit", ref, lambda: self._rt.commit(ref, image_name, message=message, pause=pause,
                                                               replace=replace),
                        extra=lambda image: {"digests": {image.name: image.id}})

    def remove_image(self, name: str, force: bool = False) -> None:
        return self._do("rmi", name, lambda: self._rt.remove_image(name, force=force))

    def image_gc(self) -> list[str]:
        return self._do("image-gc", "", self._rt.image_gc)

    def load_image(self, src: str | IO[bytes], name: str | None = None, *, label: str | None = None,
                   replace: bool = True) -> list[Image]:
        return self._do("load", label or name or "", lambda: self._rt.load_image(src, name, label=label,
                                                                                 replace=replace),
                        extra=lambda images: {"images": [i.name for i in images]})

    def save_image(self, name: str, out: BinaryIO) -> str:
        return self._do("save", name, lambda: self._rt.save_image(name, out))

    # registries (runtime/images/distribution.py): the target is the reference
    # or the registry; a password is never part of a record
    def pull_image(self, ref: str, *, platform: str | None = None, insecure: bool = False,
                   progress: Callable[[Mapping[str, object]], object] | None = None) -> Image:
        return self._do("pull", ref, lambda: self._rt.pull_image(ref, platform=platform, insecure=insecure,
                                                                 progress=progress),
                        extra=lambda image: {"digests": {image.name: image.id},
                                             **({"moved": [{"name": image.name, "old": image.replaced,
                                                            "new": image.id}]} if image.replaced else {})})

    def push_image(self, ref: str, *, insecure: bool = False,
                   progress: Callable[[Mapping[str, object]], object] | None = None) -> str:
        return self._do("push", ref, lambda: self._rt.push_image(ref, insecure=insecure, progress=progress),
                        extra=lambda digest: {"digest": digest})

    def tag_image(self, source: str, target: str) -> Image:
        return self._do("tag", target, lambda: self._rt.tag_image(source, target),
                        extra=lambda image: {"digests": {image.name: image.id}})

    def registry_login(self, server: str | None, username: str, password: str, insecure: bool = False) -> str:
        return self._do("registry-login", server or "", lambda: self._rt.registry_login(
            server, username, password, insecure), extra=lambda _: {"username": username})

    def registry_logout(self, server: str | None) -> bool:
        return self._do("registry-logout", server or "", lambda: self._rt.registry_logout(server))


class _AuditedVolumes:
    """Audited's volumes: create and remove recorded under the agent's verbs."""

    def __init__(self, audited: Audited):
        self._a = audited

    def __getattr__(self, name: str) -> Any:
        return getattr(self._a._rt.volumes, name)

    def create(self, name: str | None = None) -> Mapping[str, Any]:
        return self._a._do("volume-create", name or "", lambda: self._a._rt.volumes.create(name),
                           extra=lambda v: {"target": v["name"]})

    def remove(self, name: str) -> None:
        return self._a._do("volume-remove", name, lambda: self._a._rt.volumes.remove(name))
