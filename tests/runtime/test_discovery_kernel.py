"""Containers recognised from the kernel alone (runtime/discovery/cgrouptree.py
and bare.py): cgroup trees of real nodes rebuilt from tests/fixtures/cgroups/,
then the real kernel: the seed's `unshare --pid --fork --mount-proc` demo as a
bare namespace, and inotify on the real cgroupfs."""
import os
import secrets
import subprocess
import threading
import time

import pytest

from runtime import cli as cli_module
from runtime.discovery import discover, make_key
from runtime.discovery.bare import BareSource, host_pidns, members
from runtime.discovery.cgrouptree import (CgroupTree, key_of_path, owner_path, recognise,
                                          tree_sources, unescape_unit)
from runtime.discovery.marks import Marks
from runtime.discovery.kernel import found_pids, kernel_sources
from tests.conftest import needs_root
from tests.runtime.cgroup_trees import HOST_PIDNS, build, fixture_names

HEX = "0eb2fce3f5e17f6373209d72560673456a6426bc584ff03d76c7802270bbe122"


# --- paths alone -----------------------------------------------------------------

@pytest.mark.parametrize("path, kind, engine, ident", [
    (f"/kubepods/besteffort/pod18d34ce4-50c7-452c-9df8-53c4a3fdf363/{HEX}", "container", "kubernetes", HEX),
    (f"/kubepods/pod18d34ce4-50c7-452c-9df8-53c4a3fdf363/crio-{HEX}", "container", "kubernetes", HEX),
    ("/kubepods.slice/kubepods-besteffort.slice", "pass", "", ""),
    (f"/kubepods.slice/kubepods-podab_cd.slice/cri-containerd-{HEX}.scope", "pass", "", ""),   # not a uid
    # containerd with the wrong driver names a cgroup "<slice>:cri-containerd:<id>" (seen in
    # duckdb/duckdb#16608): a plain directory of containerd.service, not a container
    (f"/system.slice/containerd.service/kubepods-burstable-podb96a7488_3ee1_4bdc_9c98_155cc887b417.slice"
     f":cri-containerd:{HEX}", None, None, None),
    (f"/kubepods/burstable/pod7de2905f-d523-45a3-8dd9-8365a286a434/crio-conmon-{HEX}", "skip", "", ""),
    (f"/system.slice/docker-{HEX}.scope", "foreign", "", ""),
    (f"/docker/{HEX}", "foreign", "", ""),
    ("/lxc.monitor.c1", "skip", "", ""),
    ("/lxc/100", "container", "lxc", "100"),
    ("/machine.slice/machine-lxc\\x2d4242\\x2dweb.scope", "container", "lxc", "web"),
    ("/machine.slice/systemd-nspawn@my\\x2dbox.service", "container", "nspawn", "my-box"),
    ("/docker", None, None, None),
    ("/system.slice", None, None, None),
])
def test_recognise_names_each_owner_from_its_path(path, kind, engine, ident):
    m = recognise(path)
    if kind is None:
        assert m is None
    else:
        assert (m.kind, m.engine, m.id) == (kind, engine, ident)


def test_inner_paths_belong_to_their_container_and_not_to_a_unit():
    # the container's own systemd units are its, not the host's
    assert owner_path("/lxc.payload.c1/system.slice/ssh.service")[0] == "/lxc.payload.c1"
    assert key_of_path("/lxc.payload.c1/system.slice/ssh.service") == "lxc-c1"
    assert key_of_path("/machine.slice/systemd-nspawn@debian.service/payload/init.scope") == "nspawn-debian"
    assert key_of_path(f"/docker/{HEX}/system.slice/crio.service") is None
    assert key_of_path("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service") == \
        "systemd-user@1000.service_x.service"
    assert key_of_path("/system.slice") is None
    assert unescape_unit("fedora\\x2d38") == "fedora-38"
    assert unescape_unit("bad\\xZZ") == "bad\\xZZ"


# --- fake nodes built from real layouts ---------------------------------------------

@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    base = tmp_path_factory.mktemp("cgroup-trees")
    return {name: build(name, base) for name in fixture_names()}


def _discover(host):
    return discover(kernel_sources(host.cgroup_root, host.proc, host.log_root))


@pytest.mark.parametrize("name", fixture_names())
def test_fake_tree_is_recognised_with_the_right_names_and_nothing_else(hosts, name):
    host = hosts[name]
    found, states = _discover(host)
    got = {(f.engine, f.id): f.name for f in found}
    assert got == host.expect
    for f in found:
        assert f.key == make_key(f.engine, f.id)
        assert f.controls == frozenset() and f.owner_note          # read-only, and says who owns it
        assert f.pid is not None and f.namespaces["pid"]
        if f.engine not in ("systemd", "bare"):
            # a container's init is PID 1 of its own namespace, never the host's
            assert f.namespaces["pid"] != HOST_PIDNS and f.state == "running"
    up = {s.engine for s in states if s.state == "up"}
    assert up >= {f.engine for f in found}


def test_kubernetes_labels_and_inits(hosts):
    found, _ = _discover(hosts["k8s-v2-systemd-containerd"])
    etcd = next(f for f in found if f.name == "kube-system/etcd-node1/etcd")
    assert etcd.pid == 3110 and etcd.cgroup.endswith(f"cri-containerd-{etcd.id}.scope")
    assert dict(etcd.labels) == {
        "io.kubernetes.pod.uid": "187bff14cccb94f179e943eacce55bb3", "qos": "burstable",
        "cgroup.driver": "systemd", "runtime": "containerd",
        "io.kubernetes.pod.namespace": "kube-system", "io.kubernetes.pod.name": "etcd-node1",
        "io.kubernetes.container.name": "etcd"}
    guaranteed = next(f for f in found if f.id.startswith("8564"))
    assert guaranteed.labels["qos"] == "guaranteed"
    crio, _ = _discover(hosts["k8s-v2-cgroupfs-crio"])
    calico = next(f for f in crio if f.id.startswith("5eed"))
    assert (calico.labels["cgroup.driver"], calico.labels["runtime"]) == ("cgroupfs", "cri-o")


def test_machines_are_their_payloads_init_not_the_supervisor(hosts):
    found, states = _discover(hosts["systemd-v2-host"])
    by_key = {f.key: f for f in found}
    assert by_key["nspawn-debian"].pid == 701                  # not systemd-nspawn (700)
    assert by_key["lxc-c1"].pid == 901                          # not the monitor (900)
    assert by_key["systemd-session-2.scope"].pid == 1020
    assert by_key["systemd-user@1000.service_pipewire.service"].labels["manager"] == "user@1000.service"
    assert {s.engine: s.state for s in states}["kubernetes"] == "absent"


def test_marks_map_host_cgroups_and_namespaces_to_containers(hosts):
    found, _ = _discover(hosts["k8s-v1-systemd-docker"])
    marks = Marks(found, host={HOST_PIDNS, HOST_PIDNS + 1})
    proxy = next(f for f in found if f.name.endswith("/kube-proxy"))
    assert marks.cgroup(proxy.cgroup + "/sub") == proxy.key
    assert marks.cgroup("/kubepods.slice") is None
    assert marks.namespace(proxy.namespaces["pid"]) == (proxy.key,)
    assert marks.namespace(HOST_PIDNS) == ()                    # the host's: nobody's container
    assert marks.cgroup("/system.slice/kubelet.service") == "systemd-kubelet.service"
    host = hosts["k8s-v1-systemd-docker"]
    assert found_pids(proxy, host.proc, host.cgroup_root) == [1676]


def test_follow_hears_a_new_container_cgroup(tmp_path):
    host = build("k8s-v2-systemd-containerd", tmp_path)
    tree = CgroupTree(host.cgroup_root, host.proc, host.log_root)
    heard, ready, done = [], threading.Event(), threading.Event()
    got = threading.Event()

    def on_key(key):
        heard.append(key)
        got.set()

    t = threading.Thread(target=tree.follow, args=(done.is_set, on_key, ready.set), daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        pod = os.path.join(host.cgroup_root, "kubepods.slice", "kubepods-besteffort.slice",
                           "kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice")
        os.makedirs(pod)                                        # a pod's slice: nothing to say yet
        os.mkdir(os.path.join(pod, f"cri-containerd-{HEX}.scope"))
        assert got.wait(10)
        assert set(heard) == {make_key("kubernetes", HEX)}     # (once, or twice in a race)
    finally:
        done.set()
        t.join(5)


# --- the real kernel ------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(v) for v in f.read().split()]


@pytest.fixture(scope="module")
def unshared():
    """The seed's demo with sleep for bash: (unshare's pid, the namespace's PID 1)."""
    # --kill-child: the namespace ends with unshare, whom we started and reap
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        kids: list[int] = []
        while not kids and time.monotonic() < deadline:
            kids = _children(proc.pid)
            if not kids:
                time.sleep(0.01)            # unshare has not forked yet: no event to await
        assert kids, "unshare did not fork"
        inner = kids[0]
        while time.monotonic() < deadline:  # the child execs sleep after mounting /proc
            with open(f"/proc/{inner}/comm") as f:
                if f.read().strip() == "sleep":
                    break
            time.sleep(0.01)
        yield proc.pid, inner
    finally:
        proc.kill()                         # unshare blocks SIGTERM while it waits; SIGKILL it,
        proc.wait(10)                       # and --kill-child takes the namespace with it


@needs_root
def test_unshare_demo_is_a_bare_namespace_with_no_cgroup_of_its_own(unshared, capsys):
    outer, inner = unshared
    found, states = discover([BareSource()])
    ns = os.readlink(f"/proc/{inner}/ns/pid")
    mine = [f for f in found if f.pid == inner]
    assert len(mine) == 1
    bare = mine[0]
    assert bare.engine == "bare" and bare.id == "pidns-" + ns[5:-1]
    assert bare.namespaces["pid"] != host_pidns() and bare.namespaces["mnt"]   # --mount-proc: its own mnt
    assert members(bare.namespaces["pid"]) == [inner]          # unshare itself stays outside
    assert bare.labels["processes"] == "1" and bare.name == "sleep 600"
    # it shares the cgroup of the test that started it: no cgroup of its own, no limits
    assert bare.cgroup == "" and "no limit" in bare.owner_note
    assert not any(f.pid == outer for f in found)
    # a namespace an earlier source claimed is not read again (discover() passes them)
    assert not any(f.pid == inner for f in BareSource().list(skip={bare.namespaces["pid"]}))
    assert ("bare", "up") in [(s.engine, s.state) for s in states]
    assert found_pids(bare) == [inner]                         # its tree: the namespace's, not the cgroup's
    marks = Marks(found)
    assert marks.namespace(bare.namespaces["pid"]) == (bare.key,)
    assert marks.namespace(bare.namespaces["mnt"]) == (bare.key,)
    assert marks.namespace(bare.namespaces["net"]) == ()      # unshared no network: the host's

    assert cli_module.main(["ps", "--all-engines"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if f" {inner} " in line)
    assert row.split()[:2] == ["bare", bare.id]
    assert out[-1].startswith("absent: ") and "kubernetes (no kubepods cgroup)" in out[-1]


@needs_root
def test_a_namespace_alone_in_a_cgroup_owns_it(unshared):
    outer, inner = unshared
    name = f"terrarium-kernelsrc-{secrets.token_hex(4)}"
    directory = f"/sys/fs/cgroup/memory/{name}"
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("needs the cgroup v1 memory hierarchy (this is the v1 host's check)")
    with open("/proc/self/cgroup") as f:
        home = next(line.split(":", 2)[2] for line in f.read().splitlines() if ":memory:" in line)
    os.mkdir(directory)
    try:
        with open(f"{directory}/cgroup.procs", "w") as f:
            f.write(str(inner))
        bare = next(f for f in BareSource().list() if f.pid == inner)
        assert bare.cgroup == f"/{name}"
        assert found_pids(bare) == [inner]
        with open(f"{directory}/cgroup.procs", "w") as f:
            f.write(str(outer))                                # a process outside the namespace joins
        bare = next(f for f in BareSource().list() if f.pid == inner)
        assert bare.cgroup == ""
    finally:
        for pid in (inner, outer):
            with open(f"/sys/fs/cgroup/memory{home}/cgroup.procs", "w") as f:
                f.write(str(pid))
        os.rmdir(directory)


@needs_root
def test_follow_on_the_real_cgroupfs():
    name = f"terrarium-kernelsrc-{secrets.token_hex(4)}"
    directory = f"/sys/fs/cgroup/memory/lxc.payload.{name}"
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("needs the cgroup v1 memory hierarchy (this is the v1 host's check)")
    sources = tree_sources()
    heard, ready, done, got = [], threading.Event(), threading.Event(), threading.Event()

    def on_key(key):
        heard.append(key)
        if key == f"lxc-{name}":
            got.set()

    t = threading.Thread(target=sources[0].follow, args=(done.is_set, on_key, ready.set), daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        os.mkdir(directory)
        try:
            assert got.wait(10)
            found, _ = discover(sources)
            lxc = [f for f in found if f.engine == "lxc"]
            assert [(f.id, f.state, f.pid, f.cgroup) for f in lxc] == [
                (name, "exited", None, f"/lxc.payload.{name}")]
        finally:
            os.rmdir(directory)
    finally:
        done.set()
        t.join(5)


def test_frozen_is_paused_and_an_empty_kubelet_is_up(tmp_path):
    host = build("lxc-v1", tmp_path)
    state = os.path.join(host.cgroup_root, "freezer", "lxc", "yyztestttt333321", "freezer.state")
    os.makedirs(os.path.dirname(state))
    with open(state, "w") as f:
        f.write("FROZEN\n")
    found, _ = _discover(host)
    assert {f.id: f.state for f in found if f.engine == "lxc"} == {
        "yyztestttt333321": "paused", "c2": "running"}

    os.makedirs(os.path.join(host.cgroup_root, "memory", "kubepods", "besteffort"))
    kube = kernel_sources(host.cgroup_root, host.proc, host.log_root)[0]
    assert kube.engine == "kubernetes"
    assert kube.availability().state == "up" and kube.list() == []
