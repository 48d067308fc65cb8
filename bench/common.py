"""Shared helpers for Terrarium's benchmarks: timing, statistics, memory, cgroups.

Standard library only, and importable without the project: the crun timer
(`python -I -S bench/common.py timer`) runs this file inside a private mount
namespace.  Every number is a wall-clock time in milliseconds taken with
time.perf_counter() around the thing measured, nothing else.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import time

now = time.perf_counter

# ----------------------------------------------------------------- statistics


def percentile(xs: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": percentile(xs, 50), "p90": percentile(xs, 90),
            "min": min(xs), "max": max(xs), "mean": sum(xs) / len(xs)}


# ------------------------------------------------------------------- timing


def run_timed(argv: list[str], env: dict | None = None, capture: bool = False,
              cwd: str | None = None) -> dict:
    """Spawn argv, wait for its exit; ms from just before the spawn to the reap.

    stdout goes to /dev/null (or is captured), stderr is kept for the report."""
    t0 = now()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, cwd=cwd)
    ms = (now() - t0) * 1e3
    out = {"ms": ms, "rc": p.returncode, "stderr": p.stderr.decode(errors="replace")[-2000:]}
    if capture:
        out["stdout"] = p.stdout.decode(errors="replace")
    return out


def timer_main() -> None:
    """`python -I -S common.py timer`: read one JSON request per line on stdin,
    run it with run_timed, answer one JSON line on stdout; exit on EOF.

    Lets crun be timed from inside the private mount namespace it needs on a
    hybrid host, without the unshare/sh/umount wrapper in the measurement."""
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        out.write(json.dumps(run_timed(req["argv"], capture=req.get("capture", False))) + "\n")
        out.flush()


class NamespacedTimer:
    """A run_timed that runs in a private mount namespace, with the cgroup2
    mount of a hybrid host unmounted there (crun refuses hybrid cgroups).
    The host's mounts are not touched."""

    def __init__(self, python: str = sys.executable):
        script = "exec \"$0\" -I -S \"$1\" timer"
        unified = [m for m in cgroup_mounts() if m[1] == "cgroup2"]
        if unified and any(m[1] == "cgroup" for m in cgroup_mounts()):
            script = " && ".join(f"umount {p}" for p, _ in unified) + " && " + script
        self.argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                     python, os.path.abspath(__file__)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def run(self, argv: list[str], capture: bool = False) -> dict:
        self.proc.stdin.write(json.dumps({"argv": argv, "capture": capture}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the namespaced timer died (rc {self.proc.poll()}): {self.argv}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()            # our own child, by its pid
                self.proc.wait()


# -------------------------------------------------- bare namespaces, in-process

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
FIVE_NS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
MS_REC, MS_PRIVATE = 16384, 1 << 18


def bare_python(rootfs: str) -> dict:
    """What `unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS /bin/true`
    does, from this running interpreter: fork, unshare(5 namespaces), make /
    private, fork (PID 1 of the new namespace), chroot, exec.  No cgroup, no
    overlay, no /proc, no pivot_root: the floor under any runtime."""
    t0 = now()
    pid = os.fork()
    if pid == 0:
        code = 90
        try:
            if _libc.unshare(FIVE_NS) != 0:
                os._exit(91)
            if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                os._exit(92)
            child = os.fork()
            if child == 0:
                try:
                    os.chroot(rootfs)
                    os.chdir("/")
                    os.execv("/bin/true", ["/bin/true"])
                finally:
                    os._exit(93)
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code if 0 <= code < 256 else 94)
    _, status = os.waitpid(pid, 0)
    return {"ms": (now() - t0) * 1e3, "rc": os.waitstatus_to_exitcode(status), "stderr": ""}


# ------------------------------------------------------------------- memory


def memory_kb(pid: int) -> dict:
    """Rss, Pss and USS (Private_Clean + Private_Dirty) of pid, in kB."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(rest.split()[0])
            elif key == "Rss":
                out["rss"] = int(rest.split()[0])
            elif key == "Pss":
                out["pss"] = int(rest.split()[0])
    return out


def private_by_mapping(pid: int, top: int = 6) -> list[dict]:
    """Where a process's private memory is: kB of Private_Clean+Private_Dirty
    per mapping name ("[heap]", "[anon]", a library path, ...), largest first."""
    by: dict[str, int] = {}
    name = "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):        # a mapping header
                parts = line.split()
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif first in ("Private_Clean:", "Private_Dirty:"):
                by[name] = by.get(name, 0) + int(line.split()[1])
    return [{"mapping": k, "kb": v} for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:top] if v]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ cgroups


def cgroup_mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of every cgroup and cgroup2 mount we can see."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype = post.split()[0]
            if fstype in ("cgroup", "cgroup2"):
                mnt = pre.split()[4].replace("\\040", " ")
                if (mnt, fstype) not in out:
                    out.append((mnt, fstype))
    return out


def cgroup_dirs(rel: str) -> list[str]:
    """The directories named by the absolute cgroup path rel in every hierarchy."""
    rel = rel.strip("/")
    return [d for d in (os.path.join(m, rel) for m, _ in cgroup_mounts()) if os.path.isdir(d)]


def remove_cgroup_tree(rel: str, timeout: float = 3.0) -> list[str]:
    """rmdir rel and everything under it, deepest first, in every hierarchy.
    Returns what is still there (a cgroup with a process in it: not ours to kill)."""
    deadline = time.monotonic() + timeout
    left = []
    for top in cgroup_dirs(rel):
        for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        left.append(d)
                        break
                    time.sleep(0.02)
    return left


def teardown_runtime(rt, tmp: str, workers: int = 1) -> tuple[int, bool]:
    """Remove every container of a bench's private runtime root (all are the
    bench's), its servers, its cgroup parent and the root itself.
    Returns (containers that could not be removed, whether the parent went)."""
    from concurrent.futures import ThreadPoolExecutor
    failed = 0

    def one(cid: str) -> None:
        nonlocal failed
        try:
            rt.remove(cid, force=True)
        except Exception as e:  # noqa: BLE001 - remove the rest, say which stayed
            failed += 1
            print(f"could not remove {cid[:12]}: {e}", file=sys.stderr)
    with ThreadPoolExecutor(max(workers, 1)) as ex:
        list(ex.map(one, [c.id for c in rt.list(all=True)]))
    rt.shutdown_servers()
    gone = rt.cgroups.remove_parent(wait=5)
    shutil.rmtree(tmp, ignore_errors=True)
    return failed, bool(gone)


def save_if_asked(result: dict) -> None:
    """Write a bench's figures as JSON to $TERRARIUM_BENCH_JSON when it is set
    (bench/run_all.sh's results)."""
    path = os.environ.get("TERRARIUM_BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


# ------------------------------------------------------------------ machine


def tool(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for f in fallbacks:
        if os.access(f, os.X_OK):
            return f
    return None


def version_line(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine_info(runc: str | None, crun: str | None) -> dict:
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "python_executable": sys.executable, "loadavg_at_start": load,
        "runc": version_line([runc, "--version"]) if runc else None,
        "crun": version_line([crun, "--version"]) if crun else None,
        "cgroup_mounts": len(cgroup_mounts()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def tree_fingerprint(root: str) -> str:
    """Names, modes, sizes and mtimes of everything under root: a cheap check
    that a rootfs used read-only was not written to."""
    import hashlib
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)} {st.st_mode} {st.st_size} {st.st_mtime_ns}\n".encode())
        st = os.lstat(d)
        h.update(f"{d} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


if __name__ == "__main__" and sys.argv[1:] == ["timer"]:
    timer_main()


# ---------------------------------------------------------------- web pages


def page_get(url: str, cookie: str, fetch: bool = False) -> tuple[float, int]:
    """One GET of a dashboard page with a session cookie (``fetch``: as the
    page's own script asks, for the rows alone) -> (milliseconds, bytes)."""
    import urllib.request                 # not at the top: the crun timer imports this file
    headers = {"Cookie": cookie}
    if fetch:
        headers["X-Requested-With"] = "fetch"
    t0 = time.perf_counter()
    body = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120).read()
    return (time.perf_counter() - t0) * 1e3, len(body)
