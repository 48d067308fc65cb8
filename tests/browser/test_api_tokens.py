"""The API token page in Chromium against a real Daphne: make a token, see it
once, use it (a container started through the API is running), revoke it;
the API's docs page renders from the app's own assets."""
import json
import os
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = pytest.mark.browser


def _api(server, path, token, method="GET"):
    """(status, JSON body) of one API request with the token in its header."""
    req = urllib.request.Request(server + path, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_make_see_once_use_and_revoke_a_token(login, server, rt, made, name, shots):
    r = cli("create", "--name", name, "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    page = login("operator")
    page.click("#nav-tokens")
    page.wait_for_url(server + "/account/tokens/")
    page.fill("#id_name", "browser test")
    page.click("#token-create-button")
    token = page.locator("#new-token-value").inner_text().strip()
    assert token.startswith("trm_")
    row = page.locator(f"#tokens tr[data-token='{token[:12]}']")
    expect(row).to_contain_text("browser test")
    page.screenshot(path=os.path.join(shots, "api-token-made.png"), full_page=True)

    assert _api(server, "/api/me", token)[1]["username"] == server.users["operator"][0]
    status, body = _api(server, f"/api/containers/{cid}/start", token, "POST")
    assert (status, body["status"]) == (200, "running")
    assert rt.inspect(cid).status == "running"                     # on the real runtime

    page.goto(server + "/account/tokens/")                         # shown once: now only its prefix
    expect(page.locator("#new-token-value")).to_have_count(0)
    assert token not in page.content()
    expect(row).to_contain_text(token[:12])

    row.locator("button", has_text="Revoke").click()
    expect(page.locator("#messages")).to_contain_text("revoked")
    expect(page.locator(f"#tokens tr[data-token='{token[:12]}']")).to_have_count(0)
    assert _api(server, "/api/me", token)[0] == 401


def test_the_docs_page_renders_offline(login, server):
    page = login("viewer")
    page.goto(server + "/api/docs")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Terrarium API", timeout=20_000)
    expect(page.get_by_role("button", name="POST /api/containers/{ref}/{action} start, stop, restart, kill")).to_be_visible()
