"""The websocket access check (dashboard/containers/access.py) against the
real database: what a periodic re-check costs, and that sharing an answer
never hides a change a signal announced."""
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard.containers import access
from dashboard.containers.roles import CAN_VIEW


def _session_of(user) -> str:
    c = Client()
    c.force_login(user)
    return c.session.session_key


def test_a_sessions_sockets_share_one_periodic_check(viewer):
    key = _session_of(viewer)
    with CaptureQueriesContext(connection) as first:
        assert access.socket_access(session_key=key, user_id=viewer.pk, perm=CAN_VIEW, shared=True) is None
    assert len(first) > 0                                  # the session, the user, the permission
    with CaptureQueriesContext(connection) as others:      # the page's two other sockets, just after
        for _ in range(2):
            assert access.socket_access(session_key=key, user_id=viewer.pk, perm=CAN_VIEW,
                                        shared=True) is None
    assert len(others) == 0


def test_a_check_a_signal_asked_for_is_never_shared(viewer):
    key = _session_of(viewer)
    assert access.socket_access(session_key=key, user_id=viewer.pk, perm=CAN_VIEW, shared=True) is None
    viewer.groups.clear()                                  # the role goes
    viewer = type(viewer).objects.get(pk=viewer.pk)
    assert access.socket_access(session_key=key, user_id=viewer.pk, perm=CAN_VIEW) == access.CLOSE_FORBIDDEN
    # and the next periodic check shares that fresh answer, not the old one
    assert access.socket_access(session_key=key, user_id=viewer.pk, perm=CAN_VIEW,
                                shared=True) == access.CLOSE_FORBIDDEN
