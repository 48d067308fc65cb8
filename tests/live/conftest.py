"""Reuse the dashboard's users and the browser tier's Daphne + Chromium fixtures.

Importing them here registers them for tests/live only.  (A session-scoped
fixture imported into two conftests is two fixtures: a run of tests/browser
and tests/live together starts two Daphne servers.  Moving them into a shared
conftest would make it one.)"""
from tests.browser.conftest import browser, login, made, server, shots  # noqa: F401
from tests.dashboard.conftest import _fresh_runtime_handle, operator, viewer  # noqa: F401
