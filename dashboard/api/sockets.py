"""The API's websocket: the web terminal for scripts, with an API token.

    ws://HOST/api/containers/<ref>/terminal?rows=R&cols=C
    Authorization: Bearer trm_...

The same session as the page's terminal (dashboard/containers/terminal.py:
its messages, output window and acknowledgements, per-user limit, audit row
with duration and exit code), for operators and administrators; <ref> is an
id, a name or a unique id prefix, as everywhere in the API.  Only the
`Authorization` header carries the token: never the URL (a query naming a
token, or any `trm_` value, is closed with 4400), and no session cookie is
read.  A token revoked, a user deactivated or no longer an operator closes
the socket within TERRARIUM_WS_RECHECK seconds, as a logout closes the page's.
No Origin check: a browser cannot put an Authorization header on a
websocket, so another site's page cannot open this one with someone's token.

Close codes: 4400 token in the URL, 4401 no or bad token, 4403 not an
operator, 4404 no such container, 4409 not running (or no shell), 4429 too
many terminals open.
"""
from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from django.urls import re_path

from dashboard.containers.access import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from dashboard.containers.terminal import ENDED_BY, TerminalConsumer

from . import tokens
from .api import URL_TOKEN_NAMES

CLOSE_BAD_REQUEST = 4400


class _TokenSession:
    """What ViewerSocket reads of a session: a key per token (its sockets are
    counted together, as a browser session's are)."""

    def __init__(self, token: str):
        self.session_key = "api-token:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _bearer(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


def _token_in_url(scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return any(k.lower() in URL_TOKEN_NAMES or v.startswith(tokens.PREFIX) or k.startswith(tokens.PREFIX)
               for k, v in parse_qsl(query, keep_blank_values=True))


def _find(ref: str) -> str | None:
    """A container's full id from an id, name or unique prefix (the mirror brought in step once)."""
    from dashboard.containers import selectors, services
    row = selectors.container_find(ref=ref)
    if row is None:
        services.containers_refresh()
        row = selectors.container_find(ref=ref)
    return row.id if row else None


class ApiTerminalConsumer(TerminalConsumer):
    """TerminalConsumer, authenticated by an API token in the header."""

    async def connect(self):
        if _token_in_url(self.scope):
            return await self._refuse(CLOSE_BAD_REQUEST)
        self.token = _bearer(self.scope)
        user = await database_sync_to_async(tokens.token_user)(self.token) if self.token else None
        if user is None:
            return await self._refuse(CLOSE_UNAUTHENTICATED)
        # the token's user, never a session cookie's (AuthMiddlewareStack is not on this route)
        self.scope["user"], self.scope["session"] = user, _TokenSession(self.token)
        await super().connect()

    async def refused(self) -> int | None:
        ref = self.scope["url_route"]["kwargs"]["ref"]
        container_id = await database_sync_to_async(_find)(ref)
        if container_id is None:
            return CLOSE_NOT_FOUND
        self.scope["url_route"]["kwargs"]["container_id"] = container_id
        return await super().refused()

    async def recheck(self, shared: bool = False) -> int | None:
        """The token instead of a session: still there, its user active and an operator."""
        code = await database_sync_to_async(self._token_access)()
        if code is not None and getattr(self, "joined", False):
            await self._end(code)
        return code

    async def _finish(self, code: int | None, reason: str) -> None:
        if reason == ENDED_BY[CLOSE_UNAUTHENTICATED]:      # no session to log out of: the token went
            reason = "token revoked or user deactivated"
        await super()._finish(code, reason)

    def _token_access(self) -> int | None:
        user = tokens.token_user(self.token)
        if user is None or user.pk != self.user_id:
            return CLOSE_UNAUTHENTICATED
        return None if user.has_perm(self.perm) else CLOSE_FORBIDDEN


websocket_urlpatterns = [
    re_path(r"^api/containers/(?P<ref>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})/terminal/?$",
            ApiTerminalConsumer.as_asgi()),
]
