"""The web tier's own files (dashboard/webstate.py): the database and the
secret key are 0600 in a 0700 directory outside the repository, tightened at
every start, and no other local user can read them.

The directories here sit in a 0755 one in /tmp, so that their own modes are
all that keeps a user out."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dashboard import webstate
from tests.conftest import REPO
from tests.unprivileged import as_user, reach, throwaway_user

SETTINGS_ENV = ("TERRARIUM_WEB_DIR", "TERRARIUM_DB", "TERRARIUM_SECRET_KEY_FILE", "DJANGO_SECRET_KEY")


@pytest.fixture
def web_env(open_dir, monkeypatch):
    """TERRARIUM_WEB_DIR in open_dir, nothing else set: the defaults."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    web = os.path.join(open_dir, "web")
    monkeypatch.setenv("TERRARIUM_WEB_DIR", web)
    return web


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def manage(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "manage.py"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.root
def test_database_and_secret_key_are_private_to_their_owner(web_env):
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env.update(TERRARIUM_WEB_DIR=web_env, DJANGO_SETTINGS_MODULE="dashboard.settings")
    r = manage("migrate", "-v0", env=env)
    assert r.returncode == 0, r.stderr
    db, key = os.path.join(web_env, "db.sqlite3"), os.path.join(web_env, "secret_key")
    assert (mode(web_env), mode(db), mode(key)) == (0o700, 0o600, 0o600)
    assert os.path.getsize(db) > 0                           # migrated: tables, sessions
    with throwaway_user() as user:
        seen = as_user(user, lambda: {p: reach(p) for p in (web_env, db, key)})
    assert seen == {web_env: "EACCES", db: "EACCES", key: "EACCES"}


def test_loose_modes_are_tightened_at_start(web_env):
    os.makedirs(web_env, 0o755)
    os.chmod(web_env, 0o755)
    db, key = os.path.join(web_env, "db.sqlite3"), os.path.join(web_env, "secret_key")
    for path, text in ((db, ""), (db + "-wal", ""), (key, "k" * 60 + "\n")):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)                                # made under umask 022
    assert webstate.secret_key() == "k" * 60
    assert webstate.database_path() == db
    assert {p: mode(p) for p in (web_env, db, db + "-wal", key)} == \
        {web_env: 0o700, db: 0o600, db + "-wal": 0o600, key: 0o600}


def test_an_explicit_database_is_made_0600_before_sqlite_makes_it_0644(open_dir, monkeypatch):
    db = os.path.join(open_dir, "elsewhere.sqlite3")
    monkeypatch.setenv("TERRARIUM_DB", db)
    assert webstate.database_path() == db
    assert mode(db) == 0o600 and mode(open_dir) == 0o755   # the directory is the person's


def test_the_key_is_made_once_even_by_processes_starting_together(web_env):
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env["TERRARIUM_WEB_DIR"] = web_env
    code = "from dashboard import webstate; print(webstate.secret_key())"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE) for _ in range(6)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) >= 50
    assert os.listdir(web_env) == ["secret_key"]             # no temporary file left


def test_an_empty_key_file_is_a_clear_error(web_env):
    os.makedirs(web_env, 0o700)
    open(os.path.join(web_env, "secret_key"), "w").close()
    with pytest.raises(webstate.WebStateError, match="is empty: remove it"):
        webstate.secret_key()
