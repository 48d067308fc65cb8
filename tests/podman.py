"""A private Podman (Debian's podman 4.3) for tests: its storage, its runtime
state and its API service (`podman system service`), all in one temp dir.

    with private_podman() as podman:        # skips (pytest) when podman is missing
        podman("load", "-i", "x.tar")       # CompletedProcess; check=True by default
        podman.url                          # unix://.../p.sock: the API service

Everything of it lives under that dir: --root (storage, its libpod
database, volumes), --runroot, --tmpdir (its file locks: lock_type "file",
never the host-wide /dev/shm/libpod_lock), the events log (events backend
"file", no journald), a containers.conf and storage.conf of its own
(CONTAINERS_CONF, CONTAINERS_STORAGE_CONF: nothing read from /etc or ~), and
the CNI config dir (empty: containers run with --network none; there is no
bridge, firewall rule or netavark on the host).  The cgroup manager is
cgroupfs and the runtime runc: Debian's default crun refuses this machine's
hybrid cgroups.  default_ulimits fit under this machine's hard limits
(Podman's defaults exceed them: "setrlimit ... operation not permitted").
Containers go under a cgroup parent named after this test run's (`run()`
adds it), so the session's leak check sees one left behind; conmon goes to
<parent>/conmon.

Teardown: every container removed, the service stopped by its pid, every
process still naming the dir (conmon of a container or of an exec session,
which lingers for minutes) killed by pid, the cgroups under the parent
removed, everything mounted under the dir (the overlay driver's own bind
mount of its home, the containers' roots and /dev/shm) unmounted, the dir
removed.  The system's podman.service / podman.socket are never used.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from tests.dockerd import _remove_cgroups, _reap_under, _stop, _tail, _unmount_under

PODMAN = "/usr/bin/podman"
RUNC = "/usr/sbin/runc"


def available() -> bool:
    return os.path.exists(PODMAN) and os.path.exists(RUNC) and os.geteuid() == 0


def _nofile_nproc() -> tuple[int, int]:
    import resource
    hard_n = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_p = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    cap = lambda hard, want: want if hard == resource.RLIM_INFINITY else min(hard, want)  # noqa: E731
    return cap(hard_n, 1024), cap(hard_p, 4096)


@contextlib.contextmanager
def private_podman(cgroup_parent: str | None = None, timeout: float = 30.0):
    if not available():
        import pytest
        pytest.skip("needs root, runc and Debian's podman (scripts/setup.sh installs it)")
    if cgroup_parent is None:
        cgroup_parent = f"{os.environ.get('TERRARIUM_CGROUP_PARENT', 'terrarium-bench')}-podman"
    base = tempfile.mkdtemp(prefix="tpodman-")
    root, run, tmp, net = (os.path.join(base, d) for d in ("root", "run", "tmp", "net"))
    for d in (tmp, net, os.path.join(base, "cfg")):
        os.makedirs(d)
    nofile, nproc = _nofile_nproc()
    with open(os.path.join(base, "containers.conf"), "w") as f:
        f.write(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"
log_driver = "k8s-file"
[network]
network_backend = "cni"
network_config_dir = "{net}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
runtime = "runc"
lock_type = "file"
num_locks = 256
tmp_dir = "{tmp}"
static_dir = "{root}/libpod"
volume_path = "{root}/volumes"
image_copy_tmp_dir = "{tmp}"
""")
    with open(os.path.join(base, "storage.conf"), "w") as f:
        f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}"\nrunroot = "{run}"\n')
    sock = os.path.join(base, "p.sock")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": base, "TMPDIR": tmp,
           "XDG_CONFIG_HOME": os.path.join(base, "cfg"),
           "CONTAINERS_CONF": os.path.join(base, "containers.conf"),
           "CONTAINERS_STORAGE_CONF": os.path.join(base, "storage.conf")}
    flags = ["--root", root, "--runroot", run, "--tmpdir", tmp, "--cgroup-manager", "cgroupfs",
             "--events-backend", "file", "--runtime", "runc", "--network-config-dir", net]
    log = open(os.path.join(base, "service.log"), "wb")
    proc = subprocess.Popen([PODMAN, *flags, "system", "service", "--time", "0", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def podman(*args, check=True, timeout=120, input=None):
        if args and args[0] in ("run", "create"):
            args = (args[0], "--cgroup-parent", f"/{cgroup_parent}", *args[1:])
        res = subprocess.run([PODMAN, *flags, *args], capture_output=True, env=env, timeout=timeout,
                             text=input is None or isinstance(input, str), input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {res.returncode}: {res.stderr}")
        return res

    podman.env, podman.base, podman.url = env, base, f"unix://{sock}"
    podman.cgroup_parent = cgroup_parent
    try:
        _wait_answers(proc, sock, timeout, base)
        yield podman
    finally:
        with contextlib.suppress(Exception):
            podman("rm", "-f", "-a", "-t", "0", check=False, timeout=60)
        _stop(proc, grace=15)
        _reap_under(base, grace=2.0)
        log.close()
        _remove_cgroups(cgroup_parent)
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _wait_answers(proc, sock: str, timeout: float, base: str) -> None:
    import docker
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"podman system service exited {proc.returncode}: {_tail(base, 'service.log')}")
        if os.path.exists(sock):
            api = docker.APIClient(base_url=f"unix://{sock}", version="1.41", timeout=5)
            try:
                if api.ping():
                    return
            except Exception:  # noqa: BLE001, S110 - not listening yet
                pass
            finally:
                api.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"podman system service did not answer within {timeout}s: {_tail(base, 'service.log')}")
        time.sleep(0.1)


