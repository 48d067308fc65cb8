"""Fixtures for every test tier, and the session-wide check that a test run
leaves the host as it found it: no cgroup, mount, network namespace, bridge,
veth, nftables table or process of ours.

Every run gets its own state root (a temp dir) and its own cgroup parent
(`terrarium-test-<hex>`), exported as TERRARIUM_ROOT / TERRARIUM_CGROUP_PARENT
so subprocesses (the CLI, Daphne) use them too.
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

pytest_plugins = ["tests.fixtures_web"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "terrarium")

_SESSION_ROOT = tempfile.mkdtemp(prefix="terrarium-test-")
_CGROUP_PARENT = f"terrarium-test-{secrets.token_hex(4)}"
os.environ["TERRARIUM_ROOT"] = _SESSION_ROOT
os.environ["TERRARIUM_CGROUP_PARENT"] = _CGROUP_PARENT


def _remove_unused_root() -> None:
    """A run that ends before its session begins (pytest refused an option)
    made the root at import and never used it: remove it if it is empty
    (a full one is the session's to clear, or evidence of a run cut short)."""
    try:
        os.rmdir(_SESSION_ROOT)
    except OSError:
        pass


atexit.register(_remove_unused_root)


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (namespaces, cgroups, mounts)")


# ------------------------------------------------------------- host snapshot

def _not_another_runs(name: str) -> bool:
    """Another test run's root or cgroup parent (a second checkout testing at
    the same time) is not ours; anything else named terrarium is."""
    return not (name.startswith("terrarium-test-") and _CGROUP_PARENT not in name
                and _SESSION_ROOT not in name)


def _our_cgroup_dirs() -> set[str]:
    out = set()
    base = "/sys/fs/cgroup"
    try:
        hierarchies = [os.path.join(base, h) for h in os.listdir(base)]
    except OSError:
        return out
    hierarchies.append(base)
    for h in hierarchies:
        try:
            for name in os.listdir(h):
                if ("terrarium" in name and _not_another_runs(name)
                        and os.path.isdir(os.path.join(h, name))):
                    out.add(os.path.join(h, name))
        except OSError:
            pass
    return out


def _our_mounts() -> set[str]:
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if "terrarium" in line:
                point = line.split()[4]
                if _not_another_runs(os.path.basename(point)) and (
                        "terrarium-test-" not in point or _SESSION_ROOT in point):
                    out.add(point)
    return out


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def _other_runs_ids() -> set[str]:
    """The root ids (runtime.network.root_id) in the interface and table names of
    other test runs going on now: their roots are other terrarium-test-* dirs."""
    from runtime.network import root_id
    base = os.path.dirname(_SESSION_ROOT)
    return {root_id(os.path.join(base, n)) for n in os.listdir(base)
            if n.startswith("terrarium-test-") and os.path.join(base, n) != _SESSION_ROOT}


def _ours(name: str, others: set[str]) -> bool:
    """A name made by runtime.network (tb<rid>..., tv<rid>..., terrarium...,
    terrarium_<rid>) that is not another run's."""
    if name.startswith(("tb", "tv")):
        return name[2:8] not in others
    if name.startswith("terrarium"):
        return name.partition("_")[2][:6] not in others
    return False


def _links(kind: str) -> set[str]:
    """Bridges or veths of ours on the host (each name once, with its kind)."""
    if not is_root():
        return set()
    from runtime.network import list_links
    others = _other_runs_ids()
    return {name for name, k in list_links(prefixes=("tb", "tv", "terrarium"), kinds=(kind,)).items()
            if _ours(name, others)}


def _veths() -> set[str]:
    """Every veth on the host: the runtime's (tv<rid>...) and any other a test made."""
    try:
        out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    others = _other_runs_ids()
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}
    return {n for n in names if not n.startswith("tv") or _ours(n, others)}


def _nft_tables() -> set[str]:
    """Our nftables tables (inet terrarium, inet terrarium_<rid>); no other is read."""
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    others = _other_runs_ids()
    return {line.split()[-1] for line in out.splitlines()
            if line.startswith("table inet terrarium") and _ours(line.split()[-1], others)}


def _our_processes() -> set[tuple[int, str]]:
    """Fork servers, shims, CLI servers and their workers serving this run's
    root (they carry its run dir on their command line), and anything in this
    run's cgroups.  Other runs on the same machine (another checkout's tests,
    a benchmark) are not ours."""
    out = set()
    root = _SESSION_ROOT.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if state == "Z":
            continue        # exited; holds only a pid until its parent (here PID 1) reaps it
        # terrarium-fork/-shim/-cli, and "terrarium": a CLI server's worker
        if (comm.startswith("terrarium") and root in cmdline) or _CGROUP_PARENT in cg:
            out.add((int(pid), comm))
    return out


# Host-wide switches a test's engine could flip (dockerd turns forwarding on
# unless told --ip-forward=false): compared as "name=value".
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "kernel/dmesg_restrict")


def _sysctls() -> set[str]:
    out = set()
    for name in SYSCTLS:
        try:
            with open(f"/proc/sys/{name}") as f:
                out.add(f"{name.replace('/', '.')}={f.read().strip()}")
        except OSError:
            pass
    return out


def host_snapshot() -> dict[str, set]:
    return {"cgroups": _our_cgroup_dirs(), "mounts": _our_mounts(), "netns": _netns(),
            "veths": _veths(), "bridges": _links("bridge"), "nft_tables": _nft_tables(),
            "processes": _our_processes(), "sysctls": _sysctls()}


def leaks(before: dict[str, set], after: dict[str, set]) -> dict[str, set]:
    return {k: after[k] - before[k] for k in after if after[k] - before[k]}


# ------------------------------------------------------------------ session

@pytest.fixture(scope="session", autouse=True)
def host_left_as_found():
    """Fails the run (an error at the last teardown) if anything of ours is left."""
    before = host_snapshot()
    yield
    volumes = _session_volumes()          # the state root goes below: a test's volumes are its to remove
    _cleanup_session()
    found = leaks(before, host_snapshot())
    if volumes:
        found["volumes"] = volumes
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)
    if found:
        pytest.fail(f"the test run left these on the host: {found}", pytrace=False)


def _session_volumes() -> set[str]:
    """Named volumes left in the session's root (runtime/volumes.py)."""
    try:
        return {n for n in os.listdir(os.path.join(_SESSION_ROOT, "volumes"))
                if os.path.isdir(os.path.join(_SESSION_ROOT, "volumes", n, "_data"))}
    except OSError:
        return set()


def _cleanup_session() -> None:
    """Remove what the tests' runtime root still holds, then its cgroup parent."""
    if not is_root():
        return
    from runtime import Runtime
    rt = Runtime(_SESSION_ROOT, _CGROUP_PARENT)
    for c in rt.list(all=True):
        try:
            rt.remove(c.id, force=True)
        except Exception as e:  # noqa: BLE001 - report, and let the leak check decide
            print(f"cleanup: could not remove {c.name}: {e}", file=sys.stderr)
    rt.networks.remove_all()
    for v in rt.volumes.list(size=False):
        try:
            rt.volumes.remove(v["name"])
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: could not remove volume {v['name']}: {e}", file=sys.stderr)
    rt.shutdown_servers()
    # The last helper out removes the parent itself (runtime.daemons.leave),
    # after moving out of each hierarchy: it may still be on its way.
    deadline = time.monotonic() + 10.0
    try:
        while not rt.cgroups.remove_parent() and time.monotonic() < deadline:
            time.sleep(0.05)
    except Exception as e:  # noqa: BLE001
        print(f"cleanup: cgroup parent: {e}", file=sys.stderr)


@pytest.fixture(scope="session")
def session_root() -> str:
    return _SESSION_ROOT


@pytest.fixture(scope="session")
def cgroup_parent() -> str:
    return _CGROUP_PARENT


@pytest.fixture(scope="session")
def rt(session_root, cgroup_parent):
    """The runtime over the session's root, with the built-in images ready."""
    if not is_root():
        pytest.skip("needs root")
    from runtime import Runtime
    runtime = Runtime(session_root, cgroup_parent)
    runtime.images.ensure_builtin()
    return runtime


@pytest.fixture
def open_dir():
    """A 0755 directory in /tmp that any user can traverse (pytest's tmp_path
    is 0700), for tests that act as a throwaway user (tests/unprivileged.py).
    Removed after the test, with the containers and servers of any runtime
    root made in it."""
    base = tempfile.mkdtemp(prefix="terrarium-open-")
    os.chmod(base, 0o755)
    yield base
    for entry in os.listdir(base):
        root = os.path.join(base, entry)
        if is_root() and os.path.isdir(os.path.join(root, "containers")):
            from runtime import Runtime
            rt = Runtime(root)
            for c in rt.list(all=True):
                rt.remove(c.id, force=True)
            rt.networks.remove_all()
            rt.shutdown_servers()
    shutil.rmtree(base)


@pytest.fixture
def name(request) -> str:
    """A container name unique to this test."""
    base = re.sub(r"[^a-zA-Z0-9_.-]", "-", request.node.name.replace("]", ""))[:40]
    return f"{base.strip('-_.') or 't'}-{secrets.token_hex(3)}"


@pytest.fixture
def cleanup(rt):
    """Names/ids registered here are force-removed after the test."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        try:
            rt.remove(ref, force=True)
        except Exception:  # noqa: BLE001 - already gone is fine
            pass


def wait_settled(rt, cid: str, n: int, comm: str = "sleep", timeout: float = 5.0) -> list[int]:
    """Until the container has n processes and all but its init have exec'd
    `comm` (a child forked but not yet exec'd still shows its parent's name,
    which makes process-tree comparisons racy).  Returns the pids."""
    deadline = time.monotonic() + timeout
    while True:
        pids = rt.cgroups.procs(cid)
        names = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                names.append(None)
        if len(pids) == n and names.count(comm) == n - 1 or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def cli(*args, check=False, timeout=60, input=None) -> subprocess.CompletedProcess:
    """Run the `terrarium` console script as a fresh process."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          check=check, input=input, env=os.environ.copy())
