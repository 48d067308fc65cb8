"""The container list at 1,000 containers (issue #14 item 7, #16 "At 1,000").

1,000 created (not running) busybox containers in a private state root, one
Daphne over it (tests/webstack.py), an operator logged in.  Measured,
interleaved, medians:

- Runtime.list() at 1,000 (with its cache of settled containers) vs
  `terrarium ps -a` for the same root (the CLI: a process, a full read);
- the list page: server time of GET / (a full page load: reconcile + page
  of 50) and of the page's own fetch (X-Requested-With: fetch, a search: no
  reconcile while the reconciler follows changes), and the bytes sent;
- a search typed in Chromium: keystroke → rows updated (the page's own
  measure, performance.now() around fetch + swap, and Playwright's wall time).

    .venv/bin/python bench/list_scale.py [--n 1000] [--rounds 15] [--keep]

The root is /tmp/terrarium-listscale-bench/ (made once; --keep leaves it for
a re-run, else it is removed with its containers at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import page_get as get, summary  # noqa: E402
from tests.webstack import WebStack, login_cookie, manage  # noqa: E402

BASE = "/tmp/terrarium-listscale-bench"
ROOT = os.path.join(BASE, "root")
CGROUP_PARENT = "terrarium-listscale-bench"


def make_containers(n: int):
    from runtime import Runtime
    from runtime.spec import make_spec
    rt = Runtime(ROOT, CGROUP_PARENT)
    rt.images.ensure_builtin()
    have = len(rt.list(all=True))
    t0 = time.perf_counter()
    for i in range(have, n):
        rt.create(make_spec(image="busybox", name=f"svc-{i:04d}", cmd=["sleep", "300"]))
    return rt, time.perf_counter() - t0


def ms(xs):
    s = summary(xs)
    return f"median {s['median']:.1f} ms (p90 {s['p90']:.1f}, n {s['n']})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {open('/proc/loadavg').read().strip()}")
    rt, made = make_containers(args.n)
    print(f"{args.n} created containers in {ROOT} (made in {made:.1f} s)")

    # Runtime.list vs `terrarium ps -a`, interleaved
    env = dict(os.environ, TERRARIUM_ROOT=ROOT, TERRARIUM_CGROUP_PARENT=CGROUP_PARENT)
    cli = [sys.executable, "-m", "runtime", "ps", "-a"]
    from runtime import Runtime
    lst, cold, ps = [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        rt.list(all=True)
        lst.append((time.perf_counter() - t0) * 1e3)
        fresh = Runtime(ROOT, CGROUP_PARENT)                  # no cache yet: every file read
        t0 = time.perf_counter()
        fresh.list(all=True)
        cold.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        subprocess.run(cli, env=env, stdout=subprocess.DEVNULL, check=True)
        ps.append((time.perf_counter() - t0) * 1e3)
    print(f"Runtime.list() x{args.n}: {ms(lst)}; the first (nothing kept): {ms(cold)}; "
          f"`terrarium ps -a`: {ms(ps)}; ratio list/ps {summary(lst)['median'] / summary(ps)['median']:.2f}")

    tmp = tempfile.mkdtemp(prefix="terrarium-listscale-web-")
    web = WebStack(tmp, users=(("otto", "operator"),),
                   env={"TERRARIUM_ROOT": ROOT, "TERRARIUM_CGROUP_PARENT": CGROUP_PARENT})
    try:
        web.start()
        manage(web.env, "reconcile")                 # the mirror filled once, as a running dashboard has it
        base = web.urls[0]
        cookie = login_cookie(web.ports[0], *web.users["operator"])
        page, search = [], []
        for i in range(args.rounds):
            t, size = get(base + "/", cookie)
            page.append(t)
            t, ssize = get(base + f"/?q=svc-0{i % 10}", cookie, fetch=True)
            search.append(t)
        print(f"GET / (reconcile + 50 rows of {args.n}): {ms(page)}, {size / 1024:.0f} KiB")
        print(f"page fetch ?q=svc-0N (100 match, 50 shown): {ms(search)}, {ssize / 1024:.0f} KiB"
              " (no reconcile only while a list socket keeps the reconciler in step; see browser)")
        browser_search(base, web.users["operator"], args.rounds)
    finally:
        web.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep:
            for c in rt.list(all=True):
                rt.remove(c.id, force=True)
            shutil.rmtree(BASE, ignore_errors=True)
    print(f"load average after: {open('/proc/loadavg').read().strip()}")


def browser_search(base: str, user: tuple[str, str], rounds: int) -> None:
    """Keystroke → rows updated, in Chromium: the page's own measure (fetch + swap)
    and the wall time Playwright sees (includes its round trips)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = b.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(base + "/login/")
        page.fill("#id_username", user[0])
        page.fill("#id_password", user[1])
        page.click("button[type=submit]")
        page.wait_for_url(base + "/", timeout=120_000)
        page.wait_for_function("document.body.dataset.live === 'on'")
        time.sleep(1.0)                                   # the reconciler's first pass
        inner, wall = [], []
        for i in range(rounds):
            term = f"svc-0{i % 10}{(i * 7) % 10}"         # 10 matches each
            page.fill("#list-q", term[:-1])
            n = page.evaluate("+(document.body.dataset.listLoads || 0)")
            page.wait_for_function(f"+(document.body.dataset.listLoads || 0) > {n}")
            n = page.evaluate("+(document.body.dataset.listLoads || 0)")
            t0 = time.perf_counter()
            page.type("#list-q", term[-1])
            page.wait_for_function(f"+(document.body.dataset.listLoads || 0) > {n}")
            wall.append((time.perf_counter() - t0) * 1e3)
            inner.append(float(page.evaluate("document.body.dataset.listMs")))
            rows = page.locator("#container-rows tr").count()
            assert rows == 10, (term, rows)
        print(f"search in Chromium, keystroke → rows: page's own {ms(inner)}; Playwright wall {ms(wall)}")
        print(json.dumps({"search_inner_ms": summary(inner), "search_wall_ms": summary(wall)}))
        b.close()


if __name__ == "__main__":
    main()
