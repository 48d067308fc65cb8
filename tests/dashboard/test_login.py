"""Logging in: throttled per username and per address (django-axes)."""
import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "pw-vera-x9"                       # tests/dashboard/conftest.py's password for vera


def _try(client, username, password, ip="127.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password},
                       REMOTE_ADDR=ip)


def test_sixth_wrong_password_in_a_minute_is_throttled_with_a_message(viewer):
    c = Client()
    codes = [_try(c, "vera", "wrong").status_code for _ in range(5)]
    assert codes == [200] * 5                               # the form again, "wrong password"
    r = _try(c, "vera", "wrong")
    assert r.status_code == 429
    assert "Too many failed logins for vera" in r.content.decode()
    r = _try(c, "vera", PASSWORD)                           # even the right one, for now
    assert r.status_code == 429 and "_auth_user_id" not in c.session


def test_throttle_is_per_username_from_any_address(viewer):
    assert [_try(Client(), "vera", "wrong", ip=f"10.0.0.{i}").status_code for i in range(1, 7)] == \
        [200] * 5 + [429]
    assert _try(Client(), "vera", PASSWORD, ip="10.0.0.99").status_code == 429


def test_throttle_is_per_address_for_any_username(viewer, operator):
    assert [_try(Client(), f"nobody{i}", "wrong", ip="10.0.0.7").status_code for i in range(6)] == \
        [200] * 5 + [429]
    assert _try(Client(), "otto", "pw-otto-x9", ip="10.0.0.7").status_code == 429
    assert _try(Client(), "otto", "pw-otto-x9", ip="10.0.0.8").status_code == 302   # others still log in


def test_a_few_typos_do_not_lock_anyone_out(viewer):
    c = Client()
    for _ in range(4):
        _try(c, "vera", "wrong")
    r = _try(c, "vera", PASSWORD)
    assert r.status_code == 302 and r["Location"] == reverse("containers:list")


def test_throttle_defaults(settings):
    import datetime as dt
    assert settings.AXES_FAILURE_LIMIT == 6          # locks at the 6th failure
    assert settings.AXES_COOLOFF_TIME == dt.timedelta(seconds=60)
    assert settings.AXES_LOCKOUT_PARAMETERS == ["ip_address", "username"]


# ---------------------------------------------------------------- password change
def test_every_role_can_change_its_password(viewer_client, operator_client, admin_client_role,
                                            django_user_model):
    for client, name in ((viewer_client, "vera"), (operator_client, "otto"), (admin_client_role, "ada")):
        assert client.get(reverse("password_change")).status_code == 200
        r = client.post(reverse("password_change"), {
            "old_password": f"pw-{name}-x9", "new_password1": "a-Fresh-pass-2931",
            "new_password2": "a-Fresh-pass-2931"})
        assert r.status_code == 302 and r["Location"] == reverse("password_change_done")
        assert django_user_model.objects.get(username=name).check_password("a-Fresh-pass-2931")
        assert client.get(reverse("containers:list")).status_code == 200      # still logged in


def test_wrong_old_password_changes_nothing(viewer_client, viewer):
    r = viewer_client.post(reverse("password_change"), {
        "old_password": "not-it", "new_password1": "a-Fresh-pass-2931", "new_password2": "a-Fresh-pass-2931"})
    assert r.status_code == 200 and "Your old password was entered incorrectly" in r.content.decode()
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)


def test_password_change_needs_a_login():
    r = Client().get(reverse("password_change"))
    assert r.status_code == 302 and r["Location"].startswith(reverse("login"))


def test_ensure_admin_tells_the_admin_to_change_the_password(db):
    from io import StringIO

    from django.core.management import call_command
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    assert "change it at once, at /account/password/" in out.getvalue()
