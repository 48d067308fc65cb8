"""The container list at scale in Chromium: one set of containers (created,
not started, but for one) and one operator page for search, filters, sort,
pages, live counts, the usage columns and bulk stop + remove; a viewer's page
for what viewers do not get."""
import re
import secrets
import sqlite3

import pytest
from playwright.sync_api import expect

from runtime.spec import make_spec
from tests.fixtures_web import bulk, log_in

pytestmark = pytest.mark.browser
N = 30


@pytest.fixture(scope="module")
def fleet(rt):
    """N created containers named <prefix>-00 ..; <prefix>-07 runs (a busy loop: CPU moves)."""
    prefix = f"fl{secrets.token_hex(3)}"
    made = [rt.create(make_spec(image="busybox", name=f"{prefix}-{i:02d}",
                                cmd=["sh", "-c", "while :; do :; done"] if i == 7 else ["sleep", "300"]))
            for i in range(N)]
    rt.start(made[7].id)
    yield prefix, made
    for c in made:
        try:
            rt.remove(c.id, force=True)
        except Exception:  # noqa: BLE001 - the test removed it
            pass


@pytest.fixture(scope="module")
def page(browser, server, fleet):
    p = log_in(browser, server, *server.users["operator"], viewport={"width": 1280, "height": 900})
    yield p
    p.context.close()


def _names(page) -> list[str]:
    return page.locator("#container-rows tr").evaluate_all("rs => rs.map(r => r.dataset.name)")


def _loaded(page, before: int) -> None:
    page.wait_for_function(f"+(document.body.dataset.listLoads || 0) > {before}")


def _loads(page) -> int:
    return page.evaluate("+(document.body.dataset.listLoads || 0)")


def test_search_filter_sort_and_pages_keep_their_url(page, server, fleet):
    prefix, made = fleet
    page.goto(f"{server}/?q={prefix}&per=25&sort=name")
    page.wait_for_function("document.body.dataset.live === 'on'")
    assert _names(page) == [c.name for c in made[:25]]
    expect(page.locator("#pager-range")).to_have_text(f"1–25 of {N} matching")
    n = _loads(page)
    page.locator("#pager a[rel=next]").click()                              # page 2, fetched
    _loaded(page, n)
    assert _names(page) == [c.name for c in made[25:]] and "page=2" in page.url
    page.reload()                                                           # the URL keeps it all
    assert _names(page) == [c.name for c in made[25:]]
    n = _loads(page)
    page.locator('#container-table th[data-sort="name"] a').click()         # flip to descending
    _loaded(page, n)
    assert _names(page)[:2] == [made[-1].name, made[-2].name] and "sort=-name" in page.url
    n = _loads(page)
    page.fill("#list-q", f"{prefix}-1")                                     # search as you type
    _loaded(page, n)
    assert sorted(_names(page)) == [c.name for c in made[10:20]]
    assert f"q={prefix}-1" in page.url
    n = _loads(page)
    page.fill("#list-q", made[3].id[:12])                                   # an id prefix
    _loaded(page, n)
    assert _names(page) == [made[3].name]
    n = _loads(page)
    page.fill("#list-q", prefix)
    _loaded(page, n)
    n = _loads(page)
    page.select_option("#list-state", "running")
    _loaded(page, n)
    assert _names(page) == [made[7].name] and "state=running" in page.url
    n = _loads(page)
    page.go_back()                                                          # history: back to every state
    _loaded(page, n)
    assert len(_names(page)) == 25 and page.locator("#list-state").input_value() == ""


def test_usage_of_a_running_row_moves_and_counts_follow_a_start(page, server, fleet, rt):
    prefix, made = fleet
    page.goto(f"{server}/?q={prefix}&per=50&sort=name&engine=terrarium")     # ours: counts only this run's
    page.wait_for_function("document.body.dataset.live === 'on'")
    busy = page.locator(f'tr[data-name="{made[7].name}"]')
    # two samples of the busy loop: memory used is shown, CPU near a core
    page.wait_for_function(f"""() => {{
        const tr = document.querySelector('tr[data-name="{made[7].name}"]');
        return tr && +(tr.dataset.samples || 0) >= 2 && tr.querySelector('.usage-cpu').dataset.used > 0.2; }}""",
                           timeout=15_000)
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB)", busy.locator(".mem-used").inner_text())
    idle = page.locator(f'tr[data-name="{made[8].name}"]')
    assert re.fullmatch(r"[1-9]\d*", busy.locator(".pids-used").inner_text())  # pids.current
    assert idle.locator(".mem-used").inner_text() == "—"                   # not running: not sampled
    assert idle.locator(".pids-used").inner_text() == "—"
    running = int(page.locator("#list-counts").get_attribute("data-running"))
    page.evaluate("window.__noReload = true")
    rt.start(made[8].id)                                                    # as the CLI would
    expect(page.locator("#list-counts")).to_have_attribute("data-running", str(running + 1))
    expect(idle.locator("[data-state]")).to_have_text("running")
    page.wait_for_function(f"""() => +(document.querySelector('tr[data-name="{made[8].name}"]')
                                     .dataset.samples || 0) >= 1""", timeout=15_000)
    assert page.evaluate("window.__noReload") is True


def test_bulk_stop_then_remove_with_one_confirmation(page, server, fleet, rt):
    prefix, made = fleet
    chosen = [made[7], made[8], made[9]]                   # two running, one created
    if rt.inspect(made[8].id).status != "running":          # the usage test starts it; alone, this one does
        rt.start(made[8].id)
    page.goto(f"{server}/?q={prefix}&per=50&sort=name")
    page.wait_for_function("document.body.dataset.live === 'on'")
    asked = bulk(page, "stop", [f'tr[data-name="{c.name}"]' for c in chosen])
    expect(page.locator("#bulk-results")).to_contain_text("Stop: 3 of 3 done")
    assert asked == [f"Stop 3 containers: {', '.join(c.name for c in chosen)}?"]
    for c in chosen[:2]:
        expect(page.locator(f'tr[data-name="{c.name}"] [data-state]')).to_have_text(re.compile(r"exited"))
    asked = bulk(page, "remove")
    expect(page.locator("#bulk-results")).to_contain_text("Remove: 3 of 3 done")
    assert asked == [f"Remove 3 containers: {', '.join(c.name for c in chosen)}?"]
    for c in chosen:
        expect(page.locator(f'tr[data-name="{c.name}"]')).to_have_count(0)
    left = {c.id for c in rt.list(all=True)}
    assert not left & {c.id for c in chosen}
    with sqlite3.connect(server.env["TERRARIUM_DB"]) as db:
        rows = db.execute("select action, container_name, result from containers_auditentry "
                          "where container_name like ?", (prefix + "-%",)).fetchall()
    assert sorted(rows) == sorted([(a, c.name, "ok") for a in ("stop", "remove") for c in chosen])


def test_a_viewer_gets_no_bulk_controls(browser, server, fleet):
    prefix, made = fleet
    p = log_in(browser, server, *server.users["viewer"])
    try:
        p.goto(f"{server}/?q={prefix}")
        expect(p.locator("#container-rows tr").first).to_be_visible()
        assert p.locator("#bulk-bar, .pick-one, #pick-all").count() == 0
    finally:
        p.context.close()
