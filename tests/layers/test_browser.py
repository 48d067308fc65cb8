"""The layer page in Chromium: a file written inside the container appears live."""
import os

import pytest

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
        assert rt.images.get("browser/busybox:up")
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
