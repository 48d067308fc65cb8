"""API tokens: made, checked and revoked here, and only here.

A token is "trm_" + 43 URL-safe characters (32 random bytes).  The person sees
it once, when it is made; the database keeps its SHA-256 (models.ApiToken).
Making and revoking one is written to the audit log like any other action."""
from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from dashboard.containers.services import _audit

from .models import ApiToken

PREFIX = "trm_"
SHOWN = 12                  # characters kept in clear: "trm_" + 8
LAST_USED_EVERY = 60        # seconds: last_used is written at most this often per token


class TokenError(Exception):
    """A token could not be made; str(e) is for the person."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """A new token for `user` → (its row, the token itself: show it once, then it is gone)."""
    name = " ".join(name.split())
    if not name:
        raise TokenError("give the token a name (what will use it)")
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise TokenError("the name is too long: 64 characters at most")
    token = PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        row = ApiToken.objects.create(user=user, name=name, prefix=token[:SHOWN], digest=digest(token))
        _audit(user, "token-create", result="ok", details={"token": row.prefix, "name": name})
    return row, token


def token_revoke(*, user, token_id: int) -> ApiToken | None:
    """Revoke one of `user`'s own tokens; None if they have no such token."""
    with transaction.atomic():
        row = ApiToken.objects.filter(user=user, pk=token_id).first()
        if row is None:
            return None
        row.delete()
        _audit(user, "token-revoke", result="ok", details={"token": row.prefix, "name": row.name})
    return row


def token_list(*, user) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user))


def token_user(token: str):
    """The active user a token belongs to, or None (unknown, revoked, or the user
    deactivated: checked on every request, so deactivation takes effect at once)."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    row = ApiToken.objects.select_related("user").filter(digest=digest(token)).first()
    if row is None or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used is None or (now - row.last_used).total_seconds() >= LAST_USED_EVERY:
        ApiToken.objects.filter(pk=row.pk).update(last_used=now)
    return row.user
