"""OOM tests reuse the dashboard's users and the browser tier's Daphne + Chromium."""
from tests.dashboard.conftest import _fresh_runtime_handle, viewer  # noqa: F401
