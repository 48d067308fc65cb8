"""Container lifecycle: create, start, stop, kill, restart, pause, resume,
update, remove, list, inspect, logs, wait, exec.

State lives on disk under ROOT/containers/<id>/ (runtime/state.py):
    config.json   what was asked for (written here, under the container's lock)
    run.json      the current run: init pid, shim pid, generation (written by the shim)
    exit.json     how the run ended (written by the shim when init exits)
    upper/ work/  the container's own overlay layer and overlayfs's work dir
    rootfs/       where the overlay is mounted — inside the container's mount
                  namespace only, so the host's mount table never holds it
    container.log stdout and stderr as records, written by the shim, rotated
                  to container.log.1, .2, ... (runtime/logs.py)
ROOT/names/<name> is a symlink to the id: creating it is how a name is taken.
A config.json that cannot be read makes the container "broken" (listed,
its layers kept, removable), never absent.

The status is derived, never stored: no run.json → created; an exit.json of
the current generation → exited; a live shim → running (or paused).  So a
crash anywhere leaves a state that reads true, and a server restart loses
nothing.  Every verb that changes a container holds its flock, so concurrent
calls on one container are serialised; creating and removing also hold the
names lock.
"""
from __future__ import annotations

import errno
import os
import re
import select
import signal
import threading
import time

from . import daemons, pidinfo, seccomp
from .forkserver import forkserver_call, stop_forkserver
from . import state as disk      # (`state` is each verb's Container below)
from .errors import Conflict, ExecFailed, Forbidden, InvalidArgument, KernelError, NotFound, TerrariumError
from .fsutil import locked, private_dir
from .model import Container, Limits, LogConfig, Mount, Spec
from .spec import check_limits, check_spec, make_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager as ContextManager
    from typing import IO, Any, BinaryIO, TypeVar
    from .cgroups.base import CgroupDriver
    from .cgroups.tree import Hierarchy
    from .discovery.registry import Discovery
    from .execute import HandOff
    from .lifecycle import RunEnded
    from .images.store import ImageStore
    from .logs import Record
    from .model import Healthcheck, HealthcheckDict, Image
    from .network import Networks
    from .oom import OomCounts
    from .overlay import Changes, Origin, UpperSize
    from .procs import NamespaceInfo, ProcessNode
    from .state import ContainerConfig
    from .stats import StatsReader
    from .terminal import Terminal
    from .volumes import Volumes

    _T = TypeVar("_T")
    # Runtime.list's cache: (inode, mtime, size) of config.json, run.json, exit.json; the Container;
    # for a running one, (init's pid, its start time in clock ticks), else None
    _Cached = tuple[tuple[tuple[int, int, int] | None, ...], Container, tuple[int, int] | None]

DEFAULT_ROOT = "/var/lib/terrarium"
DEFAULT_STOP_TIMEOUT = 10.0
_ID_RE = disk.ID_RE


def _log_config(config: ContainerConfig) -> LogConfig:
    """The container's log settings (containers made before they existed: the defaults)."""
    return LogConfig(**config.get("log", {}))


def default_root() -> str:
    return os.environ.get("TERRARIUM_ROOT") or DEFAULT_ROOT


class Runtime:
    """The runtime over one state root.  Cheap to make; holds no process."""

    def __init__(self, root: str | None = None, cgroup_parent: str | None = None):
        self.root = os.path.abspath(root or default_root())
        self.cgroup_parent = cgroup_parent or daemons.default_cgroup_parent()
        self.containers_dir = os.path.join(self.root, "containers")
        self.names_dir = os.path.join(self.root, "names")
        self.run_dir = os.path.join(self.root, "run")
        # Private to root, also when made earlier with looser modes: layers keep
        # their setuid files and capabilities, which a local user must never
        # reach from the host (README "Files").  The root's 0700 alone shuts
        # everyone out; its subdirectories are 0700 as well, in case it moves.
        try:
            private_dir(self.root)
            for d in ("containers", "names", "run", "layers", "images", "tmp"):
                private_dir(os.path.join(self.root, d))
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"make the state root {self.root} private (0700)") from None
        self._images: ImageStore | None = None
        self._cgroups: CgroupDriver | None = None
        self._networks: Networks | None = None
        self._volumes: Volumes | None = None

    # ------------------------------------------------------------ helpers
    @property
    def images(self) -> ImageStore:
        if self._images is None:
            from .images import ImageStore
            self._images = ImageStore(self.root)
        return self._images

    @property
    def networks(self) -> Networks:
        """runtime.network.Networks of this root (pyroute2 is loaded on first use)."""
        if self._networks is None:
            from .network import Networks
            self._networks = Networks(self.root, self.containers_dir)
        return self._networks

    @property
    def volumes(self) -> Volumes:
        """runtime.volumes.Volumes of this root: create, list, inspect, remove."""
        if self._volumes is None:
            from .volumes import Volumes
            self._volumes = Volumes(self.root, self.containers_dir)
        return self._volumes

    @property
    def cgroups(self) -> CgroupDriver:
        if self._cgroups is None:
            from . import cgroups
            self._cgroups = cgroups.driver(parent=self.cgroup_parent)
        return self._cgroups

    def stats_reader(self, **kw: Any) -> StatsReader:
        """A kept-open sampler of this runtime's containers (runtime.stats.StatsReader:
        read, read_many, forget, close); one per sampling thread.  Through the
        agent, AgentRuntime.stats_reader() answers the same calls."""
        from .stats import StatsReader
        return StatsReader(self.cgroups, resolve=self._sampled_cgroup, **kw)

    def _sampled_cgroup(self, name: str) -> tuple[CgroupDriver, str]:
        """(driver, cgroup name) of a container to sample: ours by id, another
        owner's by its discovery key (its cgroup as /proc/<pid>/cgroup says:
        Found.cgroups, read when it was found, or the file now)."""
        if disk.ID_RE.match(name):
            return self.cgroups, name
        found = self.discovery().cached(name)

        def missing() -> NotFound:
            return NotFound(f"{found.engine} container {found.name!r} has no cgroup to sample ({found.state})")
        paths: Mapping[str, str] = found.cgroups if found.pid else {}
        if found.pid and not paths:                 # a source that did not read them
            try:
                with open(f"/proc/{found.pid}/cgroup") as f:
                    paths = pidinfo.parse_cgroup(f.read())
            except OSError:
                raise missing() from None
        if self.cgroups.kind == "v2":
            parent, _, leaf = paths.get("", "").strip("/").rpartition("/")
            if not parent or not leaf:
                raise missing()
            return self._cg({"cgroup_parent": parent}), leaf
        # v1: an engine's relative cgroup parent lands under the engine's own
        # cgroup of each hierarchy, which need not be the same one in all:
        # each hierarchy's root is moved to the parent's parent there.
        from .cgroups.v1 import V1Driver
        v1 = self.cgroups
        if not isinstance(v1, V1Driver):
            raise missing()
        ref = [p for p in paths.get("memory", paths.get("pids", "")).strip("/").split("/") if p]
        if len(ref) < 2:
            raise missing()
        parent, leaf = ref[-2], ref[-1]
        mounts: dict[str, str] = {}
        for c, mount in v1.mounts.items():
            parts = [p for p in paths.get(c, "").strip("/").split("/") if p]
            if parts[-2:] == [parent, leaf]:
                mounts[c] = os.path.join(mount, *parts[:-2])
        # one driver for all of an engine's containers (they share their parent)
        drivers: dict[tuple[str, tuple[tuple[str, str], ...]], CgroupDriver] = \
            self.__dict__.setdefault("_engine_cgroups", {})
        key = (parent, tuple(sorted(mounts.items())))
        driver = drivers.get(key)
        if driver is None:
            driver = drivers[key] = V1Driver(mounts, parent)
        return driver, leaf

    def _cg(self, config: Mapping[str, Any]) -> CgroupDriver:
        """The cgroup driver of the parent the container was made under (stored
        in its config), whatever this Runtime's own parent is."""
        parent = config.get("cgroup_parent") or self.cgroup_parent
        if parent == self.cgroup_parent:
            return self.cgroups
        drivers: dict[str, CgroupDriver] = self.__dict__.setdefault("_other_cgroups", {})
        if parent not in drivers:
            from . import cgroups
            drivers[parent] = cgroups.driver(parent=parent)
        return drivers[parent]

    def cgroup_driver(self, c: Container) -> CgroupDriver:
        """The cgroup driver for container c (c.cgroup is "<parent>/<id>")."""
        return self._cg({"cgroup_parent": (c.cgroup or "").rpartition("/")[0]})

    def _image(self, name: str) -> Image:
        try:
            return self.images.get(name)
        except NotFound:
            self.images.ensure_builtin()     # busybox and lab are built on first use
            return self.images.get(name)

    def _dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def resolve(self, ref: str) -> str:
        """A name, a full id or a unique id prefix → the id."""
        if not isinstance(ref, str) or not ref or "/" in ref or "\0" in ref or ref.startswith("."):
            raise NotFound(f"container {ref!r} not found")
        try:
            return os.readlink(os.path.join(self.names_dir, ref))
        except OSError:
            pass
        if _ID_RE.match(ref) and disk.has_config(self._dir(ref)):
            return ref
        if len(ref) >= 3 and re.fullmatch(r"[0-9a-f]+", ref):
            hits = [d for d in os.listdir(self.containers_dir) if d.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InvalidArgument(f"container id prefix {ref!r} is ambiguous: {len(hits)} match")
        raise NotFound(f"container {ref!r} not found")

    def _config(self, cid: str) -> ContainerConfig:
        """The container's config; NotFound if gone, Conflict if it is broken."""
        try:
            config = disk.read_config(self._dir(cid))
        except disk.Unreadable as e:
            raise Conflict(f"container {cid[:12]!r} is broken ({e}): remove it with rm -f") from None
        if config is None:
            raise NotFound(f"container {cid[:12]!r} not found")
        return config

    def _lock(self, cid: str) -> ContextManager[bool]:
        """The container's lock.  Its file is made with the container
        (state.register) and made here only while config.json is there (a
        container made before register made it): opened with O_CREAT while a
        removal's rmtree runs, it would be made again in the directory being
        emptied, which is then left behind."""
        cdir = self._dir(cid)
        return locked(os.path.join(cdir, disk.LOCK), create=os.path.exists(os.path.join(cdir, disk.CONFIG)))

    def _locked_config(self, ref: str) -> _LockedConfig:
        """Resolve ref, take its lock; yields (id, config).  Re-checks after the wait:
        the container may have been removed while we queued for it.  A broken
        container is a Conflict."""
        return _LockedConfig(self, self.resolve(ref), ref)

    def _locked_config_or_broken(self, ref: str) -> _LockedConfigOrBroken:
        """_locked_config, but a broken container yields config None."""
        return _LockedConfigOrBroken(self, self.resolve(ref), ref)

    # ------------------------------------------------------------- create
    def create(self, spec: Spec, allow_host_network: bool = False, allow_bind_mounts: bool = False) -> Container:
        """allow_host_network: `--network host` shares the host's whole network
        stack (its interfaces, ports, abstract sockets), so it is refused
        unless the caller says it may (the dashboard: administrators only).
        allow_bind_mounts: the same for bind mounts of host paths (and even
        then never of the paths runtime.mounts.protected_paths names)."""
        if not isinstance(spec, Spec):
            raise InvalidArgument("create() takes a runtime.Spec")
        spec = check_spec(spec)                # a Spec made by hand meets make_spec's checks
        network = self._check_network(spec.network, allow_host_network)
        mounts = self._bind_sources(spec.mounts, allow_bind_mounts)
        image = self._image(spec.image)
        cid = os.urandom(32).hex()
        name = spec.name or _random_name(cid)
        cmd = tuple(spec.cmd) or tuple(image.config.cmd)
        if not cmd:
            raise InvalidArgument(f"no command given and image {spec.image!r} has none")
        hostname = spec.hostname or name     # sethostname takes any name up to 64 bytes
        env = _merge_env(image.config.env, spec.env, hostname)
        config: ContainerConfig = {
            "id": cid, "name": name, "image": image.name or image.id[7:19],
            "cmd": list(cmd), "env": list(env),
            "hostname": hostname, "workdir": spec.workdir or image.config.workdir or "/",
            "limits": spec.limits._asdict(), "created_at": time.time(),
            "layers": [layer.digest.split(":", 1)[-1] for layer in image.layers],
            "auto_remove": spec.auto_remove, "generation": 0, "paused": False,
            "seccomp": seccomp.check_setting(spec.seccomp, full=False),
            "cgroup_parent": self.cgroup_parent,       # inspect and every cgroup op use this one
            "log": LogConfig(*spec.log)._asdict(),
            "network": network, "ports": list(spec.ports),
        }
        _add_lifecycle(config, spec, image.config.healthcheck)
        if mounts or spec.read_only:
            config["mounts"] = [m._asdict() for m in mounts]
            config["read_only"] = spec.read_only
        if not any(m.type == "volume" for m in mounts):
            self._register(cid, name, config)
            return self.inspect(cid)
        # volumes are made (Docker: on first use) and named by the config under
        # one lock, so a `volume rm` never removes one between the two
        with self.volumes.lock():
            made: builtins.list[str] = []
            try:
                for i, m in enumerate(mounts):
                    if m.type == "volume":
                        if not (m.source and self.volumes.exists(m.source)):
                            made.append(self.volumes.create_locked(m.source or None))
                        config["mounts"][i]["source"] = m.source or made[-1]
                self._register(cid, name, config)
            except BaseException:
                for vol in made:                     # a create refused makes nothing
                    self.volumes.delete_locked(vol)
                raise
        return self.inspect(cid)

    def _register(self, cid: str, name: str, config: ContainerConfig) -> None:
        with locked(os.path.join(self.containers_dir, disk.NAMES_LOCK)):
            if os.path.lexists(os.path.join(self.names_dir, name)):
                raise Conflict(f"container name {name!r} is already in use")
            disk.register(self.containers_dir, self.names_dir, cid, config,
                           subdirs=("upper", "work", "rootfs"))
            open(os.path.join(self._dir(cid), "container.log"), "ab").close()

    def _bind_sources(self, mounts: Iterable[Mount], allowed: bool) -> tuple[Mount, ...]:
        """The spec's mounts with each bind source checked and resolved on the host."""
        from .mounts import check_bind_source
        out: builtins.list[Mount] = []
        for m in mounts:
            if m.type == "bind":
                if not allowed:
                    raise Forbidden(f"bind mount of {m.source} refused: a host path in a container "
                                    "must be allowed explicitly (allow_bind_mounts; the dashboard: "
                                    "administrators only)")
                m = m._replace(source=check_bind_source(m.source, self.root))
            out.append(m)
        return tuple(out)

    def _check_network(self, network: str, allow_host: bool) -> str:
        """The network as config.json keeps it (container:NAME -> container:<id>)."""
        if network == "none":
            return network
        if network == "host":
            if not allow_host:
                raise Forbidden("--network host shares the host's network stack with the container: "
                                "it must be allowed explicitly (allow_host_network)")
            return network
        if network.startswith("container:"):
            return "container:" + self.resolve(network[len("container:"):])
        if network != "bridge":
            self.networks.inspect(network)           # NotFound now rather than at start
        return network

    def run(self, spec: Spec, allow_host_network: bool = False, allow_bind_mounts: bool = False) -> Container:
        """create + start; a failed start leaves the created container (like Docker)
        unless it was asked to remove itself."""
        c = self.create(spec, allow_host_network=allow_host_network, allow_bind_mounts=allow_bind_mounts)
        try:
            return self.start(c.id)
        except ExecFailed:
            if spec.auto_remove:
                self.remove(c.id, force=True)
            raise

    # -------------------------------------------------------------- start
    def start(self, ref: str) -> Container:
        return self._start(ref)

    def _start(self, ref: str, after: RunEnded | None = None) -> Container:
        """after: the ended run a restart policy starts the container again after
        (runtime/lifecycle.py); then only if nothing happened since (else it
        returns the container as it is)."""
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if after is not None:
                from .lifecycle import still_due
                if not still_due(config, state.status, after):
                    return state
            elif state.status in ("running", "paused"):
                return state
            self._settle(cid)
            if after is not None or config.get("restart", "no") != "no":
                from .lifecycle import cancel_pending, note_start
                note_start(config, after)
                if after is None:
                    cancel_pending(self._dir(cid))      # a person's start: the policy's wait ends
                else:
                    _unlink(os.path.join(self._dir(cid), "restart.json"))
            net, on_init = self._network_for_start(cid, config)
            config["generation"] += 1
            config["paused"] = False
            sync = disk.DeferredSync(self._dir(cid), config)
            try:
                reply = self._request_start(cid, config, while_waiting=sync, net=net, on_init=on_init)
            finally:
                sync()
        if not reply.get("ok"):
            raise ExecFailed(f"container {config['name']!r} failed to start: {reply.get('error')}",
                             reply.get("exit_code", 125))
        return self.inspect(cid)

    def _network_for_start(self, cid: str, config: ContainerConfig
                           ) -> tuple[dict[str, Any] | None, Callable[[int], object] | None]:
        """What init needs to know of its network (the start request's "net"),
        and for a bridged container the callback that connects its namespace
        once the shim has init waiting (forkserver_call's on_init)."""
        mode = config.get("network") or "none"
        cdir = self._dir(cid)
        if mode == "none":
            return None, None
        if mode == "host":
            for src, name in (("/etc/hosts", "hosts"), ("/etc/resolv.conf", "resolv.conf")):
                from .network import _rewrite
                try:
                    with open(src) as f:
                        _rewrite(os.path.join(cdir, name), f.read())
                except OSError:
                    _rewrite(os.path.join(cdir, name), "")
            return {"host": True, "hosts": f"{cdir}/hosts", "resolv": f"{cdir}/resolv.conf"}, None
        if mode.startswith("container:"):
            other = mode[len("container:"):]
            try:
                target = self._config(other)
            except NotFound:
                raise Conflict(f"container {config['name']!r} joins the network of a container "
                               "that no longer exists") from None
            state = self._state(other, target)
            if state.status not in ("running", "paused") or not state.pid:
                raise Conflict(f"container {config['name']!r} joins the network namespace of "
                               f"{target['name']!r}, which is not running")
            run = disk.read_run(self._dir(other))
            odir = self._dir(other)
            net: dict[str, Any] = {"join_pid": state.pid, "join_start": run.get("pid_start"),
                                   "join_name": target["name"]}
            for key, name in (("hosts", "hosts"), ("resolv", "resolv.conf")):
                if os.path.exists(os.path.join(odir, name)):
                    net[key] = os.path.join(odir, name)
            return net, None
        lease = self.networks.lease(cid, config["name"], config["hostname"], mode, config.get("ports", ()))
        config["address"] = lease["address"]
        resolv = self.networks.write_resolv(cdir)
        net = {"wait": True, "hosts": f"{cdir}/hosts", "resolv": resolv}
        if lease.get("ports"):
            from .network import nft_available
            if not nft_available():                  # the shim forwards them (runtime/portfwd.py)
                net["forward"] = [{**p, "address": lease["address"]} for p in lease["ports"]]
        return net, lambda pid: self.networks.attach(pid, cid, lease)

    def _start_request(self, cid: str, config: ContainerConfig) -> dict[str, Any]:
        layers_dir = os.path.join(self.root, "layers")
        cdir = self._dir(cid)
        check = config.get("healthcheck")
        return {
            "op": "start", "id": cid, "dir": cdir, "generation": config["generation"],
            "containers_dir": self.containers_dir, "names_dir": self.names_dir,
            "cgroup_parent": config.get("cgroup_parent") or self.cgroup_parent,
            "limits": config["limits"],
            "layers_dir": layers_dir,
            "lower": [f"{d}/fs" for d in reversed(config["layers"])],
            "upper": f"{cdir}/upper", "work": f"{cdir}/work", "rootfs": f"{cdir}/rootfs",
            "hostname": config["hostname"], "argv": config["cmd"], "env": config["env"],
            "workdir": config["workdir"], "log": f"{cdir}/container.log",
            "log_max_size": _log_config(config).max_size, "log_max_file": _log_config(config).max_file,
            "auto_remove": config["auto_remove"],
            "seccomp": seccomp.program_path(self.root, config.get("seccomp")),
            "no_new_privs": seccomp.no_new_privs(config.get("seccomp")),
            **({"healthcheck": check} if check and check.get("test") else {}),
            **self._mounts_for_start(config),
        }

    def _mounts_for_start(self, config: ContainerConfig) -> dict[str, Any]:
        """The start request's mounts (runtime.mounts.mount_all), with each host
        path checked again now: a bind source must still be the path checked at
        create, outside every protected path; a volume must still exist."""
        if not config.get("mounts") and not config.get("read_only"):
            return {}
        from .mounts import protected_paths, refuse_protected
        items: builtins.list[dict[str, Any]] = []
        anonymous: builtins.list[str] = []
        for m in config.get("mounts", ()):
            item = {"type": m["type"], "target": m["target"], "read_only": bool(m.get("read_only"))}
            if m["type"] == "volume":
                path = os.path.realpath(self.volumes.data_path(m["source"]))
                if not self.volumes.exists(m["source"]):
                    raise NotFound(f"volume {m['source']!r} of container {config['name']!r} is missing")
                item.update(path=path, copy=True)
                anonymous.append(m["source"])
            elif m["type"] == "bind":
                source = m["source"]
                real = os.path.realpath(source)
                if real != source or not os.path.exists(source):
                    raise Conflict(f"bind mount source {source} of container {config['name']!r} "
                                   + ("no longer exists" if not os.path.exists(real) else
                                      f"now resolves to {real}: re-create the container"))
                refuse_protected(real, protected_paths(self.root))
                item["path"] = source
            else:
                item.update(size=m.get("size"), mode=m.get("mode"))
            items.append(item)
        out: dict[str, Any] = {"mounts": items, "read_only": bool(config.get("read_only"))}
        if config.get("auto_remove") and anonymous:
            out.update(volumes_root=self.root, anon_volumes=anonymous)   # the shim's --rm
        return out

    def _request_start(self, cid: str, config: ContainerConfig, while_waiting: Callable[[], object] | None = None,
                       net: dict[str, Any] | None = None,
                       on_init: Callable[[int], object] | None = None) -> dict[str, Any]:
        for layer in config["layers"]:
            if not os.path.isdir(os.path.join(self.root, "layers", layer, "fs")):
                raise NotFound(f"layer sha256:{layer[:12]} of container {config['name']!r} is missing")
        request = self._start_request(cid, config)
        if net:
            request["net"] = net
        return forkserver_call(self.run_dir, request, on_start=self._sweep_at_server_start,
                               while_waiting=while_waiting, on_init=on_init)

    # ---------------------------------------------------------- stop/kill
    def stop(self, ref: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> Container:
        """SIGTERM, then SIGKILL after timeout seconds.  A no-op on a stopped container."""
        if timeout < 0:
            raise InvalidArgument(f"invalid stop timeout {timeout}: must be 0 or more")
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if state.status in ("running", "paused"):
                self._stop_locked(cid, config, state, timeout)
            elif config.get("restart", "no") != "no" and config.get("manual_stop") != config["generation"] \
                    and state.status == "exited":
                # a stop cancels the policy's pending restart, also one whose
                # restarter is only being forked (it checks the mark under the lock)
                self._mark_manual_stop(cid, config)
            return self._finish_locked(cid, config)

    def _mark_manual_stop(self, cid: str, config: ContainerConfig, write: bool = True) -> bool:
        """A person stopped (or killed, or removes) this run: its restart policy
        must not start it again (runtime/lifecycle.py).  True if config changed."""
        if config.get("restart", "no") == "no":
            return False
        from .lifecycle import cancel_pending
        config["manual_stop"] = config["generation"]
        cancel_pending(self._dir(cid))
        if write:
            disk.write_config(self._dir(cid), config)
        return True

    def _stop_locked(self, cid: str, config: ContainerConfig, state: Container, timeout: float) -> None:
        pidfd = _pidfd(state.shim_pid)
        # PID 1 of a namespace never gets a signal it has no handler for
        # (the kernel drops it, even from the host): if init does not catch
        # SIGTERM, waiting the timeout out would only delay the SIGKILL.
        graceful = timeout > 0 and _catches(state.pid, signal.SIGTERM)
        changed = self._mark_manual_stop(cid, config, write=False)
        if graceful:      # while SIGTERM works: the container reads "stopping" (since, timeout)
            config["stopping"] = {"generation": config["generation"], "since": time.time(), "timeout": timeout}
        if changed or graceful:
            disk.write_config(self._dir(cid), config)
        try:
            if graceful:
                _signal(state.pid, signal.SIGTERM)
                if config.get("paused"):
                    self._cgroup_op(self._cg(config).thaw, cid)
                if _wait_fd(pidfd, timeout):
                    return
            _signal(state.pid, signal.SIGKILL)
            self._cgroup_op(self._cg(config).kill_all, cid, signal.SIGKILL)
            if config.get("paused"):
                self._cgroup_op(self._cg(config).thaw, cid)
            if not _wait_fd(pidfd, 10.0):
                raise KernelError(errno.ETIMEDOUT, f"container {config['name']!r} did not exit after SIGKILL")
        finally:
            if pidfd is not None:
                os.close(pidfd)
            if config.pop("stopping", None):
                disk.write_config(self._dir(cid), config)

    def _cgroup_op(self, op: Callable[..., object], cid: str, *args: object) -> None:
        """A cgroup operation on a container that may be exiting: once its init is
        gone the shim removes the cgroup, and a missing cgroup (ENOENT) or one
        being removed (its files answer ENODEV) then means done."""
        try:
            op(cid, *args)
        except NotFound:
            pass
        except KernelError as e:
            if e.code not in (errno.ENOENT, errno.ENODEV):
                raise

    def _finish_locked(self, cid: str, config: ContainerConfig) -> Container:
        """After a run has ended under our lock: clear flags, honour --rm."""
        if config.get("paused"):
            config["paused"] = False
            disk.write_config(self._dir(cid), config)
        state = self._state(cid, config)
        if state.status == "exited" and config.get("auto_remove"):
            self._remove_locked(cid, config)
        return state

    def kill(self, ref: str, sig: int | str = signal.SIGKILL) -> Container:
        sig = parse_signal(sig)
        early = False
        if sig == signal.SIGKILL:
            # A stop waiting for SIGTERM to work holds the lock: SIGKILL now ends
            # its wait (as `docker kill` cuts a `docker stop` short).
            c = self.inspect(ref)
            if c.stopping and c.pid:
                _signal(c.pid, signal.SIGKILL)
                early = True
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if state.status not in ("running", "paused"):
                if early:
                    return state
                raise Conflict(f"container {config['name']!r} is not running")
            if sig == signal.SIGKILL:
                self._stop_locked(cid, config, state, timeout=0)
                return self._finish_locked(cid, config)
            self._mark_manual_stop(cid, config)
            _signal(state.pid, sig)
        return self.inspect(cid)

    def restart(self, ref: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> Container:
        c = self.stop(ref, timeout)
        return self.start(c.id)

    # --------------------------------------------------------- pause/resume
    def changes(self, stop: Callable[[], bool] | None = None, *, heartbeat: bool = False,
                engines: bool = False) -> Iterator[set[str] | None]:
        """Batches of the ids whose state changed on disk, as they change
        (runtime/changes.py: inotify, not a poll); None after an overflow
        (list everything again).  The first batch is empty and comes as soon
        as the watch is in place: a change after it is never missed, so a
        consumer lists everything once *after* it.  Ends when ``stop()`` is true.
        With ``engines``, other owners' containers too, by their discovery
        keys ("docker-<id>"), from their engines' event streams."""
        from .changes import KeyFeed, StateWatch
        feed, done = (KeyFeed() if engines else None), threading.Event()
        try:
            if feed is not None:
                from .discovery.registry import shared
                shared(self).follow(done.is_set, feed.push)
            with StateWatch(self.containers_dir, extra=feed) as w:
                yield set()
                yield from w.follow(stop, heartbeat=heartbeat)
        finally:
            done.set()
            if feed is not None:
                feed.close()

    def discovery(self) -> Discovery:
        """This process's runtime.discovery.registry.Discovery over every source."""
        from .discovery.registry import shared
        return shared(self)

    def pause(self, ref: str) -> Container:
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if state.status == "paused":
                return state
            if state.status != "running":
                raise Conflict(f"container {config['name']!r} is not running")
            self._cg(config).freeze(cid)
            config["paused"] = True
            disk.write_config(self._dir(cid), config)
            return self._state(cid, config)

    def resume(self, ref: str) -> Container:
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if state.status != "paused":
                raise Conflict(f"container {config['name']!r} is not paused")
            self._cg(config).thaw(cid)
            config["paused"] = False
            disk.write_config(self._dir(cid), config)
            return self._state(cid, config)

    unpause = resume

    # -------------------------------------------------------------- update
    def update(self, ref: str, limits: Limits | None = None, *, restart: str | None = None) -> Container:
        """Replace the limits (applied at once to a running container) and/or the
        restart policy (from the container's next exit on)."""
        if limits is None and restart is None:
            raise InvalidArgument("update: give limits or a restart policy")
        if limits is not None and not isinstance(limits, Limits):
            raise InvalidArgument("update() takes a runtime.Limits")
        limits = None if limits is None else check_limits(limits)
        if restart is not None:
            from .lifecycle import check_restart
            restart = check_restart(restart)
        with self._locked_config(ref) as (cid, config):
            state = self._state(cid, config)
            if restart is not None:
                if restart != "no" and config.get("auto_remove"):
                    raise Conflict(f"container {config['name']!r} removes itself when it exits (--rm): "
                                   "it cannot have a restart policy")
                config["restart"] = restart
            if limits is None:                      # (then a restart policy was given)
                disk.write_config(self._dir(cid), config)
                return self._state(cid, config)
            if state.status in ("running", "paused"):
                try:
                    self._cg(config).update(cid, limits)
                except KernelError as e:
                    if e.code == errno.EBUSY:
                        raise Conflict(f"cannot lower the memory limit of {config['name']!r} below "
                                       "what it uses now") from None
                    raise
            config["limits"] = limits._asdict()
            disk.write_config(self._dir(cid), config)
            return self._state(cid, config)

    # -------------------------------------------------------------- remove
    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """volumes: also its anonymous volumes (`rm -v`; always with --rm) that no
        other container names.  Named volumes are never removed with a container."""
        with self._locked_config_or_broken(ref) as (cid, config):
            if config is None:
                self._remove_broken(cid, ref, force)
                return
            state = self._state(cid, config)
            if state.status in ("running", "paused"):
                if not force:
                    raise Conflict(f"container {config['name']!r} is {state.status}: "
                                   "stop it first or remove it with force")
                self._stop_locked(cid, config, state, timeout=0)
            elif config.get("restart", "no") != "no":
                from .lifecycle import cancel_pending
                cancel_pending(self._dir(cid))
            self._remove_locked(cid, config, volumes)

    def _settle(self, cid: str, timeout: float = 10.0) -> None:
        """Wait until the shim of the last run has finished its cleanup (it records
        the exit first and removes the cgroup after), so a new run or a removal
        never overlaps it."""
        run = disk.read_run(self._dir(cid))
        shim = run.get("shim_pid")
        if shim and pidinfo.process_start_time(shim) == run.get("shim_start"):
            fd = _pidfd(shim)
            if fd is not None:
                try:
                    _wait_fd(fd, timeout)
                finally:
                    os.close(fd)

    def _remove_locked(self, cid: str, config: ContainerConfig, volumes: bool = False) -> None:
        self._settle(cid)
        disk.remove(self.containers_dir, self.names_dir, cid,
                    remove_cgroup=lambda cfg: self._cg(cfg).remove(cid))
        if config.get("network", "none") not in ("none", "host") \
                and not config["network"].startswith("container:"):
            self.networks.release(cid)
        if volumes or config.get("auto_remove"):
            self.volumes.remove_anonymous([m["source"] for m in config.get("mounts", ())
                                           if m["type"] == "volume"])

    def _remove_broken(self, cid: str, ref: str, force: bool) -> None:
        """Remove a container whose config cannot be read (we hold its lock).

        Its run may still be going (run.json tells): only with force, killing
        its init first.  Its cgroup parent is unknown: this Runtime's is tried."""
        run = disk.read_run(self._dir(cid))
        pid = run.get("pid")
        if pid and pidinfo.process_start_time(pid) == run.get("pid_start"):
            if not force:
                raise Conflict(f"container {ref!r} is broken and may still run (init pid {pid}): "
                               "remove it with force")
            fd = _pidfd(pid)
            _signal(pid, signal.SIGKILL)
            try:
                if not _wait_fd(fd, 10.0):
                    raise KernelError(errno.ETIMEDOUT, f"init {pid} of broken container {ref!r} "
                                      "did not exit after SIGKILL")
            finally:
                if fd is not None:
                    os.close(fd)
        self._settle(cid)
        disk.remove(self.containers_dir, self.names_dir, cid,
                    remove_cgroup=lambda cfg: self._cgroup_op(self.cgroups.remove, cid))

    def sweep(self, min_age: float = disk.STALE_SECONDS) -> list[str]:
        """Remove what a crash left under this root (state.sweep): half-made
        container directories, temp files, and orphan cgroups under this
        Runtime's cgroup parent.  Run when this root's fork server starts;
        returns what was removed."""
        removed = disk.sweep(self.containers_dir, self.cgroups, min_age=min_age)
        if os.path.isdir(os.path.join(self.root, "networks")):
            removed += self.networks.sweep()
        return removed

    def _sweep_at_server_start(self) -> None:
        """sweep(), noted in RUN_DIR/sweep.log: what it removed, or why it could
        not (a sweep that fails must not fail the start that ran it)."""
        try:
            lines = [f"removed {what}" for what in self.sweep()]
        except (OSError, TerrariumError) as e:
            lines = [f"sweep failed: {e}"]
        if lines:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            with open(os.path.join(self.run_dir, "sweep.log"), "a") as f:
                f.writelines(f"{stamp} {line}\n" for line in lines)

    # -------------------------------------------------------- list/inspect
    def inspect(self, ref: str) -> Container:
        cid = self.resolve(ref)
        c = self._read_state(cid)
        if c is None:
            raise NotFound(f"container {ref!r} not found")
        return c

    def list(self, all: bool = True) -> list[Container]:  # noqa: A002 - docker's word
        """Every container, newest first.  A container is read again only when
        one of its state files changed (their inode, mtime and size) -- and,
        if it runs, when its init is no longer the process it was (the start
        time in /proc/<pid>/stat) -- unless its state depends on more than that
        (a health check, a restart policy's wait, a stop under way): at 1,000
        containers a list costs three stats each (and a read of init's stat if
        it runs), not three JSON reads, seven namespace links and a Container
        built again.  A kept container is the same object as last time, so a
        caller can tell "unchanged" by identity."""
        out = []
        cache: dict[str, _Cached] = getattr(self, "_list_cache", {})
        kept: dict[str, _Cached] = {}
        for cid in os.listdir(self.containers_dir):
            if not _ID_RE.match(cid):
                continue
            c = self._read_state_cached(cid, cache, kept)
            if c is not None and (all or c.status in ("running", "paused")):
                out.append(c)
        self._list_cache = kept               # only what is still there
        out.sort(key=lambda c: c.created_at, reverse=True)
        return out

    def _read_state_cached(self, cid: str, cache: dict[str, _Cached], kept: dict[str, _Cached]) -> Container | None:
        cdir = self._dir(cid)
        stats: builtins.list[tuple[int, int, int] | None] = []
        for f in (disk.CONFIG, disk.RUN, disk.EXIT):
            try:
                st = os.stat(os.path.join(cdir, f))
                stats.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stats.append(None)
        key = tuple(stats)
        hit = cache.get(cid)
        if hit is not None and hit[0] == key and (
                hit[2] is None or pidinfo.process_start_time(hit[2][0]) == hit[2][1]):
            kept[cid] = hit
            return hit[1]
        try:
            config = disk.read_config(cdir)
        except disk.Unreadable as e:
            return self._broken(cid, str(e))
        if config is None:
            return None
        c = self._state(cid, config)
        if key[0] is not None:
            if _settled(c, config):
                kept[cid] = (key, c, None)
            elif _steady(c) and c.pid:
                start = pidinfo.process_start_time(c.pid)
                if start is not None and start == disk.read_run(cdir).get("pid_start"):
                    kept[cid] = (key, c, (c.pid, start))
        return c

    def oom_counts(self, ref: str) -> OomCounts:
        """A running container's OOM counters now (runtime.oom.OomCounts)."""
        from .oomfeed import container_counts
        return container_counts(self, ref)

    def oom_scope(self) -> Mapping[str, Any]:
        """The cgroup parent, its memory directory and the memory hierarchy's root."""
        from .oomfeed import memory_scope
        return memory_scope(self)

    def _read_state(self, cid: str) -> Container | None:
        """The container's state; a broken one if its config cannot be read; None if gone."""
        try:
            config = disk.read_config(self._dir(cid))
        except disk.Unreadable as e:
            return self._broken(cid, str(e))
        return None if config is None else self._state(cid, config)

    def _broken(self, cid: str, reason: str) -> Container:
        """What is known of a container whose config.json cannot be read."""
        cdir = self._dir(cid)
        names = disk.names_of(self.names_dir, cid)
        try:
            created = os.lstat(cdir).st_ctime
        except OSError:
            created = 0.0
        return Container(
            id=cid, name=names[0] if names else cid[:12], image="", cmd=(), env=(), hostname="",
            workdir="", limits=Limits(), status="broken", created_at=created,
            error=f"{reason}; remove it with rm -f", rootfs=f"{cdir}/rootfs",
            upperdir=f"{cdir}/upper", workdir_overlay=f"{cdir}/work",
            log_path=f"{cdir}/container.log")

    def _state(self, cid: str, config: ContainerConfig) -> Container:
        cdir = self._dir(cid)
        run = disk.read_run(cdir)
        ended = disk.read_exit(cdir)
        gen = config.get("generation", 0)
        status, pid, shim_pid = "created", None, None
        namespaces: dict[str, int] = {}
        exit_code = finished_at = error = None
        oom, oom_kills = False, 0
        if run.get("generation") == gen and gen > 0 and ended.get("generation") != gen:
            init_alive = pidinfo.process_start_time(run["pid"]) == run.get("pid_start")
            # init may be gone while its shim is still recording the exit: not done yet
            if init_alive or pidinfo.process_start_time(run.get("shim_pid") or 0) == run.get("shim_start"):
                status = "paused" if config.get("paused") else "running"
                pid, shim_pid = run["pid"], run.get("shim_pid")
                namespaces = pidinfo.namespace_inodes(pid) if init_alive else {}
            else:
                # A shim records the exit before it ends, so if it has ended since
                # we looked, the record is there now; if not, the shim was killed.
                ended = disk.read_exit(cdir)
                if ended.get("generation") != gen:
                    status, error = "exited", "the shim died; exit status unknown"
        if ended.get("generation") == gen and gen > 0:
            status = "exited"
            exit_code, oom = ended.get("exit_code"), bool(ended.get("oom_killed"))
            oom_kills = ended.get("oom_kills", 0)
            finished_at, error = ended.get("finished_at"), ended.get("error")
        elif gen > 0 and run.get("generation") != gen:
            # asked to start, no run record yet: a start still under way (it holds
            # the lock) reads as created; one that died on the way says so.  Never
            # made here: a read racing a removal's rmtree would leave the directory.
            try:
                with locked(os.path.join(cdir, disk.LOCK), blocking=False, create=False) as free:
                    if free:
                        error = "the last start did not complete"
            except FileNotFoundError:
                pass                               # being removed (a start makes it first)
        limits = Limits(**config["limits"])
        stopping = config.get("stopping")
        if stopping and (stopping.get("generation") != gen or status not in ("running", "paused")
                         or time.time() > stopping.get("since", 0) + stopping.get("timeout", 0) + 30):
            stopping = None                        # a stopper that died on the way
        policy, check = config.get("restart", "no"), config.get("healthcheck")
        health = restarting = None
        if (check and check.get("test")) or (policy != "no" and status == "exited"):
            from . import lifecycle
            health = lifecycle.read_health(cdir, gen) if check and check.get("test") else None
            if policy != "no" and status == "exited":
                restarting = lifecycle.pending(cdir, gen)
        return Container(
            id=cid, name=config["name"], image=config["image"], cmd=tuple(config["cmd"]),
            env=tuple(config["env"]), hostname=config["hostname"], workdir=config["workdir"],
            limits=limits, status=status, created_at=config["created_at"],
            layers=tuple(os.path.join(self.root, "layers", d, "fs") for d in config["layers"]),
            pid=pid, shim_pid=shim_pid,
            started_at=run.get("started_at") if run.get("generation") == gen else None,
            finished_at=finished_at, exit_code=exit_code, oom_killed=oom, oom_kills=oom_kills, error=error,
            cgroup=f"{config.get('cgroup_parent') or self.cgroup_parent}/{cid}", namespaces=namespaces,
            rootfs=f"{cdir}/rootfs", upperdir=f"{cdir}/upper", workdir_overlay=f"{cdir}/work",
            log_path=f"{cdir}/container.log", auto_remove=bool(config.get("auto_remove")),
            restart_count=max(gen - 1, 0), seccomp=seccomp.mode_of(config.get("seccomp")),
            log_config=_log_config(config),
            no_new_privileges=seccomp.no_new_privs(config.get("seccomp")),
            network=config.get("network", "none"), address=config.get("address"),
            ports=tuple(config.get("ports", ())),
            restart_policy=policy, restart_history=tuple(config.get("restart_history", ())),
            healthcheck=check, health=health,
            stopping={"since": stopping["since"], "timeout": stopping["timeout"]} if stopping else None,
            restarting=restarting,
            mounts=tuple(Mount(**m) for m in config.get("mounts", ())), read_only=bool(config.get("read_only")),
        )

    # ------------------------------------------------------------ wait/logs
    def wait(self, ref: str, timeout: float | None = None) -> Container:
        """Block until the container has stopped and its exit is recorded; returns
        its state.  (Like `docker wait`, not until its cgroup is cleaned up: the
        shim does that after recording, and start/remove wait for it.)"""
        c = self.inspect(ref)
        if c.status not in ("running", "paused"):
            return c
        deadline = None if timeout is None else time.monotonic() + timeout
        init_fd, shim_fd = _pidfd(c.pid), _pidfd(c.shim_pid)
        try:
            if not _wait_fd(init_fd, timeout):
                raise TimeoutError(f"container {c.name!r} still running after {timeout}s")
            # init is gone; its shim records the exit within a millisecond or two
            while True:
                c = self.inspect(c.id)
                if c.status not in ("running", "paused"):
                    return c
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"container {c.name!r} still running after {timeout}s")
                _wait_fd(shim_fd, 0.001)        # returns early if the shim has ended
        finally:
            for fd in (init_fd, shim_fd):
                if fd is not None:
                    os.close(fd)

    def log_records(self, ref: str, *, tail: int | None = None, since: str | float | bytes | None = None,
                    follow: bool = False, on_wait: Callable[[], object] | None = None) -> Iterator[Record]:
        """The container's log records (runtime.logs.Record), oldest first, in
        bounded memory whatever the log's size.

        tail: only the last N lines.  since: a time as `parse_since` takes it
        (RFC 3339, unix time, or a duration back from now such as "10m").
        follow: go on yielding as the container writes, across rotations,
        until its shim has exited; on_wait() is called each time the reader
        has caught up and waits (to flush output)."""
        from . import logs
        return self._read_log(logs.read, ref, tail, since, follow, on_wait)

    def log_output(self, ref: str, *, tail: int | None = None, since: str | float | bytes | None = None,
                   follow: bool = False, timestamps: bool = False, attach: bool | IO[bytes] = False,
                   on_wait: Callable[[], object] | None = None) -> Generator[tuple[str, bytes], None, None]:
        """What to print of the log, as (stream, bytes): each line's content
        (with its time first if timestamps), stdout's and stderr's apart.  The
        arguments are log_records'; this is the fast way to read a lot.
        attach (with follow): the container waits for this reader rather than
        let rotation drop what it has not read (`run` in the foreground); pass
        hold_log()'s file, taken before the start, to miss nothing at all."""
        from . import logs
        return self._read_log(logs.read_output, ref, tail, since, follow, on_wait, timestamps=timestamps,
                              attach=attach)

    def hold_log(self, ref: str) -> IO[bytes] | None:
        """The container's live log file, held so rotation cannot drop it,
        for log_output(attach=...) once the container has started (None if
        it has no log yet).  Close it if it is not handed over."""
        from . import logs
        return logs.hold(self.inspect(ref).log_path)

    def _read_log(self, reader: Callable[..., Iterator[_T]], ref: str, tail: int | None,
                  since: str | float | bytes | None, follow: bool, on_wait: Callable[[], object] | None,
                  **kw: object) -> Generator[_T, None, None]:
        from . import logs
        c = self.inspect(ref)
        if since is not None and not isinstance(since, bytes):
            since = logs.parse_since(since)
        if tail is not None and tail < 0:
            raise InvalidArgument(f"invalid tail {tail}: must be 0 or more")
        pidfd = _pidfd(c.shim_pid) if follow and c.status in ("running", "paused") else None

        def ended(timeout: float) -> bool:
            if on_wait is not None:
                on_wait()
            return pidfd is None or _wait_fd(pidfd, timeout)
        try:
            yield from reader(c.log_path, tail=tail, since=since, follow=ended if follow else None, **kw)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def logs(self, ref: str, tail: int | None = None, *, since: str | float | bytes | None = None,
             timestamps: bool = False, max_bytes: int | None = None) -> bytes:
        """The log's content, stdout's and stderr's together in the order the
        shim read them (see log_records); with max_bytes, only its last max_bytes."""
        out = bytearray()
        for _, data in self.log_output(ref, tail=tail, since=since, timestamps=timestamps):
            out += data
            if max_bytes is not None and len(out) > 2 * max_bytes:
                del out[:-max_bytes]
        return bytes(out[-max_bytes:] if max_bytes is not None else out)

    def follow_logs(self, ref: str, from_start: bool = True) -> Iterator[bytes]:
        """Yield log content as it is written until the container stops."""
        for _, data in self.log_output(ref, tail=None if from_start else 0, follow=True):
            yield data

    # ------------------------------------------------------------------ exec
    def exec(self, ref: str, argv: builtins.list[str], *, env: Iterable[str] = (), tty: bool = False,
             interactive: bool = False, workdir: str | None = None, size: bytes | None = None,
             hand_off: HandOff | None = None) -> int:
        """Run argv inside a running container; returns its exit code.

        The process joins the container's cgroup and namespaces, gets its
        root, capabilities and no_new_privs, and never the caller's terminal
        or descriptors: pipes the caller relays (stdin only if interactive),
        or with tty a terminal made inside the container (runtime.execute).
        Forks: call it from a process without threads (the CLI), never from
        the web server (which gets a terminal from terminal(): a helper
        process of its own calls this).  size and hand_off: see
        runtime.execute.exec_in."""
        from .execute import exec_in
        c = self.inspect(ref)
        if c.status != "running":
            raise Conflict(f"container {c.name!r} is {c.status}, not running")
        if not argv:
            raise InvalidArgument("exec needs a command")
        asked = make_spec(image="x", cmd=argv, env=env, workdir=workdir)   # NUL, bad keys, '..'
        merged = _merge_env(c.env, asked.env, c.hostname)
        run = disk.read_run(self._dir(c.id))
        pid_start = run.get("pid_start") if run.get("pid") == c.pid else None
        setting = self._config(c.id).get("seccomp")
        program = seccomp.read_program(seccomp.program_path(self.root, setting))
        return exec_in(self, c, list(asked.cmd), list(merged), pid_start=pid_start, tty=tty,
                       interactive=interactive, workdir=asked.workdir or c.workdir, seccomp=program,
                       no_new_privs=seccomp.no_new_privs(setting), size=size, hand_off=hand_off)

    def terminal(self, ref: str, *, shell: str = "auto", rows: int = 24, cols: int = 80,
                 on_end: Callable[..., object] | None = None) -> Terminal:
        """A shell on a terminal in running container ref, for a caller with
        threads (the web tier, the agent): a runtime.terminal.Terminal (the
        pty master, and the process's exit code when it ends).  shell: one of
        runtime.terminal.SHELLS."""
        from .terminal import open_terminal
        return open_terminal(self, ref, shell=shell, rows=rows, cols=cols, on_end=on_end)

    def audit_recent(self, limit: int = 500, others_only: bool = False) -> builtins.list[dict[str, Any]]:
        """The newest records of ROOT/audit.log, newest first (runtime.audit.recent)."""
        from . import audit
        return audit.recent(audit.path_of(self.root), limit, others_only=others_only)

    # --- the host, as the dashboard's host pages show it.  Read-only, but
    # root's: every process's /proc/<pid>/ns links, and cmdlines, cgroups of
    # processes that are not ours (the agent serves these to the web tier).
    def host_namespaces(self) -> builtins.list[NamespaceInfo]:
        """Every namespace with a process in it (runtime.procs.namespaces, like
        lsns), each marked with the id of the container that unshared it."""
        from . import procs
        owned = {c.id: c.namespaces for c in self.list(all=True) if c.namespaces}
        return procs.namespaces(owners=procs.namespace_owners(owned))

    def host_processes(self) -> builtins.list[ProcessNode]:
        """The host PID namespace as a forest of runtime.procs.ProcessNode (pstree -p)."""
        from . import procs
        return procs.host_tree()

    def host_cgroups(self) -> builtins.list[Hierarchy]:
        """Every cgroup of the walked hierarchies with its figures, as
        runtime.cgroups.tree.Hierarchy records (systemd-cgtop's view)."""
        from .cgroups import detect, tree
        return tree.walk(detect())

    # ------------------------------------------------------------- teardown
    def shutdown_servers(self) -> None:
        """Stop this root's agent, fork server and CLI server (tests, benchmarks).

        Running containers and their shims are not affected; each server
        starts again on the next call that needs it."""
        from .agent import stop_agent
        from .cliserver import stop_server
        stop_agent(self.root)
        stop_server(self.run_dir)
        stop_forkserver(self.run_dir)

    # --- layers: diff and commit
    # The writable layer seen against the image (runtime.overlay), turned into
    # an image layer, and the removal of images and layers nobody uses.  Image
    # writes and gc hold ROOT/images.lock, so a gc never sees a committed
    # layer before its image record.

    def diff(self, ref: str, implicit: bool = True, limit: int | None = None) -> Changes:
        """The container's changes against its image: overlay.Changes (a list of
        overlay.Change, sorted by path; .truncated past limit, overlay.DIFF_LIMIT)."""
        from . import overlay
        c = self.inspect(ref)
        return overlay.diff(c.upperdir, c.layers, implicit=implicit,
                            limit=overlay.DIFF_LIMIT if limit is None else limit)

    def layer_of(self, ref: str, path: str) -> Origin:
        """overlay.Origin of `path` in the container's view: "upper", a layer index, or None."""
        from . import overlay
        c = self.inspect(ref)
        return overlay.layer_of(path, c.upperdir, c.layers)

    def mount_info(self, ref: str) -> Mapping[str, Any]:
        """The overlay mount as the container's /proc/<pid>/mountinfo reports it."""
        from . import overlay
        c = self.inspect(ref)
        if c.status not in ("running", "paused") or not c.pid:
            raise Conflict(f"container {c.name!r} is {c.status}: its overlay is mounted only "
                           "while it runs")
        return overlay.mount_info(c.pid, lower_base=os.path.join(self.root, "layers"))

    def upper_size(self, ref: str) -> UpperSize:
        """overlay.UpperSize (bytes, files) of the container's writable layer."""
        from . import overlay
        return overlay.upper_size(self.inspect(ref).upperdir)

    def commit(self, ref: str, image_name: str, message: str = "", pause: bool = True,
               replace: bool = True) -> Image:
        """Make the container's writable layer the top layer of a new image `image_name`.

        A running container is paused while its layer is packed (as Docker
        does), so the layer is one moment of it and nothing in it changes
        under the walk; then resumed.  The container's lock is held
        throughout, so no resume, stop or remove lands mid-pack.  pause=False
        is refused on a running container.  Whiteouts and opaque directories
        are written in OCI form (.wh.NAME, .wh..wh..opq).  replace=False:
        Conflict if `image_name` already names an image (saying what uses it).
        """
        import tempfile
        from .images import normalize_name, tarsafe
        from .model import ImageConfig
        key = normalize_name(image_name)
        store = self.images
        store._make_dirs()
        with locked(os.path.join(self.root, "images.lock")), \
                self._locked_config(ref) as (cid, config), \
                tempfile.TemporaryFile(dir=store.tmp_dir) as tmp:
            if not replace:
                self._refuse_taken([key])
            created_by = f"terrarium commit {config['name']}" + (f": {message}" if message else "")
            c = self._state(cid, config)
            if not pause and c.status == "running":
                raise Conflict(f"container {c.name!r} is running: commit packs a running "
                               "container frozen, so the image is one moment of it and the "
                               "container cannot change the layer mid-walk; drop --no-pause "
                               "(or stop it first)")
            paused_here = c.status == "running"
            if paused_here:
                self._cg(config).freeze(cid)
                config["paused"] = True            # so a crash mid-pack still reads as paused
                disk.write_config(self._dir(cid), config)
            try:
                tarsafe.pack(c.upperdir, tmp)
            except OSError as e:
                if isinstance(e, TerrariumError):
                    raise
                raise KernelError(e.errno or errno.EIO,
                                  f"pack the writable layer of {c.name!r}") from None
            finally:
                if paused_here:
                    self._cgroup_op(self._cg(config).thaw, cid)   # gone meanwhile: nothing to thaw
                    config["paused"] = False
                    disk.write_config(self._dir(cid), config)
            tmp.seek(0)
            layer = store.add_layer_from_tar(tmp, created_by)
            digests = [f"sha256:{d}" for d in config["layers"]]
            env = tuple(v for v in c.env if not v.startswith("HOSTNAME="))
            return store.add_image(key, digests + [layer.digest],
                                   ImageConfig(cmd=c.cmd, env=env, workdir=c.workdir,
                                               healthcheck=_healthcheck_of(c.healthcheck)),
                                   history=[*self._history_of(config), created_by])

    def _history_of(self, config: ContainerConfig) -> builtins.list[str]:
        """How each layer of a container's image was made, bottom first."""
        digests = [f"sha256:{d}" for d in config["layers"]]
        try:
            image = self.images.get(config["image"])
            if [layer.digest for layer in image.layers] == digests and image.history:
                return list(image.history)
        except NotFound:
            pass
        return [self.images.layer(d).created_by for d in digests]

    def image_users(self, name: str) -> builtins.list[Container]:
        """Containers that use image `name`: made from that name, or running its very
        layers when no other image name has them (removing it would orphan them)."""
        image = self.images.get(name)
        digests = tuple(layer.digest[7:] for layer in image.layers)
        others = {tuple(layer.digest[7:] for layer in i.layers)
                  for i in self.images.list() if i.name != image.name}
        users = []
        for c in self.list(all=True):
            mine = tuple(os.path.basename(os.path.dirname(p)) for p in c.layers)
            if c.image == image.name or (mine == digests and digests not in others):
                users.append(c)
        return users

    def _refuse_taken(self, names: Iterable[str]) -> None:
        """Conflict if one of `names` already names an image, saying which
        containers use it: for callers that must not move a name silently."""
        taken: builtins.list[str] = []
        for name in dict.fromkeys(names):
            try:
                image = self.images.get(name)
            except NotFound:
                continue
            users = [c.name for c in self.image_users(image.name)]
            used = (f", used by {len(users)} container{'s' if len(users) != 1 else ''}: "
                    f"{', '.join(users[:5])}{' ...' if len(users) > 5 else ''}") if users else ", used by no container"
            taken.append(f"{image.name!r} ({image.id[:19]}{used})")
        if taken:
            raise Conflict(f"image name{'s' if len(taken) > 1 else ''} already taken: {'; '.join(taken)}. "
                           "Replacing moves the name to the new image; the old one stays, by id, "
                           "for the containers that use it until image-gc")

    def remove_image(self, name: str, force: bool = False) -> None:
        """Remove an image record; Conflict if a container uses it (unless force).

        Its layers stay until image_gc(), and a layer a container uses is
        never removed, so even a forced removal leaves every container whole.
        """
        with locked(os.path.join(self.root, "images.lock")):
            image = self.images.get(name)
            if not image.name:                 # one a name was moved off: by id (its layers stay
                self.images.remove_image(name)  # while a container runs them)
                return
            if not force:
                users = self.image_users(image.name)
                if users:
                    names = ", ".join(repr(c.name) for c in users[:3])
                    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
                    raise Conflict(f"image {image.name!r} is in use by container {names}{more}: "
                                   "remove the container first, or use force")
            self.images.remove_image(image.name)

    def image_gc(self) -> builtins.list[str]:
        """Remove the layers no image and no container uses; returns their digests."""
        with locked(os.path.join(self.root, "images.lock")):
            used: set[str] = set()
            for cid in os.listdir(self.containers_dir):
                if _ID_RE.match(cid):
                    try:
                        config = disk.read_config(self._dir(cid))
                    except disk.Unreadable:
                        # a broken container's layers are unknown: keep every layer
                        used.update(layer.digest for layer in self.images.layers())
                        continue
                    if config is not None:
                        used.update(config["layers"])
            from .images import distribution
            distribution.sweep(self.root)        # blobs of pulls given up on a day ago
            return self.images.gc(used)

    def load_image(self, src: str | IO[bytes], name: str | None = None, *, label: str | None = None,
                   replace: bool = True) -> builtins.list[Image]:
        """Import the images of a docker save archive or OCI layout (importers.load):
        a path, or an open binary file of a tar that messages call `label`.
        replace=False: Conflict, before anything is unpacked, if a name the
        archive's images would take already names an image."""
        from .images import importers
        return importers.load(self.images, src, name=name, label=label,
                              check_names=None if replace else self._refuse_taken)

    def pull_image(self, ref: str, *, platform: str | None = None, insecure: bool = False,
                   progress: Callable[[Mapping[str, object]], object] | None = None) -> Image:
        """Pull an image from its registry (images.distribution.pull): the Image."""
        from .images import distribution
        image: Image = distribution.pull(self.images, ref, platform=platform, insecure=insecure, progress=progress)
        return image

    def push_image(self, ref: str, *, insecure: bool = False,
                   progress: Callable[[Mapping[str, object]], object] | None = None) -> str:
        """Push the image `ref` names to its registry; the manifest digest."""
        from .images import distribution
        return distribution.push(self.images, ref, insecure=insecure, progress=progress)

    def registry_logins(self) -> Sequence[Mapping[str, Any]]:
        """[{"server", "username"}] of the kept registry credentials (no passwords)."""
        from .images import distribution
        return distribution.logins(self.root)

    def registry_login(self, server: str | None, username: str, password: str, insecure: bool = False) -> str:
        """Check the credentials with the registry and keep them (ROOT/registry-auth.json, 0600)."""
        from .images import distribution
        return distribution.login(self.root, server, username, password, insecure=insecure)

    def registry_logout(self, server: str | None) -> bool:
        from .images import distribution
        return distribution.logout(self.root, server)

    def tag_image(self, source: str, target: str) -> Image:
        """Point the name `target` at the image `source` (`docker tag`)."""
        image: Image = self.images.tag(source, target)
        return image

    def save_image(self, name: str, out: BinaryIO) -> str:
        """Write image `name` as an OCI layout tar to the binary file `out`; the manifest digest."""
        from .images import importers
        return importers.save_to(self.images, name, out)


class _LockedConfigOrBroken:
    """Runtime._locked_config_or_broken: the container's lock held, (id, config)
    with config None for a broken container."""

    def __init__(self, rt: Runtime, cid: str, ref: str):
        self.rt, self.cid, self.ref = rt, cid, ref
        self._cm = rt._lock(cid)                 # the flock is taken on __enter__

    def __enter__(self) -> tuple[str, ContainerConfig | None]:
        try:
            self._cm.__enter__()
        except FileNotFoundError:
            raise NotFound(f"container {self.ref!r} not found") from None
        try:
            config = disk.read_config(self.rt._dir(self.cid))
        except disk.Unreadable as e:
            if self._broken_ok():
                return self.cid, None
            self._cm.__exit__(None, None, None)
            raise Conflict(f"container {self.ref!r} is broken ({e}): remove it with rm -f") from None
        if config is None:
            self._cm.__exit__(None, None, None)
            raise NotFound(f"container {self.ref!r} not found")
        return self.cid, config

    def _broken_ok(self) -> bool:
        return True

    def __exit__(self, *exc: Any) -> bool | None:
        return self._cm.__exit__(*exc)


class _LockedConfig(_LockedConfigOrBroken):
    """Runtime._locked_config: a broken container is a Conflict."""

    def __enter__(self) -> tuple[str, ContainerConfig]:
        cid, config = super().__enter__()
        assert config is not None               # _broken_ok() is false: never None here
        return cid, config

    def _broken_ok(self) -> bool:
        return False


# ----------------------------------------------------------------- helpers

def _pidfd(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _wait_fd(fd: int | None, timeout: float | None) -> bool:
    """True once the process behind pidfd fd has exited (or fd is None)."""
    if fd is None:
        return True
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout is None else int(timeout * 1000)))


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _catches(pid: int | None, sig: int) -> bool:
    """Whether pid has a handler for sig (SigCgt); True when that cannot be read."""
    return pid is None or pidinfo.catches_signal(pid, sig) is not False


def parse_signal(sig: int | str) -> int:
    if isinstance(sig, int) and not isinstance(sig, bool):
        value = sig
    else:
        text = str(sig).strip().upper()
        if text.isdigit():
            value = int(text)
        else:
            try:
                value = signal.Signals[text if text.startswith("SIG") else "SIG" + text].value
            except KeyError:
                raise InvalidArgument(f"invalid signal {sig!r}") from None
    if not 0 < value < signal.NSIG:
        raise InvalidArgument(f"invalid signal {sig!r}")
    return value


def _add_lifecycle(config: ContainerConfig, spec: Spec, image_check: Healthcheck | None = None) -> None:
    """config.json's restart policy and health check (runtime/lifecycle.py): the
    spec's check, else the image's; none when neither is set."""
    if spec.restart != "no":
        config["restart"] = spec.restart
    check = spec.healthcheck if spec.healthcheck is not None else image_check
    if check is not None:
        config["healthcheck"] = {"test": list(check.test), "interval": check.interval, "timeout": check.timeout,
                                 "retries": check.retries, "start_period": check.start_period}


def _healthcheck_of(d: HealthcheckDict | None) -> Healthcheck | None:
    """A container's health check (a dict, as inspect shows it) as a Healthcheck, for commit."""
    if d is None:
        return None
    from .model import Healthcheck
    fields: dict[str, Any] = {**d, "test": tuple(d["test"])}
    return Healthcheck(**fields)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _merge_env(base: Iterable[str], extra: Iterable[str], hostname: str) -> tuple[str, ...]:
    env: dict[str, str] = {}
    for item in (*base, f"HOSTNAME={hostname}", *extra):
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("HOME", "/root")
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return tuple(f"{k}={v}" for k, v in env.items())


_ADJ = ("brave", "calm", "eager", "fond", "keen", "merry", "quiet", "swift", "tidy", "wise")
_NOUN = ("ant", "bee", "fern", "moss", "newt", "snail", "toad", "wren", "yew", "vole")


def _settled(c: Container, config: ContainerConfig) -> bool:
    """Whether c's state follows from its files alone, with no process to
    look at (Runtime.list may keep it until a file changes): created and never
    asked to start, or exited, with no restart policy or health check (a
    restarter's wait and health results live outside those files)."""
    if c.restart_policy != "no" or c.healthcheck:
        return False
    return c.status == "exited" or (c.status == "created" and not config.get("generation") and not c.error)


def _steady(c: Container) -> bool:
    """Whether a running (or paused) c's state follows from its files and its
    init being alive: init alive (its namespaces read), no health check, no
    stop under way.  (A restart policy matters only once it has exited.)"""
    return (c.status in ("running", "paused") and bool(c.pid) and bool(c.namespaces)
            and not c.healthcheck and c.stopping is None)


def _random_name(cid: str) -> str:
    n = int(cid[:8], 16)
    return f"{_ADJ[n % 10]}_{_NOUN[(n // 10) % 10]}_{cid[:6]}"
