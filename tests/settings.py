"""Settings of the pytest process: dashboard.settings with the web tier's own
files (database, secret key) in a temp directory, not /var/lib/terrarium-web,
and a one-iteration password hasher (tests/hashers.py).  tests/webstack.py
starts Daphne and manage.py with these settings too when pytest runs it.

pytest-django loads the settings before any conftest runs, so this is where
TERRARIUM_WEB_DIR is set; subprocesses (manage.py, Daphne) inherit it."""
import atexit
import os
import shutil
import tempfile

if not os.environ.get("TERRARIUM_WEB_DIR"):
    os.environ["TERRARIUM_WEB_DIR"] = tempfile.mkdtemp(prefix="terrarium-web-test-")
    atexit.register(shutil.rmtree, os.environ["TERRARIUM_WEB_DIR"], True)

from dashboard.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["tests.hashers.FastPBKDF2PasswordHasher"]
