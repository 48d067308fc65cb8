"""Fixtures shared by the runtime's tests: the fake cgroup v2 tree."""
import pytest

from runtime.cgroups import driver
from tests.runtime.test_cgroups_v2 import FakeCgroup2


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "cgroup2"
    root.mkdir()
    return FakeCgroup2(root)


@pytest.fixture
def cg(fake):
    return driver("terrarium", root_override=fake.root, fs=fake)
