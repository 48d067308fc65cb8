"""The Images page's Pull and Push forms in Chromium: a live progress bar
over the websocket, the image listed once pulled, pushed under another name
from its row's button, bad input answered in the page."""
import gzip
import os

import pytest
from playwright.sync_api import expect

from tests.registry import private_registry
from tests.runtime.test_registry import MT_OCI, Remote, layer_tar, sha

pytestmark = pytest.mark.browser


def test_pull_and_push_forms_show_progress_and_the_image(login, server, rt):
    with private_registry() as reg:
        name = f"{reg.addr}/base/busybox:v1"
        rt.tag_image("busybox", name)
        try:
            from runtime.images import distribution
            distribution.push(rt.images, name)
        finally:
            rt.remove_image(name)
        busybox = rt.images.get("busybox").layers[0].digest
        remote = Remote(reg.addr, "base/busybox", {"digest": busybox, "size": 0,
                                                   "mediaType": "application/vnd.oci.image.layer.v1.tar"})
        remote.base["size"] = int(remote.http.head(f"/v2/base/busybox/blobs/{busybox}").headers["content-length"])
        layers = []
        for i in range(2):
            tar = layer_tar({f"data{i}.bin": os.urandom(1 << 20)})
            layers.append((gzip.compress(tar, compresslevel=1), "application/vnd.oci.image.layer.v1.tar+gzip", sha(tar)))
        remote.image("web/app", "v1", layers)
        ref = f"{reg.addr}/web/app:v1"
        copy = f"{reg.addr}/web/copy:v2"
        try:
            viewer = login("viewer")
            viewer.goto(server + "/images/")
            expect(viewer.locator("#pull-form")).to_have_count(0)
            expect(viewer.locator("#push-form")).to_have_count(0)
            expect(viewer.locator("button.push-image")).to_have_count(0)

            page = login("operator")
            page.goto(server + "/images/")
            page.fill("#pull-ref", "Not A Reference")
            page.click("#pull-form button")
            expect(page.locator("#pull-status")).to_contain_text("Pull failed: invalid reference format")

            page.fill("#pull-ref", ref)
            page.click("#pull-form button")
            expect(page.locator("#pull-status")).to_contain_text("Pulled " + ref, timeout=30_000)
            assert page.locator("#pull-progress").get_attribute("data-percent") == "100"
            rows = page.locator("#pull-layers li")
            expect(rows).to_have_count(3)                  # busybox's (already here) + the two new
            expect(page.locator("#pull-layers")).to_contain_text("Already exists")
            expect(page.locator("#pull-layers")).to_contain_text("Pull complete")
            page.wait_for_load_state("load")
            expect(page.locator(f"section.image h2:has-text('{ref}')")).to_have_count(1, timeout=10_000)
            assert rt.images.get(ref).layers[-1].digest == layers[-1][2]

            # Push it back under another name: its row's button fills the form in.
            page.click(f"section.image:has(h2:has-text('{ref}')) button.push-image")
            expect(page.locator("#push-ref")).to_have_value(ref)
            page.fill("#push-as", copy)
            page.click("#push-form button")
            expect(page.locator("#push-status")).to_contain_text("Pushed " + copy, timeout=30_000)
            expect(page.locator("#push-layers")).to_contain_text("Mounted from web/app")
            assert remote.http.head("/v2/web/copy/manifests/v2", headers={"Accept": MT_OCI}).status_code == 200
            page.fill("#push-ref", "nope-no-such-image")
            page.fill("#push-as", "")
            page.click("#push-form button")
            expect(page.locator("#push-status")).to_contain_text("Push failed: image 'nope-no-such-image' not found")
        finally:
            remote.http.close()
            for name in (ref, copy):
                try:
                    rt.remove_image(name)
                except Exception:
                    pass


def test_registry_credentials_page_for_administrators(login, server, rt):
    """Administrators add credentials (checked with the registry: a wrong
    password is refused and not kept), see registry and user only, remove
    them; operators are refused the page."""
    from runtime.images import distribution
    with private_registry("htpasswd") as reg:
        try:
            op = login("operator")
            resp = op.goto(server + "/images/registries/")
            assert resp.status == 403
            op.goto(server + "/images/")
            expect(op.locator("#registries-link")).to_have_count(0)

            page = login("administrator")
            page.goto(server + "/images/")
            page.click("#registries-link")
            expect(page.locator("#registry-logins")).to_contain_text("None")
            page.fill("#reg-server", reg.addr)
            page.fill("#reg-user", reg.user)
            page.fill("#reg-password", "not-the-password")
            page.click("#registry-login-form button")
            expect(page.locator("body")).to_contain_text("incorrect username or password")
            assert distribution.logins(rt.root) == []
            page.fill("#reg-server", reg.addr)
            page.fill("#reg-user", reg.user)
            page.fill("#reg-password", reg.password)
            page.click("#registry-login-form button")
            expect(page.locator("body")).to_contain_text(f"Credentials for {reg.addr} checked")
            expect(page.locator("#registry-logins")).to_contain_text(reg.user)
            assert reg.password not in page.content()
            assert distribution.credentials(rt.root, reg.addr) == (reg.user, reg.password)
            page.goto(server + "/audit/?q=registry-login")
            assert reg.password not in page.content()
            page.goto(server + "/images/registries/")
            page.click("#registry-logins button:has-text('Remove')")
            expect(page.locator("#registry-logins")).to_contain_text("None")
            assert distribution.credentials(rt.root, reg.addr) is None
        finally:
            distribution.logout(rt.root, reg.addr)
