"""The shared page code (static/js/app.js) in Chromium: a detail page whose
every card follows the container's change events, chart axes that stay sane,
the favicon, and the banner while the server is unreachable."""
import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import cli
from tests.webstack import WebStack, manage

pytestmark = pytest.mark.browser

TICK = re.compile(r"^\d\d:\d\d(:\d\d)?(\n\d{4}-\d\d-\d\d)?$|^\d{4}-\d\d-\d\d$")


def _detail(page, server, cid):
    page.goto(f"{server}/containers/{cid}/")
    page.wait_for_function("document.body.dataset.live === 'on'")
    page.evaluate("window.__noReload = true")


def test_detail_cards_follow_stop_and_start_from_the_cli(login, server, rt, made, name):
    from runtime import Spec
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    page = login("viewer")
    _detail(page, server, c.id)
    expect(page.locator("#host-pid")).to_have_text(str(c.pid))
    expect(page.locator("#exit-code")).to_have_text("—")
    expect(page.locator("#uptime")).to_have_attribute("data-since", re.compile(r"\d{4}-"))

    # stopped by someone else: the change event alone brings every card up to date
    assert cli("stop", name).returncode == 0
    stopped = rt.inspect(name)
    assert stopped.status == "exited" and stopped.exit_code is not None
    expect(page.locator("#detail-head [data-state]")).to_have_text(re.compile(r"exited"))
    expect(page.locator("#exit-code")).to_have_text(str(stopped.exit_code))
    expect(page.locator("#finished-at")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    expect(page.locator("#host-pid")).to_have_text("—")
    expect(page.locator("#card-namespaces")).to_contain_text("only while the container runs")
    expect(page.locator("#uptime")).to_have_text("—")
    assert page.locator("#uptime").get_attribute("data-since") is None
    page.wait_for_timeout(1500)                                 # the uptime no longer counts
    expect(page.locator("#uptime")).to_have_text("—")

    # started again: the new init's pid and namespaces
    assert cli("start", name).returncode == 0
    started = rt.inspect(name)
    assert started.pid != c.pid
    expect(page.locator("#host-pid")).to_have_text(str(started.pid))
    expect(page.locator("#detail-head [data-state]")).to_have_text("running")
    expect(page.locator("#card-namespaces")).to_contain_text(str(started.namespaces["pid"]))
    expect(page.locator("#uptime")).to_have_text(re.compile(r"^\d+s$"))
    assert page.evaluate("window.__noReload") is True           # the same document throughout


def test_no_favicon_404_on_any_page(login, server, rt, made, name):
    from runtime import Spec
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))
    page = login("administrator")
    missing = []
    page.on("response", lambda r: missing.append((r.status, r.url)) if r.status == 404 or r.status >= 500 else None)
    for path in ("/", f"/containers/{c.id}/", "/images/", "/oom/", "/audit/", "/admin/", "/login/"):
        page.goto(server + path)
        icon = page.locator("link[rel=icon]").get_attribute("href") if path != "/admin/" else "/favicon.ico"
        r = page.request.get(server + icon)
        assert r.status == 200 and r.headers["content-type"].startswith("image/svg"), (path, icon, r.status)
    assert missing == []
    r = page.request.get(server + "/favicon.ico", max_redirects=0)   # also without a session
    assert r.status == 301
    with open(server.log_path, errors="replace") as f:
        assert not [line for line in f if "favicon" in line and " 404 " in line]


def test_one_point_day_chart_spans_a_day(login, server, rt, made, name, shots):
    from runtime import Spec
    c = rt.create(Spec(image="busybox", name=name, cmd=("true",)))       # not running: no history pass
    manage(server.env, "shell", "-c",
           "import datetime; from dashboard.live.models import MinutePoint; "
           "m = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0) "
           "- datetime.timedelta(minutes=5); "
           f"MinutePoint.objects.create(container_id={c.id!r}, minute=m, samples=10, mem_avg=5 << 20, "
           "mem_max=6 << 20, mem_limit=None, cpu_avg=0.1)")
    page = login("viewer")
    page.goto(f"{server}/containers/{c.id}/")
    page.wait_for_function("document.getElementById('history').dataset.points === '1'")
    for chart in ("mem", "cpu"):
        lo, hi, ticks = page.evaluate(
            f"(() => {{ const u = window.terrariumHistory.charts.{chart};"
            " return [u.scales.x.min, u.scales.x.max, u.axes[0]._values]; })()")
        assert 0 < hi - lo <= 86400 + 120, (chart, lo, hi)
        assert abs(hi - time.time()) < 600
        assert ticks and all(TICK.match(t) for t in ticks), ticks
    page.locator("#history").screenshot(path=os.path.join(shots, "history-one-point.png"))


def test_live_chart_ticks_and_throttle_markers(login, server, rt, made, name, shots):
    r = cli("run", "-d", "--name", name, "--cpus", "0.1", "lab", "cpuburn")
    assert r.returncode == 0, r.stderr
    page = login("viewer")
    page.goto(f"{server}/containers/{r.stdout.strip()}/")
    page.wait_for_function("window.terrariumLive && window.terrariumLive.points.length >= 3", timeout=20_000)
    ticks = page.evaluate("window.terrariumLive.charts.cpu.axes[0]._values")
    assert ticks and all(TICK.match(t) for t in ticks), ticks           # whole seconds, one format
    lo, hi = page.evaluate("[window.terrariumLive.charts.cpu.scales.x.min, window.terrariumLive.charts.cpu.scales.x.max]")
    assert 59 <= hi - lo <= 15 * 60 + 5
    # throttled periods are bars only where a tick was throttled: never bars of 0 along the axis
    page.wait_for_function("window.terrariumLive.points.some(p => p.throttled > 0)", timeout=20_000)
    bars = page.evaluate("window.terrariumLive.charts.cpu.data[3]")
    raw = page.evaluate("window.terrariumLive.points.map(p => p.throttled)")
    assert all(v is None or v > 0 for v in bars), bars
    assert sum(1 for v in bars if v) == sum(1 for v in raw if v)
    page.locator("#graphs").screenshot(path=os.path.join(shots, "live-throttled.png"))


def test_unreachable_banner_comes_and_goes(rt, browser, tmp_path):
    """A server of its own, stopped and started again on its port."""
    with WebStack(tmp_path, users=(("vera", "viewer"),)) as web:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            base = web.urls[0]
            page.goto(base + "/login/")
            page.fill("#id_username", web.users["viewer"][0])
            page.fill("#id_password", web.users["viewer"][1])
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            page.wait_for_function("document.body.dataset.live === 'on' && document.body.dataset.oomSocket === 'open'")
            page.evaluate("window.__noReload = true")
            expect(page.locator("#offline-banner")).to_have_count(0)

            web.stop_daphne()
            expect(page.locator("#offline-banner")).to_be_visible()
            expect(page.locator("#offline-banner")).to_contain_text("server is unreachable")
            # an action meanwhile says so, not "TypeError: Failed to fetch"
            page.evaluate("fetch('/').catch(e => window.Terrarium.toast({text: window.Terrarium.failure(e)}))")
            expect(page.locator("#messages")).to_contain_text("the server is unreachable")
            expect(page.locator("body")).not_to_contain_text("Failed to fetch")

            web.restart_daphne()
            expect(page.locator("#offline-banner")).to_have_count(0)
            page.wait_for_function("document.body.dataset.live === 'on' && document.body.dataset.oomSocket === 'open'")
            assert page.evaluate("window.__noReload") is True
        finally:
            ctx.close()
