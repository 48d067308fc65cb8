"""Sessions in Chromium against a real Daphne: open sockets follow logout and
role changes; login throttling; password change.  Each test makes its own user,
so the shared server's users (and their sessions) stay as they were."""
import secrets
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import cli
from tests.fixtures_web import log_in
from tests.webstack import manage

pytestmark = pytest.mark.browser


def _user(server, role: str) -> tuple[str, str]:
    username, password = f"u{secrets.token_hex(4)}", f"pw-{secrets.token_hex(8)}"
    manage(server.env, "terrarium_user", username, "--role", role, "--password", password)
    return username, password


def _login(browser, server, username, password, contexts):
    page = log_in(browser, server, username, password)
    contexts.append(page.context)
    return page


@pytest.fixture
def contexts():
    made = []
    yield made
    for ctx in made:
        ctx.close()


def _detail_live(page, server, cid):
    """The detail page with its three sockets open (list/head, live feed, OOM events)."""
    page.goto(f"{server}/containers/{cid}/")
    page.wait_for_function("(document.getElementById('graphs') || {dataset: {}}).dataset.live === 'on'"
                           " && document.body.dataset.live === 'on'"
                           " && document.body.dataset.oomSocket === 'open'")


def test_logout_in_one_tab_closes_the_other_tabs_sockets(browser, server, made, name, contexts):
    r = cli("run", "-d", "--name", name, "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    page = _login(browser, server, *_user(server, "viewer"), contexts)
    closed = {}
    page.on("websocket", lambda ws: ws.on("close", lambda w: closed.setdefault(w.url, time.monotonic())))
    _detail_live(page, server, cid)
    other = page.context.new_page()                      # a second tab, same session
    other.goto(server + "/")
    clicked = time.monotonic()
    other.click("form[action='/logout/'] button")
    other.wait_for_url("**/login/**")
    # the server closes every socket of the first tab (4401: the page then goes to log in)
    wanted = {f"/ws/containers/{cid}/live/", f"/ws/containers/{cid}/logs/", "/ws/containers/", "/ws/events/"}
    deadline = time.monotonic() + 10
    while {u.split(":" + server.rsplit(":", 1)[1], 1)[1].split("?")[0] for u in closed} != wanted:
        assert time.monotonic() < deadline, f"closed so far: {closed}"
        page.wait_for_timeout(50)
    assert max(closed.values()) - clicked < 5.0
    page.wait_for_url("**/login/**", timeout=5_000)


def test_viewer_demoted_mid_session_loses_the_live_feed(browser, server, made, name, contexts):
    r = cli("run", "-d", "--name", name, "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    username, password = _user(server, "viewer")
    page = _login(browser, server, username, password, contexts)
    _detail_live(page, server, cid)
    # the role is taken away by another process (no signal reaches Daphne): the re-check does it
    manage(server.env, "shell", "-c",
           f"from django.contrib.auth.models import User; User.objects.get(username={username!r}).groups.clear()")
    page.wait_for_function("document.getElementById('graphs').dataset.live === 'off'", timeout=5_000)
    expect(page.locator("#live-state")).to_have_text("disconnected")
    assert page.goto(f"{server}/containers/{cid}/").status == 403


def test_sixth_wrong_password_in_a_minute_is_throttled(browser, server, contexts):
    username, password = _user(server, "viewer")
    ctx = browser.new_context()
    contexts.append(ctx)
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    try:
        for _ in range(5):
            page.goto(server + "/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", "not-the-password")
            page.click("button[type=submit]")
            expect(page.locator(".form-error")).to_contain_text("correct username and password")
        page.fill("#id_username", username)
        page.fill("#id_password", "not-the-password")
        page.click("button[type=submit]")
        expect(page.locator("#locked-out .form-error")).to_contain_text(
            f"Too many failed logins for {username} or from this address")
        # the right password is refused too while the lock lasts
        page.goto(server + "/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        expect(page.locator("#locked-out")).to_be_visible()
    finally:
        manage(server.env, "axes_reset")          # the lock also holds 127.0.0.1: lift it for the others
    _login(browser, server, username, password, contexts)      # and after the reset, in again


def test_password_change_from_the_nav_logs_out_the_other_sessions(browser, server, contexts):
    username, password = _user(server, "operator")
    page = _login(browser, server, username, password, contexts)
    elsewhere = _login(browser, server, username, password, contexts)     # another browser
    elsewhere.wait_for_function("document.body.dataset.oomSocket === 'open'")
    page.click("#nav-password")
    page.wait_for_url("**/account/password/")
    page.fill("#id_old_password", password)
    page.fill("#id_new_password1", "A-new-Passw0rd-for-test")
    page.fill("#id_new_password2", "A-new-Passw0rd-for-test")
    page.click("#password-change button[type=submit]")
    expect(page.locator("#password-changed")).to_contain_text("Your password is changed")
    # the other browser's list socket is closed (4401) by the server's re-check (its session
    # hash is stale), and the page goes to log in by itself
    elsewhere.wait_for_url("**/login/**", timeout=10_000)
    page.goto(server + "/")                                   # this session stays
    assert page.url == server + "/"
    _login(browser, server, username, "A-new-Passw0rd-for-test", contexts)
