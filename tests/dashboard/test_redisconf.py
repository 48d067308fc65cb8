"""The Redis channel layer is used with credentials or not at all (dashboard/redisconf.py)."""
import os
import subprocess
import sys

import pytest

from dashboard.redisconf import RedisConfigError, channel_host
from tests.conftest import REPO

URL = "unix:///run/terrarium-redis/redis.sock?db=0"


def _password_file(tmp_path, mode=0o600, text="s3cret\n"):
    path = tmp_path / "redis.password"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_password_comes_from_a_private_file(tmp_path):
    host = channel_host({"TERRARIUM_REDIS_URL": URL, "TERRARIUM_REDIS_PASSWORD_FILE": _password_file(tmp_path)})
    assert host == {"address": URL, "username": "terrarium", "password": "s3cret", "socket_timeout": 30.0}
    host = channel_host({"TERRARIUM_REDIS_URL": URL, "TERRARIUM_REDIS_USER": "web",
                         "TERRARIUM_REDIS_PASSWORD_FILE": _password_file(tmp_path)})
    assert host["username"] == "web"


def test_a_url_without_credentials_is_refused():
    with pytest.raises(RedisConfigError, match="TERRARIUM_REDIS_URL has no credentials: set "
                                               "TERRARIUM_REDIS_PASSWORD_FILE"):
        channel_host({"TERRARIUM_REDIS_URL": "redis://127.0.0.1:6379/0"})


def test_the_insecure_override_and_a_password_in_the_url_are_accepted():
    plain = "redis://127.0.0.1:6379/0"
    assert channel_host({"TERRARIUM_REDIS_URL": plain, "TERRARIUM_REDIS_INSECURE": "1"}) == {"address": plain,
                                                                                       "socket_timeout": 30.0}
    with_pw = "redis://terrarium:pw@127.0.0.1:6379/0"
    assert channel_host({"TERRARIUM_REDIS_URL": with_pw}) == {"address": with_pw, "socket_timeout": 30.0}


@pytest.mark.parametrize("mode,text,says", [
    (0o640, "pw\n", "is readable by others (mode 0640): chmod 0600 it"),
    (0o604, "pw\n", "is readable by others (mode 0604)"),
    (0o600, "\n", "is empty"),
])
def test_a_loose_or_empty_password_file_is_refused(tmp_path, mode, text, says):
    path = _password_file(tmp_path, mode, text)
    with pytest.raises(RedisConfigError, match=f"TERRARIUM_REDIS_PASSWORD_FILE {path} {says}".replace("(", r"\(")
                       .replace(")", r"\)")):
        channel_host({"TERRARIUM_REDIS_URL": URL, "TERRARIUM_REDIS_PASSWORD_FILE": path})


def test_a_missing_or_linked_password_file_is_refused(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(RedisConfigError, match=f"{missing}: No such file or directory"):
        channel_host({"TERRARIUM_REDIS_URL": URL, "TERRARIUM_REDIS_PASSWORD_FILE": missing})
    link = tmp_path / "link"
    link.symlink_to(_password_file(tmp_path))
    with pytest.raises(RedisConfigError, match="Too many levels of symbolic links"):
        channel_host({"TERRARIUM_REDIS_URL": URL, "TERRARIUM_REDIS_PASSWORD_FILE": str(link)})


@pytest.mark.parametrize("argv", [["manage.py", "check"],
                                  ["-m", "dashboard.serve", "-p", "1", "dashboard.asgi:application"]])
def test_the_dashboard_does_not_start_without_credentials(tmp_path, argv):
    env = dict(os.environ, TERRARIUM_REDIS_URL="redis://127.0.0.1:6379/0", DJANGO_SETTINGS_MODULE="dashboard.settings",
               TERRARIUM_DB=str(tmp_path / "db"), TERRARIUM_SECRET_KEY_FILE=str(tmp_path / "key"))
    env.pop("TERRARIUM_REDIS_INSECURE", None)
    r = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "TERRARIUM_REDIS_URL has no credentials" in lines[0], r.stderr
