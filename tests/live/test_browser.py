"""The live feed in Chromium against a real Daphne and real containers started
by the CLI: memory steps on the graph, a new process in the tree within two
ticks, and the history after a reload."""
import os
import signal
import subprocess
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import CLI, cli

pytestmark = pytest.mark.browser


def _open_detail(page, name):
    """From the list (whose socket mirrors CLI-made containers) to the detail page."""
    row = page.locator(f'tr[data-name="{name}"]')
    expect(row.locator("[data-state]")).to_have_text("running", timeout=15_000)
    row.locator("a.name").click()
    page.wait_for_url("**/containers/*/")
    # null-safe: until the new document is in, there is no #graphs to ask
    page.wait_for_function("(document.getElementById('graphs') || {dataset: {}}).dataset.live === 'on'")


def _mem(page):
    return page.evaluate("window.terrariumLive.points.map(p => p.mem)")


def test_memory_steps_new_process_and_history(login, server, rt, made, name, shots):
    r = cli("run", "-d", "--name", name, "lab", "memhog", "6", "8", "1")
    assert r.returncode == 0, r.stderr
    page = login("viewer")
    _open_detail(page, name)

    # the memory graph shows the steps: points keep arriving, and rise by >= 2 steps
    page.wait_for_function(
        "(() => { const m = window.terrariumLive.points.map(p => p.mem).filter(v => v != null);"
        " return m.length >= 4 && Math.max(...m) - m[0] >= 12 * 1048576; })()", timeout=15_000)
    mem = [m for m in _mem(page) if m is not None]
    rises = sum(1 for a, b in zip(mem, mem[1:]) if b - a >= 4 << 20)
    assert rises >= 2, f"no steps in {mem}"
    assert page.locator("#chart-mem .u-over").count() == 1            # uPlot drew the chart
    assert "memory.usage_in_bytes" in page.locator('#live-now dd[data-key="mem"]').get_attribute("title") \
        or "memory.current" in page.locator('#live-now dd[data-key="mem"]').get_attribute("title")
    init = rt.inspect(name).pid
    expect(page.locator(f'#ptree li[data-pid="{init}"]')).to_have_attribute("data-ns-pid", "1")
    assert "NSpid" in page.locator(f'#ptree li[data-pid="{init}"] .c-ns').first.get_attribute("title")

    # a process started through the CLI appears in the open page's tree within 2 ticks
    c = rt.inspect(name)
    before = set(rt.cgroups.procs(c.id))
    execp = subprocess.Popen([CLI, "exec", name, "sleep", "60"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline, new = time.monotonic() + 10, None
        while new is None and time.monotonic() < deadline:
            for pid in set(rt.cgroups.procs(c.id)) - before:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().split(b"\0")[:2] == [b"sleep", b"60"]:
                            new = pid
                except OSError:
                    pass
            time.sleep(0.02)
        assert new, "sleep 60 never appeared in the cgroup"
        # counted in ticks (samples this page received), not seconds: a loaded
        # machine may stretch a tick, but the tree must still come with the next two
        ticks0 = len(_mem(page))
        page.wait_for_selector(f'#ptree li[data-pid="{new}"]', timeout=15_000)
        ticks = len(_mem(page)) - ticks0
        assert ticks <= 2, f"the new process appeared after {ticks} ticks"
        expect(page.locator(f'#ptree li[data-pid="{new}"] .c-cmd').first).to_contain_text("sleep 60")
        page.screenshot(path=os.path.join(shots, "live-detail.png"), full_page=True)

        # a reload shows the history at once, before the next tick
        seen = len(_mem(page))
        page.reload()
        page.wait_for_function(f"+((document.getElementById('graphs') || {{dataset: {{}}}}).dataset.history || -1) >= {seen - 1}",
                               timeout=5_000)
    finally:
        execp.send_signal(signal.SIGTERM)
        try:
            execp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            execp.kill()
            execp.wait()


def test_memory_anatomy_pressure_and_kernel_files(login, server, rt, made, name, shots):
    """A container whose /dev/shm (tmpfs) holds 28 of its 40 MiB: the anatomy bar
    shows it as shmem with its memory.stat line, the pressure card says why
    there is no PSI on this v1 host (and shows it on v2), and the kernel-files
    panel lists every figure of the sample with its file."""
    r = cli("run", "-d", "--name", name, "--memory", "40m", "lab", "sh", "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=28 2>/dev/null; sleep 300")
    assert r.returncode == 0, r.stderr
    page = login("viewer")
    _open_detail(page, name)
    shm = page.locator('#anat-legend li[data-part="shmem / tmpfs"]')
    page.wait_for_function(
        "(() => { const li = document.querySelector('#anat-legend li[data-part=\"shmem / tmpfs\"]');"
        " return li && +li.dataset.bytes >= 28 * 1048576; })()", timeout=15_000)
    assert "memory.stat" in page.locator('#anat-bar .seg[data-part="shmem / tmpfs"]').get_attribute("title")
    assert int(shm.get_attribute("data-bytes")) < 40 << 20
    if rt.cgroups.kind == "v2":
        expect(page.locator("#psi-table")).to_be_visible()
        assert "cpu.pressure" in page.locator('[data-fig="psi_cpu_some_avg10"]').get_attribute("title")
    else:
        expect(page.locator("#psi-none")).to_be_visible()
        expect(page.locator("#psi-table")).to_be_hidden()
    # every figure the sample carried, each with its file
    n = int(page.locator("#graphs").get_attribute("data-figures"))
    page.locator("#kfiles summary").click()
    rows = page.locator("#kfiles-table tbody tr")
    expect(rows).to_have_count(n)
    shm_row = page.locator('#kfiles-table tr[data-figure="memory_shmem"] td')
    expect(shm_row.nth(2)).to_have_text("memory.stat total_shmem" if rt.cgroups.kind != "v2" else "memory.stat shmem")
    assert int(shm_row.nth(1).inner_text()) >= 28 << 20
    page.screenshot(path=os.path.join(shots, "live-anatomy.png"), full_page=True)
