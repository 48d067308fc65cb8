"""Reuse the dashboard's users; Daphne + Chromium come from tests/fixtures_web.py."""
from tests.dashboard.conftest import _fresh_runtime_handle, operator, viewer  # noqa: F401
