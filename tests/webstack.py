"""The dashboard for real, on loopback, for tests and benchmarks.

A migrated SQLite database in a temp dir, users in given roles, N Daphne
processes, and with `redis=True` Debian's redis-server, the Redis channel
layer and one `manage.py sampler`.  Every process is started here and
stopped here, by its pid.  No pytest in here: bench/live_bench.py uses it too.

    with WebStack(tmp, daphnes=2, redis=True) as web:
        cookie = login_cookie(web.ports[0], *web.users["viewer"])
"""
from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
# channels-redis needs Lua scripts, sorted sets, lists, pub/sub; nothing of @dangerous
REDIS_CONF = """port 0
unixsocket {socket}
unixsocketperm 660
dir {dir}
save ""
appendonly no
user default off
user terrarium on #{digest} ~* &* +@all -@dangerous
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    """`manage.py ARGS` under env; its stdout.  RuntimeError with stderr if it fails."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "manage.py"), *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {r.stderr[-3000:]}")
    return r.stdout


def manage_all(env: dict, *commands: tuple[str, ...]) -> None:
    """Several `manage.py` commands (each the tuple of its arguments) run in
    order in one Python process (call_command): one Django start-up instead
    of one per command.  RuntimeError with stderr if one fails."""
    script = ("import json, sys, django; django.setup()\n"
              "from django.core.management import call_command\n"
              "for args in json.loads(sys.argv[1]): call_command(*args)\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"manage.py {commands} failed: {r.stderr[-3000:]}")


# A freshly migrated database per settings module, as bytes (sqlite3's
# serialize()): later stacks of the same process start from a copy of it
# instead of running every migration again.
_MIGRATED: dict[str, bytes] = {}


def wait_port(port: int, proc: subprocess.Popen, what: str, log_path: str, timeout: float = 30) -> None:
    """Until something accepts on 127.0.0.1:port; RuntimeError (with the log) if proc dies first."""
    _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5).close(),
          proc, what, log_path, timeout)


def wait_unix(path: str, proc: subprocess.Popen, what: str, log_path: str, timeout: float = 30) -> None:
    """Until something accepts on the unix socket path; RuntimeError (with the log) if proc dies first."""
    def connect():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
    _wait(connect, proc, what, log_path, timeout)


def _wait(connect, proc: subprocess.Popen, what: str, log_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    raise RuntimeError(f"{what} did not start: {f.read()[-3000:]}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after timeout; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login_cookie(port: int, username: str, password: str) -> str:
    """Log in through the form (CSRF token and all); the Cookie header for later requests."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(base + "/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(base + "/login/", data=data, headers={"Referer": base + "/login/"}),
                timeout=10).read()
    cookies = {c.name: c.value for c in jar}
    if "sessionid" not in cookies:
        raise RuntimeError(f"login as {username!r} failed")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


class WebStack:
    """See the module's docstring.  users: (username, role) pairs; each gets a
    fresh password, in .users[role] = (username, password)."""

    def __init__(self, tmp: str, *, daphnes: int = 1, redis: bool = False,
                 users=(("vera", "viewer"),), env: dict | None = None, daphne_prefix=()):
        self.tmp = str(tmp)
        self.daphne_prefix = list(daphne_prefix)     # e.g. prlimit --nofile=1024:1024 -- (it execs)
        self.n_daphnes, self.redis = daphnes, redis
        self.wanted_users = tuple(users)
        self.env = dict(os.environ, TERRARIUM_DB=os.path.join(self.tmp, "db.sqlite3"),
                        DJANGO_SECRET_KEY=secrets.token_urlsafe(50), TERRARIUM_DEBUG="0",
                        PYTHONUNBUFFERED="1",
                        # the calling process's settings (pytest's tests.settings: a fast password
                        # hasher), else the dashboard's own (bench/ sets dashboard.settings)
                        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE") or "dashboard.settings",
                        **(env or {}))
        self.users: dict[str, tuple[str, str]] = {}
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []
        self.daphnes: list[subprocess.Popen] = []
        self.sampler: subprocess.Popen | None = None
        self._logs = []
        self.redis_dir = self.redis_socket = self.redis_password = None

    def log_path(self, name: str) -> str:
        return os.path.join(self.tmp, f"{name}.log")

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        log = open(self.log_path(name), "ab")          # a restarted Daphne goes on in its log
        self._logs.append(log)
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self) -> "WebStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.redis:
            self._start_redis()
        self._migrate()
        made = []
        for username, role in self.wanted_users:
            self.users[role] = (username, f"pw-{secrets.token_hex(8)}")
            made.append(("terrarium_user", username, "--role", role, "--password", self.users[role][1]))
        if made:
            manage_all(self.env, *made)
        if self.redis:
            self.sampler = self._spawn([sys.executable, os.path.join(REPO, "manage.py"), "sampler"],
                                       "sampler")
        daphnes = [self._spawn_daphne(i, free_port()) for i in range(self.n_daphnes)]
        for i, (port, proc) in enumerate(daphnes):
            wait_port(port, proc, f"daphne {i}", self.log_path(f"daphne{i}"))
            self.ports.append(port)
        self.daphnes = [proc for _, proc in daphnes]
        if self.sampler is not None:
            self._wait_sampler_ready()

    def _migrate(self) -> None:
        """`manage.py migrate` into the new database, or a copy of the one an
        earlier stack of this process migrated with the same settings."""
        db, key = self.env["TERRARIUM_DB"], self.env["DJANGO_SETTINGS_MODULE"]
        if key not in _MIGRATED:
            manage(self.env, "migrate", "--noinput")
            con = sqlite3.connect(db)
            try:
                _MIGRATED[key] = con.serialize()
            finally:
                con.close()
            return
        with open(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(_MIGRATED[key])

    def _spawn_daphne(self, i: int, port: int) -> tuple[int, subprocess.Popen]:
        # as scripts/run.sh starts it (dashboard/serve.py: Daphne with body limits)
        return port, self._spawn([*self.daphne_prefix, sys.executable, "-m", "dashboard.serve",
                                  "-b", "127.0.0.1", "-p", str(port), "--http-timeout", "300",
                                  "dashboard.asgi:application"], f"daphne{i}")

    def stop_daphne(self, i: int = 0) -> None:
        """Stop Daphne i (the database, users and sessions stay), as a crash or restart would."""
        stop(self.daphnes[i])

    def restart_daphne(self, i: int = 0) -> None:
        """Start Daphne i again on its port (its log goes on in the same file)."""
        port, proc = self._spawn_daphne(i, self.ports[i])
        wait_port(port, proc, f"daphne {i}", self.log_path(f"daphne{i}"))
        self.daphnes[i] = proc

    def _start_redis(self) -> None:
        """redis-server as README's "Scale-out" sets it up: no TCP port, a unix
        socket (0660) in a 2750 directory under /run (so only the directory's
        permissions keep others out), the ACL user `terrarium` with a password
        (only its hash in the 0600 config) and the default user off; the
        dashboard reads the password from a 0600 file."""
        self.redis_dir = tempfile.mkdtemp(prefix="terrarium-redis-", dir="/run")
        os.chmod(self.redis_dir, 0o2750)
        self.redis_socket = os.path.join(self.redis_dir, "redis.sock")
        self.redis_password = secrets.token_urlsafe(32)
        digest = hashlib.sha256(self.redis_password.encode()).hexdigest()
        conf = os.path.join(self.tmp, "redis.conf")
        password_file = os.path.join(self.tmp, "redis.password")
        for path, text in ((conf, REDIS_CONF.format(socket=self.redis_socket, dir=self.tmp, digest=digest)),
                           (password_file, self.redis_password + "\n")):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(text)
        redis = self._spawn([REDIS, conf], "redis")
        wait_unix(self.redis_socket, redis, "redis-server", self.log_path("redis"))
        self.env.update(TERRARIUM_REDIS_URL=f"unix://{self.redis_socket}?db=0",
                        TERRARIUM_REDIS_USER="terrarium", TERRARIUM_REDIS_PASSWORD_FILE=password_file,
                        TERRARIUM_SAMPLER="external")

    def _wait_sampler_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path("sampler"), "rb") as f:
                log = f.read()
            if b"ready" in log:
                return
            if self.sampler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sampler did not start: {log[-3000:].decode(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for log in self._logs:
            log.close()
        self.procs, self._logs = [], []
        if self.redis_dir is not None:
            shutil.rmtree(self.redis_dir, ignore_errors=True)
            self.redis_dir = None

    def __enter__(self) -> "WebStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
