"""Host pages against the real host: the namespaces (lsns) and cgroups (cgtop)
of a real running container, who may see them, and both pages in Chromium."""
import os
import secrets
import time

import pytest
from django.test import Client
from django.urls import reverse
from playwright.sync_api import expect

from dashboard.live import selectors
from runtime import Limits, Spec
from runtime.cgroups import detect, tree

MEM = 48 << 20
PAGES = ("live:namespaces", "live:cgroups")


@pytest.fixture(scope="module")
def running(rt):
    """One running busybox with a 48 MiB memory limit, shared by the module."""
    c = rt.run(Spec(image="busybox", name=f"hostpages-{secrets.token_hex(3)}", cmd=("sleep", "300"),
                    limits=Limits(memory=MEM)))
    yield rt.inspect(c.id)
    rt.remove(c.id, force=True)


@pytest.fixture(params=["in-process", "agent"])
def fresh(request):
    """A fresh snapshot, read in-process as root, or through the root agent as
    the unprivileged web tier reads it (strictly: no in-process fallback)."""
    if request.param == "agent":
        request.getfixturevalue("through_agent")
        from dashboard.containers.runtime_client import get_runtime
        from runtime.agent_client import AgentRuntime
        assert isinstance(get_runtime(), AgentRuntime)
    selectors.reset_host_cache()
    yield
    selectors.reset_host_cache()


# --- selectors on the real host ---------------------------------------------------

def test_namespaces_of_a_real_container_carry_its_id(running, fresh):
    rows = {(r.ns.type, r.ns.inode): r for r in selectors.host_namespace_rows()}
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        ino = running.namespaces[kind]
        r = rows[(kind, ino)]
        assert (r.ns.container, r.container_name) == (running.id, running.name)
        assert os.readlink(f"/proc/{running.pid}/ns/{kind}") == f"{kind}:[{ino}]"
        assert r.source == f"/proc/{r.ns.pid}/ns/{kind} -> {kind}:[{ino}]"
    assert rows[("pid", running.namespaces["pid"])].ns.pid == running.pid   # its init is the lowest pid
    host_pid = os.readlink("/proc/self/ns/pid")
    assert not [r for r in rows.values() if f"pid:[{r.ns.inode}]" == host_pid and r.ns.container]

    procs = {p.info.pid: p for p in selectors.host_process_rows()}
    init = procs[running.pid]
    assert init.container == (running.id, running.name)
    shim = procs[running.shim_pid]
    assert shim.role == "shim" and init.depth > shim.depth


def test_cgroups_list_the_container_with_its_real_limit(running, fresh):
    hs = {name: rows for name, _, rows in selectors.host_cgroup_rows()}
    mem = next(rows for name, rows in hs.items() if "memory" in name.split(",") or name == "unified")
    (row,) = [r for r in mem if r.container]
    assert row.container == (running.id, running.name) and row.node.path == "/" + running.cgroup
    knob = "memory.limit_in_bytes" if os.path.exists(os.path.join(row.node.directory, "memory.limit_in_bytes")) \
        else "memory.max"
    with open(os.path.join(row.node.directory, knob)) as f:
        assert int(f.read()) == MEM == row.node.memory_limit
    assert row.node.nprocs == 1 and row.node.memory_usage > 0
    assert [r for r in mem if r.terrarium][0].node.path == "/" + running.cgroup.rsplit("/", 1)[0]
    assert all(r.cpu is None for rows in hs.values() for r in rows)   # no baseline yet
    time.sleep(selectors.HOST_TTL)                          # the next read has one: CPU shares
    again = {(r.hierarchy, r.node.path): r for _, _, rows in selectors.host_cgroup_rows() for r in rows
             if r.node.cpu_usage_ns is not None}
    ours = [r for r in again.values() if r.container == (running.id, running.name)]
    roots = [r for (_, path), r in again.items() if path == "/"]
    assert ours and roots and all(r.cpu is not None and 0 <= r.cpu <= os.cpu_count() + 0.1
                                  for r in ours + roots)


def test_tree_walk_sees_the_container_cgroup(running):
    paths = {n.path for h in tree.walk(detect()) for n in h.nodes}
    assert "/" + running.cgroup in paths


# --- permissions ------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("route", PAGES)
def test_anonymous_is_sent_to_log_in(route):
    r = Client().get(reverse(route))
    assert r.status_code == 302 and r["Location"].startswith(reverse("login"))
    r = Client().get(reverse(route) + "?fragment=1")
    assert r.status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("route", PAGES)
def test_viewer_sees_and_roleless_is_refused(route, running, viewer, django_user_model, fresh):
    c = Client()
    c.force_login(viewer)
    page = c.get(reverse(route))
    assert page.status_code == 200 and running.name in page.content.decode()
    frag = c.get(reverse(route) + "?fragment=1").content.decode()
    assert running.name in frag and "<html" not in frag
    nobody = django_user_model.objects.create_user(username="nobody", password="pw-nobody-x9")
    c.force_login(nobody)
    assert c.get(reverse(route)).status_code == 403


# --- in Chromium --------------------------------------------------------------------

@pytest.mark.browser
def test_pages_mark_the_running_container(login, server, running, shots):
    page = login("viewer")
    page.goto(server + "/host/namespaces/")
    pid_row = page.locator(f'#namespaces tr[data-type="pid"][data-container="{running.name}"]')
    expect(pid_row).to_have_attribute("data-inode", str(running.namespaces["pid"]))
    assert f"/ns/pid -> pid:[{running.namespaces['pid']}]" in pid_row.locator("td").nth(1).get_attribute("title")
    init = page.locator(f'#host-ptree .hrow[data-container="{running.name}"]')
    expect(init).to_have_attribute("data-pid", str(running.pid))
    page.wait_for_function("+document.getElementById('host-live').dataset.refreshed >= 1", timeout=8_000)
    expect(pid_row).to_have_count(1)                                   # still there after a refresh
    page.screenshot(path=os.path.join(shots, "host-namespaces.png"), full_page=True)

    page.goto(server + "/host/cgroups/")
    row = page.locator(f'tr[data-container="{running.name}"]').first
    expect(row).to_have_attribute("data-memory-limit", str(MEM))
    expect(row.locator(".c-limit")).to_have_text("48 MiB")
    page.wait_for_function("+document.getElementById('host-live').dataset.refreshed >= 1", timeout=8_000)
    expect(page.locator(f'tr[data-container="{running.name}"]').first).to_contain_text("container")
    page.screenshot(path=os.path.join(shots, "host-cgroups.png"), full_page=True)
