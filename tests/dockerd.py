"""A private dockerd (Debian's docker.io) for tests and benchmarks that check
archives against the real `docker load` / `docker save`.

    with private_dockerd() as docker:      # skips (pytest) when docker.io is missing
        docker("load", "-i", "x.tar")       # CompletedProcess; check=True by default

Everything of it lives in one temp dir: --data-root, --exec-root (its own
containerd under it), the -H unix socket, --pidfile, the CLI's DOCKER_CONFIG.
No network set-up (--bridge=none, --iptables=false, --ip6tables=false; the
containers run with --network none), the vfs storage driver (no mounts of its
own on the host; storage_driver="overlay2" for a test of overlay roots, whose
mounts under the dir are unmounted after), and a cgroup parent named after this test run's, so the
session's leak check sees one left behind.  It is stopped by its pid
(SIGTERM, then SIGKILL), its cgroup dirs and anything still mounted under its
dir are removed, then the dir.  The system's docker.service is never used.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"          # Debian's client, not whatever else is on PATH


def available() -> bool:
    return os.path.exists(DOCKERD) and os.path.exists(DOCKER) and os.geteuid() == 0


@contextlib.contextmanager
def private_dockerd(cgroup_parent: str | None = None, timeout: float = 60.0, storage_driver: str = "vfs"):
    if not available():
        import pytest
        pytest.skip("needs root and Debian's docker.io (scripts/setup.sh installs it)")
    if cgroup_parent is None:
        cgroup_parent = f"{os.environ.get('TERRARIUM_CGROUP_PARENT', 'terrarium-bench')}-dockerd"
    base = tempfile.mkdtemp(prefix="tdockerd-")      # short: containerd's socket paths are bounded
    sock = os.path.join(base, "d.sock")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": base,
           "DOCKER_CONFIG": os.path.join(base, "cli"), "DOCKER_HOST": f"unix://{sock}"}
    log = open(os.path.join(base, "dockerd.log"), "wb")
    proc = subprocess.Popen(
        [DOCKERD, "--data-root", os.path.join(base, "data"), "--exec-root", os.path.join(base, "x"),
         "-H", f"unix://{sock}", "--pidfile", os.path.join(base, "dockerd.pid"),
         "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
         f"--storage-driver={storage_driver}", "--cgroup-parent", cgroup_parent, "--log-level=warn",
         "--userland-proxy=false"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def docker(*args, check=True, timeout=120, input=None):
        res = subprocess.run([DOCKER, *args], capture_output=True, text=input is None or
                             isinstance(input, str), env=env, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {res.returncode}: {res.stderr}")
        return res

    docker.env = env                    # for running the client by hand (a benchmark's timing)
    docker.base = base                  # everything of it is under here (mounts too)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"dockerd exited {proc.returncode}: {_tail(base)}")
            if os.path.exists(sock) and docker("version", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not answer within {timeout}s: {_tail(base)}")
            time.sleep(0.2)
        yield docker
    finally:
        with contextlib.suppress(Exception):
            for cid in docker("ps", "-aq", check=False, timeout=30).stdout.split():
                docker("rm", "-f", cid, check=False, timeout=30)
        _stop(proc)
        _reap_under(base)
        log.close()
        _remove_cgroups(cgroup_parent)
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def load_image(engine, rt, name: str = "busybox") -> None:
    """Our image `name` (from Runtime `rt`) loaded into a private engine (this
    dockerd, or tests/podman.py's service) by its own `load`, through a tar
    under the engine's dir."""
    tar = os.path.join(engine.base, f"{name}.tar")
    with open(tar, "wb") as f:
        rt.save_image(name, f)
    engine("load", "-i", tar)
    os.unlink(tar)


def _tail(base: str, log: str = "dockerd.log") -> str:
    """The end of a private engine's log under its dir, for a failure message."""
    try:
        with open(os.path.join(base, log), "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")
    except OSError:
        return ""


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the engine we started (dockerd stops its own containerd),
    then SIGKILL to its process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)       # a containerd it left behind, same group


def _pids_under(base: str) -> list[int]:
    """Processes whose command line names our dir: containerd shims, which
    leave dockerd's process group (setsid), and so were started by us."""
    out = []
    needle = base.encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle in f.read():
                        out.append(int(pid))
            except OSError:
                continue
    return out


def _reap_under(base: str, grace: float = 10.0) -> None:
    deadline = time.monotonic() + grace
    while _pids_under(base) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _pids_under(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_cgroups(parent: str, grace: float = 5.0) -> None:
    """Remove the engine's cgroup dirs under `parent` (ours by name), deepest
    first.  A process just killed (a lingering conmon of a finished exec) can
    still be in one for a moment: retry until `grace`, then SIGKILL whatever
    those cgroups still hold and try once more."""
    base = "/sys/fs/cgroup"
    paths = [os.path.join(top, parent) for top in [base] + [os.path.join(base, h) for h in os.listdir(base)]]
    # a relative --cgroup-parent is relative to the engine's own cgroup in each
    # hierarchy (ours: it is our child), which is not always the root
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, own = line.rstrip("\n").split(":", 2)
            if own != "/":
                for c in ctrls.split(",") if ctrls else ["unified"]:
                    paths.append(os.path.join(base, c.removeprefix("name="), own.lstrip("/"), parent))

    def left() -> list[str]:
        out = []
        for path in paths:
            if os.path.isdir(path):
                for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        out.append(dirpath)
        return out

    deadline = time.monotonic() + grace
    while (busy := left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for dirpath in busy:
        with contextlib.suppress(OSError), open(os.path.join(dirpath, "cgroup.procs")) as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    if busy:
        time.sleep(0.2)
        left()


def _unmount_under(base: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted((p for p in points if p == base or p.startswith(base + "/")), reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)
