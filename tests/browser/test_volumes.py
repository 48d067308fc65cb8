"""Volumes in Chromium: a container with a named volume, a tmpfs and a
read-only root from the create form; its layer view; the Volumes page
(which container uses each, removal refused while in use, create and remove
with a confirmation)."""
import os
import re
import secrets

import pytest
from playwright.sync_api import expect

from runtime import NotFound

pytestmark = pytest.mark.browser


def test_volume_from_the_form_to_the_volumes_page(login, server, rt, made, name, shots):
    vol, spare = f"bv-{secrets.token_hex(3)}", f"bw-{secrets.token_hex(3)}"
    page = login("operator")
    try:
        page.goto(server + "/containers/new/")
        expect(page.locator("#id_binds")).to_have_count(0)              # administrators only
        page.select_option("#id_image", "busybox")
        page.fill("#id_name", name)
        page.fill("#id_command", "sh -c 'echo kept > note; exec sleep 300'")
        page.fill("#id_workdir", "/data")
        page.fill("#id_volumes", f"{vol}:/data")
        page.fill("#id_tmpfs", "/scratch:size=1m")
        page.check("#id_read_only")
        page.click("button:has-text('Create')")
        page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/$"))
        c = rt.inspect(name)
        assert (c.status, c.workdir, c.read_only) == ("running", "/data", True)
        assert [(m.type, m.target) for m in c.mounts] == [("volume", "/data"), ("tmpfs", "/scratch")]

        page.goto(server + f"/containers/{c.id}/layers/")
        box = page.locator("#outside-overlay")
        expect(box).to_contain_text("root read-only")
        expect(box.locator("tr[data-target='/data']")).to_contain_text(rt.volumes.data_path(vol))
        expect(box.locator("tr[data-target='/scratch']")).to_contain_text("1 MiB max")
        box.screenshot(path=os.path.join(shots, "outside-overlay.png"))

        page.click("nav >> text=Volumes")
        row = page.locator(f"#volume-{vol}")
        expect(row.locator(".users")).to_have_text(name)
        page.once("dialog", lambda d: d.accept())
        row.locator("button:has-text('Remove')").click()
        expect(page.locator("#messages")).to_contain_text("is in use by container")
        assert rt.volumes.inspect(vol)["containers"]                   # still there

        page.fill("#volume-name", spare)
        page.click("#volume-create button")
        expect(page.locator(f"#volume-{spare}")).to_be_visible()
        page.once("dialog", lambda d: d.dismiss())                    # asked, said no: kept
        page.locator(f"#volume-{spare} button:has-text('Remove')").click()
        expect(page.locator(f"#volume-{spare}")).to_be_visible()
        page.once("dialog", lambda d: d.accept())
        page.locator(f"#volume-{spare} button:has-text('Remove')").click()
        expect(page.locator(f"#volume-{spare}")).to_have_count(0)
        page.screenshot(path=os.path.join(shots, "volumes.png"), full_page=True)
    finally:
        for ref in (name,):
            try:
                rt.remove(ref, force=True)
            except NotFound:
                pass
        for v in (vol, spare):
            try:
                rt.volumes.remove(v)
            except NotFound:
                pass
