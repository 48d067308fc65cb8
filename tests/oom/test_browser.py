"""Chromium: a page is open, a container is OOM-killed through the CLI, the
toast appears on it, the OOM page lists the kill, and its card shows the memory
graph with the kill marker and the process tree with the victim marked.
And the create form's "OOM lab" template fills the form in one click."""
import os
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import cli

pytestmark = [pytest.mark.browser, pytest.mark.root]


@pytest.fixture
def removed(name):
    yield
    cli("rm", "-f", name)


def test_oom_kill_toast_events_page_and_card(login, server, rt, name, removed, shots):
    page = login("viewer")
    page.wait_for_function("document.body.dataset.oomSocket === 'open'")
    page.wait_for_timeout(700)        # the watcher attaches its readers right after the first socket
    # memhog grows 4 MB every 0.3 s: the memory record samples it (every 0.5 s)
    # and keeps its tree before the 20 MB limit kills memhog's `tail`.
    r = cli("run", "-d", "--name", name, "--memory", "20m", "lab", "memhog", "4", "8", "0.3")
    assert r.returncode == 0, r.stderr
    toast = page.locator(".oom-toast").filter(has_text=name)
    expect(toast).to_be_visible(timeout=15_000)
    # The toast names the last kill: `tail`, or memhog itself when the kernel
    # takes a second victim right after (it does now and then, loaded or not).
    expect(toast).to_contain_text(re.compile(r"(tail|memhog) \(pid \d+\) killed"))
    expect(toast).to_contain_text("limit 20 MiB")          # Terrarium.bytes, as bytes_h
    page.screenshot(path=os.path.join(shots, "oom-toast.png"))
    # the card of the kill of `tail`, from the events page
    page.goto(server + "/oom/")
    row = page.locator("#oom-events tr").filter(has_text=name).filter(has_text=re.compile(r"tail\s+pid"))
    expect(row).to_have_count(1)
    row.locator("a").first.click()
    card = page.locator("#oom-card")
    expect(card).to_contain_text(name)
    expect(card.locator(".oom-victim")).to_contain_text("tail, host pid")
    expect(card.locator(".oom-victim")).to_contain_text("inside the container")
    expect(card).to_contain_text("Killed process")
    # the graph, drawn by uPlot, with the kill marker
    expect(page.locator("#oom-graph canvas")).to_be_visible()
    expect(page.locator("#oom-graph")).to_have_attribute("data-marker", "drawn")
    expect(page.locator("#oom-graph .oom-kill-marker")).to_be_visible()
    # the tree just before, the victim marked
    victim = page.locator("#oom-tree tr.oom-victim-proc")
    expect(victim).to_have_count(1)
    expect(victim).to_contain_text("tail")
    expect(victim).to_contain_text("← killed")
    page.screenshot(path=os.path.join(shots, "oom-card.png"), full_page=True)
    page.click("text=OOM kills")
    expect(page.locator("#oom-events")).to_contain_text(name)


def test_the_oom_lab_tells_the_truth_to_whoever_starts_it(login, server, name, removed):
    """The template fills the form; the kill happens while the browser is between
    the form and the detail page, and that page still toasts it (it asks for the
    kills since its navigation began); the card says the container ended with
    the kill (its `sh -c` init exits when `tail` dies), not that it lives on."""
    page = login("operator")
    page.goto(server + "/containers/new/")
    page.wait_for_function("document.body.dataset.oomSocket === 'open'")
    page.wait_for_timeout(700)        # the watcher attaches its readers right after the first socket
    page.click("#form-templates [data-template=oom-lab]")
    expect(page.locator("#id_image")).to_have_value("busybox")
    expect(page.locator("#id_memory")).to_have_value("10m")
    expect(page.locator("#id_command")).to_have_value("sh -c 'head -c 15m /dev/zero | tail'")
    expect(page.locator("#form-template-help")).to_contain_text("10 MB limit")
    page.fill("#id_name", name)
    page.click("button:has-text('Create')")
    page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/$"))
    toast = page.locator(".oom-toast:not(.oom-warn)").filter(has_text=name)
    expect(toast).to_be_visible(timeout=15_000)
    expect(toast).to_have_count(1)
    toast.click()
    aftermath = page.locator("#oom-card .oom-aftermath")
    expect(aftermath).to_have_attribute("data-aftermath", re.compile("^(ended|died)$"))
    expect(aftermath).not_to_contain_text("lives on")
    if aftermath.get_attribute("data-aftermath") == "ended":
        expect(aftermath).to_contain_text("exit code 137")


def test_a_container_in_an_oom_loop_gets_one_toast_that_counts(login, server, name, removed):
    page = login("viewer")
    page.wait_for_function("document.body.dataset.oomSocket === 'open'")
    page.wait_for_timeout(700)        # the watcher attaches its readers right after the first socket
    r = cli("run", "-d", "--name", name, "--memory", "12m", "lab", "sh", "-c",
            "while true; do head -c 20m /dev/zero | tail; sleep 0.2; done")
    assert r.returncode == 0, r.stderr
    toast = page.locator(".oom-toast:not(.oom-warn)").filter(has_text=name)     # (not the near-OOM one)
    expect(toast.locator("strong")).to_contain_text(" OOM kills in " + name, timeout=20_000)
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.oom-toast')).some(t => Number(t.dataset.kills) >= 4)",
        timeout=20_000)
    expect(toast).to_have_count(1)                          # one toast, however many kills
    expect(toast.locator("strong")).to_have_text(re.compile(r"^\d+ OOM kills in .+ in \d+ s$"))
    # the last kill: a `tail` in the loop, or sh (the container's init) when the
    # kernel takes it as a second victim, which ends the loop
    expect(toast.locator("span")).to_contain_text(re.compile(r"last: (tail|sh) \(pid \d+\) killed"))
