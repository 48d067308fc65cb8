"""Web fixtures for every browser test (registered once in tests/conftest.py, so a
run starts one Daphne however many folders use it): a real Daphne server on a
free loopback port, users in each role, and Chromium.

The server gets a temp SQLite DB (migrated) and the session's runtime root and
cgroup parent (from tests/conftest.py, through the environment)."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

BIN = os.path.dirname(sys.executable)
SHOTS = os.path.join(REPO, "test-output", "screenshots")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manage(env, *args) -> str:
    r = subprocess.run([sys.executable, os.path.join(REPO, "manage.py"), *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="session")
def server(rt, tmp_path_factory):
    """Base URL of a Daphne subprocess; its users and passwords in .users."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed")
    tmp = tmp_path_factory.mktemp("daphne")
    env = dict(os.environ, TERRARIUM_DB=str(tmp / "db.sqlite3"),
               DJANGO_SECRET_KEY=secrets.token_urlsafe(50), TERRARIUM_DEBUG="0",
               DJANGO_SETTINGS_MODULE="dashboard.settings", PYTHONUNBUFFERED="1")
    _manage(env, "migrate", "--noinput")
    users = {}
    for username, role in (("ada", "administrator"), ("otto", "operator"), ("vera", "viewer")):
        users[role] = (username, f"pw-{secrets.token_hex(8)}")
        _manage(env, "terrarium_user", username, "--role", role, "--password", users[role][1])
    port = _free_port()
    log = open(tmp / "daphne.log", "wb")
    proc = subprocess.Popen([os.path.join(BIN, "daphne"), "-b", "127.0.0.1", "-p", str(port),
                             "dashboard.asgi:application"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"daphne did not start: {(tmp / 'daphne.log').read_text()}")
            time.sleep(0.1)

    class Server(str):
        pass
    s = Server(base)
    s.users, s.env, s.log_path = users, env, tmp / "daphne.log"
    yield s
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


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


@pytest.fixture
def login(browser, server):
    """login(role) → a logged-in page; contexts are closed after the test."""
    contexts = []

    def _login(role):
        ctx = browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        page.goto(server + "/login/")
        username, password = server.users[role]
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(server + "/")
        return page
    yield _login
    for ctx in contexts:
        ctx.close()


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
