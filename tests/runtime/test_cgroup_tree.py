"""runtime.cgroups.tree: the whole-host walk, on fake v1/v2 trees and on the
real hierarchy of this host (read-only)."""
import os


from runtime.cgroups import Layout, detect, tree


def _write(d, files):
    os.makedirs(d, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def test_fake_v1_tree(tmp_path):
    mem, cpu, pids = tmp_path / "memory", tmp_path / "cpu,cpuacct", tmp_path / "pids"
    _write(mem, {"cgroup.procs": "1\n2\n", "memory.usage_in_bytes": "1000\n",
                 "memory.limit_in_bytes": "9223372036854771712\n"})
    _write(mem / "b", {"cgroup.procs": "", "memory.usage_in_bytes": "10\n",
                       "memory.limit_in_bytes": "67108864\n"})
    _write(mem / "a" / "x", {"cgroup.procs": "7\n", "memory.usage_in_bytes": "5\n",
                             "memory.limit_in_bytes": "4096\n"})
    _write(mem / "a", {"cgroup.procs": "", "memory.usage_in_bytes": "6\n"})
    _write(cpu, {"cgroup.procs": "1\n", "cpuacct.usage": "123456789\n"})
    _write(pids, {"cgroup.procs": "1\n", "pids.current": "3\n"})
    _write(pids / "p", {"cgroup.procs": "", "pids.current": "1\n", "pids.max": "max\n"})
    layout = Layout("v1", {"memory": str(mem), "cpu": str(cpu), "cpuacct": str(cpu),
                           "pids": str(pids), "freezer": str(tmp_path / "freezer")})

    assert tree.hierarchies(layout) == {"memory": str(mem), "cpu,cpuacct": str(cpu), "pids": str(pids)}
    hs = {h.name: h for h in tree.walk(layout)}
    m = hs["memory"].nodes
    assert [(n.path, n.depth) for n in m] == [("/", 0), ("/a", 1), ("/a/x", 2), ("/b", 1)]
    assert (m[0].nprocs, m[0].memory_usage, m[0].memory_limit) == (2, 1000, None)
    assert (m[2].memory_limit, m[2].nprocs) == (4096, 1)
    assert m[1].memory_limit is None and "memory_limit" not in m[1].sources   # file absent
    assert m[3].sources["memory_limit"].endswith("b/memory.limit_in_bytes: 67108864")
    assert hs["cpu,cpuacct"].nodes[0].cpu_usage_ns == 123456789
    p = hs["pids"].nodes
    assert (p[0].pids_current, p[1].pids_current, p[1].pids_max) == (3, 1, None)
    assert [n.path for n in tree.walk(layout, max_depth=0)[0].nodes] == ["/"]


def test_fake_v2_tree(tmp_path):
    _write(tmp_path, {"cgroup.procs": "1\n", "cgroup.controllers": "cpu memory pids\n",
                      "cpu.stat": "usage_usec 2000\nuser_usec 1000\n"})
    _write(tmp_path / "c", {"cgroup.procs": "9\n10\n", "memory.current": "4096\n",
                            "memory.max": "max\n", "pids.current": "2\n", "pids.max": "64\n",
                            "cpu.stat": "usage_usec 5\n"})
    (h,) = tree.walk(Layout("v2", {}, str(tmp_path), ("cpu", "memory", "pids")))
    assert h.name == "unified"
    root, c = h.nodes
    assert root.memory_usage is None and root.cpu_usage_ns == 2_000_000
    assert (c.path, c.nprocs, c.memory_usage, c.memory_limit, c.pids_current, c.pids_max,
            c.cpu_usage_ns) == ("/c", 2, 4096, None, 2, 64, 5000)


def test_real_host_tree_is_readable():
    layout = detect()
    hs = tree.walk(layout)
    assert hs, "no hierarchy walked"
    for h in hs:
        root = h.nodes[0]
        assert root.path == "/" and root.depth == 0 and root.directory == h.mount
        assert len({n.path for n in h.nodes}) == len(h.nodes)
    if layout.kind != "v2":
        (mem,) = [h for h in hs if "memory" in h.name.split(",")]
        with open(os.path.join(mem.mount, "memory.usage_in_bytes")) as f:
            assert f.read().strip().isdigit()
        assert mem.nodes[0].memory_usage > 0 and mem.nodes[0].memory_limit is None
        assert any(h.nodes[0].cpu_usage_ns for h in hs if "cpuacct" in h.name.split(","))
