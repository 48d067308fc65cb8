"""Lifecycle in Chromium: a failed start from the form, health checks and restart
policy on the detail page, and the "stopping" state (runtime/lifecycle.py)."""
import os
import re
import time

import pytest
from playwright.sync_api import expect

from runtime import NotFound, Spec

pytestmark = pytest.mark.browser


def _live(page):
    page.wait_for_function("document.body.dataset.live === 'on'")


def test_failed_start_from_the_form_is_removed_and_health_shows_live(login, server, rt, made, name, shots):
    page = login("operator")
    page.goto(server + "/containers/new/")
    page.select_option("#id_image", "busybox")
    page.fill("#id_name", name)
    page.fill("#id_command", "no-such-program --flag")
    page.select_option("#id_restart", "on-failure")
    page.fill("#id_restart_max", "2")
    page.fill("#id_health_cmd", "echo sick; exit 1")
    page.fill("#id_health_interval", "0.2s")
    page.fill("#id_health_retries", "2")
    page.click("button:has-text('Create')")
    error = page.locator(".form-error[role=alert]")
    expect(error).to_contain_text("failed to start")
    expect(error).to_contain_text("the container was removed")
    with pytest.raises(NotFound):
        rt.inspect(name)                                   # nothing left behind: the name is free
    expect(page.locator("#id_name")).to_have_value(name)   # the form keeps what was typed
    page.screenshot(path=os.path.join(shots, "create-failed-start.png"), full_page=True)
    page.fill("#id_command", "sleep 300")
    page.click("button:has-text('Create')")
    page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/$"))
    expect(page.locator("#detail-head [data-state]")).to_have_text("running")
    expect(page.locator("#restart-policy")).to_have_text("on-failure:2")
    # health: starting, then unhealthy after two failures, live through the change events
    expect(page.locator("#detail-head [data-health]")).to_have_text("unhealthy", timeout=15_000)
    expect(page.locator("#health-status")).to_contain_text("failures in a row")
    expect(page.locator("#health-log")).to_contain_text("sick")
    expect(page.locator("#card-health")).to_contain_text("echo sick; exit 1 every 0.2s (timeout 30s, 2 retries)")
    assert rt.inspect(name).health["status"] == "unhealthy"
    page.screenshot(path=os.path.join(shots, "detail-unhealthy.png"), full_page=True)


def test_stopping_shows_with_buttons_disabled_then_exited(login, server, rt, made, name, shots):
    c = rt.run(Spec(image="busybox", name=name,
                    cmd=("sh", "-c", "trap 'echo not yet' TERM; while :; do sleep 0.1; done")))
    page = login("operator")
    page.goto(f"{server}/containers/{c.id}/")
    _live(page)
    head = page.locator("#detail-head")
    head.locator("form[data-action=stop] input[name=timeout]").fill("3")
    head.locator("button[data-action=stop]").click()
    expect(head.locator("[data-state]")).to_contain_text("stopping", timeout=5_000)
    expect(head.locator("[data-state]")).to_contain_text("3 s timeout")
    for action in ("stop", "restart", "pause"):
        expect(page.locator(f"#detail-head button[data-action={action}]")).to_be_disabled()
    expect(page.locator("#detail-head button[data-action=kill]")).to_be_enabled()
    assert rt.inspect(name).stopping["timeout"] == 3
    head.screenshot(path=os.path.join(shots, "detail-stopping.png"))
    # SIGTERM did nothing: SIGKILL after the 3 s
    expect(page.locator("#detail-head [data-state]")).to_have_text("exited (137)", timeout=10_000)
    expect(page.locator("#detail-head button[data-action=start]")).to_be_enabled()


def test_a_bad_stop_timeout_is_refused_clearly(login, server, rt, made, name):
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    page = login("operator")
    r = page.request.post(f"{server}/containers/{c.id}/stop/",
                          form={"timeout": "soon"},
                          headers={"X-Requested-With": "fetch", "X-CSRFToken": _csrf(page)})
    assert r.status == 400 and "seconds from 0 to 3600" in r.json()["message"]
    assert rt.inspect(name).status == "running"


def _csrf(page):
    return next(ck["value"] for ck in page.context.cookies() if ck["name"] == "csrftoken")


def test_a_detail_page_drawn_before_a_change_its_socket_missed_catches_up(login, server, rt, made, name):
    """The page is drawn with the container running; before its socket joins,
    the container is stopped outside the dashboard and the server publishes
    it.  That event is lost to the page, but the head says when its data was
    taken, and the socket is told to resync."""
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    page = login("viewer")
    head_url = f"{server}/containers/{c.id}/head/"

    def late(ws):                                # the socket joins only after the change is published
        rt.stop(c.id, timeout=0)
        deadline = time.monotonic() + 10
        while "exited" not in page.context.request.get(head_url).text():  # the server has it (and published)
            assert time.monotonic() < deadline, "the server never saw the stop"
            time.sleep(0.1)
        ws.connect_to_server()
    page.route_web_socket(re.compile(r"/ws/containers/$"), late)
    page.goto(f"{server}/containers/{c.id}/")
    taken = float(page.locator("#detail-head").get_attribute("data-taken-at"))
    assert abs(taken - time.time()) < 60
    expect(page.locator("#detail-head [data-state]")).to_contain_text("exited", timeout=10_000)
