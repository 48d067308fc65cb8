"""Tests that run inside the cgroup v2 VM (tests/vm/run_vm_tier.sh).

Everything here needs a pure cgroup v2 kernel and root, and may leave the
machine's cgroup tree changed if it failed half-way, so on any other host
(the normal `pytest` run on a v1/hybrid machine) the whole directory is
skipped.  TERRARIUM_VM_TIER=1 is set by the tier's guest command.
"""
import os
import time
from contextlib import contextmanager

import pytest

CGROUP = "/sys/fs/cgroup"


def pure_v2() -> bool:
    with open("/proc/self/mountinfo") as f:
        fstypes = [line.split(" - ", 1)[1].split()[0] for line in f if " - " in line]
    return "cgroup" not in fstypes and "cgroup2" in fstypes


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    if os.environ.get("TERRARIUM_VM_TIER") == "1" and pure_v2() and os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="runs only inside the cgroup v2 VM (tests/vm/run_vm_tier.sh)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


def cgroup_children() -> set:
    return {e for e in os.listdir(CGROUP) if os.path.isdir(os.path.join(CGROUP, e))}


@pytest.fixture
def cgroup_tree_unchanged():
    """Assert the test leaves no cgroup directory behind under /sys/fs/cgroup."""
    before = cgroup_children()
    yield
    after = cgroup_children()
    assert after == before, f"left behind in {CGROUP}: {sorted(after - before)}"


@pytest.fixture(scope="module")
def module_runtime():
    """_module_runtime, for a module's own `rt` fixture: `with module_runtime("vm-x") as r`."""
    return _module_runtime


@contextmanager
def _module_runtime(name: str):
    """A Runtime of its own (root TERRARIUM_ROOT/<name>, cgroup parent
    t<name>-<pid>) for one test module; afterwards its containers, servers
    and cgroup parent are gone, and /sys/fs/cgroup is as it was."""
    from runtime.containers import Runtime
    before = cgroup_children()
    root = os.path.join(os.environ.get("TERRARIUM_ROOT", "/tmp/terrarium"), name)
    r = Runtime(root, cgroup_parent=f"t{name}-{os.getpid()}")
    yield r
    for c in r.list(all=True):
        r.remove(c.id, force=True)
    r.shutdown_servers()
    # the last helper out removes the parent itself, maybe a moment later
    deadline = time.monotonic() + 30.0
    while not r.cgroups.remove_parent() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = cgroup_children()
    assert left == before, f"left behind in {CGROUP}: {sorted(left - before)}"
