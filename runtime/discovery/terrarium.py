"""This runtime's own containers as discovery records (Found)."""
from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from . import Availability, Found, make_key

if TYPE_CHECKING:
    from ..model import Container


class Lister(Protocol):
    """What this source needs of a runtime: the in-process one, the agent's
    client or the CLI's audited wrapper."""
    @property
    def root(self) -> str: ...

    def list(self, all: bool = ...) -> list[Container]: ...  # noqa: A002 - docker's word

_STATES = {"created": "created", "running": "running", "paused": "paused", "exited": "exited"}


class TerrariumSource:
    engine = "terrarium"

    def __init__(self, rt: Lister):
        self.rt = rt

    def availability(self) -> Availability:
        return Availability(self.engine, "up", self.rt.root)

    def list(self) -> list[Found]:
        return [self.found(c) for c in self.rt.list(all=True)]

    def found(self, c: Container) -> Found:
        return Found(
            key=make_key(self.engine, c.id), engine=self.engine, id=c.id, name=c.name,
            image=c.image, state=_STATES.get(c.status, "unknown"), pid=c.pid,
            cgroup="/" + c.cgroup.strip("/") if c.cgroup else "",
            namespaces=MappingProxyType(dict(c.namespaces or {})), rootfs=c.rootfs or "",
            upperdir=c.upperdir or "", created_at=c.created_at,
            controls=frozenset({"start", "stop", "restart", "pause", "unpause", "kill",
                                "remove", "update"}),
            owner_note="Terrarium's own runtime owns this container.")
