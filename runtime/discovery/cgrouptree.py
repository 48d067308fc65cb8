"""Containers recognised from the cgroup tree alone: Kubernetes pods'
containers, containerd and CRI-O outside Kubernetes, systemd-nspawn
machines, LXC containers and systemd's own services and scopes.

No engine API is asked: each owner names its cgroups its own way, and that
name is all we need.

    kubelet, systemd driver   /kubepods.slice/kubepods-burstable.slice/
                                kubepods-burstable-pod<uid, "-" as "_">.slice/
                                cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
    kubelet, cgroupfs driver  /kubepods/burstable/pod<uid>/<id>   (crio-<id> for CRI-O)
                              (guaranteed pods sit right under kubepods; a
                              kubelet in a container nests it all, e.g. under /docker/<id>/)
    containerd alone          /default/<id> (its namespace), /system.slice/nerdctl-<id>.scope
    CRI-O alone               crio-<id>.scope outside kubepods (crio-conmon-<id> is its monitor)
    systemd-nspawn            /machine.slice/systemd-nspawn@<name>.service, machine-<name>.scope
                              (v2: .../payload is the container, .../supervisor is nspawn)
    LXC                       /lxc.payload.<name> (4.0+), /lxc.payload/<name> (3.1),
                              /lxc/<name> (older); lxc.monitor* holds the monitor, not the container
    systemd                   any other <unit>.service / <unit>.scope

`recognise(path)` is the pure part (a path in, a Match out).  `CgroupTree`
walks the host's hierarchies once per discovery pass and hands each
`TreeSource` (one per engine, the Source protocol of runtime.discovery) its
share; `TreeSource.follow` (on the first of them) watches the directories
with inotify so discovery hears of a new or removed cgroup when it happens.

Every one of these is read-only here: no engine API to drive, and writing an
owner's cgroup files behind its back would drift from its own record.
"""
from __future__ import annotations

import errno
import os
import re
import threading
import time
from types import MappingProxyType
from typing import NamedTuple

from ..pidinfo import namespace_inodes, parse_nspid, parse_stat, parse_status, read_text
from . import ENGINES, Availability, Follow, Found, OnKey, OnUp, Stop, make_key

# engines this module recognises, in ENGINES order
TREE_ENGINES = tuple(e for e in ENGINES if e in ("kubernetes", "containerd", "crio", "nspawn",
                                                 "lxc", "systemd"))


class Match(NamedTuple):
    """What a cgroup path is.  kind:
        container   a container of `engine`: its whole subtree is its
        unit        a systemd service or scope: its processes outside any
                    deeper unit or container are its
        pass        an owner's inner cgroup that is nothing by itself (a pod's
                    slice, kubepods, the QoS slices): walk on, count nothing
        skip        an owner's helper (LXC's monitor, CRI-O's conmon): not
                    reported, not walked
        foreign     another engine's container (docker-<id>.scope, /docker/<id>,
                    libpod-<id>.scope: its API source claims it, or else it is
                    seen as a bare namespace): not reported; walked only for
                    Kubernetes nodes inside it (kind, minikube), never for units
                    (those are the node container's own systemd's)"""
    kind: str
    engine: str = ""
    id: str = ""
    name: str = ""
    labels: MappingProxyType[str, str] = MappingProxyType({})


PASS = Match("pass")
SKIP = Match("skip")
FOREIGN = Match("foreign")

_HEX64 = r"[0-9a-f]{64}"
_K8S_CONTAINER = re.compile(
    rf"(?:(?P<rt>cri-containerd|crio|docker)-(?P<id>{_HEX64})\.scope"    # systemd driver
    rf"|(?P<crio>crio-)?(?P<id2>{_HEX64}))")                            # cgroupfs driver
_K8S_CONMON = re.compile(rf"crio-conmon-{_HEX64}(?:\.scope)?")
_POD_FS = re.compile(r"pod([0-9a-f-]{32,36})")
_POD_SD = re.compile(r"(?:[a-z0-9-]*-)?pod([0-9a-f_]{32,36})\.slice")
_QOS_FS = ("burstable", "besteffort")
_CRI_SCOPE = re.compile(rf"(cri-containerd|crio|nerdctl)-({_HEX64})\.scope")
_OTHER_ENGINE = re.compile(rf"(?:docker|libpod|libpod-conmon)-{_HEX64}\.scope|libpod-{_HEX64}")
_CONTAINERD_NAMESPACES = ("default", "k8s.io")
_CONTAINERD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,75}")

RUNTIME_LABEL = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker",
                 "nerdctl": "containerd"}

NOTES = {
    "kubernetes": "Kubernetes owns this pod's container (kubelet, through its container "
                  "runtime); change it with kubectl: Terrarium only reads its cgroup.",
    "containerd": "containerd owns this container and Terrarium has no client for its API; "
                  "change it with ctr or nerdctl.",
    "crio": "CRI-O owns this container; change it with crictl (or kubectl, if a kubelet "
            "asked for it).",
    "nspawn": "systemd-machined owns this machine; change it with machinectl.",
    "lxc": "LXC owns this container; change it with lxc-stop / lxc-freeze (or lxc, for LXD).",
    "systemd": "systemd owns this unit; change it with systemctl: writing its cgroup behind "
               "systemd's back would drift from the unit's own settings.",
}


# --- names ----------------------------------------------------------------------

def unescape_unit(name: str) -> str:
    """systemd's unit-name escaping undone: "foo\\x2dbar" -> "foo-bar"
    (systemd-escape(1): "-" and any byte outside [A-Za-z0-9:_.] become \\xNN)."""
    if "\\x" not in name:
        return name
    raw = bytearray()
    i = 0
    b = name.encode("utf-8", "surrogateescape")
    while i < len(b):
        if b[i:i + 2] == b"\\x" and len(b) >= i + 4:
            try:
                raw.append(int(b[i + 2:i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        raw.append(b[i])
        i += 1
    return raw.decode("utf-8", "replace")


def _kubepods_index(parts: list[str]) -> int | None:
    for i, p in enumerate(parts):
        if p == "kubepods" or p.endswith("kubepods.slice"):
            return i
    return None


def _kubernetes(parts: list[str], k: int) -> Match:
    """Below kubepods: [QoS] pod container."""
    rest = parts[k + 1:]
    driver = "systemd" if parts[k].endswith(".slice") else "cgroupfs"
    qos = "guaranteed"
    if rest:
        head = rest[0]
        if head in _QOS_FS:
            qos, rest = head, rest[1:]
        elif driver == "systemd" and head.endswith(("-burstable.slice", "-besteffort.slice")):
            qos, rest = head.rsplit("-", 1)[1][:-len(".slice")], rest[1:]
    if not rest:
        return PASS
    pod = (_POD_SD if driver == "systemd" else _POD_FS).fullmatch(rest[0])
    if pod is None:
        return PASS
    uid = pod.group(1).replace("_", "-")
    if len(rest) == 1:
        return PASS
    if _K8S_CONMON.fullmatch(rest[1]):
        return SKIP
    m = _K8S_CONTAINER.fullmatch(rest[1])
    if m is None:
        return PASS
    cid = m.group("id") or m.group("id2")
    runtime = RUNTIME_LABEL.get(m.group("rt") or ("crio" if m.group("crio") else ""), "")
    labels = {"io.kubernetes.pod.uid": uid, "qos": qos, "cgroup.driver": driver}
    if runtime:
        labels["runtime"] = runtime
    return Match("container", "kubernetes", cid, f"pod{uid}/{cid[:12]}", MappingProxyType(labels))


def recognise(path: str) -> Match | None:
    """What the cgroup at ``path`` (relative to a hierarchy's root, as
    /proc/<pid>/cgroup shows it) is; None for a plain directory."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    k = _kubepods_index(parts)
    if k is not None:
        return _kubernetes(parts, k)
    last = parts[-1]
    if _OTHER_ENGINE.fullmatch(last) or (len(parts) >= 2 and parts[-2] == "docker"
                                         and re.fullmatch(_HEX64, last)):
        return FOREIGN
    if _K8S_CONMON.fullmatch(last):
        return SKIP
    m = _CRI_SCOPE.fullmatch(last)
    if m:
        engine = "crio" if m.group(1) == "crio" else "containerd"
        return Match("container", engine, m.group(2), m.group(2)[:12],
                     MappingProxyType({"runtime": RUNTIME_LABEL[m.group(1)]}))
    if len(parts) == 2 and parts[0] in _CONTAINERD_NAMESPACES and _CONTAINERD_ID.fullmatch(last):
        return Match("container", "containerd", last, last,
                     MappingProxyType({"containerd.namespace": parts[0]}))
    if last.startswith("systemd-nspawn@") and last.endswith(".service"):
        name = unescape_unit(last[len("systemd-nspawn@"):-len(".service")])
        return Match("container", "nspawn", name, name, MappingProxyType({"unit": last}))
    if last.startswith("machine-") and last.endswith(".scope"):
        name = unescape_unit(last[len("machine-"):-len(".scope")])
        if name.startswith("lxc-"):          # libvirt-lxc: machine-lxc\x2d<pid>\x2d<name>.scope
            short = name.split("-", 2)[-1]
            return Match("container", "lxc", short, short,
                         MappingProxyType({"unit": last, "driver": "libvirt-lxc"}))
        if not name.startswith("qemu-"):     # libvirt's VMs stay systemd scopes: not containers
            return Match("container", "nspawn", name, name, MappingProxyType({"unit": last}))
    if last.startswith("lxc.monitor") or last == "lxc.pivot":
        return SKIP
    if last.startswith("lxc.payload."):
        name = last[len("lxc.payload."):]
        return Match("container", "lxc", name, name)
    if len(parts) >= 2 and parts[-2] in ("lxc", "lxc.payload") and last not in ("lxc.monitor",):
        return Match("container", "lxc", last, last)
    if last in ("lxc", "lxc.payload"):
        return PASS
    if last.endswith((".service", ".scope")):
        return Match("unit", "systemd", last, last)
    return None


def owner_path(path: str) -> tuple[str, Match] | None:
    """(the container cgroup, its Match) that ``path`` is in (itself or an
    ancestor), or None: a process in /lxc.payload.c1/system.slice/x.service
    belongs to LXC's c1, not to a systemd unit of the host."""
    parts = [p for p in path.split("/") if p]
    for n in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:n])
        m = recognise(sub)
        if m is not None and m.kind == "container":
            return sub, m
        if m is SKIP:
            return None
    return None


# --- the node's own records: pod and container names ------------------------------

# ({pod uid: (namespace, pod, container names)}, {container id: (namespace, pod, container)})
KubeletNames = tuple[dict[str, tuple[str, str, tuple[str, ...]]], dict[str, tuple[str, str, str]]]


def kubelet_names(log_root: str = "/var/log") -> KubeletNames:
    """({pod uid: (namespace, pod, container names)}, {container id:
    (namespace, pod, container)}) from the kubelet's log files:

        <log_root>/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log
        <log_root>/containers/<pod>_<namespace>_<container>-<id>.log  (a symlink)

    Pod, namespace and container names are DNS labels: never "_"."""
    pods: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    containers: dict[str, tuple[str, str, str]] = {}
    try:
        entries = os.listdir(os.path.join(log_root, "pods"))
    except OSError:
        entries = []
    for entry in entries:
        fields = entry.split("_")
        if len(fields) == 3:
            ns, pod, uid = fields
            try:
                inside = tuple(sorted(os.listdir(os.path.join(log_root, "pods", entry))))
            except OSError:
                inside = ()
            pods[uid] = (ns, pod, inside)
    try:
        links = os.listdir(os.path.join(log_root, "containers"))
    except OSError:
        links = []
    for link in links:
        if not link.endswith(".log"):
            continue
        fields = link[:-4].split("_")
        if len(fields) != 3:
            continue
        pod, ns, rest = fields
        container, sep, cid = rest.rpartition("-")
        if sep and re.fullmatch(_HEX64, cid):
            containers[cid] = (ns, pod, container)
    return pods, containers


# --- reading one cgroup -------------------------------------------------------------

def read_procs(directory: str) -> list[int]:
    """cgroup.procs of one directory (not its children); [] when unreadable."""
    text = read_text(os.path.join(directory, "cgroup.procs"))
    return [int(v) for v in text.split()] if text else []


def pidns_init(pids: list[int], proc: str = "/proc") -> int | None:
    """The one of ``pids`` that is PID 1 of a PID namespace below the host's
    (last NSpid field 1, more than one field), lowest pid first (an init is
    usually its container's oldest); None when none is (--pid host, a
    namespace shared with another container, an init just gone)."""
    for pid in sorted(pids):
        status = read_text(f"{proc}/{pid}/status")
        line = parse_status(status, ("NSpid",)).get("NSpid") if status else None
        if line:
            nspid = parse_nspid(line)
            if len(nspid) > 1 and nspid[-1] == 1:
                return pid
    return None


def init_of(pids: list[int], proc: str = "/proc") -> int | None:
    """The init of a container's processes: the one that is PID 1 of a PID
    namespace below the host's (last NSpid field 1, more than one field); else
    the oldest whose parent is outside the set; else the first listed."""
    if not pids:
        return None
    members = set(pids)
    best: tuple[int, int] | None = None              # (start ticks, pid) of the oldest root
    for pid in pids:
        status = read_text(f"{proc}/{pid}/status")
        if status is None:
            continue
        line = parse_status(status, ("NSpid",)).get("NSpid")
        if line:
            nspid = parse_nspid(line)
            if len(nspid) > 1 and nspid[-1] == 1:
                return pid
        stat = read_text(f"{proc}/{pid}/stat")
        if stat is None:
            continue
        try:
            s = parse_stat(stat)
        except Exception:  # noqa: BLE001 - a malformed line: the process is not a candidate
            continue
        if s.ppid not in members and (best is None or (s.start_ticks, pid) < best):
            best = (s.start_ticks, pid)
    return best[1] if best else pids[0]


# --- the walk -----------------------------------------------------------------------

class Entry(NamedTuple):
    """One recognised cgroup of a pass: path (as /proc/<pid>/cgroup
    shows it), its Match, the directory read, and the pids it holds (a
    container: its whole subtree; a unit: its own and its plain children's)."""
    path: str
    match: Match
    directory: str
    pids: list[int]


def hierarchy_roots(cgroup_root: str | None = None) -> tuple[str, list[str], str | None]:
    """(kind "v1" | "v2", the hierarchies to walk, the v1 freezer root).

    v2: the one tree.  v1/hybrid: the memory hierarchy, systemd's named one
    (name=systemd: every unit is there, with or without memory accounting)
    and, on a hybrid host, the cgroup2 tree systemd tracks in; a path seen in
    several is one cgroup.  ``cgroup_root`` points at a fake tree: a cgroup2
    root (it has cgroup.controllers) or a directory of v1 hierarchies named
    memory/, systemd/, unified/, freezer/."""
    if cgroup_root is not None:
        if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
            return "v2", [cgroup_root], None
        roots = [os.path.join(cgroup_root, h) for h in ("memory", "systemd", "unified")]
        freezer = os.path.join(cgroup_root, "freezer")
        return "v1", [r for r in roots if os.path.isdir(r)], freezer if os.path.isdir(freezer) else None
    from ..cgroups import detect
    layout = detect()
    if layout.kind == "v2":
        return "v2", [layout.v2], None
    roots = [layout.v1.get("memory"), layout.named.get("name=systemd"), layout.v2]
    return "v1", [r for r in roots if r and os.path.isdir(r)], layout.v1.get("freezer")


class CgroupTree:
    """The host's cgroup hierarchies, walked once per discovery pass and
    shared by the TreeSources (each takes its engine's entries)."""

    MAX_AGE = 1.0        # a pass's walk serves the later sources of the same pass

    def __init__(self, cgroup_root: str | None = None, proc: str = "/proc",
                 log_root: str = "/var/log"):
        self.cgroup_root, self.proc, self.log_root = cgroup_root, proc, log_root
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._at = -1e9
        self._roots_cache: tuple[str, list[str], str | None] | None = None

    def roots(self) -> tuple[str, list[str], str | None]:
        if self._roots_cache is None:
            self._roots_cache = hierarchy_roots(self.cgroup_root)
        return self._roots_cache

    def entries(self, fresh: bool = False) -> list[Entry]:
        """The recognised cgroups: walked again when ``fresh`` or when the
        last walk is older than MAX_AGE."""
        with self._lock:
            if fresh or time.monotonic() - self._at > self.MAX_AGE:
                self._entries = self.walk()
                self._at = time.monotonic()
            return self._entries

    def walk(self) -> list[Entry]:
        _, roots, _ = self.roots()
        out: dict[str, Entry] = {}
        for root in roots:
            self._walk(root, "", None, out, True)
        return list(out.values())

    def _walk(self, directory: str, path: str, unit: tuple[str, list[int]] | None, out: dict[str, Entry],
              units: bool) -> None:
        """Depth first.  ``unit``: the [path, pids] of the enclosing unit that
        collects the processes of plain directories below it; ``units``:
        whether systemd units here are the host's."""
        try:
            it = os.scandir(directory)
        except OSError:
            return
        with it:
            children = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        for name in children:
            sub = f"{path}/{name}"
            d = os.path.join(directory, name)
            m = recognise(sub)
            if m is not None and m.kind == "unit" and not units:
                m = None
            if m is None:
                if unit is not None:
                    unit[1].extend(read_procs(d))
                self._walk(d, sub, unit, out, units)
            elif m.kind == "container":
                if sub not in out:
                    out[sub] = Entry(sub, m, d, subtree_procs(d))
            elif m.kind == "unit":
                mine = (sub, read_procs(d))
                self._walk(d, sub, mine, out, units)
                if sub in out:                       # seen in an earlier hierarchy
                    old = out[sub]
                    have = set(old.pids)
                    pids = old.pids + [p for p in mine[1] if p not in have]
                    out[sub] = old._replace(pids=pids)
                else:
                    out[sub] = Entry(sub, m._replace(labels=MappingProxyType(
                        {"unit": m.id, **({"manager": unit[0].rsplit("/", 1)[-1]} if unit else {})})),
                        d, mine[1])
            elif m.kind == "pass":
                self._walk(d, sub, None, out, units)
            elif m.kind == "foreign":
                self._walk(d, sub, None, out, False)
            # skip: neither reported nor walked

    def found(self, engine: str) -> list[Found]:
        """This pass's Found records of one engine."""
        entries = [e for e in self.entries() if e.match.engine == engine]
        if not entries:
            return []
        names = kubelet_names(self.log_root) if engine == "kubernetes" else None
        out = []
        for e in entries:
            f = self._found(e, names)
            if f is not None:
                out.append(f)
        return out

    def _found(self, e: Entry, names: KubeletNames | None) -> Found | None:
        m = e.match
        if m.kind == "unit" and not e.pids:
            return None                              # an empty unit cgroup: nothing runs there
        pid = init_of(e.pids, self.proc)
        ns = namespace_inodes(pid, self.proc) if pid else {}
        if m.kind == "unit":
            ident = m.id if "manager" not in m.labels else f"{m.labels['manager']}/{m.id}"
            return Found(make_key("systemd", ident), "systemd", ident, m.name, state="running",
                         pid=pid, cgroup=e.path, namespaces=MappingProxyType(ns), labels=m.labels,
                         owner_note=NOTES["systemd"])
        labels = dict(m.labels)
        name = m.name
        if names is not None:
            pods, containers = names
            uid = labels.get("io.kubernetes.pod.uid", "")
            known = containers.get(m.id)
            if known is None and uid in pods:
                # no /var/log/containers link: the sandbox is "POD" (as
                # dockershim named it); a pod with one container's logs has
                # only that one left to be
                ns_name, pod, inside = pods[uid]
                if pid and self._comm(pid) == "pause":
                    cname = "POD"
                elif len(inside) == 1:
                    cname = inside[0]
                else:
                    cname = m.id[:12]
                known = (ns_name, pod, cname)
            if known is not None:
                labels.update({"io.kubernetes.pod.namespace": known[0],
                               "io.kubernetes.pod.name": known[1],
                               "io.kubernetes.container.name": known[2]})
                name = "/".join(known)
        state = "running" if e.pids else "exited"
        if e.pids and self._frozen(e):
            state = "paused"
        return Found(make_key(m.engine, m.id), m.engine, m.id, name, state=state, pid=pid,
                     cgroup=e.path, namespaces=MappingProxyType(ns), labels=MappingProxyType(labels),
                     owner_note=NOTES[m.engine])

    def _comm(self, pid: int) -> str:
        return (read_text(f"{self.proc}/{pid}/comm") or "").strip()

    def _frozen(self, e: Entry) -> bool:
        kind, _, freezer = self.roots()
        if kind == "v2":
            events = read_text(os.path.join(e.directory, "cgroup.events")) or ""
            return "frozen 1" in events.splitlines()
        if freezer:
            return (read_text(freezer + e.path + "/freezer.state") or "").strip() == "FROZEN"
        return False

    def present(self, engine: str) -> tuple[bool, str]:
        """Whether this host shows any sign of the engine (for availability)."""
        _, roots, _ = self.roots()
        if not roots:
            return False, "no cgroup hierarchy to read"
        # the first engine's availability() opens a discovery pass: walk afresh
        if any(e.match.engine == engine for e in self.entries(fresh=engine == TREE_ENGINES[0])):
            return True, ""
        if engine == "kubernetes" and any(os.path.isdir(os.path.join(r, k)) for r in roots
                                          for k in ("kubepods", "kubepods.slice")):
            return True, "a kubelet's slices, no pod container in them"
        if engine == "systemd":
            if any(os.path.isdir(os.path.join(r, "init.scope")) or os.path.isdir(os.path.join(r, "system.slice"))
                   for r in roots):
                return True, ""
            return False, "PID 1 is not systemd: no init.scope or system.slice cgroup"
        return False, {"kubernetes": "no kubepods cgroup", "containerd": "no containerd container cgroup",
                       "crio": "no crio-<id> cgroup", "nspawn": "no machine cgroup",
                       "lxc": "no lxc payload cgroup"}[engine]

    # --- following changes ------------------------------------------------------

    def follow(self, stop: Stop, on_key: OnKey, on_up: OnUp | None = None) -> None:
        """Call on_key(key) when a recognised cgroup appears or goes (inotify
        on every directory of the walked hierarchies; new directories are
        watched as they come), until stop() is true.  on_up() once the watches
        are in place.  No events for processes moving between existing
        cgroups: a pass reads those."""
        from ..inotify import IN_CREATE, IN_DELETE, IN_IGNORED, IN_ONLYDIR, IN_Q_OVERFLOW, Inotify
        mask = IN_CREATE | IN_DELETE | IN_ONLYDIR
        ino = Inotify()
        paths: dict[int, tuple[str, str]] = {}        # wd -> (directory, cgroup path)

        def heard(path: str) -> None:
            key = key_of_path(path)
            if key is not None:
                with self._lock:
                    self._at = -1e9                      # the next pass walks again
                on_key(key)

        def watch(directory: str, path: str, new: bool) -> None:
            """Watch a directory and those below it; ``new``: it has just
            appeared, so what is below it was made before our watch could
            see it: say so now."""
            try:
                wd = ino.add_watch(directory, mask)
            except OSError:
                return
            paths[wd] = (directory, path)
            try:
                it = os.scandir(directory)
            except OSError:
                return
            with it:
                subs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            for name in subs:
                if new:
                    heard(f"{path}/{name}")
                watch(os.path.join(directory, name), f"{path}/{name}", new)

        try:
            for root in self.roots()[1]:
                watch(root, "", False)
            if on_up is not None:
                on_up()
            while not stop():
                for ev in ino.read(timeout_ms=250):
                    if ev.mask & IN_Q_OVERFLOW:
                        on_key(None)                     # events lost: anything may have changed
                        continue
                    if ev.mask & IN_IGNORED:
                        paths.pop(ev.wd, None)
                        continue
                    where = paths.get(ev.wd)
                    if where is None or not ev.name:
                        continue
                    directory, path = where
                    sub = f"{path}/{ev.name}"
                    heard(sub)
                    if ev.mask & IN_CREATE:
                        watch(os.path.join(directory, ev.name), sub, True)
        finally:
            ino.close()


def key_of_path(path: str) -> str | None:
    """The Found.key of the container or unit a cgroup path is (None: neither)."""
    owner = owner_path(path)
    if owner is not None:
        return make_key(owner[1].engine, owner[1].id)
    m = recognise(path)
    if m is None or m.kind != "unit":
        return None
    parts = [p for p in path.split("/") if p]
    if any(recognise("/" + "/".join(parts[:n])) in (FOREIGN, SKIP) for n in range(1, len(parts))):
        return None
    managers = [p for p in path.split("/")[:-1] if p.endswith((".service", ".scope"))]
    return make_key("systemd", f"{managers[-1]}/{m.id}" if managers else m.id)


def subtree_procs(directory: str) -> list[int]:
    """cgroup.procs of a directory and every directory below it."""
    out = read_procs(directory)
    try:
        it = os.scandir(directory)
    except OSError:
        return out
    with it:
        subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    for d in subs:
        out.extend(subtree_procs(d))
    return out


# --- the sources ---------------------------------------------------------------------

class TreeSource:
    """One engine's containers out of a shared CgroupTree (Source protocol)."""

    def __init__(self, engine: str, tree: CgroupTree, follows: bool = False):
        if engine not in TREE_ENGINES:
            raise ValueError(f"not a cgroup-tree engine: {engine!r}")
        self.engine, self.tree = engine, tree
        # the tree's inotify watch, on one source of the tree only (Discovery.follow)
        self.follow: Follow | None = tree.follow if follows else None

    def availability(self) -> Availability:
        try:
            ok, detail = self.tree.present(self.engine)
        except OSError as e:
            return Availability(self.engine, "refused", f"cgroup tree unreadable: {os.strerror(e.errno or errno.EIO)}")
        return Availability(self.engine, "up" if ok else "absent", detail)

    def list(self) -> list[Found]:
        try:
            return self.tree.found(self.engine)
        except OSError:
            return []


def tree_sources(cgroup_root: str | None = None, proc: str = "/proc",
                 log_root: str = "/var/log") -> list[TreeSource]:
    """A TreeSource per engine over one CgroupTree, in ENGINES order; the
    first (it walks the tree fresh in each pass) also follows it."""
    tree = CgroupTree(cgroup_root, proc, log_root)
    return [TreeSource(e, tree, follows=i == 0) for i, e in enumerate(TREE_ENGINES)]
