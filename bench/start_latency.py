#!/usr/bin/env python3
"""How long a container takes to start, and what an idle one costs in memory.

Run as root (bench/run_all.sh installs runc and crun first; `make bench`):

    .venv/bin/python bench/start_latency.py [--n 30] [--k 20] [--warmup 2]

Each contender runs `/bin/true` in the same busybox root filesystem, to its
exit, N times, round-robin (the order rotates every round) so that the noise
of a shared machine hits all of them alike; warm-up rounds are not counted.

  api        rt.run(spec) + rt.wait() in this process, fork server running
             (the default seccomp profile, as every container has)
  api-unconfined   the same with --security-opt seccomp=unconfined
  api-bridge the same on the default bridge network (`--network bridge`):
             a lease, a veth pair made into init's namespace, eth0's address
             and route (runtime/network.py), before the command runs
  cli-rm     `terrarium run --rm busybox /bin/true`, a fresh process (a thin
             client: the CLI server's pre-forked worker does the work)
  cli        `terrarium run busybox /bin/true` (removed afterwards, untimed)
  cli-local  `run --rm` with TERRARIUM_CLI_LOCAL=1: all of it in the fresh process
  runc       `runc run` of an OCI bundle on the image's layer directory
  runc-cni   the same with a network like api-bridge's: an OCI createRuntime
             hook runs bench/cni_veth.sh (a CNI-style bridge ADD: a veth pair
             with eth0 in runc's new netns, addressed, up, default route; the
             host end on a test bridge this bench makes and removes)
  crun       `crun run`, same bundle, in a private mount namespace without the
             cgroup2 mount (crun refuses hybrid cgroups); timed in there
  crun-seccomp  the same with our default seccomp profile in the bundle's
             config.json (as Docker would give crun its own)
  unshare    `unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS /bin/true`
  bare-py    the same fork + unshare(5 namespaces) + chroot + exec from Python

and, to see where the time goes: the API call split into create / start /
wait, a fork-server ping, the init's seccomp step alone (read the cached
program + prctl, in a forked child), `python -I -S -c pass`, the venv's `python -c
pass`, `python -c "import runtime.client"`, and the client's remote half
(connect, hand over, exit code) timed from this process.  Then K detached `sleep 600`
containers are started and the private memory (USS) of their shims and of
the fork server is read.

Prints a report and writes bench/results/start_latency.json.  Everything it
makes (state root, bundles, cgroups under /terrarium-bench-<hex>..., the
fork server, the CLI server, containers) is removed at the end, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
if PROJECT not in sys.path:
    sys.path.insert(1, PROJECT)

from common import (NamespacedTimer, alive, bare_python, cgroup_dirs, children, comm,  # noqa: E402
                    machine_info, memory_kb, now, private_by_mapping, remove_cgroup_tree,
                    run_timed, summary, tool, tree_fingerprint)

LABELS = {
    "api": "(a) API  rt.run + rt.wait",
    "api-unconfined": "(a) API  seccomp=unconfined",
    "api-bridge": "(a) API  --network bridge",
    "cli-rm": "(b) CLI  terrarium run --rm",
    "cli": "(b) CLI  terrarium run",
    "cli-local": "(b) CLI  run --rm, no server",
    "runc": "(c) runc run",
    "runc-cni": "(c) runc run + CNI-style veth hook",
    "crun": "(d) crun run",
    "crun-seccomp": "(d) crun run + seccomp profile",
    "unshare": "(e) unshare(1) 5 ns + chroot",
    "bare-py": "(e) Python fork+unshare+chroot",
    "api-split": "API split: create/start/wait",
    "cli-remote": "client's remote half, in-process",
    "ping": "fork-server ping (3 per round)",
    "seccomp-load": "init's seccomp read + load, in a fork",
    "py-IS": "python -I -S -c pass",
    "py-venv": "venv python -c pass",
    "py-import-client": "venv python -c 'import runtime.client'",
}
MAIN_ROWS = ("api", "api-unconfined", "api-bridge", "cli-rm", "cli", "cli-local", "runc", "runc-cni", "crun",
             "crun-seccomp",
             "unshare", "bare-py")


class Bench:
    def __init__(self, args):
        self.args = args
        self.hex = secrets.token_hex(4)
        self.tmp = tempfile.mkdtemp(prefix=f"terrarium-bench-{self.hex}-")
        os.chmod(self.tmp, 0o755)
        self.root = os.path.join(self.tmp, "root")
        self.cg_parent = f"terrarium-bench-{self.hex}"          # terrarium's, absolute in each hierarchy
        self.oci_parent = f"/terrarium-bench-{self.hex}-oci"    # runc's and crun's
        self.runc = tool("runc", "/usr/sbin/runc", "/usr/bin/runc")
        self.crun = tool("crun", "/usr/bin/crun")
        self.terrarium = tool("terrarium") if not os.path.exists(
            os.path.join(PROJECT, ".venv/bin/terrarium")) else os.path.join(PROJECT, ".venv/bin/terrarium")
        self.cli_python = self._shebang(self.terrarium) or sys.executable
        self.env = dict(os.environ, TERRARIUM_ROOT=self.root, TERRARIUM_CGROUP_PARENT=self.cg_parent)
        self.rt = None
        self.timer = None
        self.seen_pids: set[int] = set()
        self.server_pids: set[int] = set()
        self.disabled: dict[str, str] = {}
        self.errors: dict[str, list[str]] = {}
        self.counter = 0
        self.precompiled = 0

    @staticmethod
    def _shebang(path):
        try:
            with open(path, "rb") as f:
                line = f.readline().decode().strip()
            return line[2:].split()[0] if line.startswith("#!") else None
        except (OSError, TypeError, IndexError):
            return None

    # ------------------------------------------------------------------ setup
    def setup(self):
        import runtime
        self.precompiled = _precompile(os.path.dirname(runtime.__file__))
        from runtime import Runtime
        self.rt = Runtime(self.root, self.cg_parent)
        self.rt.images.ensure_builtin()
        self.rootfs = self.rt.images.get("busybox").layers[0].path
        self.rootfs_before = tree_fingerprint(self.rootfs)
        from runtime.model import Spec
        self.Spec = Spec
        self.true_spec = Spec(image="busybox", cmd=("/bin/true",))
        self.unconfined_spec = Spec(image="busybox", cmd=("/bin/true",),
                                    seccomp={"mode": "unconfined"})
        self.bridge_spec = Spec(image="busybox", cmd=("/bin/true",), network="bridge")
        if self.runc or self.crun:
            self.base_config = self._oci_config()
        for name, exe in self._oci_runtimes():
            if not exe:
                self.disabled[name] = f"{name} is not installed (bench/run_all.sh installs it)"
                continue
            os.makedirs(os.path.join(self.tmp, name, "bundle"))
            os.makedirs(os.path.join(self.tmp, name, "state"))
        if self.crun:
            self.timer = NamespacedTimer()
        if self.runc:
            self._cni_bridge()
        if not self.terrarium:
            self.disabled["cli"] = self.disabled["cli-rm"] = "the terrarium script was not found"

    def _oci_runtimes(self):
        return (("runc", self.runc), ("runc-cni", self.runc), ("crun", self.crun), ("crun-seccomp", self.crun))

    def _cni_bridge(self):
        """runc-cni's test bridge (ours: trb<hex>), on a /24 no host route
        overlaps, with the gateway address, as a CNI bridge plugin keeps it."""
        import ipaddress

        from runtime import network
        taken = network._host_routes()
        net = next(n for n in (ipaddress.IPv4Network(f"10.254.{i}.0/24") for i in range(256))
                   if not any(n.overlaps(t) for t in taken))
        self.cni_net, self.cni_bridge = net, f"trb{self.hex}"
        self.cni_prefix = f"trv{self.hex[:6]}"             # + the round: <= 15 characters
        for cmd in (["link", "add", self.cni_bridge, "type", "bridge"],
                    ["addr", "add", f"{net.network_address + 1}/{net.prefixlen}", "dev", self.cni_bridge],
                    ["link", "set", self.cni_bridge, "up"]):
            subprocess.run(["ip", *cmd], check=True)

    def _oci_config(self) -> dict:
        spec_dir = os.path.join(self.tmp, "spec")
        os.mkdir(spec_dir)
        subprocess.run([self.runc or self.crun, "spec", "--bundle", spec_dir], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(os.path.join(spec_dir, "config.json")) as f:
            config = json.load(f)
        config["process"]["args"] = ["/bin/true"]
        config["process"]["terminal"] = False
        config["root"] = {"path": self.rootfs, "readonly": True}
        return config

    def _bundle(self, runtime: str) -> tuple[str, str, str]:
        """A fresh container id and cgroupsPath; config.json rewritten (untimed)."""
        self.counter += 1
        cid = f"tb-{self.hex}-{runtime}-{self.counter}"
        config = dict(self.base_config)
        config["linux"] = dict(config["linux"], cgroupsPath=f"{self.oci_parent}/{cid}")
        if runtime == "crun-seccomp":
            config["linux"]["seccomp"] = _oci_seccomp()
        if runtime == "runc-cni":
            net = self.cni_net
            address = net.network_address + 2 + self.counter % (net.num_addresses - 3)
            config["hooks"] = {"createRuntime": [{
                "path": "/bin/sh",
                "args": ["sh", os.path.join(BENCH, "cni_veth.sh"), self.cni_bridge,
                         f"{self.cni_prefix}{self.counter}", f"{address}/{net.prefixlen}",
                         str(net.network_address + 1), "1500"]}]}
        bundle = os.path.join(self.tmp, runtime, "bundle")
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        return cid, bundle, os.path.join(self.tmp, runtime, "state")

    # ------------------------------------------------------------ contenders
    def c_api(self):
        rt = self.rt
        t0 = now()
        c = rt.run(self.true_spec)
        end = rt.wait(c.id)
        t1 = now()
        self.seen_pids.add(c.shim_pid or 0)
        rt.remove(c.id)
        t2 = now()
        return {"ms": (t1 - t0) * 1e3, "remove_ms": (t2 - t1) * 1e3, "rc": end.exit_code,
                "stderr": end.error or ""}

    def c_api_unconfined(self):
        rt = self.rt
        t0 = now()
        c = rt.run(self.unconfined_spec)
        end = rt.wait(c.id)
        t1 = now()
        self.seen_pids.add(c.shim_pid or 0)
        rt.remove(c.id)
        return {"ms": (t1 - t0) * 1e3, "rc": end.exit_code, "stderr": end.error or ""}

    def c_api_bridge(self):
        rt = self.rt
        t0 = now()
        c = rt.run(self.bridge_spec)
        end = rt.wait(c.id)
        t1 = now()
        self.seen_pids.add(c.shim_pid or 0)
        rt.remove(c.id)
        return {"ms": (t1 - t0) * 1e3, "rc": end.exit_code, "stderr": end.error or ""}

    def c_api_split(self):
        rt = self.rt
        t0 = now()
        c = rt.create(self.true_spec)
        t1 = now()
        c = rt.start(c.id)
        t2 = now()
        end = rt.wait(c.id)
        t3 = now()
        self.seen_pids.add(c.shim_pid or 0)
        rt.remove(c.id)
        return {"ms": (t3 - t0) * 1e3, "create_ms": (t1 - t0) * 1e3, "start_ms": (t2 - t1) * 1e3,
                "wait_ms": (t3 - t2) * 1e3, "rc": end.exit_code, "stderr": end.error or ""}

    def c_cli_rm(self):
        return run_timed([self.terrarium, "run", "--rm", "busybox", "/bin/true"], env=self.env,
                         cwd=self.tmp)

    def c_cli_local(self):
        return run_timed([self.terrarium, "run", "--rm", "busybox", "/bin/true"],
                         env=dict(self.env, TERRARIUM_CLI_LOCAL="1"), cwd=self.tmp)

    def c_cli(self):
        before = set(os.listdir(self.rt.containers_dir))
        r = run_timed([self.terrarium, "run", "busybox", "/bin/true"], env=self.env, cwd=self.tmp)
        for cid in set(os.listdir(self.rt.containers_dir)) - before:     # untimed
            if not cid.startswith("."):
                self.rt.remove(cid, force=True)
        return r

    def c_runc(self):
        cid, bundle, state = self._bundle("runc")
        return run_timed([self.runc, "--root", state, "run", "--bundle", bundle, cid], cwd=self.tmp)

    def c_runc_cni(self):
        cid, bundle, state = self._bundle("runc-cni")
        return run_timed([self.runc, "--root", state, "run", "--bundle", bundle, cid], cwd=self.tmp)

    def c_crun(self):
        cid, bundle, state = self._bundle("crun")
        return self.timer.run([self.crun, "--root", state, "run", "--bundle", bundle, cid])

    def c_crun_seccomp(self):
        cid, bundle, state = self._bundle("crun-seccomp")
        return self.timer.run([self.crun, "--root", state, "run", "--bundle", bundle, cid])

    def c_unshare(self):
        return run_timed(["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
                          "chroot", self.rootfs, "/bin/true"], cwd=self.tmp)

    def c_bare_py(self):
        return bare_python(self.rootfs)

    def c_ping(self):
        from runtime.forkserver import forkserver_call
        ms = []
        for _ in range(3):
            t0 = now()
            reply = forkserver_call(self.rt.run_dir, {"op": "ping"})
            ms.append((now() - t0) * 1e3)
            if not reply.get("ok"):
                return {"ms": ms[-1], "rc": 1, "stderr": json.dumps(reply)}
        return {"ms": ms[0], "more": ms[1:], "rc": 0, "stderr": ""}

    def c_seccomp_load(self):
        """What the filter adds to a start, timed inside a forked child as the
        container's init does it: read ROOT/seccomp/<sha>.bpf, then prctl."""
        import struct
        from runtime import init, linux, seccomp
        path = seccomp.program_path(self.rt.root, None)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                linux.set_no_new_privs()
                t0 = time.perf_counter_ns()
                linux.seccomp_filter(init._read_file(path))
                os.write(w, struct.pack("q", time.perf_counter_ns() - t0))
            finally:
                os._exit(0)
        os.close(w)
        data = os.read(r, 8)
        os.close(r)
        os.waitpid(pid, 0)
        if len(data) != 8:
            return {"ms": None, "rc": 1, "stderr": "the child could not load the filter"}
        return {"ms": struct.unpack("q", data)[0] / 1e6, "rc": 0, "stderr": ""}

    def c_cli_remote(self):
        """What a `run --rm` client waits for after its interpreter started:
        connect to the CLI server, hand over the command, get the exit code.
        The client's own functions, called from this process with its
        environment switched to the bench's (stdio: /dev/null)."""
        from runtime import client
        saved_env, saved_fds = dict(os.environ), [os.dup(fd) for fd in (0, 1, 2)]
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            t0 = now()
            sock = client._connect(self.rt.run_dir)
            try:
                rc = client._remote(sock, ["run", "--rm", "busybox", "/bin/true"])
            finally:
                sock.close()
            ms = (now() - t0) * 1e3
        except Exception as e:  # noqa: BLE001 - e.g. the server not started yet
            return {"ms": None, "rc": 1, "stderr": f"{type(e).__name__}: {e}"}
        finally:
            for fd, saved in zip((0, 1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            os.close(null)
            os.environ.clear()
            os.environ.update(saved_env)
        return {"ms": ms, "rc": rc, "stderr": ""}

    def c_py_IS(self):
        return run_timed([self.cli_python, "-I", "-S", "-c", "pass"], cwd=self.tmp)

    def c_py_venv(self):
        return run_timed([self.cli_python, "-c", "pass"], cwd=self.tmp)

    def c_py_import_client(self):
        return run_timed([self.cli_python, "-c", "import runtime.client"], cwd=self.tmp)

    def contenders(self):
        return {"api": self.c_api, "api-unconfined": self.c_api_unconfined, "api-bridge": self.c_api_bridge,
                "cli-rm": self.c_cli_rm, "cli": self.c_cli,
                "cli-local": self.c_cli_local, "runc": self.c_runc, "runc-cni": self.c_runc_cni, "crun": self.c_crun,
                "crun-seccomp": self.c_crun_seccomp,
                "unshare": self.c_unshare, "bare-py": self.c_bare_py, "api-split": self.c_api_split,
                "cli-remote": self.c_cli_remote, "ping": self.c_ping,
                "seccomp-load": self.c_seccomp_load, "py-IS": self.c_py_IS,
                "py-venv": self.c_py_venv, "py-import-client": self.c_py_import_client}

    def _note_server(self):
        for name in ("forkserver.pid", "cli.pid"):
            try:
                with open(os.path.join(self.rt.run_dir, name)) as f:
                    pid = int(f.read())
            except (OSError, ValueError, AttributeError):
                continue
            self.server_pids.add(pid)
            self.seen_pids.add(pid)

    def _serving_our_root(self) -> set[int]:
        """Processes named terrarium* whose command line holds our temp dir:
        servers, shims and CLI workers of this bench's root."""
        out = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.tmp.encode() in f.read():
                        out.add(int(pid))
            except OSError:
                pass
        return out

    def _stop_servers(self, report):
        """The fork and CLI servers of our root: rt.shutdown_servers(), then, for
        any pid we noted that still serves our run dir, SIGTERM and wait."""
        self._note_server()
        try:
            self.rt.shutdown_servers()
        except Exception as e:  # noqa: BLE001
            report["problems"].append(f"stopping the servers: {e}")
        for pid in self.server_pids:
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if self.rt.run_dir.encode() not in f.read():
                            break               # a recycled pid: not ours
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    break
                time.sleep(0.05)

    # ----------------------------------------------------------------- rounds
    def _once(self, name, fn):
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001 - one contender failing must not stop the rest
            r = {"ms": None, "rc": None, "stderr": f"{type(e).__name__}: {e}"}
        if r.get("rc") != 0:
            self.errors.setdefault(name, []).append(r.get("stderr", "").strip()[-300:] or f"rc {r.get('rc')}")
            return None
        return r

    def latency(self):
        fns = {k: v for k, v in self.contenders().items() if k not in self.disabled
               and (not self.args.only or k in self.args.only.split(","))}
        samples: dict[str, list[dict]] = {k: [] for k in fns}
        # warm-up: the first API call starts the fork server; page caches, bundles
        for _ in range(self.args.warmup):
            for name, fn in fns.items():
                if name in self.disabled:
                    continue
                if self._once(name, fn) is None and name not in ("api-split",):
                    self.disabled[name] = "failed in warm-up: " + self.errors[name][-1]
        self._note_server()
        names = [k for k in fns if k not in self.disabled]
        self.errors.clear()
        t_start = time.monotonic()
        for i in range(self.args.n):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                r = self._once(name, fns[name])
                if r is not None:
                    samples[name].append(r)
        self.latency_seconds = time.monotonic() - t_start
        return {k: v for k, v in samples.items() if k in names}

    def burst(self):
        """Each of api, crun and runc N times back to back, after the rounds.

        Interleaving spreads noise over every row, but it also makes every
        run follow a different program (another runtime's cgroup and netns
        teardown still in the kernel's work queues, caches of something
        else).  Back to back is each runtime in its own steady state; the
        report shows both, so neither condition flatters one side."""
        out = {}
        for name in ("api", "crun", "runc"):
            if name in self.disabled:
                continue
            fn = self.contenders()[name]
            self._once(name, fn)                       # settle after the previous one
            ms = []
            for _ in range(self.args.n):
                r = self._once(name, fn)
                if r is not None:
                    ms.append(r["ms"])
            out[name] = summary(ms)
        return out

    # ------------------------------------------------------------ importtime
    def importtime(self):
        """One `python -X importtime terrarium run --rm ...`: which imports a real CLI run pays
        (the client's: the worker's are loaded in the CLI server already)."""
        if not self.terrarium:
            return {}
        p = subprocess.run([self.cli_python, "-X", "importtime", self.terrarium, "run", "--rm",
                            "busybox", "/bin/true"], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True)
        top, total, runtime_total = [], 0, 0
        for line in p.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            parts = line[len("import time:"):].split("|")
            cum, name = int(parts[1]), parts[2]
            depth = (len(name) - len(name.lstrip())) // 2
            name = name.strip()
            if depth == 0:                    # a top-level import: cumulative covers its subtree
                total += cum
                top.append((cum / 1e3, name))
                if name == "runtime" or name.startswith("runtime."):
                    runtime_total += cum
        top.sort(reverse=True)
        return {"total_ms": total / 1e3, "runtime_pkg_ms": runtime_total / 1e3,
                "top": [{"module": n, "ms": ms} for ms, n in top[:8]], "rc": p.returncode}

    # ----------------------------------------------------------------- memory
    def memory(self):
        k = self.args.k
        rt = self.rt
        started = []
        t0 = now()
        try:
            for _ in range(k):
                c = rt.run(self.Spec(image="busybox", cmd=("sleep", "600")))
                started.append(c)
                self.seen_pids.add(c.shim_pid or 0)
            start_s = now() - t0
            time.sleep(0.5)                   # let each shim settle into its waitpid
            with open(os.path.join(rt.run_dir, "forkserver.pid")) as f:
                server_pid = int(f.read())
            self._note_server()
            server = memory_kb(server_pid)
            shims, inits, extras = [], [], []
            for c in started:
                shims.append(memory_kb(c.shim_pid))
                inits.append(memory_kb(c.pid))
                for pid in children(c.shim_pid):
                    if pid != c.pid:         # anything besides init that lives per container
                        extras.append({"pid": pid, "comm": comm(pid), **memory_kb(pid)})
            where = private_by_mapping(started[0].shim_pid)
            shim_uss = statistics.median(s["uss"] for s in shims)
            extra_uss = sum(e["uss"] for e in extras) / k
            per_container = shim_uss + extra_uss + server["uss"] / k
            t1 = now()
        finally:
            for c in started:
                try:
                    rt.remove(c.id, force=True)
                except Exception as e:  # noqa: BLE001
                    self.errors.setdefault("memory-cleanup", []).append(str(e))
        return {
            "k": k, "start_k_seconds": start_s, "remove_k_seconds": now() - t1,
            "server_pid": server_pid, "server_kb": server,
            "shim_uss_kb": {"median": shim_uss, "min": min(s["uss"] for s in shims),
                            "max": max(s["uss"] for s in shims)},
            "shim_rss_kb_median": statistics.median(s["rss"] for s in shims),
            "shim_pss_kb_median": statistics.median(s["pss"] for s in shims),
            "init_uss_kb_median": statistics.median(s["uss"] for s in inits),
            "extra_processes": extras, "shim_private_by_mapping": where,
            "per_container_kb": per_container,
        }

    # ---------------------------------------------------------------- cleanup
    def cleanup(self) -> dict:
        report = {"problems": []}
        rt = self.rt
        if rt is not None:
            try:
                for c in rt.list():
                    rt.remove(c.id, force=True)
                rt.networks.remove_all()            # the bridge and nftables table of api-bridge
            except Exception as e:  # noqa: BLE001
                report["problems"].append(f"removing containers: {e}")
            self._stop_servers(report)
            try:
                rt.cgroups.remove_parent()
            except Exception as e:  # noqa: BLE001
                report["problems"].append(f"removing the cgroup parent: {e}")
        # runc/crun delete their containers when `run` returns; sweep anyway
        for name, exe in self._oci_runtimes():
            state = os.path.join(self.tmp, name, "state")
            if not exe or not os.path.isdir(state):
                continue
            runner = self.timer.run if (name.startswith("crun") and self.timer) else run_timed
            try:
                listed = runner([exe, "--root", state, "list", "-q"], capture=True)
                for cid in listed.get("stdout", "").split():
                    runner([exe, "--root", state, "delete", "-f", cid])
                    report["problems"].append(f"{name} left container {cid} (deleted)")
            except Exception as e:  # noqa: BLE001
                report["problems"].append(f"sweeping {name}: {e}")
        if self.timer:
            self.timer.close()
        if getattr(self, "cni_bridge", None):
            self._remove_cni(report)
        for parent in (self.cg_parent, self.oci_parent):
            left = remove_cgroup_tree(parent)
            if left:
                report["problems"].append(f"cgroups still present: {left}")
        if getattr(self, "rootfs_before", None):
            report["rootfs_unchanged"] = tree_fingerprint(self.rootfs) == self.rootfs_before
        live = [p for p in self.seen_pids | self._serving_our_root()
                if alive(p) and comm(p).startswith("terrarium")]
        if live:
            report["problems"].append(f"processes still alive: {live}")
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.tmp in line]
        if mounts:
            report["problems"].append(f"mounts under the temp dir: {mounts}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if os.path.exists(self.tmp):
            report["problems"].append(f"temp dir left: {self.tmp}")
        leftover = cgroup_dirs(self.cg_parent) + cgroup_dirs(self.oci_parent)
        if leftover:
            report["problems"].append(f"cgroup dirs left: {leftover}")
        report["ok"] = not report["problems"]
        return report


    def _remove_cni(self, report) -> None:
        """The test bridge, once every host end of ours is gone (each went with
        its container's namespace; the kernel tears a namespace down a little
        after its last process exits)."""
        def ours():
            out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
            return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                    if line.split(":")[1].strip().startswith(self.cni_prefix)]
        deadline = time.monotonic() + 10
        while (left := ours()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in left:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            report["problems"].append(f"runc-cni left veth {name} (deleted)")
        r = subprocess.run(["ip", "link", "del", self.cni_bridge], capture_output=True, text=True)
        if r.returncode != 0:
            report["problems"].append(f"removing bridge {self.cni_bridge}: {r.stderr.strip()}")


def _oci_seccomp() -> dict:
    """runtime/seccomp_default.json in the OCI runtime spec's form (the same
    rules; OCI lists architectures where Docker maps them), for crun."""
    from runtime import seccomp
    with open(seccomp.DEFAULT_PROFILE) as f:
        profile = json.load(f)
    arches = next(([m["architecture"], *m["subArchitectures"]] for m in profile["archMap"]
                   if m["architecture"] == "SCMP_ARCH_X86_64"), [])
    return {"defaultAction": profile["defaultAction"], "defaultErrnoRet": profile["defaultErrnoRet"],
            "architectures": arches, "syscalls": profile["syscalls"]}


def _precompile(package_dir: str) -> int:
    """Write the runtime's .pyc files if they are missing or stale.

    A fresh `terrarium` process reads them instead of compiling its modules
    from source every time; with PYTHONDONTWRITEBYTECODE set (as in some CI
    shells) Python never writes them itself, and the CLI path would be
    measured with a compile of every module it imports.  py_compile writes
    them regardless of that setting; __pycache__ is git-ignored."""
    import compileall
    import io
    import contextlib
    before = _pyc_count(package_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        compileall.compile_dir(package_dir, quiet=2)
    return _pyc_count(package_dir) - before


def _pyc_count(package_dir: str) -> int:
    return sum(1 for d, _, files in os.walk(package_dir) if d.endswith("__pycache__")
               for f in files if f.endswith(".pyc"))


# -------------------------------------------------------------------- report

def _f(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def build_results(b: Bench, samples: dict) -> dict:
    res = {}
    for name, rs in samples.items():
        ms = [r["ms"] for r in rs]
        if name == "ping":
            ms = [m for r in rs for m in [r["ms"], *r.get("more", [])]]
        res[name] = {"label": LABELS[name], "summary": summary(ms), "samples_ms": ms}
        if name == "api":
            rem = [r["remove_ms"] for r in rs]
            res[name]["remove"] = {"summary": summary(rem), "samples_ms": rem}
        if name == "api-split":
            for part in ("create", "start", "wait"):
                res[name][part] = summary([r[f"{part}_ms"] for r in rs])
    for name in res:
        med = res[name]["summary"].get("median")
        for peer in ("crun", "runc"):
            pm = res.get(peer, {}).get("summary", {}).get("median")
            res[name][f"ratio_to_{peer}"] = med / pm if med and pm else None
    return res


def print_report(b: Bench, res: dict, imp: dict, mem: dict | None, machine: dict):
    print(f"\nTerrarium start latency — /bin/true in busybox; n={b.args.n} per row, "
          f"interleaved, {b.args.warmup} warm-up round(s) excluded")
    print(f"kernel {machine['kernel']}, {machine['cpus']} CPUs, load {' '.join(machine['loadavg_at_start'])}"
          f" → {' '.join(machine.get('loadavg_at_end', []))}; {machine['runc']}; {machine['crun']}")
    if b.precompiled or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(f"(wrote {b.precompiled} missing .pyc files of runtime/ first; "
              f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)")
    print(f"\n{'path':34} {'median':>8} {'p90':>8} {'÷crun':>7} {'÷runc':>7}   (ms)")
    for name in MAIN_ROWS:
        if name not in res:
            if not b.args.only:
                print(f"{LABELS[name]:34} {'skipped':>8}   {b.disabled.get(name, '')}")
            continue
        r, s = res[name], res[name]["summary"]
        print(f"{LABELS[name]:34} {_f(s['median']):>8} {_f(s['p90']):>8} "
              f"{_f(r['ratio_to_crun'], 2):>7} {_f(r['ratio_to_runc'], 2):>7}")
    if "api" in res:
        s = res["api"]["remove"]["summary"]
        print(f"{'    rt.remove after (a), untimed':34} {_f(s['median']):>8} {_f(s['p90']):>8}")
    med = {k: res[k]["summary"]["median"] for k in ("api", "api-unconfined", "crun", "crun-seccomp")
           if k in res and res[k]["summary"].get("median")}
    if "api" in res and "api-bridge" in res:
        print(f"\nNetwork: API --network bridge ÷ none = "
              f"{_f(res['api-bridge']['summary']['median'] / res['api']['summary']['median'], 2)}")
    if "runc" in res and "runc-cni" in res:
        rb = res["runc-cni"]["summary"]["median"]
        print(f"Network: runc + CNI-style veth ÷ runc = {_f(rb / res['runc']['summary']['median'], 2)}"
              + (f"; API --network bridge ÷ runc + CNI-style veth = "
                 f"{_f(res['api-bridge']['summary']['median'] / rb, 2)}" if "api-bridge" in res else ""))
    if "api" in med and "api-unconfined" in med:
        print(f"\nSeccomp: API default ÷ unconfined = {_f(med['api'] / med['api-unconfined'], 2)}"
              + (f"; crun with ÷ without = {_f(med['crun-seccomp'] / med['crun'], 2)}"
                 if "crun" in med and "crun-seccomp" in med else "")
              + (f"; API default ÷ crun with the same profile = {_f(med['api'] / med['crun-seccomp'], 2)}"
                 if "crun-seccomp" in med else ""))

    print("\nWhere the API path's time goes (medians, ms)")
    if "api-split" in res:
        sp = res["api-split"]
        print(f"  create {_f(sp['create']['median'])} + start {_f(sp['start']['median'])}"
              f" + wait {_f(sp['wait']['median'])} = {_f(sp['summary']['median'])} (split run)")
    if "ping" in res:
        print(f"  fork-server round trip (ping): {_f(res['ping']['summary']['median'], 2)}")
    if "seccomp-load" in res:
        print(f"  init's seccomp filter, read + prctl: {_f(res['seccomp-load']['summary']['median'], 2)}")
    for name in ("unshare", "bare-py"):
        if name in res:
            print(f"  floor, {LABELS[name][4:].strip()}: {_f(res[name]['summary']['median'])}")

    print("\nWhere the CLI path's time goes (medians, ms)")
    m = {k: res[k]["summary"]["median"]
         for k in ("py-IS", "py-venv", "py-import-client", "cli-remote", "cli-rm", "cli-local", "api")
         if k in res}
    if "py-IS" in m:
        print(f"  python -I -S -c pass                 {_f(m['py-IS']):>7}")
    if "py-venv" in m:
        print(f"  venv python -c pass (site, .pth)     {_f(m['py-venv']):>7}"
              + (f"   (+{_f(m['py-venv'] - m['py-IS'])} for site)" if "py-IS" in m else ""))
    if "py-import-client" in m and "py-venv" in m:
        print(f"  + import runtime.client              {_f(m['py-import-client'] - m['py-venv']):>7}")
    if "cli-remote" in m:
        print(f"  client's remote half, in-process     {_f(m['cli-remote']):>7}"
              f"   (connect, hand over, the worker's run --rm, exit code"
              + (f"; the API path alone: {_f(m['api'])})" if "api" in m else ")"))
    if "cli-rm" in m:
        print(f"  a whole `run --rm` command           {_f(m['cli-rm']):>7}"
              + (f"   (without the server: {_f(m['cli-local'])})" if "cli-local" in m else ""))
    if imp:
        print(f"  -X importtime of one `run --rm`: {_f(imp['total_ms'])} ms of imports"
              f" ({_f(imp['runtime_pkg_ms'])} under runtime.*); biggest: "
              + ", ".join(f"{t['module']} {_f(t['ms'])}" for t in imp["top"][:5]))

    if mem:
        print(f"\nIdle memory, {mem['k']} detached `sleep 600` containers (kB)")
        print(f"  shim USS median {mem['shim_uss_kb']['median']:.0f} "
              f"(min {mem['shim_uss_kb']['min']}, max {mem['shim_uss_kb']['max']}; "
              f"RSS {mem['shim_rss_kb_median']:.0f}, PSS {mem['shim_pss_kb_median']:.0f})")
        print(f"  fork server USS {mem['server_kb']['uss']} (RSS {mem['server_kb']['rss']}), "
              f"once per root → {mem['server_kb']['uss'] / mem['k']:.0f} per container at K={mem['k']}")
        print("  one shim's private memory by mapping: "
              + ", ".join(f"{w['mapping'].rsplit('/', 1)[-1]} {w['kb']}" for w in mem["shim_private_by_mapping"]))
        if mem["extra_processes"]:
            print(f"  other per-container processes: {len(mem['extra_processes'])}")
        print(f"  per-container cost: {mem['per_container_kb']:.0f} kB = "
              f"{mem['per_container_kb'] / 1024:.2f} MB (target ≈1.5 MB); "
              f"the container's own `sleep` adds {mem['init_uss_kb_median']:.0f} kB USS")
        print(f"  started {mem['k']} in {mem['start_k_seconds']:.2f} s, "
              f"force-removed in {mem['remove_k_seconds']:.2f} s")

    print("\nTargets")
    api_c = res.get("api", {}).get("ratio_to_crun")
    cli_r = res.get("cli-rm", {}).get("ratio_to_runc")
    print(f"  API ÷ crun  = {_f(api_c, 2)}  (target ≤ 1.0): "
          + ("met" if api_c is not None and api_c <= 1.0 else "NOT met"))
    print(f"  CLI ÷ runc  = {_f(cli_r, 2)}  (target ≤ 1.0, --rm run): "
          + ("met" if cli_r is not None and cli_r <= 1.0 else "NOT met"))
    if mem:
        print(f"  memory      = {mem['per_container_kb'] / 1024:.2f} MB per container (target ≈ 1.5 MB): "
              + ("met" if mem["per_container_kb"] <= 1.5 * 1024 * 1.1 else "NOT met"))


def print_bursts(bursts: dict) -> None:
    if not bursts:
        return
    crun = bursts.get("crun", {}).get("median")
    runc = bursts.get("runc", {}).get("median")
    print("\nBack to back (each N times in a row, after the rounds above)")
    print(f"{'path':34} {'median':>8} {'p90':>8} {'÷crun':>7} {'÷runc':>7}   (ms)")
    for name in ("api", "crun", "runc"):
        s = bursts.get(name)
        if not s or s.get("median") is None:
            continue
        print(f"{LABELS[name]:34} {_f(s['median']):>8} {_f(s['p90']):>8} "
              f"{_f(s['median'] / crun if crun else None, 2):>7} {_f(s['median'] / runc if runc else None, 2):>7}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="measured iterations per contender (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up rounds, not counted (default 2)")
    ap.add_argument("--k", type=int, default=20, help="idle containers for the memory figure (default 20)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "start_latency.json"))
    ap.add_argument("--only", help="comma-separated contenders (e.g. api,api-bridge): those rounds only, "
                                   "without the back-to-back, import and memory parts")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("start_latency: run as root (containers need it)", file=sys.stderr)
        return 2
    if args.n < 1 or args.k < 1 or args.warmup < 1:
        print("start_latency: --n, --k and --warmup must be at least 1", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    b = Bench(args)
    t0 = time.monotonic()
    machine = machine_info(b.runc, b.crun)
    res, imp, mem, cleanup, bursts = {}, {}, None, None, {}
    finished = False
    try:
        b.setup()
        print(f"start_latency: {args.n} rounds of {len(b.contenders()) - len(b.disabled)} contenders "
              f"(+{args.warmup} warm-up), then {args.k} idle containers ...", flush=True)
        samples = b.latency()
        if not args.only:
            bursts = b.burst()
            imp = b.importtime()
            mem = b.memory()
        res = build_results(b, samples)
        finished = True
    finally:
        cleanup = b.cleanup()
        if not finished:
            print(f"start_latency: interrupted; cleanup: "
                  f"{'ok' if cleanup['ok'] else '; '.join(cleanup['problems'])}", file=sys.stderr)
    with open("/proc/loadavg") as f:
        machine["loadavg_at_end"] = f.read().split()[:3]
    print_report(b, res, imp, mem, machine)
    print_bursts(bursts)
    for name, why in b.disabled.items():
        print(f"  skipped {name}: {why}")
    for name, errs in b.errors.items():
        print(f"  {name}: {len(errs)} failed run(s), e.g. {errs[0]}")
    seconds = time.monotonic() - t0
    print(f"\ncleanup: {'ok' if cleanup['ok'] else 'PROBLEMS: ' + '; '.join(cleanup['problems'])}"
          f"{'' if cleanup.get('rootfs_unchanged', True) else '; the rootfs CHANGED under runc/crun'}"
          f"; whole run {seconds:.0f} s")
    out = {"machine": machine, "config": vars(args), "seconds": seconds,
           "pyc_written": getattr(b, "precompiled", None),
           "env_PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
           "latency_seconds": getattr(b, "latency_seconds", None),
           "results": res, "back_to_back": bursts, "importtime": imp, "memory": mem, "cleanup": cleanup,
           "disabled": b.disabled, "errors": b.errors,
           "targets": {"api_over_crun": res.get("api", {}).get("ratio_to_crun"),
                       "cli_rm_over_runc": res.get("cli-rm", {}).get("ratio_to_runc"),
                       "per_container_mb": mem and mem["per_container_kb"] / 1024}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {os.path.relpath(args.out)}")
    return 0 if cleanup["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
