"""The web terminal's socket for another owner's container:
ws/containers/<key>/terminal/ (dashboard/containers/terminal.py's consumer,
same protocol, bounds, roles and audit).  The shell comes from the engine's
exec (runtime/discovery/engine_terminal.py), through the agent in production."""
from __future__ import annotations

from . import engines
from .terminal import TerminalConsumer


class EngineTerminalConsumer(TerminalConsumer):
    def exists(self) -> bool:
        return engines.get(key=self.container_id) is not None

    def open_terminal(self, *, user, rows: int, cols: int):
        return engines.terminal_open(user=user, key=self.container_id, rows=rows, cols=cols)
