"""Web fixtures for every browser test (registered once in tests/conftest.py, so a
run starts one Daphne however many folders use it): a real Daphne server on a
free loopback port, users in each role, and Chromium.

The server gets a temp SQLite DB (migrated) and the session's runtime root and
cgroup parent (from tests/conftest.py, through the environment)."""
from __future__ import annotations

import os

import pytest

from tests.conftest import REPO
from tests.webstack import WebStack

SHOTS = os.path.join(REPO, "test-output", "screenshots")
UPLOAD_LIMIT = "24m"                 # the browser tests' server refuses bigger uploads
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="session")
def server(rt, tmp_path_factory):
    """Base URL of a Daphne subprocess; its users and passwords in .users."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed")
    web = WebStack(tmp_path_factory.mktemp("daphne"),
                   users=(("ada", "administrator"), ("otto", "operator"), ("vera", "viewer")),
                   env={"TERRARIUM_MAX_UPLOAD": UPLOAD_LIMIT})
    web.start()

    class Server(str):
        pass
    s = Server(web.urls[0])
    s.users, s.env, s.log_path = web.users, web.env, web.log_path("daphne0")
    s.web = web                      # its processes (e.g. Daphne's pid, to read its memory)
    try:
        yield s
    finally:
        web.stop()


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which breaks asyncio.run() and a second
    # sync_playwright() in later modules.
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def log_in(browser, server, username: str, password: str, **context):
    """A page of a new browser context (context: Playwright's new_context
    options, e.g. viewport, color_scheme) logged in through the login form;
    the caller closes page.context."""
    ctx = browser.new_context(**{"viewport": {"width": 1360, "height": 900}, **context})
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    page.goto(server + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/")
    return page


@pytest.fixture
def login(browser, server):
    """login(role) → a logged-in page; contexts are closed after the test."""
    contexts = []

    def _login(role):
        page = log_in(browser, server, *server.users[role])
        contexts.append(page.context)
        return page
    yield _login
    for ctx in contexts:
        ctx.close()


def bulk(page, action: str, rows=(), stop_timeout: str = "0") -> list[str]:
    """On the container list: tick the rows (CSS selectors of their <tr>)
    and check the bar counts them, then click the bulk bar's `action` ("stop":
    with stop_timeout seconds), accepting its one confirmation.  → the
    confirmations' texts (filled once the click has run)."""
    from playwright.sync_api import expect
    for row in rows:
        page.locator(f"{row} .pick-one").check()
    if rows:
        expect(page.locator("#bulk-count")).to_have_text(f"{len(rows)} selected")
    if action == "stop":
        page.fill("#bulk-timeout", stop_timeout)
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click(f"#bulk-{action}")
    return asked


@pytest.fixture(scope="session")
def shots():
    os.makedirs(SHOTS, exist_ok=True)
    return SHOTS


@pytest.fixture
def made(rt):
    """Containers a test made (through the pages or the CLI) are force-removed after it."""
    before = {c.id for c in rt.list(all=True)}
    yield
    for c in rt.list(all=True):
        if c.id not in before:
            rt.remove(c.id, force=True)


@pytest.fixture
def through_agent(settings, monkeypatch):
    """The dashboard (in this process) in agent mode, strictly: every runtime
    read and act goes to a real root agent, and anything the agent does not
    serve raises runtime.agent_client.NeedsAgent instead of quietly running
    in-process as root (as an unprivileged web tier could not)."""
    from dashboard.containers.runtime_client import reset_runtime
    settings.TERRARIUM_AGENT = "1"
    monkeypatch.setenv("TERRARIUM_AGENT_STRICT", "1")
    reset_runtime()
    yield
    reset_runtime()
