"""Settings: production hardening passes `check --deploy`; the secret key file is private."""
import os
import stat
import subprocess
import sys

from tests.conftest import REPO


def _manage(*args, **env):
    full = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    full.update(env)
    return subprocess.run([sys.executable, os.path.join(REPO, "manage.py"), *args], cwd=REPO,
                          env=full, capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_production_settings(tmp_path):
    key_file = tmp_path / "key"
    for env in ({"TERRARIUM_SETTINGS": "production"},
                {"DJANGO_SETTINGS_MODULE": "dashboard.settings_production"}):
        r = _manage("check", "--deploy", "--fail-level", "WARNING",
                    TERRARIUM_SECRET_KEY_FILE=str(key_file), TERRARIUM_DB=str(tmp_path / "db"), **env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "no issues" in r.stdout


def test_check_deploy_fails_without_hardening(tmp_path):
    r = _manage("check", "--deploy", "--fail-level", "WARNING",
                TERRARIUM_SECRET_KEY_FILE=str(tmp_path / "key"), TERRARIUM_DB=str(tmp_path / "db"),
                DJANGO_SETTINGS_MODULE="dashboard.settings", TERRARIUM_SETTINGS="")
    assert r.returncode != 0       # the default (plain HTTP on loopback) is not a deployment


def test_generated_secret_key_is_0600_and_stable(tmp_path):
    key_file = tmp_path / "key"
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    env = dict(os.environ, TERRARIUM_SECRET_KEY_FILE=str(key_file), DJANGO_SETTINGS_MODULE="dashboard.settings")
    env.pop("DJANGO_SECRET_KEY", None)
    run = [sys.executable, "-c", "import django; django.setup(); " + code]
    first = subprocess.run(run, env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout
    second = subprocess.run(run, env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert first == second and len(first.strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    from_env = subprocess.run(run, env=dict(env, DJANGO_SECRET_KEY="k" * 60), cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    assert from_env.strip() == "k" * 60


def test_ensure_admin_prints_a_password_once(tmp_path):
    env = {"TERRARIUM_DB": str(tmp_path / "db.sqlite3"), "TERRARIUM_SECRET_KEY_FILE": str(tmp_path / "key"),
           "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    assert _manage("migrate", "-v0", **env).returncode == 0
    first = _manage("ensure_admin", **env)
    assert first.returncode == 0 and "password:" in first.stdout
    second = _manage("ensure_admin", **env)
    assert second.returncode == 0 and "password" not in second.stdout


# ---------------------------------------------------------------- scripts/run.sh
# make run for real (its user, the agent, Daphne without capabilities and with
# --http-timeout): tests/dashboard/test_unprivileged_web.py
def _run_sh(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("TERRARIUM_HOST", "TERRARIUM_SETTINGS")}
    full.update(env)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "run.sh")], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=60)


def test_run_refuses_a_public_bind_with_development_settings():
    r = _run_sh(TERRARIUM_HOST="0.0.0.0")
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0 with development settings" in r.stderr
    assert r.stdout == ""                               # before any set-up or migration
