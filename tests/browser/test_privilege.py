"""What a viewer sees, in Chromium: every figure, but no secrets (env values,
host command lines) and no export."""
import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = pytest.mark.browser


def test_viewer_sees_env_names_not_values_and_no_export(login, server, made, name):
    r = cli("create", "--name", name, "-e", "API_TOKEN=brw-secret-71", "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    viewer = login("viewer")
    viewer.goto(f"{server}/containers/{cid}/")
    env = viewer.locator("pre.env")
    expect(env).to_contain_text("API_TOKEN=")
    expect(env).not_to_contain_text("brw-secret-71")
    expect(viewer.locator(".env-note")).to_have_text("Values are shown to operators.")
    viewer.goto(f"{server}/image/busybox/")
    expect(viewer.locator("text=Export OCI tar")).to_have_count(0)
    viewer.goto(f"{server}/host/namespaces/")
    expect(viewer.locator("#cmdlines-hidden")).to_be_visible()

    operator = login("operator")
    operator.goto(f"{server}/containers/{cid}/")
    expect(operator.locator("pre.env")).to_contain_text("API_TOKEN=brw-secret-71")
    operator.goto(f"{server}/image/busybox/")
    with operator.expect_download() as dl:
        operator.click("text=Export OCI tar")
    assert dl.value.suggested_filename == "busybox.oci.tar"
    operator.goto(f"{server}/host/namespaces/")
    expect(operator.locator("#cmdlines-hidden")).to_have_count(0)
