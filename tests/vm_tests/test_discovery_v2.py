"""Discovery from the kernel alone on a pure cgroup v2 host: a pod container's
cgroup named as kubelet's systemd driver names it, with the seed's
`unshare --pid --fork --mount-proc` demo in it, is recognised as that
container (its init, its namespaces, paused when frozen) and its PID
namespace is then not reported again as bare; inotify on cgroup2 hears it."""
import os
import subprocess
import threading
import time

from runtime.discovery import discover
from runtime.discovery.bare import BareSource
from runtime.discovery.cgrouptree import tree_sources

CGROUP = "/sys/fs/cgroup"
CID = "3ad85da3fccbfd88a3f7b398a8adf6b5064a15a4bef5b6bfd687e1059d97f71e"
POD = ("kubepods.slice", "kubepods-besteffort.slice",
       "kubepods-besteffort-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice")


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def _inner(pid):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(v) for v in f.read().split()]
        if kids:
            with open(f"/proc/{kids[0]}/comm") as f:
                if f.read().strip() == "sleep":
                    return kids[0]
        time.sleep(0.01)
    raise AssertionError("unshare did not start sleep")


def test_a_pod_container_on_cgroup2_is_recognised_and_claims_its_namespace(cgroup_tree_unchanged):
    sources = tree_sources()
    heard, ready, done, got = [], threading.Event(), threading.Event(), threading.Event()

    def on_key(key):
        heard.append(key)
        if key == f"kubernetes-{CID}":
            got.set()

    watcher = threading.Thread(target=sources[0].follow, args=(done.is_set, on_key, ready.set), daemon=True)
    watcher.start()
    dirs = [os.path.join(CGROUP, *POD[:n]) for n in range(1, len(POD) + 1)]
    dirs.append(os.path.join(dirs[-1], f"cri-containerd-{CID}.scope"))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sleep", "600"])
    inner = None
    try:
        assert ready.wait(10)
        for d in dirs:
            os.mkdir(d)
        assert got.wait(10)
        inner = _inner(proc.pid)
        _write(os.path.join(dirs[-1], "cgroup.procs"), str(inner))
        found, states = discover(sources + [BareSource()])
        pod = [f for f in found if f.engine == "kubernetes"]
        assert [(f.id, f.pid, f.state, f.cgroup) for f in pod] == [
            (CID, inner, "running", "/" + "/".join(POD) + f"/cri-containerd-{CID}.scope")]
        assert pod[0].namespaces["pid"] == int(os.readlink(f"/proc/{inner}/ns/pid")[5:-1])
        assert not [f for f in found if f.engine == "bare" and f.pid == inner]   # claimed by the pod
        assert {s.engine: s.state for s in states}["kubernetes"] == "up"
        _write(os.path.join(dirs[-1], "cgroup.freeze"), "1")
        deadline = time.monotonic() + 5
        while "frozen 1" not in open(os.path.join(dirs[-1], "cgroup.events")).read():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        found, _ = discover(sources)
        assert [f.state for f in found if f.engine == "kubernetes"] == ["paused"]
        _write(os.path.join(dirs[-1], "cgroup.freeze"), "0")
    finally:
        done.set()
        watcher.join(5)
        proc.kill()                         # unshare blocks SIGTERM; --kill-child takes sleep along
        proc.wait(10)
        for d in reversed(dirs):
            deadline = time.monotonic() + 5
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    assert time.monotonic() < deadline, f"cannot remove {d}"
                    time.sleep(0.02)
