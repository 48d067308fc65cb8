"""`make run` for real: scripts/run.sh, as root, starts the root agent and Daphne
as a system user of its own with no capabilities; the dashboard then does
everything through the agent, and a second `make run` picks up where the first
left off.

The launcher is the real scripts/run.sh, with a temp state root, web
directory, agent socket and port, and a throwaway user name (TERRARIUM_WEB_USER):
not the real `terrarium`, so that run.sh's "create the user if missing" path
runs for real here and the host keeps whatever `terrarium` account it had.
The user, its group, the agent, the containers and the files are removed after.

(The agent's own guards: a connection from an unrelated uid and a path outside
the state root are refused in tests/runtime/test_agent.py.)"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.conftest import REPO, is_root
from tests.webstack import free_port, login_cookie, stop, wait_port

pytestmark = pytest.mark.skipif(not is_root(), reason="make run needs root")

MEMHOG_LIMIT = "20m"


class Launched:
    """scripts/run.sh with its own root, web dir, socket, port and user."""

    def __init__(self, base: str, user: str):
        self.base, self.user = base, user
        self.root = os.path.join(base, "root")
        self.web_dir = os.path.join(base, "web")
        self.socket = os.path.join(base, "agent", "agent.sock")
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("TERRARIUM_DB", "TERRARIUM_SECRET_KEY_FILE", "DJANGO_SECRET_KEY",
                                 "TERRARIUM_AGENT", "TERRARIUM_AGENT_STRICT", "TERRARIUM_AGENT_GROUP",
                                 "DJANGO_SETTINGS_MODULE")}
        self.env.update(TERRARIUM_ROOT=self.root, TERRARIUM_WEB_DIR=self.web_dir,
                        TERRARIUM_WEB_USER=user, TERRARIUM_AGENT_SOCKET=self.socket,
                        TERRARIUM_PORT=str(self.port), TERRARIUM_LIVE_TICK="0.5",
                        TERRARIUM_HTTP_TIMEOUT="77")
        for k in ("TERRARIUM_HOST", "TERRARIUM_SETTINGS"):
            self.env.pop(k, None)
        self.proc = None
        self.runs = 0
        self.password = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.base, f"run{self.runs}.log")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def start(self) -> None:
        self.runs += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([os.path.join(REPO, "scripts", "run.sh")], env=self.env,
                                         cwd="/", stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "make run's dashboard", self.log_path, timeout=240)
        found = re.search(r"created administrator 'admin' with password: (\S+)", self.log())
        if found:
            self.password = found.group(1)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def agent_pid(self) -> int:
        with open(os.path.join(self.root, "run", "agent.pid")) as f:
            return int(f.read())


@pytest.fixture(scope="module")
def launched(cgroup_parent):
    base = tempfile.mkdtemp(prefix="terrarium-open-")       # traversable, as open_dir
    os.chmod(base, 0o755)
    user = f"tweb-{secrets.token_hex(3)}"
    assert _no_account(user)
    run = Launched(base, user)
    try:
        run.start()
        yield run
    finally:
        run.stop()
        if os.path.isdir(os.path.join(run.root, "containers")):
            from runtime import Runtime
            rt = Runtime(run.root, cgroup_parent)
            for c in rt.list(all=True):
                rt.remove(c.id, force=True)
            rt.shutdown_servers()                            # the agent make run started, and its helpers
        for cmd in (["userdel", user], ["groupdel", user]):
            subprocess.run(cmd, capture_output=True)         # the group may go with the user
        shutil.rmtree(base)
        assert _no_account(user)


def _no_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        try:
            grp.getgrnam(name)
        except KeyError:
            return True
    return False


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


class Browser:
    """HTTP as a logged-in person: the session cookie, the CSRF token on POSTs."""

    def __init__(self, port: int, username: str, password: str):
        self.base = f"http://127.0.0.1:{port}"
        self.cookie = login_cookie(port, username, password)
        self.token = urllib.parse.unquote(re.search(r"csrftoken=([^;]+)", self.cookie).group(1))

    def get(self, path: str, **headers) -> tuple[int, str, str]:
        req = urllib.request.Request(self.base + path, headers={"Cookie": self.cookie, **headers})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, path, e.read().decode(errors="replace")

    def post(self, path: str, fields: dict, **headers) -> tuple[int, str, str]:
        """A form POST; a redirect is followed (the final URL is returned)."""
        req = urllib.request.Request(self.base + path, data=urllib.parse.urlencode(fields).encode(),
                                     headers={"Cookie": self.cookie, "X-CSRFToken": self.token,
                                              "Referer": self.base + path, **headers})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, path, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def admin(launched):
    assert launched.password, launched.log()
    return Browser(launched.port, "admin", launched.password)


@pytest.fixture(scope="module")
def made(launched, admin):
    """One container made and started through the create form, as a person would."""
    name = f"unpriv-{secrets.token_hex(3)}"
    status, url, page = admin.post("/containers/new/", {
        "image": "busybox", "name": name, "command": "sh -c 'echo hi > /tmp/made; exec sleep 300'",
        "memory": "32m", "start": "on"})
    assert status == 200 and re.search(r"/containers/[0-9a-f]{64}/$", url), page[-2000:]
    cid = url.rstrip("/").rsplit("/", 1)[1]
    from runtime import Runtime
    c = Runtime(launched.root).inspect(cid)        # the state root as the agent wrote it
    assert (c.name, c.status) == (name, "running")
    return c


# ------------------------------------------------------------------ the must-show

def test_daphne_runs_as_the_web_user_with_no_capabilities(launched):
    pid = launched.proc.pid                     # run.sh execs setpriv, which execs Daphne
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert b"dashboard.serve" in argv
    assert argv[argv.index(b"--http-timeout") + 1] == b"77" and argv[argv.index(b"-b") + 1] == b"127.0.0.1"
    user = pwd.getpwnam(launched.user)
    status = _status(pid)
    assert user.pw_uid != 0 and user.pw_shell == "/usr/sbin/nologin" and user.pw_dir == "/nonexistent"
    assert status["Uid"].split() == [str(user.pw_uid)] * 4          # real, effective, saved, fs
    assert status["Gid"].split() == [str(user.pw_gid)] * 4
    assert status["Groups"].split() == [str(user.pw_gid)]
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    assert int(status["CapBnd"], 16) == 0 and status["NoNewPrivs"] == "1"
    # Its files: 0600 in a 0700 directory, all its own
    d = os.stat(launched.web_dir)
    assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (user.pw_uid, 0o700)
    for name in ("db.sqlite3", "secret_key"):
        st = os.stat(os.path.join(launched.web_dir, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o600), name
    # The agent: root, reachable by the web user's group only
    assert _status(launched.agent_pid())["Uid"].split()[1] == "0"
    sd, so = os.stat(os.path.dirname(launched.socket)), os.stat(launched.socket)
    assert (sd.st_uid, sd.st_gid, stat.S_IMODE(sd.st_mode)) == (0, user.pw_gid, 0o750)
    assert (so.st_uid, so.st_gid, stat.S_IMODE(so.st_mode)) == (0, user.pw_gid, 0o660)


# ------------------------------------------------------------------ driven for real

def test_create_start_and_the_detail_page(launched, admin, made):
    status, _, page = admin.get("/")
    assert status == 200 and made.name in page
    status, _, page = admin.get(f"/containers/{made.id}/")
    assert status == 200 and made.name in page
    assert str(made.pid) in page and str(made.namespaces["pid"]) in page
    status, _, answer = admin.post(f"/containers/{made.id}/pause/", {}, **{"X-Requested-With": "fetch"})
    assert (status, json.loads(answer)) == (200, {"ok": True, "message": "Pause: done."})
    status, _, answer = admin.post(f"/containers/{made.id}/resume/", {}, **{"X-Requested-With": "fetch"})
    assert (status, json.loads(answer)) == (200, {"ok": True, "message": "Resume: done."})
    with open(os.path.join(launched.root, "audit.log")) as f:       # the agent's record names the person
        audit = [json.loads(line) for line in f]
    mine = [(r["user"], r["verb"], r["result"]) for r in audit
            if r.get("target") in (made.name, made.id)]
    assert mine[:2] == [("admin", "create", "ok"), ("admin", "start", "ok")]
    assert ("admin", "pause", "ok") in mine and ("admin", "resume", "ok") in mine


def test_host_pages_show_the_container(admin, made):
    status, _, page = admin.get("/host/namespaces/")
    assert status == 200
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        assert str(made.namespaces[kind]) in page, kind
    assert f">{made.pid}<" in page and made.name in page            # its init in the process tree
    assert "sleep 300" in page                                       # operators see command lines
    status, _, page = admin.get("/host/cgroups/")
    assert status == 200 and made.name in page and made.cgroup.rsplit("/", 1)[1] in page


def test_layers_page_changes_and_origin(admin, made):
    status, _, page = admin.get(f"/containers/{made.id}/layers/")
    assert status == 200 and "overlay" in page
    status, _, answer = admin.get(f"/containers/{made.id}/layers/changes/")
    changes = json.loads(answer)
    assert status == 200 and {"path": "/tmp/made", "kind": "A"}.items() <= next(
        c for c in changes["changes"] if c["path"] == "/tmp/made").items()
    status, _, answer = admin.get(f"/containers/{made.id}/layers/origin/?path=/tmp/made")
    assert status == 200 and json.loads(answer)["shown"] == {"layer": "upper", "digest": None}


def test_the_live_socket_delivers_a_sample(launched, admin, made):
    websockets = pytest.importorskip("websockets.sync.client")
    url = f"ws://127.0.0.1:{launched.port}/ws/containers/{made.id}/live/"
    with websockets.connect(url, additional_headers={"Cookie": admin.cookie},
                            origin=admin.base) as ws:
        deadline = time.monotonic() + 20
        while True:
            ev = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if ev["type"] == "container.sample":
                break
            assert ev["type"] != "container.gone", ev
    assert ev["point"]["mem"] > 0


def test_the_terminal_runs_through_the_agent(launched, admin, made):
    """The web tier has no privilege: the agent makes the pty in the container and
    hands its master over (SCM_RIGHTS); typing, resize and exit work through it."""
    websockets = pytest.importorskip("websockets.sync.client")
    url = f"ws://127.0.0.1:{launched.port}/ws/containers/{made.id}/terminal/?rows=20&cols=70"
    with websockets.connect(url, additional_headers={"Cookie": admin.cookie}, origin=admin.base) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "terminal.ready"
        ws.send(json.dumps({"input": "stty size; echo hello-$((6*7))\r"}))
        out, deadline = b"", time.monotonic() + 20
        while b"hello-42" not in out:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(frame, bytes):
                out += frame
                ws.send(json.dumps({"ack": len(frame)}))
        assert b"20 70\r\n" in out, out
        ws.send(json.dumps({"input": "exit 5\r"}))
        while True:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(frame, str) and json.loads(frame)["type"] == "terminal.exit":
                break
    assert json.loads(frame)["code"] == 5
    with open(os.path.join(launched.root, "audit.log")) as f:       # the agent's record names the person
        assert any(r["verb"] == "terminal" and r["user"] == "admin" and r["target"] == made.id
                   for r in map(json.loads, f))


def test_an_oom_kill_is_recorded(launched, admin):
    websockets = pytest.importorskip("websockets.sync.client")
    name = f"unpriv-oom-{secrets.token_hex(3)}"
    with websockets.connect(f"ws://127.0.0.1:{launched.port}/ws/events/",
                            additional_headers={"Cookie": admin.cookie}, origin=admin.base) as ws:
        time.sleep(1.0)                       # the first socket starts the watcher
        # memhog grows 4 MB every 0.3 s until the 20 MB limit kills its `tail`
        status, url, page = admin.post("/containers/new/", {
            "image": "lab", "name": name, "command": "memhog 4 8 0.3", "memory": MEMHOG_LIMIT,
            "start": "on"})
        assert status == 200 and "/containers/" in url, page[-2000:]
        deadline = time.monotonic() + 30
        while True:
            ev = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if ev.get("type") == "oom.killed" and ev["event"]["container_name"] == name:
                break
    status, _, page = admin.get("/oom/")
    assert status == 200 and name in page


# ------------------------------------------------------------------ refusals

def _run_sh(checkout: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(checkout, "scripts", "run.sh")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=240)


def test_make_run_says_what_to_do_when_the_user_cannot_read_the_checkout(launched, tmp_path):
    copy = tmp_path / "checkout"            # pytest's tmp_path is 0700: the web user cannot enter
    for rel in ("scripts/run.sh", "scripts/setup.sh", "pyproject.toml", "bin/terrarium"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), copy / rel)
    os.symlink(os.path.join(REPO, ".venv"), copy / ".venv")
    out = _run_sh(str(copy), launched.env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith(f"run: the user {launched.user} cannot read this checkout ({copy}) "
                                 "or its .venv"), out.stderr
    assert "/opt/terrarium" in out.stderr and "Traceback" not in out.stderr


def test_make_run_says_what_to_do_when_the_user_cannot_reach_its_directory(launched, tmp_path):
    web_dir = tmp_path / "web"
    out = _run_sh(REPO, {**launched.env, "TERRARIUM_WEB_DIR": str(web_dir)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith(f"run: the user {launched.user} cannot reach {web_dir}: "), out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------ again

def test_make_run_again_picks_up_where_it_was(launched, admin, made):
    """A second `make run` (after the first was stopped): same user, same agent,
    same database and administrator, and the container kept running."""
    agent = launched.agent_pid()
    launched.stop()
    launched.start()
    log = launched.log()
    assert "created the system user" not in log and "users exist; nothing to do" in log
    assert launched.agent_pid() == agent
    assert int(_status(launched.proc.pid)["CapEff"], 16) == 0
    again = Browser(launched.port, "admin", launched.password)
    status, _, page = again.get(f"/containers/{made.id}/")
    assert status == 200 and made.name in page
    from runtime import Runtime
    assert Runtime(launched.root).inspect(made.id).status == "running"


def test_the_web_tier_never_needed_root(launched):
    """Everything above ran without a root-only read in Daphne: no in-process
    fallback refused (NeedsAgent), no EPERM/EACCES logged, in either run."""
    for run in range(1, launched.runs + 1):
        with open(os.path.join(launched.base, f"run{run}.log"), errors="replace") as f:
            log = f.read()
        assert "dashboard at http://" in log
        for sign in ("NeedsAgent", "Operation not permitted", "Permission denied", "needs root"):
            assert sign not in log, (run, sign, log[-3000:])
