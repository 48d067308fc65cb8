"""The dashboard in Chromium against a real Daphne server and the real runtime."""
import os
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = pytest.mark.browser


def _row(page, name):
    return page.locator(f'tr[data-name="{name}"]')


def _live(page):
    """Wait until the page's websocket is open."""
    page.wait_for_function("document.body.dataset.live === 'on'")


def test_create_run_and_stop_without_reload(login, server, rt, made, name, shots):
    page = login("operator")
    page.click("text=+ New container")
    page.select_option("#id_image", "busybox")
    page.fill("#id_name", name)
    page.fill("#id_command", "sleep 300")
    page.fill("#id_memory", "32m")
    page.click("button:has-text('Create')")
    page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/$"))
    expect(page.locator("#detail-head [data-state]")).to_have_text("running")
    c = rt.inspect(name)
    assert c.status == "running" and c.limits.memory == 32 << 20
    expect(page.locator("#layers")).to_contain_text("upper")
    expect(page.locator("#seccomp-mode")).to_have_text("default")
    expect(page.locator("body")).to_contain_text(str(c.namespaces["pid"]))
    page.screenshot(path=os.path.join(shots, "detail.png"), full_page=True)

    page.click("text=Containers")
    row = _row(page, name)
    expect(row.locator("[data-state]")).to_have_text("running")
    expect(row).to_contain_text("32 MiB")
    _live(page)
    page.evaluate("window.__noReload = true")
    page.screenshot(path=os.path.join(shots, "list.png"), full_page=True)
    row.locator("button[data-action=stop]").click()
    expect(_row(page, name).locator("[data-state]")).to_have_text(re.compile(r"exited \(\d+\)"))
    assert page.evaluate("window.__noReload") is True          # same document: no reload
    assert rt.inspect(name).status == "exited"
    expect(_row(page, name).locator("button[data-action=start]")).to_be_visible()

    # the detail page's state and buttons are live too
    _row(page, name).locator("a.name").click()
    _live(page)
    page.evaluate("window.__noReload = true")
    page.locator("#detail-head button[data-action=start]").click()
    expect(page.locator("#detail-head [data-state]")).to_have_text("running")
    expect(page.locator("#detail-head button[data-action=stop]")).to_be_visible()
    assert page.evaluate("window.__noReload") is True


def test_cli_container_appears_in_open_list(login, server, rt, made, name):
    page = login("viewer")
    _live(page)
    page.evaluate("window.__noReload = true")
    r = cli("run", "-d", "--name", name, "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    expect(_row(page, name).locator("[data-state]")).to_have_text("running", timeout=10_000)
    assert page.evaluate("window.__noReload") is True
    # and leaves it when removed from the CLI too
    assert cli("rm", "-f", name).returncode == 0
    expect(_row(page, name)).to_have_count(0, timeout=10_000)


def test_viewer_sees_no_buttons_and_a_forged_post_is_refused(login, server, rt, made, name):
    from runtime import Spec
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    page = login("viewer")
    row = _row(page, name)
    expect(row.locator("[data-state]")).to_have_text("running")
    expect(page.locator("form.action-form")).to_have_count(0)
    expect(page.locator("text=+ New container")).to_have_count(0)
    page.goto(f"{server}/containers/{c.id}/")
    expect(page.locator("form.action-form")).to_have_count(0)
    # A forged POST with a valid CSRF token (the logout form's) is still refused.
    status = page.evaluate("""async (url) => {
        const token = document.querySelector('input[name=csrfmiddlewaretoken]').value;
        const r = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token},
                                    body: new URLSearchParams({csrfmiddlewaretoken: token})});
        return r.status;
    }""", f"/containers/{c.id}/stop/")
    assert status == 403
    assert rt.inspect(c.id).status == "running"


def test_bad_memory_limit_shows_field_error_and_creates_nothing(login, server, rt, made, name):
    page = login("operator")
    page.goto(server + "/containers/new/")
    page.fill("#id_name", name)
    page.fill("#id_command", "sleep 300")
    page.fill("#id_memory", "lots")
    page.click("button:has-text('Create')")
    expect(page.locator("#field-memory .field-error")).to_contain_text("invalid memory limit")
    expect(page.locator("#id_name")).to_have_value(name)     # the form keeps what was typed
    assert all(c.name != name for c in rt.list())


def test_pages_render_for_an_administrator(login, server, rt, made, name):
    page = login("administrator")
    page.goto(server + "/images/")
    expect(page.locator("#image-lab")).to_contain_text("sha256:")
    page.goto(server + "/audit/")
    expect(page.locator("h1")).to_have_text("Audit log")
    page.goto(server + "/admin/containers/auditentry/")
    expect(page.locator("#content h1")).to_contain_text("audit entr")
