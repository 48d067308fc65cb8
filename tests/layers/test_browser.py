"""The layer page in Chromium: a file written inside the container appears live."""
import os

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = pytest.mark.browser


def test_new_file_appears_without_reload(rt, server, login, made, name, shots):
    from runtime import Spec
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    page = login("viewer")
    page.goto(f"{server}/containers/{c.id}/layers/")
    page.wait_for_selector("#mount dd")                       # running: the mount is shown
    assert c.upperdir in page.inner_text("#mount")
    page.wait_for_function("document.getElementById('changes-live').textContent === 'live'")
    page.evaluate("window.__same_page = true")
    assert page.locator('tr[data-path="/newfile"]').count() == 0
    r = cli("exec", name, "sh", "-c", "echo hi > /newfile")
    assert r.returncode == 0, r.stderr
    row = page.locator('tr[data-path="/newfile"]')
    row.wait_for(timeout=8000)
    assert row.locator(".kind").inner_text() == "A"
    assert page.evaluate("window.__same_page === true")       # no reload happened
    page.fill("#origin-path", "/newfile")
    page.click("#origin-form button")
    page.wait_for_function("document.getElementById('origin-result').textContent.includes('upper')")
    page.screenshot(path=os.path.join(shots, "layers-live.png"), full_page=True)


def test_upload_form_shows_progress_and_imports(rt, server, login, busybox_tar):
    page = login("operator")
    page.goto(f"{server}/images/")
    page.set_input_files("#import-file", busybox_tar)
    page.fill("#import-form input[name=name]", "browser/busybox:up")
    try:
        page.click("#import-form button")
        page.wait_for_function(
            "document.getElementById('import-status').textContent.startsWith('Imported')")
        assert page.locator("#import-progress .bar").evaluate("e => e.style.width") == "100%"
        first = rt.images.get("browser/busybox:up")
        page.goto(f"{server}/images/")                # (the page would reload itself after a success)
        # the same name again: refused, saying what uses it, until "replace" is ticked
        page.set_input_files("#import-file", busybox_tar)
        page.fill("#import-form input[name=name]", "browser/busybox:up")
        page.click("#import-form button")
        expect(page.locator("#import-status")).to_contain_text(
            "Import refused: image name already taken: 'browser/busybox:up'")
        expect(page.locator("#import-status")).to_contain_text("used by no container")
        assert rt.images.get("browser/busybox:up").id == first.id
        page.check("#import-replace")
        page.click("#import-form button")
        expect(page.locator("#import-status")).to_contain_text("Imported browser/busybox:up")
    finally:
        try:
            rt.remove_image("browser/busybox:up", force=True)
        except Exception:  # noqa: BLE001 - not imported
            pass


def test_upload_over_the_limit_is_refused_with_a_sentence(rt, server, login, tmp_path):
    """The server of the browser tests takes uploads up to 24m (tests/fixtures_web.py)."""
    big = tmp_path / "too-big.tar"
    with open(big, "wb") as f:
        f.truncate(25 << 20)
    before = {i.name for i in rt.images.list()}
    page = login("operator")
    page.goto(f"{server}/images/")
    page.set_input_files("#import-file", str(big))
    page.click("#import-form button")
    page.wait_for_function("document.getElementById('import-status').textContent.includes('largest')")
    status = page.locator("#import-status").inner_text()
    assert "the largest this dashboard accepts is 24.0" in status, status
    assert "failed" in page.locator("#import-progress").get_attribute("class")
    assert {i.name for i in rt.images.list()} == before


def test_removing_an_image_asks_first_and_offers_force_when_in_use(rt, server, login, made, name):
    """No confirmation, no removal; an image a container uses gets "Force remove",
    whose question names the containers; the name goes, the container stays whole."""
    from runtime import Spec
    img = f"{name.lower()}-img"
    c = rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    rt.commit(c.id, img)
    user = rt.create(Spec(image=img, name=name + "-user", cmd=("true",)))
    page = login("operator")
    asked = []

    def answer(dialog, accept):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()
    try:
        page.goto(f"{server}/image/{img}/")
        page.once("dialog", lambda d: answer(d, False))
        expect(page.locator("#image-remove button")).to_have_text("Force remove")
        page.click("#image-remove button")
        assert asked[-1] == (f"Image {img} is used by 1 container ({user.name}). Remove its name anyway? "
                             "They keep running from its layers.")
        assert rt.images.get(img).name == img                        # dismissed: nothing removed
        page.once("dialog", lambda d: answer(d, True))
        page.click("#image-remove button")
        page.wait_for_url(f"{server}/images/")
        expect(page.locator("#messages")).to_contain_text(f"Removed image {img}")
        assert img not in {i.name for i in rt.images.list()}
        assert rt.inspect(user.id).status == "created"              # the container stays whole
    finally:
        rt.remove(user.id, force=True)
        rt.image_gc()


def test_untagged_images_are_listed_with_what_uses_them(rt, server, login, made, name):
    """A name moved off an image leaves it <none>: the Images page lists it by
    id with the container that still runs its layers."""
    from runtime import Spec
    img = f"{name.lower()}-img"
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    old = rt.commit(c.id, img, message="one")
    user = rt.create(Spec(image=img, name=name + "-user", cmd=("true",)))
    new = rt.commit(c.id, img, message="two")   # the CLI's way: the name moves
    assert new.replaced == old.id
    page = login("viewer")
    try:
        page.goto(f"{server}/images/")
        row = page.locator(f'#dangling-images tr[data-image-id="{old.id}"]')
        expect(row).to_contain_text(old.id[:16])
        expect(row.locator("a")).to_have_text(user.name)
        expect(page.locator(f'#dangling-images tr[data-image-id="{new.id}"]')).to_have_count(0)
    finally:
        rt.remove(user.id, force=True)
        rt.remove_image(img, force=True)
        rt.image_gc()
