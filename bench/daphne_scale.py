"""The dashboard at 1,000 running containers: what one Daphne costs (#16 "At 1,000").

    sudo .venv/bin/python bench/daphne_scale.py [--n 1000] [--window 25] [--live 50] [--rounds 11]
                                                [--profile DIR]

N idle busybox containers (`sleep`) RUNNING under a throwaway root and cgroup
parent (started in parallel batches through the runtime API), one Daphne over
them as scripts/run.sh starts it (tests/webstack.py: the embedded default,
in-memory channel layer, sampler and reconciler in the process), an operator.
Daphne's CPU is its own process's utime + stime (/proc/<pid>/stat, every
thread) over a --window of seconds, in cores; descriptors are /proc/<pid>/fd.

  (a0) no viewer, fresh: nobody has opened a page since Daphne started;
  (b)  one list page open in Chromium (Playwright): its two sockets
       (ws/containers/, ws/events/), 50 running rows whose usage is sampled;
  (a)  no viewer again, once that page has left: what a page started and left
       running (the reconciler following changes, the OOM watcher, the minute
       history) -- the idle baseline of a dashboard that has been used;
  (c)  --live detail pages as websocket clients (`websockets`, not browser tabs:
       50 Chromium renderers would take the 2 cores from Daphne), each opening
       what templates/containers/detail.html opens: ws/events/, ws/containers/
       and ws/containers/<id>/live/, reading everything; 10 viewers per session
       cookie (TERRARIUM_WS_PER_SESSION allows 32 sockets a session);
  (d)  no viewer after those left: descriptors against (a), CPU;
  (e)  GET / (server time, bytes; medians of --rounds) and one container's
       detail page, nobody watching;
  (f)  a burst: every container killed (SIGKILL through the runtime, 8
       threads) with a list page open in Chromium; the time from the last kill
       returned until the page shows no running container (#list-counts and
       every row; the page filtered to engine=terrarium, since discovery shows
       other owners' containers of the host too); beside it a raw ws/containers/ client counts the events that
       reached it: all N changes, or a "resync" (never a silently stale list).

Everything is removed at the end, also on Ctrl-C / SIGTERM: the containers (the
private root holds only ours), the fork server, the cgroup parent, the root.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import page_get as get, save_if_asked, summary, teardown_runtime  # noqa: E402
from tests.webstack import WebStack, login_cookie  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
WORKERS = 8                     # parallel starts, kills and removals


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


PROFILE: str | None = None      # --profile DIR: py-spy's collapsed stacks of each window there


def measure(pid: int, label: str, window: float, settle: float) -> dict:
    """Daphne's CPU in cores over window seconds (after settle), and its descriptors."""
    time.sleep(settle)
    spy = None
    if PROFILE:
        import subprocess
        name = label.split(")")[0].strip("(")
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                "--nonblocking", "--threads", "--pid", str(pid), "--duration",
                                str(int(window)), "--format", "raw", "--output",
                                os.path.join(PROFILE, f"{name}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    if spy is not None:
        spy.wait()
    out = {"phase": label, "cores": (c1 - c0) / (t1 - t0), "fds": fds(pid), "threads": threads(pid),
           "load": load()}
    print(f"  {label:58s} {out['cores']:.3f} cores  {out['fds']:5d} fds  {out['threads']:3d} threads"
          f"  (load {out['load']})", flush=True)
    return out


# ---------------------------------------------------------------- containers

def start_all(rt, n: int) -> float:
    from runtime.spec import make_spec
    t0 = time.monotonic()

    def one(i: int) -> None:
        rt.run(make_spec(image="busybox", name=f"idle-{i:04d}", cmd=["sleep", "1000000"]))
    with ThreadPoolExecutor(WORKERS) as ex:
        for f in [ex.submit(one, i) for i in range(n)]:
            f.result()
    return time.monotonic() - t0


# ------------------------------------------------------------------- viewers

def open_list(browser, base: str, user: tuple[str, str], path: str = "/"):
    """A logged-in list page with its sockets open (body[data-live=on])."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(base + "/login/")
    page.fill("#id_username", user[0])
    page.fill("#id_password", user[1])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    if path != "/":
        page.goto(base + path)
    page.wait_for_function("document.body.dataset.live === 'on'")
    return page


class LiveViewers:
    """n detail pages' sockets in a thread of their own (an asyncio loop):
    ws/events/, ws/containers/, ws/containers/<id>/live/ each, read to the end."""

    def __init__(self, port: int, cookies: list[str], ids: list[str]):
        self.port, self.cookies, self.ids = port, cookies, ids
        self.received = 0
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> "LiveViewers":
        self.thread.start()
        if not self.opened.wait(120) or self.error:
            raise RuntimeError(f"the live viewers did not connect: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:  # noqa: BLE001 - reported by start()/the bench
            self.error = e
            self.opened.set()

    async def _run(self) -> None:
        import websockets
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        origin = f"http://127.0.0.1:{self.port}"
        socks = []
        try:
            for i, cid in enumerate(self.ids):
                cookie = self.cookies[i // 10]
                for path in ("/ws/events/", "/ws/containers/", f"/ws/containers/{cid}/live/"):
                    socks.append(await websockets.connect(f"ws://127.0.0.1:{self.port}{path}",
                                                          additional_headers={"Cookie": cookie},
                                                          origin=origin, max_size=None))
            readers = [asyncio.create_task(self._read(s)) for s in socks]
            self.opened.set()
            await self._stop.wait()
            for r in readers:
                r.cancel()
        finally:
            await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)

    async def _read(self, sock) -> None:
        async for _ in sock:
            self.received += 1


class ListCounter:
    """A raw ws/containers/ client: counts container.changed and resync messages."""

    def __init__(self, port: int, cookie: str):
        self.port, self.cookie = port, cookie
        self.changed = self.removed = self.resyncs = 0
        self.first_resync_at: float | None = None
        self.last_at: float | None = None         # monotonic time of the last change or resync
        self.opened = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "ListCounter":
        self.thread.start()
        if not self.opened.wait(60):
            raise RuntimeError("the list counter did not connect")
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)

    async def _run(self) -> None:
        import websockets
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/ws/containers/",
                                      additional_headers={"Cookie": self.cookie},
                                      origin=f"http://127.0.0.1:{self.port}", max_size=None) as ws:
            self.opened.set()
            while not self._stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                kind = msg.get("type")
                if kind in ("container.changed", "container.removed", "resync"):
                    self.last_at = time.monotonic()
                if kind == "container.changed":
                    self.changed += 1
                elif kind == "container.removed":
                    self.removed += 1
                elif kind == "resync":
                    self.resyncs += 1
                    self.first_resync_at = self.first_resync_at or time.monotonic()


# ---------------------------------------------------------------------- main

def ms(xs: list[float]) -> str:
    s = summary(xs)
    return f"median {s['median']:.0f} ms (p90 {s['p90']:.0f}, n {s['n']})"


def bench(rt, web: WebStack, args, out: dict) -> None:
    from playwright.sync_api import sync_playwright
    pid = web.daphnes[0].pid
    base, port = web.urls[0], web.ports[0]
    user = web.users["operator"]
    ids = [c.id for c in rt.list(all=False)]
    phases = out["phases"] = []
    print(f"Daphne pid {pid}; CPU over {args.window:.0f} s windows:", flush=True)
    phases.append(measure(pid, "(a0) no viewer, fresh (nobody opened a page yet)", args.window, 2))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            t0 = time.monotonic()
            page = open_list(browser, base, user)
            out["list_first_open_s"] = time.monotonic() - t0
            phases.append(measure(pid, "(b) one list page open in Chromium", args.window, 8))
            page.context.close()
            phases.append(measure(pid, "(a) no viewer, after the list page left", args.window, 5))

            cookies = [login_cookie(port, *user) for _ in range((args.live + 9) // 10)]
            viewers = LiveViewers(port, cookies, ids[:args.live]).start()
            try:
                phases.append(measure(pid, f"(c) {args.live} live detail pages (ws clients, "
                                      f"{3 * args.live} sockets)", args.window, 5))
                out["live_messages"] = viewers.received
            finally:
                viewers.stop()
            phases.append(measure(pid, "(d) no viewer, after the live pages left", args.window, 5))
            base_fds = phases[2]["fds"]
            print(f"  descriptors after the viewers left: {phases[-1]['fds']} against {base_fds} in (a)"
                  f" ({phases[-1]['fds'] - base_fds:+d}); fresh (a0): {phases[0]['fds']}", flush=True)

            cookie = cookies[0]
            pages, fetches, details = [], [], []
            for i in range(args.rounds):
                t, size = get(base + "/", cookie)
                pages.append(t)
                t, fsize = get(base + "/?page=2", cookie, fetch=True)
                fetches.append(t)
                t, dsize = get(base + f"/containers/{ids[i % len(ids)]}/", cookie)
                details.append(t)
            out["list_page"] = {"ms": summary(pages), "bytes": size}
            out["list_fetch"] = {"ms": summary(fetches), "bytes": fsize}
            out["detail_page"] = {"ms": summary(details), "bytes": dsize}
            print(f"  (e) GET / {ms(pages)}, {size / 1024:.0f} KiB; the page's fetch of page 2 "
                  f"{ms(fetches)}, {fsize / 1024:.0f} KiB; a detail page {ms(details)}, "
                  f"{dsize / 1024:.0f} KiB", flush=True)

            out["burst"] = burst(rt, browser, base, port, user, cookie, ids, pid)
        finally:
            browser.close()


def burst(rt, browser, base: str, port: int, user, cookie: str, ids: list[str], pid: int) -> dict:
    page = open_list(browser, base, user, "/?engine=terrarium")     # ours only: the host has others
    counter = ListCounter(port, cookie).start()
    spy = None
    try:
        running = page.evaluate("+document.getElementById('list-counts').dataset.running")
        if PROFILE:
            import subprocess
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                    "--nonblocking", "--threads", "--pid", str(pid), "--duration", "15",
                                    "--format", "raw", "--output", os.path.join(PROFILE, "f.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0 = cpu_seconds(pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(lambda cid: rt.kill(cid), ids))
        t_end = time.monotonic()
        page.wait_for_function(
            "+document.getElementById('list-counts').dataset.running === 0 && "
            "!document.querySelector('#container-rows tr[data-status=running]')", polling=50, timeout=120_000)
        shown = time.monotonic()
        cpu = cpu_seconds(pid) - c0
        time.sleep(1.0)                                  # what else reaches the counter
        r = {"n": len(ids), "running_before": running, "kill_s": t_end - t0, "daphne_cpu_s": cpu,
             "page_after_last_kill_s": shown - t_end, "page_after_first_kill_s": shown - t0,
             "events_changed": counter.changed, "events_removed": counter.removed,
             "resyncs": counter.resyncs,
             "last_event_after_last_kill_s": counter.last_at - t_end if counter.last_at else None}
        print(f"  (f) {len(ids)} kills in {r['kill_s']:.1f} s (list showed {running} running); the open list "
              f"page showed none running {r['page_after_last_kill_s']:.2f} s after the last kill; a raw "
              f"ws/containers/ client got {counter.changed} container.changed and {counter.resyncs} resync, the "
              f"last {r['last_event_after_last_kill_s'] or 0:.2f} s after the last kill; Daphne's CPU from the "
              f"first kill until the page showed it: {cpu:.1f} s",
              flush=True)
        return r
    finally:
        if spy is not None:
            spy.wait()
        counter.stop()
        page.context.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--window", type=float, default=25.0)
    ap.add_argument("--live", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--profile", metavar="DIR", help="py-spy (pip install py-spy) each window into DIR")
    args = ap.parse_args()
    global PROFILE
    if args.profile:
        PROFILE = os.path.abspath(args.profile)
        os.makedirs(PROFILE, exist_ok=True)

    def term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, term)

    tmp = tempfile.mkdtemp(prefix="terrarium-daphnescale-")
    root, parent = os.path.join(tmp, "root"), f"terrarium-bench-{secrets.token_hex(3)}"
    from runtime import Runtime
    rt = Runtime(root, parent)
    out: dict = {"n": args.n, "load_before": load()}
    web = None
    print(f"load average before: {out['load_before']}", flush=True)
    try:
        rt.images.ensure_builtin()
        out["start_s"] = start_all(rt, args.n)
        print(f"{args.n} running containers started in {out['start_s']:.0f} s ({WORKERS} at a time)", flush=True)
        web = WebStack(os.path.join(tmp, "web"), users=(("otto", "operator"),),
                       env={"TERRARIUM_ROOT": root, "TERRARIUM_CGROUP_PARENT": parent,
                            "TERRARIUM_WEB_DIR": os.path.join(tmp, "web")})
        os.makedirs(web.tmp)
        web.start()
        bench(rt, web, args, out)
    finally:
        if web is not None:
            web.stop()
        t0 = time.monotonic()
        failed, gone = teardown_runtime(rt, tmp, WORKERS)
        print(f"removed everything in {time.monotonic() - t0:.0f} s"
              + (f"; {failed} containers could not be removed" if failed else "")
              + ("" if gone else f"; the cgroup parent {parent} is still there"), flush=True)
    out["load_after"] = load()
    print(f"load average after: {out['load_after']}")
    save_if_asked(out)


if __name__ == "__main__":
    main()
