"""The audit log names the change (before → after) and shows the CLI's
actions (from the runtime's own log) next to the pages'."""
import json
import os

import pytest
from playwright.sync_api import expect

from runtime.spec import make_spec
from tests.conftest import cli

pytestmark = pytest.mark.browser


def test_the_audit_page_shows_changes_and_cli_actions(login, server, rt, made, name):
    c = rt.create(make_spec(image="busybox", name=name, cmd=["sleep", "300"]))
    rt.start(c.id)
    page = login("operator")
    page.goto(server + f"/containers/{c.id}/")
    page.fill("input[name=memory]", "64m")
    page.click("button:has-text('Update limits')")
    expect(page.locator("#messages")).to_contain_text("Limits updated")

    done = cli("update", "--memory", "128m", name)              # as root, in-process
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in open(os.path.join(rt.root, "audit.log"))]
    mine = [r for r in records if r.get("verb") == "update" and r.get("target") == name]
    assert mine[-1]["user"] == f"cli:{os.getuid()}"
    assert mine[-1]["change"] == {"memory": [64 << 20, 128 << 20]}
    done = cli("stop", "-t", "1", name)
    assert done.returncode == 0, done.stderr

    admin = login("administrator")
    admin.goto(server + f"/audit/?q={name}")
    web = admin.locator("tr[data-source=web]", has_text="update")
    expect(web.locator("td.change")).to_have_text("memory unlimited → 64 MiB")
    cli_update = admin.locator("tr[data-source=cli]", has_text="update")
    expect(cli_update.locator("td.change")).to_have_text("memory 64 MiB → 128 MiB")
    expect(cli_update).to_contain_text(f"cli:{os.getuid()}")
    expect(admin.locator("tr[data-source=cli]", has_text="stop")).to_have_count(1)
    # newest first: the CLI's stop above the page's update
    sources = admin.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.source)")
    assert sources.index("cli") < sources.index("web"), sources
