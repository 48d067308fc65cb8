"""The admin pages say how long records are kept (settings' defaults here)."""
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_admin_pages_show_the_retention(login, server):
    page = login("administrator")
    page.click("text=Admin")
    expect(page.locator("#retention-module")).to_contain_text("Audit entries are kept 180 days")
    expect(page.locator("#retention-module")).to_contain_text("OOM events are kept 30 days")
    expect(page.locator("#retention-module")).to_contain_text("Per-minute history is kept 24 hours")
    page.goto(server + "/admin/containers/oomevent/")
    expect(page.locator("#retention")).to_contain_text("at most the newest 10,000")
