"""Dashboard fixtures: users in each role, logged-in clients, a real container.

The runtime root and cgroup parent come from tests/conftest.py (a temp root
and terrarium-test-<hex>, exported in the environment)."""
from __future__ import annotations

import pytest
from django.test import Client

from dashboard.containers.roles import ADMINISTRATOR, OPERATOR, VIEWER, assign_role
from dashboard.containers.runtime_client import reset_runtime


@pytest.fixture(autouse=True)
def _fresh_runtime_handle():
    reset_runtime()
    yield
    reset_runtime()


def _user(django_user_model, username, role):
    user = django_user_model.objects.create_user(username=username, password="pw-" + username + "-x9")
    if role:
        assign_role(user, role)
    return user


@pytest.fixture
def viewer(db, django_user_model):
    return _user(django_user_model, "vera", VIEWER)


@pytest.fixture
def operator(db, django_user_model):
    return _user(django_user_model, "otto", OPERATOR)


@pytest.fixture
def administrator(db, django_user_model):
    return _user(django_user_model, "ada", ADMINISTRATOR)


def _client(user):
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def viewer_client(viewer):
    return _client(viewer)


@pytest.fixture
def operator_client(operator):
    return _client(operator)


@pytest.fixture
def admin_client_role(administrator):
    return _client(administrator)


@pytest.fixture
def idle_container(rt, made, name):
    """A created (never started) container: cheap, and enough for the pages."""
    from runtime import Spec
    return rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300")))
