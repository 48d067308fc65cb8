"""Processes and namespaces, read from procfs: the container's process tree,
the host's process tree (pstree) and the host's namespaces (lsns).

    from runtime import procs
    tree = procs.container_tree(rt.cgroups.procs(c.id))      # [ProcessNode(init, ...)]
    tree[0].info.ns_pid, tree[0].info.pid                    # 1, 48213
    procs.namespaces(owners=procs.namespace_owners({c.id: c.namespaces}))

Every function takes the procfs root (``proc``) so tests can point it at a
fake tree.  Results are frozen dataclasses; each figure in a ProcessInfo
names in ``sources`` the file and the raw line (or the stat field) it came
from, for the dashboard to show.  The parsers of the /proc/<pid> files are
pidinfo.py's (one per file); the two here read cmdline and /etc/passwd.

A process may exit at any moment between listing it and reading it: readers
return None for it (or skip it) instead of failing.  Only other kernel errors
raise, as KernelError with the errno.

Costs measured on the 2-core test machine (~105 processes, loaded): one
process (stat + status + cmdline) ≈ 60-80 µs, half of it open/read/close;
container_tree of 3 processes ≈ 200-350 µs; ``namespaces()`` over the host
≈ 4.5-15 ms, about 850 readlinks.  ``readlink`` of /proc/<pid>/ns/<type>
("net:[4026531833]") was 1.5-2x cheaper than ``os.stat(...).st_ino`` of the
same link (stat has to resolve the link into nsfs), gives the same inode, and
works on a fake tree made of plain symlinks.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .errors import KernelError
from .pidinfo import (NS_TYPES, StatFields, parse_kb, parse_ns_link, parse_nspid,  # noqa: F401 - procs' API too
                      parse_stat, parse_status, parse_uid, status_value)

PROC = "/proc"

# comm (prctl PR_SET_NAME) of Terrarium's own processes, see runtime/shim.py,
# runtime/forkserver.py and runtime/cliserver.py (a worker running a command
# is plain "terrarium", as is the command the person started).
# comm is chosen by the process itself: good for marking a view, not for trust.
ROLES = {"terrarium-shim": "shim", "terrarium-fork": "forkserver",
         "terrarium-cli": "cliserver", "terrarium": "cli"}

PF_KTHREAD = 0x00200000          # include/linux/sched.h, stat field 9 (flags)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_STATUS_KEYS = ("State", "PPid", "Uid", "NSpid", "Threads", "VmRSS")
_GONE = (errno.ENOENT, errno.ESRCH)  # the process exited (ESRCH: mid-exit reads)


# --- results ------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessInfo:
    pid: int                      # in the namespace of the proc mount (the host's for /proc)
    ppid: int
    ns_pids: tuple[int, ...]      # NSpid: outermost first, innermost (the container's) last
    uid: int                      # effective uid, as ps's USER
    user: str | None              # from the caller's uid -> name map, if given
    state: str                    # R S D Z T ...
    comm: str
    cmdline: tuple[str, ...]      # () for kernel threads and zombies
    rss: int                      # bytes
    cpu_ticks: int                # utime + stime, clock ticks
    start_ticks: int              # start time, ticks after boot
    threads: int
    kthread: bool
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ns_pid(self) -> int:
        """The pid as the process itself sees it (innermost PID namespace)."""
        return self.ns_pids[-1]

    @property
    def key(self) -> tuple[int, int]:
        """(pid, start_ticks): tells a reused pid from the process that had it."""
        return (self.pid, self.start_ticks)


@dataclass(frozen=True)
class ProcessNode:
    info: ProcessInfo
    children: tuple[ProcessNode, ...] = ()

    @property
    def pid(self) -> int:
        return self.info.pid


@dataclass(frozen=True)
class NamespaceInfo:
    type: str                     # one of NS_TYPES
    inode: int
    nprocs: int
    pid: int                      # lowest pid in it
    command: str                  # of that pid: cmdline, or [comm] for kernel threads
    container: str | None = None  # from the caller's inode -> container id map


# --- pure parsers -----------------------------------------------------------

def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """NUL-separated argv; empty for kernel threads and zombies.  A process that
    rewrote its argv (setproctitle) may have one long string without NULs."""
    if not raw:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))


def parse_passwd(text: str) -> dict[int, str]:
    """/etc/passwd -> {uid: name}, for ProcessInfo.user.  Read it once per
    container and keep it; per process it would cost more than the process."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out


# --- reading one process ------------------------------------------------------

def _read(path: str) -> bytes:
    """One file from procfs.  These files are generated in full for one read
    (seq_file single_open; cmdline loops over pages), so one large read is
    enough unless it came back full."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        chunks = [data]
        while data:
            data = os.read(fd, 65536)
            chunks.append(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_process(pid: int, proc: str = PROC, users: Mapping[int, str] | None = None) -> ProcessInfo | None:
    """One process, or None if it has exited (or its pid is not a process)."""
    base = f"{proc}/{pid}"
    try:
        stat_raw = _read(f"{base}/stat")
        status_raw = _read(f"{base}/status")
        cmd_raw = _read(f"{base}/cmdline")
    except OSError as e:
        if e.errno in _GONE:
            return None
        raise KernelError(e.errno or errno.EIO, f"read {base}") from None
    st = parse_stat(stat_raw.decode("utf-8", "replace"))
    status = parse_status(status_raw.decode("utf-8", "replace"), _STATUS_KEYS)

    sf = f"{base}/stat"
    def s(key: str) -> str:
        return f"{base}/status: {status[key]}"
    sources = {"pid": f"{sf}: field 1 pid={st.pid}", "comm": f"{sf}: field 2 comm=({st.comm})",
               "cmdline": f"{base}/cmdline: {cmd_raw[:200]!r}",
               "cpu_ticks": f"{sf}: field 14 utime={st.utime}, field 15 stime={st.stime}",
               "start_ticks": f"{sf}: field 22 starttime={st.start_ticks}"}

    ns_pids: tuple[int, ...] = (st.pid,)
    if "NSpid" in status:                       # since Linux 4.1
        ns_pids = parse_nspid(status["NSpid"])
        sources["ns_pid"] = s("NSpid")
    uid = parse_uid(status["Uid"]) if "Uid" in status else -1
    for key, name in (("ppid", "PPid"), ("uid", "Uid"), ("state", "State"), ("threads", "Threads")):
        if name in status:
            sources[key] = s(name)
    sources.setdefault("ppid", f"{sf}: field 4 ppid={st.ppid}")
    sources.setdefault("state", f"{sf}: field 3 state={st.state}")
    sources.setdefault("threads", f"{sf}: field 20 num_threads={st.threads}")
    if "VmRSS" in status:                        # absent for kernel threads and zombies
        rss = parse_kb(status["VmRSS"])
        sources["rss"] = s("VmRSS")
    else:
        rss = st.rss_pages * _PAGE
        sources["rss"] = f"{sf}: field 24 rss={st.rss_pages} pages"

    return ProcessInfo(
        pid=st.pid, ppid=st.ppid, ns_pids=ns_pids, uid=uid,
        user=users.get(uid) if users is not None else None,
        state=st.state, comm=st.comm, cmdline=parse_cmdline(cmd_raw), rss=rss,
        cpu_ticks=st.utime + st.stime, start_ticks=st.start_ticks, threads=st.threads,
        kthread=bool(st.flags & PF_KTHREAD), sources=sources)


def list_pids(proc: str = PROC) -> list[int]:
    """Every process (thread group) visible in the proc mount, sorted."""
    with os.scandir(proc) as it:
        return sorted(int(e.name) for e in it if e.name.isdigit())


# --- trees --------------------------------------------------------------------

def build_forest(infos: Iterable[ProcessInfo]) -> list[ProcessNode]:
    """Parent -> children by ppid among the given processes; children and roots
    sorted by pid.  A process whose parent is not among them is a root.

    Built bottom-up without recursion (a container can nest thousands deep).
    Snapshots taken while pids are reused can in theory link into a cycle:
    the lowest pid of such a cycle is cut loose as a root.
    """
    by_pid = {i.pid: i for i in infos}
    kids: dict[int, list[int]] = {}
    roots = []
    for pid in sorted(by_pid):
        ppid = by_pid[pid].ppid
        if ppid in by_pid and ppid != pid:
            kids.setdefault(ppid, []).append(pid)
        else:
            roots.append(pid)

    order = _preorder(roots, kids)
    while len(order) < len(by_pid):              # a cycle: cut it at its lowest pid
        cut = min(set(by_pid) - set(order))
        kids[by_pid[cut].ppid].remove(cut)
        roots.append(cut)
        order += _preorder([cut], kids)

    nodes: dict[int, ProcessNode] = {}
    for pid in reversed(order):                 # children before their parents
        ks = kids.get(pid)
        nodes[pid] = ProcessNode(by_pid[pid], tuple([nodes[k] for k in ks]) if ks else ())
    return [nodes[r] for r in sorted(roots)]


def _preorder(roots: list[int], kids: Mapping[int, list[int]]) -> list[int]:
    out, stack = [], list(reversed(roots))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(reversed(kids.get(pid, ())))
    return out


def container_tree(pids: Iterable[int], proc: str = PROC,
                   users: Mapping[int, str] | None = None) -> list[ProcessNode]:
    """The tree of a container's processes, from its cgroup.procs (host pids).
    The container's init is normally the single root.  Processes that exit
    meanwhile are left out."""
    return build_forest(i for i in (read_process(p, proc, users) for p in pids) if i is not None)


def host_tree(proc: str = PROC, users: Mapping[int, str] | None = None) -> list[ProcessNode]:
    """Every process in the proc mount's PID namespace (pstree -p): normally
    one root, PID 1, plus kthreadd (PID 2, parent 0) and its kernel threads."""
    return container_tree(list_pids(proc), proc, users)


def walk(forest: Iterable[ProcessNode]) -> Iterator[tuple[int, ProcessNode]]:
    """(depth, node) in display order, without recursion."""
    stack = [(0, n) for n in reversed(list(forest))]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, c) for c in reversed(node.children))


def role(info: ProcessInfo) -> str | None:
    """"shim" or "forkserver" for Terrarium's own processes, else None."""
    return ROLES.get(info.comm)


def terrarium_roles(forest: Iterable[ProcessNode]) -> dict[int, str]:
    """{pid: "shim" | "forkserver"} for the marked processes of a tree."""
    return {n.pid: r for _, n in walk(forest) if (r := role(n.info))}


# --- namespaces ---------------------------------------------------------------

def namespaces(proc: str = PROC, owners: Mapping[int, str] | None = None) -> list[NamespaceInfo]:
    """Every namespace with a process in it, like lsns: by (type, inode), with
    how many processes are in it and its lowest pid.  Namespaces kept alive only
    by a bind mount or an open descriptor (lsns finds some of those) are not
    listed.  Zombies have no namespaces any more and are not counted; without
    root, other users' processes are skipped (EACCES), as lsns does."""
    found: dict[tuple[str, int], list[int]] = {}       # -> [nprocs, lowest pid]
    for pid in list_pids(proc):
        base = f"{proc}/{pid}/ns/"
        for t in NS_TYPES:
            try:
                target = os.readlink(base + t)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM, errno.ESRCH):
                    break                # not ours to see, or exiting: skip the process
                continue                 # ENOENT: exited, a zombie, or no such type here
            k = parse_ns_link(target)
            entry = found.get(k)
            if entry is None:
                found[k] = [1, pid]      # pids ascend: the first one is the lowest
            else:
                entry[0] += 1
    owners = owners or {}
    commands = {pid: _command(pid, proc) for _, pid in found.values()}
    return [NamespaceInfo(type=t, inode=ino, nprocs=n, pid=pid, command=commands[pid],
                          container=owners.get(ino))
            for (t, ino), (n, pid) in sorted(found.items())]


def _command(pid: int, proc: str = PROC) -> str:
    """cmdline joined by spaces, or [comm] as ps shows kernel threads; "" if gone."""
    try:
        argv = parse_cmdline(_read(f"{proc}/{pid}/cmdline"))
        if argv:
            return " ".join(argv)
        return "[" + _read(f"{proc}/{pid}/comm").decode("utf-8", "replace").rstrip("\n") + "]"
    except OSError:
        return ""


def namespace_owners(containers: Mapping[str, Mapping[str, int]], proc: str = PROC) -> dict[int, str]:
    """{inode: container id} from {container id: Container.namespaces}.

    A container shares the host's namespaces it did not unshare (Terrarium
    keeps the host's user and cgroup namespaces): those inodes, found as PID
    1's and the caller's own, are left out so the host's namespaces are not
    marked as a container's.  (PID 1's links can be unreadable even to root
    when PID 1 is not dumpable, as on the test machine; lsns skips it too.)
    """
    host = set()
    for who in ("1", "self"):
        for t in NS_TYPES:
            try:
                host.add(parse_ns_link(os.readlink(f"{proc}/{who}/ns/{t}"))[1])
            except OSError:
                pass
    return {ino: cid for cid, ns in containers.items() for ino in ns.values() if ino not in host}
