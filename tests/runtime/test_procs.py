"""runtime.procs: process trees and the namespace inventory.

Parsers are tested from strings, readers from a fake /proc tree in tmp_path
(pids with stat/status/cmdline/comm files and ns/<type> symlinks whose
targets read like the kernel's, "net:[4026531833]").  The root tests run a
real container forking `sh -c 'sleep 100 & sleep 100 & wait'` and compare
with procps `ps` and util-linux `lsns` on the same host.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from runtime import Spec
from runtime.procs import (NS_TYPES, ProcessInfo, build_forest, container_tree,
                           host_tree, list_pids, namespace_owners, namespaces,
                           parse_cmdline, parse_passwd, read_process, role, terrarium_roles, walk)
from tests.fakeproc import FakeProc

# --- pure parsers -------------------------------------------------------------


def test_cmdline():
    assert parse_cmdline(b"") == ()                       # kernel thread, zombie
    assert parse_cmdline(b"sh\0-c\0sleep 1 & wait\0") == ("sh", "-c", "sleep 1 & wait")
    assert parse_cmdline(b"nginx: worker process") == ("nginx: worker process",)
    assert parse_cmdline(b"a\0\0b\0") == ("a", "", "b")   # an empty argument stays


def test_passwd():
    assert parse_passwd("root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:33::/:/bin/false\n"
                        "dup:x:33:33::/:/bin/false\n") == {0: "root", 33: "www"}


# --- trees from ProcessInfo -----------------------------------------------------

def info(pid, ppid, comm="x"):
    return ProcessInfo(pid=pid, ppid=ppid, ns_pids=(pid,), uid=0, user=None, state="S",
                       comm=comm, cmdline=(comm,), rss=0, cpu_ticks=0, start_ticks=0,
                       threads=1, kthread=False)


def shape(forest):
    return [(n.pid, shape(n.children)) for n in forest]


def test_forest_roots_and_sorted_children():
    forest = build_forest([info(30, 10), info(10, 1), info(20, 10), info(21, 20), info(99, 50)])
    assert shape(forest) == [(10, [(20, [(21, [])]), (30, [])]), (99, [])]
    assert [(d, n.pid) for d, n in walk(forest)] == [(0, 10), (1, 20), (2, 21), (1, 30), (0, 99)]


def test_forest_deep_chain_and_cycle():
    chain = build_forest([info(p, p - 1) for p in range(2, 5002)])   # deeper than recursion allows
    assert len(chain) == 1 and sum(1 for _ in walk(chain)) == 5000
    # a racy snapshot after pid reuse could link 5 -> 6 -> 5: cut at the lowest pid
    forest = build_forest([info(5, 6), info(6, 5), info(7, 6)])
    assert shape(forest) == [(5, [(6, [(7, [])])])]


def test_terrarium_roles():
    forest = build_forest([info(1, 0, "init"), info(50, 1, "terrarium-fork"),
                           info(60, 50, "terrarium-shim"), info(61, 60, "sh"),
                           info(70, 1, "terrarium-cli"), info(71, 70, "terrarium")])
    assert terrarium_roles(forest) == {50: "forkserver", 60: "shim", 70: "cliserver", 71: "cli"}
    assert role(info(3, 1, "terrarium-shimx")) is None


# --- a fake /proc ---------------------------------------------------------------

HOST_NS = {t: 4026531830 + i for i, t in enumerate(NS_TYPES)}
BOX_NS = dict(HOST_NS, ipc=4026532200, mnt=4026532201, net=4026532202, pid=4026532203,
              uts=4026532204)


@pytest.fixture
def fake(tmp_path):
    p = FakeProc(tmp_path)
    p.add(1, "init", ppid=0, cmdline=b"/sbin/init\0", vmrss_kb=9000, ns=HOST_NS)
    p.add(2, "kthreadd", ppid=0, kthread=True, ns=HOST_NS)
    p.add(3, "kworker/0:0-events", ppid=2, kthread=True, ns=HOST_NS)
    p.add(40, "terrarium-shim", ppid=1, cmdline=b"terrarium-shim\0", vmrss_kb=900, ns=HOST_NS)
    p.add(41, "sh", ppid=40, cmdline=b"sh\0-c\0sleep 100 & sleep 100 & wait\0", nspid=[41, 1],
          vmrss_kb=600, ns=BOX_NS)
    p.add(42, "sleep", ppid=41, cmdline=b"sleep\x00100\x00", nspid=[42, 2], uid=65534,
          vmrss_kb=400, ns=BOX_NS)
    p.add(43, "my (odd)) name", ppid=41, cmdline=b"odd\0", nspid=[43, 3], vmrss_kb=400,
          ns=BOX_NS)
    p.add(44, "zombie", ppid=41, state="Z", nspid=[44, 4])       # zombies have no ns links
    os.makedirs(tmp_path / "sys")                                   # not a pid: ignored
    return p


def test_fake_read_process_values_and_sources(fake):
    p = read_process(42, fake.root, users={65534: "nobody"})
    assert (p.pid, p.ppid, p.ns_pids, p.ns_pid) == (42, 41, (42, 2), 2)
    assert (p.uid, p.user, p.state, p.comm) == (65534, "nobody", "S", "sleep")
    assert (p.cmdline, p.rss, p.cpu_ticks, p.threads, p.kthread) == (("sleep", "100"), 400 * 1024,
                                                                     10, 1, False)
    assert p.sources["ns_pid"] == f"{fake.root}/42/status: NSpid:\t42\t2"
    assert p.sources["rss"] == f"{fake.root}/42/status: VmRSS:\t     400 kB"
    assert p.sources["cpu_ticks"] == f"{fake.root}/42/stat: field 14 utime=7, field 15 stime=3"
    assert read_process(42, fake.root).user is None              # no map given: uid only


def test_fake_comm_with_parens_and_kernel_thread(fake):
    assert read_process(43, fake.root).comm == "my (odd)) name"
    k = read_process(3, fake.root)
    assert (k.cmdline, k.kthread, k.rss, k.ppid) == ((), True, 0, 2)
    assert k.sources["rss"].endswith("field 24 rss=0 pages")     # no VmRSS for kernel threads


def test_fake_container_tree_skips_vanished(fake, tmp_path):
    os.remove(tmp_path / "43" / "status")        # exited between reading stat and status
    forest = container_tree([41, 42, 43, 44, 777], fake.root)     # 777: exited before listing
    assert shape(forest) == [(41, [(42, []), (44, [])])]
    assert forest[0].info.ns_pid == 1
    assert read_process(777, fake.root) is None


def test_fake_host_tree(fake):
    forest = host_tree(fake.root)
    assert shape(forest) == [(1, [(40, [(41, [(42, []), (43, []), (44, [])])])]),
                             (2, [(3, [])])]
    assert terrarium_roles(forest) == {40: "shim"}
    assert list_pids(fake.root) == [1, 2, 3, 40, 41, 42, 43, 44]


def test_fake_namespaces(fake):
    owners = {"c1": {t: BOX_NS[t] for t in ("ipc", "mnt", "net", "pid", "uts", "cgroup", "user")}}
    by = {(n.type, n.inode): n for n in namespaces(fake.root, owners=namespace_owners(owners, fake.root))}
    assert len(by) == len(NS_TYPES) + 5
    host_net, box_pid, user = by["net", HOST_NS["net"]], by["pid", BOX_NS["pid"]], by["user", HOST_NS["user"]]
    assert (host_net.nprocs, host_net.pid, host_net.command, host_net.container) == (4, 1, "/sbin/init", None)
    assert (box_pid.nprocs, box_pid.pid, box_pid.container) == (3, 41, "c1")
    assert box_pid.command == "sh -c sleep 100 & sleep 100 & wait"
    assert (user.nprocs, user.container) == (7, None)     # shared with the host: not the container's


def test_fake_namespaces_kernel_thread_command(tmp_path):
    p = FakeProc(tmp_path)
    p.add(2, "kthreadd", ppid=0, kthread=True, ns={"net": 4026531833})
    assert [(n.type, n.command) for n in namespaces(p.root)] == [("net", "[kthreadd]")]


# --- the real kernel ------------------------------------------------------------

def box_pids(rt, c) -> list[int]:
    """The container's host pids from one hierarchy's cgroup.procs (FACTS: 18 µs)."""
    paths = rt.cgroups.paths(c.id)
    d = paths.get("pids") or paths.get("memory") or next(iter(paths.values()))
    with open(os.path.join(d, "cgroup.procs")) as f:
        return [int(x) for x in f.read().split()]


def start_sleepers(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "sleep 100 & sleep 100 & wait")))
    deadline = time.monotonic() + 10
    while True:                        # until both children have forked *and* exec'd sleep
        forest = container_tree(box_pids(rt, c))
        kids = forest[0].children if len(forest) == 1 else ()
        if len(kids) == 2 and all(k.info.comm == "sleep" for k in kids):
            return c, forest
        assert time.monotonic() < deadline, f"container never forked its sleeps: {shape(forest)}"
        time.sleep(0.02)


def ps_pairs(pids) -> dict[int, tuple[int, str]]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    rows = {}
    for line in out.splitlines():
        pid, ppid, comm = line.split(None, 2)
        rows[int(pid)] = (int(ppid), comm)
    return {p: rows[p] for p in pids if p in rows}


def median_us(fn, n=50) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[n // 2] * 1e6


@pytest.mark.root
def test_real_container_tree_matches_ps(rt, name, cleanup):
    c, forest = start_sleepers(rt, name, cleanup)
    (init,) = forest
    assert (init.pid, init.info.ns_pid, init.info.comm) == (c.pid, 1, "sh")
    assert init.info.ns_pids[0] == init.pid                       # NSpid's host pid is the pid
    assert init.info.cmdline == ("sh", "-c", "sleep 100 & sleep 100 & wait")
    assert all(k.info.ns_pids[0] == k.pid for k in init.children)
    assert sorted(k.info.ns_pid for k in init.children) == [2, 3]
    assert [k.pid for k in init.children] == sorted(k.pid for k in init.children)

    ours = {n.pid: (n.info.ppid, n.info.comm) for _, n in walk(forest)}
    assert ps_pairs(ours) == ours                                 # same parent/child pairs
    host = {n.pid: n for _, n in walk(host_tree())}
    assert host[c.pid].children == init.children                  # hangs the same in the host tree
    assert role(host[host[c.pid].info.ppid].info) == "shim"       # under its shim

    pids = box_pids(rt, c)
    print(f"\ncontainer_tree, 3 processes: {median_us(lambda: container_tree(pids)):.0f} µs; "
          f"cgroup.procs: {median_us(lambda: box_pids(rt, c)):.0f} µs; "
          f"read_process: {median_us(lambda: read_process(c.pid)):.0f} µs; "
          f"host_tree ({len(host)} processes): {median_us(host_tree, 10) / 1000:.1f} ms")


def lsns() -> set[tuple[str, int, int, int]]:
    out = subprocess.run(["lsns", "-J", "-o", "NS,TYPE,NPROCS,PID"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return {(n["type"], int(n["ns"]), int(n["nprocs"]), int(n["pid"] or 0))
            for n in json.loads(out)["namespaces"] if n["nprocs"]}


@pytest.mark.root
@pytest.mark.skipif(not shutil.which("lsns"), reason="needs util-linux lsns")
def test_real_namespaces_match_lsns(rt, name, cleanup):
    c, _ = start_sleepers(rt, name, cleanup)
    before = lsns()
    ours = namespaces(owners=namespace_owners({c.id: c.namespaces}))
    after = lsns()

    # Other processes on the host come and go meanwhile: compare the host's as sets.
    seen = {(t, ino) for t, ino, _, _ in before} | {(t, ino) for t, ino, _, _ in after}
    stable = {(t, ino) for t, ino, _, _ in before} & {(t, ino) for t, ino, _, _ in after}
    mine = {(n.type, n.inode) for n in ours}
    assert stable <= mine, stable - mine
    # One seen by neither lsns run was born after the first and gone before the second.
    transient = mine - seen
    assert not transient & {(n.type, n.inode) for n in namespaces()}, transient

    # The container's own namespaces exactly: 3 processes, the lowest pid is its init.
    own = {n.type: n for n in ours if n.container == c.id}
    assert set(own) == {"ipc", "mnt", "net", "pid", "uts"}       # user, cgroup: the host's
    for t, n in own.items():
        assert n.inode == c.namespaces[t]
        assert (n.nprocs, n.pid) == (3, c.pid)
        assert (t, n.inode, 3, c.pid) in before and (t, n.inode, 3, c.pid) in after
    assert own["pid"].command == "sh -c sleep 100 & sleep 100 & wait"

    print(f"\nnamespaces() over {len(list_pids())} processes, {len(ours)} namespaces: "
          f"{median_us(namespaces, 20) / 1000:.2f} ms; "
          f"per-link os.stat scan: {median_us(_stat_scan, 20) / 1000:.2f} ms")


def _stat_scan():
    """The os.stat(...).st_ino alternative namespaces() does not use, for the printed ratio."""
    seen = {}
    for pid in list_pids():
        for t in NS_TYPES:
            try:
                k = (t, os.stat(f"/proc/{pid}/ns/{t}").st_ino)
            except OSError:
                continue
            seen[k] = seen.get(k, 0) + 1
    return seen


def test_real_exited_process_is_none():
    p = subprocess.Popen(["true"])
    p.wait()                      # reaped; pids are handed out in order, so not reused yet
    assert read_process(p.pid) is None
    assert container_tree([p.pid, os.getpid()])[0].pid == os.getpid()
