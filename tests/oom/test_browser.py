"""Chromium: a page is open, a container is OOM-killed through the CLI, the
toast appears on it, and the OOM page lists the kill and shows its card."""
import os

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = [pytest.mark.browser, pytest.mark.root]


@pytest.fixture
def removed(name):
    yield
    cli("rm", "-f", name)


def test_oom_kill_toast_and_events_page(login, server, rt, name, removed, shots):
    page = login("viewer")
    page.wait_for_function("document.body.dataset.oomSocket === 'open'")
    page.wait_for_timeout(700)        # the watcher attaches its readers right after the first socket
    r = cli("run", "-d", "--name", name, "--memory", "20m", "busybox",
            "sh", "-c", "head -c 100m /dev/zero | tail")
    assert r.returncode == 0, r.stderr
    toast = page.locator(".oom-toast").filter(has_text=name)
    expect(toast).to_be_visible(timeout=15_000)
    expect(toast).to_contain_text("tail (pid")
    expect(toast).to_contain_text("limit 20.0 MB")
    page.screenshot(path=os.path.join(shots, "oom-toast.png"))
    toast.click()
    card = page.locator("#oom-card")
    expect(card).to_contain_text(name)
    expect(card.locator(".oom-victim")).to_contain_text("tail, host pid")
    expect(card).to_contain_text("Killed process")
    page.screenshot(path=os.path.join(shots, "oom-card.png"), full_page=True)
    page.click("text=OOM kills")
    expect(page.locator("#oom-events")).to_contain_text(name)
