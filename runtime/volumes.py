"""Named volumes: directories in the state root that outlive containers.

    ROOT/volumes/<name>/volume.json   name, created_at, anonymous
    ROOT/volumes/<name>/_data/        what the container sees (as Docker's local driver)
    ROOT/volumes/.lock                held while a volume is made or removed and
                                      while a container naming volumes is created

A volume is in use while any container (running or not) names it in its
config, as Docker counts it: removing one in use is refused, forced or not.
A container's removal never removes its named volumes; its anonymous ones
(`-v /path`) go with it only when asked (`rm -v`, or `--rm`), and only if no
other container names them.
"""
from __future__ import annotations

import builtins
import os
import shutil
import time

from . import state as disk
from .errors import Conflict, NotFound
from .fsutil import locked, private_dir, read_json, write_json
from .mounts import VOLUME_NAME_RE, check_volume_name

LOCK = ".lock"                 # a name no volume can have (they start with a letter or digit)
META = "volume.json"

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from contextlib import AbstractContextManager
    from typing import NotRequired, TypedDict

    class VolumeMeta(TypedDict, total=False):
        """<name>/volume.json (read with .get: written by older code too)."""
        name: str
        created_at: float
        anonymous: bool

    class VolumeUser(TypedDict):
        """A container that names a volume (id, name), as Volumes.users() gives it."""
        id: str
        name: str

    class VolumeView(TypedDict):
        """Volumes.inspect and .list: a volume and its containers; size and files
        (of its data, runtime.overlay.upper_size) when asked for."""
        name: str
        mountpoint: str
        created_at: float | None
        anonymous: bool
        containers: list[VolumeUser]
        size: NotRequired[int]
        files: NotRequired[int]


class Volumes:
    def __init__(self, root: str, containers_dir: str) -> None:
        self.dir = os.path.join(root, "volumes")
        self.containers_dir = containers_dir

    def lock(self) -> AbstractContextManager[bool]:
        private_dir(self.dir)
        return locked(os.path.join(self.dir, LOCK))

    def data_path(self, name: str) -> str:
        return os.path.join(self.dir, name, "_data")

    # ------------------------------------------------------------ reading
    def _meta(self, name: str) -> VolumeMeta | None:
        if not VOLUME_NAME_RE.fullmatch(name) or not os.path.isdir(os.path.join(self.dir, name)):
            return None                                 # the lock, a removal under way
        meta: VolumeMeta | None = read_json(os.path.join(self.dir, name, META))     # or garbage:
        if not isinstance(meta, dict) or not os.path.isdir(self.data_path(name)):  # none
            return None
        return meta

    def exists(self, name: str) -> bool:
        return self._meta(name) is not None

    def inspect(self, name: str, size: bool = True) -> VolumeView:
        check_volume_name(name)
        meta = self._meta(name)
        if meta is None:
            raise NotFound(f"volume {name!r} not found")
        return self._record(name, meta, self.users(), size)

    def list(self, size: bool = True) -> builtins.list[VolumeView]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        users = self.users()
        out: builtins.list[VolumeView] = []
        for name in names:
            meta = self._meta(name)
            if meta is not None:
                out.append(self._record(name, meta, users, size))
        return out

    def _record(self, name: str, meta: VolumeMeta, users: dict[str, builtins.list[VolumeUser]],
                size: bool) -> VolumeView:
        rec: VolumeView = {"name": name, "mountpoint": self.data_path(name), "created_at": meta.get("created_at"),
               "anonymous": bool(meta.get("anonymous")), "containers": users.get(name, [])}
        if size:
            from .overlay import upper_size
            used = upper_size(self.data_path(name))
            rec["size"], rec["files"] = used.bytes, used.files
        return rec

    def users(self) -> dict[str, builtins.list[VolumeUser]]:
        """volume name -> [{"id", "name"}] of the containers that name it.  A
        broken container's config cannot be read: it is listed under "*"."""
        out: dict[str, list[VolumeUser]] = {}
        try:
            ids = os.listdir(self.containers_dir)
        except FileNotFoundError:
            return out
        for cid in ids:
            if not disk.ID_RE.match(cid):
                continue
            try:
                config = disk.read_config(os.path.join(self.containers_dir, cid))
            except disk.Unreadable:
                out.setdefault("*", []).append({"id": cid, "name": cid[:12]})
                continue
            if config is None:
                continue                                # removed meanwhile
            for m in config.get("mounts", ()):
                if m.get("type") == "volume":
                    out.setdefault(m["source"], []).append({"id": cid, "name": config["name"]})
        return out

    # ------------------------------------------------------------ writing
    def create(self, name: str | None = None, *, anonymous: bool = False, exist_ok: bool = False) -> VolumeView:
        """Make a volume (a new anonymous one when name is None).  exist_ok: an
        existing one is returned as is (what `-v NAME:/path` does)."""
        with self.lock():
            name = self.create_locked(name, anonymous=anonymous, exist_ok=exist_ok)
        return self.inspect(name)

    def create_locked(self, name: str | None, *, anonymous: bool = False, exist_ok: bool = False) -> str:
        if name is None:
            name, anonymous = os.urandom(32).hex(), True
        check_volume_name(name)
        vdir = os.path.join(self.dir, name)
        if self._meta(name) is not None:
            if exist_ok:
                return name
            raise Conflict(f"volume {name!r} already exists")
        os.makedirs(self.data_path(name), mode=0o755, exist_ok=True)
        os.chmod(vdir, 0o700)
        write_json(os.path.join(vdir, META), {"name": name, "created_at": time.time(),
                                              "anonymous": anonymous}, durable=True)
        return name

    def remove(self, name: str) -> None:
        """Remove a volume no container names (Conflict otherwise, whatever force says)."""
        check_volume_name(name)
        with self.lock():
            if self._meta(name) is None:
                raise NotFound(f"volume {name!r} not found")
            users = self.users()
            if users.get(name):
                names = ", ".join(repr(u["name"]) for u in users[name][:3])
                more = f" and {len(users[name]) - 3} more" if len(users[name]) > 3 else ""
                raise Conflict(f"volume {name!r} is in use by container {names}{more}: remove the "
                               "container first (rm -f does not remove a volume in use)")
            if users.get("*"):
                raise Conflict(f"volume {name!r} may be in use: container {users['*'][0]['name']!r} is "
                               "broken and its mounts cannot be read; remove it first with rm -f")
            self.delete_locked(name)

    def remove_anonymous(self, names: Iterable[str | None]) -> builtins.list[str]:
        """Remove these anonymous volumes where no container names them any more
        (after their container's removal); the ones removed."""
        wanted = [n for n in names if n]
        if not wanted:
            return []
        out = []
        with self.lock():
            users = self.users()
            for name in wanted:
                meta = self._meta(name)
                if meta and meta.get("anonymous") and not users.get(name) and not users.get("*"):
                    self.delete_locked(name)
                    out.append(name)
        return out

    def delete_locked(self, name: str) -> None:
        vdir = os.path.join(self.dir, name)
        gone = os.path.join(self.dir, f".removing-{name}")
        os.rename(vdir, gone)                           # the name is free at once, whole or not at all
        shutil.rmtree(gone, ignore_errors=True)
