"""Every page at a phone's width (390 × 844) and at desktop widths: no
horizontal overflow of the page, the detail page's actions inside the
viewport; and the colours follow the system's dark mode."""
import os

import pytest
from playwright.sync_api import expect

from runtime.spec import make_spec
from tests.fixtures_web import log_in

pytestmark = pytest.mark.browser

OVERFLOW = """() => {
  const clipped = e => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)) return true;
    }
    return false;
  };
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > innerWidth + 1 && !clipped(e);
  }).slice(0, 4).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                           (typeof e.className === 'string' && e.className ? '.' + e.className.split(' ').join('.') : '') +
                           ' right=' + Math.round(e.getBoundingClientRect().right));
  return {scroll: document.scrollingElement.scrollWidth, width: innerWidth, wide};
}"""


@pytest.fixture(scope="module")
def box(rt):
    """One running container with a memory limit, for the pages that show one."""
    c = rt.create(make_spec(image="busybox", name="layout-probe", cmd=["sleep", "600"]))
    rt.start(c.id)
    yield c
    rt.remove(c.id, force=True)


def _pages(box):
    return ["/", "/containers/new/", f"/containers/{box.id}/", f"/containers/{box.id}/layers/",
            f"/containers/{box.id}/logs/",
            "/images/", "/image/busybox/", "/networks/", "/volumes/", "/host/namespaces/", "/host/cgroups/",
            "/oom/", "/audit/", "/account/tokens/", "/account/password/"]


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 800), (1920, 1080)])
def test_no_page_is_wider_than_the_screen(browser, server, box, width, height):
    page = log_in(browser, server, *server.users["administrator"], viewport={"width": width, "height": height})
    try:
        bad = {}
        for path in _pages(box):
            assert page.goto(server + path).status == 200, path
            page.wait_for_load_state("load")
            got = page.evaluate(OVERFLOW)
            if got["scroll"] > got["width"] or got["wide"]:
                bad[path.replace(box.id, "ID")] = f'{got["scroll"]} > {got["width"]}: {got["wide"]}'
            if path == "/":
                # the container list fits its card: no sideways scroll inside it, its buttons inside it
                fit = page.evaluate("""() => { const c = document.getElementById('list-card');
                    const r = c.getBoundingClientRect();
                    const out = [...c.querySelectorAll('button, .pick-one')].filter(b => {
                        const q = b.getBoundingClientRect(); return q.width && (q.right > r.right + 1 || q.left < r.left - 1); });
                    return {scroll: c.scrollWidth, width: c.clientWidth, out: out.length}; }""")
                if fit["scroll"] > fit["width"] + 1 or fit["out"]:
                    bad["/ (the list's card)"] = str(fit)
        assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())
        if width == 390:
            page.goto(server + f"/containers/{box.id}/")
            for button in page.locator("#detail-head .actions button").all():
                r = button.bounding_box()
                assert r and r["x"] >= 0 and r["x"] + r["width"] <= width, button.inner_text()
            nav = page.locator(".topbar nav a").last            # reachable without sideways scrolling
            nav_box = nav.bounding_box()
            assert nav_box["x"] + nav_box["width"] <= width
    finally:
        page.context.close()


def _rgb(css: str) -> int:
    """Sum of the channels of a computed 'rgb(r, g, b)' colour: 0 black, 765 white."""
    return sum(int(x) for x in css[css.index("(") + 1:css.index(")")].split(",")[:3])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_scheme(browser, server, box, shots, scheme):
    page = log_in(browser, server, *server.users["operator"], color_scheme=scheme,
                  viewport={"width": 390, "height": 844})
    try:
        page.goto(server + f"/containers/{box.id}/")
        expect(page.locator("#detail-head [data-state]")).to_have_text("running")
        card = page.locator(".card").first
        bg = _rgb(card.evaluate("e => getComputedStyle(e).backgroundColor"))
        ink = _rgb(card.evaluate("e => getComputedStyle(e).color"))
        if scheme == "dark":
            assert bg < 3 * 60 and ink > 3 * 180, (bg, ink)
        else:
            assert bg > 3 * 240 and ink < 3 * 60, (bg, ink)
        page.screenshot(path=os.path.join(shots, f"phone-detail-{scheme}.png"))
        page.goto(server + "/")
        page.screenshot(path=os.path.join(shots, f"phone-list-{scheme}.png"))
    finally:
        page.context.close()
