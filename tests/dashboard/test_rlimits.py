"""The web process takes its hard descriptor limit at start (Daphne and manage.py)."""
import os
import subprocess
import sys

from tests.conftest import REPO

CODE = "import resource, {mod}; print(*resource.getrlimit(resource.RLIMIT_NOFILE))"


def _limits_after(module: str) -> str:
    r = subprocess.run(["prlimit", "--nofile=256:2048", "--", sys.executable, "-c", CODE.format(mod=module)],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, DJANGO_SETTINGS_MODULE="dashboard.settings"))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_raise_nofile_takes_the_hard_limit():
    r = subprocess.run(["prlimit", "--nofile=256:2048", "--", sys.executable, "-c",
                        "from dashboard.rlimits import raise_nofile; print(*raise_nofile())"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["2048", "2048"], r.stderr


def test_the_asgi_application_raises_it_on_import():
    assert _limits_after("dashboard.asgi") == ["2048", "2048"]


def test_a_soft_limit_already_at_the_hard_one_is_left_alone():
    r = subprocess.run(["prlimit", "--nofile=1024:1024", "--", sys.executable, "-c",
                        "from dashboard.rlimits import raise_nofile; print(*raise_nofile())"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["1024", "1024"], r.stderr
