"""Whether an open websocket may stay open.

A socket is authorised at connect, but the session behind it can end
afterwards (logout, expiry, a password change elsewhere), the user can be
deactivated and their role can change.  So every socket joins two groups —
one for its session, one for its user — and:

- ``user_logged_out`` sends ``access.ended`` to the session's group: those
  sockets close at once (4401);
- a change of the user (saved, groups, permissions) or of a group's
  permissions sends ``access.changed`` to the users concerned: their sockets
  re-check at once;
- every socket also re-checks every TERRARIUM_WS_RECHECK seconds (default 3),
  which catches what no signal in this process saw (another worker, a
  ``manage.py`` command, a session deleted or expired); the sockets of one
  session share one answer for half a second, so a page's three sockets
  cost one set of queries, not three.

The check reads the session without changing it (unlike
``django.contrib.auth.get_user``, which flushes a session whose hash does not
match: a re-check racing a password change must not log the person out).
Group names carry a hash of the session key, never the key itself (the Redis
layer's channel names are visible to whoever reads Redis).
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import auth
from django.db import transaction
from django.utils.crypto import constant_time_compare

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
ENDED = "access.ended"
CHANGED = "access.changed"


def recheck_seconds() -> float:
    return float(getattr(settings, "TERRARIUM_WS_RECHECK", 3.0))


def session_group(session_key: str) -> str:
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_id) -> str:
    return f"user.{user_id}"


def sockets_per_session() -> int:
    return int(getattr(settings, "TERRARIUM_WS_PER_SESSION", 32))


_open: Counter = Counter()        # session key hash -> sockets open in this process (loop only)


def claim(session_key: str | None) -> bool:
    """One more socket for this session, unless it has its share open already
    (a page has three; a viewer opening thousands would each be served)."""
    key = session_group(session_key or "")
    if _open[key] >= sockets_per_session():
        return False
    _open[key] += 1
    return True


def release(session_key: str | None) -> None:
    key = session_group(session_key or "")
    _open[key] -= 1
    if _open[key] <= 0:
        del _open[key]


SHARED_SECONDS = 0.5    # how long one answer serves the other sockets of a session
_answers: dict[tuple, tuple[float, int | None]] = {}     # (session, user, perm) -> (when, code)
_answers_lock = threading.Lock()                         # answered in database threads


def socket_access(*, session_key: str | None, user_id, perm: str, shared: bool = False) -> int | None:
    """None while a socket opened by this session and user may stay open,
    else the close code: 4401 (no valid session for that user) or 4403.

    shared: an answer given in the last SHARED_SECONDS for the same session,
    user and permission will do.  A page's sockets (three) start their
    periodic re-checks together: one set of queries serves them all, instead
    of three.  Checks a signal asked for are never shared."""
    key = (session_group(session_key or ""), user_id, perm)
    now = time.monotonic()
    if shared:
        with _answers_lock:
            hit = _answers.get(key)
        if hit is not None and now - hit[0] < min(SHARED_SECONDS, recheck_seconds() / 2):
            return hit[1]
    code = _check(session_key, user_id, perm)
    with _answers_lock:
        if len(_answers) > 1024:                         # forget the sessions long gone
            for k in [k for k, (when, _) in _answers.items() if now - when > SHARED_SECONDS]:
                del _answers[k]
        _answers[key] = (now, code)
    return code


def _check(session_key: str | None, user_id, perm: str) -> int | None:
    if not session_key:
        return CLOSE_UNAUTHENTICATED
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()                       # {} when deleted or expired
    if data.get(auth.SESSION_KEY) != str(user_id):
        return CLOSE_UNAUTHENTICATED
    backend_path = data.get(auth.BACKEND_SESSION_KEY)
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return CLOSE_UNAUTHENTICATED
    user = auth.load_backend(backend_path).get_user(user_id)   # None when inactive or deleted
    if user is None:
        return CLOSE_UNAUTHENTICATED
    stored = data.get(auth.HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not any(constant_time_compare(stored, h) for h in hashes):
        return CLOSE_UNAUTHENTICATED             # the password changed since this login
    if not user.has_perm(perm):
        return CLOSE_FORBIDDEN
    return None


# ------------------------------------------------------------ signal side
def _send(group: str, kind: str) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, {"type": kind})


def _changed(user_id) -> None:
    """Ask the user's sockets to re-check once the change is committed (the
    admin saves inside a transaction: a re-check before the commit would still
    see the old role)."""
    transaction.on_commit(lambda: _send(user_group(user_id), CHANGED))


def on_logged_out(sender, request=None, user=None, **kwargs):
    """user_logged_out: close the sockets of that session now."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        _send(session_group(key), ENDED)


def on_user_saved(sender, instance=None, created=False, **kwargs):
    """post_save of a user (active flag, password, staff): their sockets re-check."""
    if not created and instance is not None and instance.pk is not None:
        _changed(instance.pk)


def on_user_deleted(sender, instance=None, **kwargs):
    """post_delete of a user: their sockets re-check (and close)."""
    if instance is not None and instance.pk is not None:
        _changed(instance.pk)


def on_user_m2m(sender, instance=None, action="", reverse=False, pk_set=None, **kwargs):
    """A user's groups or permissions changed, from either side: they re-check."""
    if not reverse:                               # instance is the user
        if action in ("post_add", "post_remove", "post_clear"):
            _changed(instance.pk)
        return
    if action in ("post_add", "post_remove"):     # instance is a group or permission
        ids = pk_set or ()
    elif action == "pre_clear":                   # after the clear, no one is left to ask
        ids = instance.user_set.values_list("pk", flat=True)
    else:
        return
    for pk in list(ids):
        _changed(pk)


def on_group_perms(sender, instance=None, action="", reverse=False, **kwargs):
    """A group's permissions changed: every member re-checks."""
    if action not in ("post_add", "post_remove", "post_clear") or reverse:
        return
    for pk in instance.user_set.values_list("pk", flat=True):
        _changed(pk)


def connect_signals() -> None:
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    User = auth.get_user_model()
    auth.signals.user_logged_out.connect(on_logged_out, dispatch_uid="terrarium-ws-logout")
    post_save.connect(on_user_saved, sender=User, dispatch_uid="terrarium-ws-user")
    post_delete.connect(on_user_deleted, sender=User, dispatch_uid="terrarium-ws-user-gone")
    for through in (User.groups.through, User.user_permissions.through):
        m2m_changed.connect(on_user_m2m, sender=through, dispatch_uid=f"terrarium-ws-{through.__name__}")
    m2m_changed.connect(on_group_perms, sender=Group.permissions.through, dispatch_uid="terrarium-ws-gperms")
