"""Networks: bridges, addresses, veth pairs and published ports.

A container is made with a network namespace of its own holding only
loopback (runtime/init.py).  `--network` says what else it gets:

    none          nothing more (the default: see README "Networks" for why)
    bridge        the default network: a bridge on the host (terrarium0 for
                  the default root) with a private /16, an address on it
    NAME          a network made with `terrarium network create NAME`
    host          the host's own namespace (allowed only when asked for)
    container:C   the namespace of running container C

For a bridged container this module leases an address (IPAM) and, when the
shim has its init waiting but before the command runs, makes a veth pair:
the host end on the bridge, the other end made straight into the
container's namespace as `eth0`, given the address, the MTU and a default
route through the bridge.  Everything goes through pyroute2 (netlink); no
`ip` command runs.  The namespace belongs to the container's init, so when
the container's last process exits the kernel deletes the veth pair with
it: a SIGKILLed shim leaves no veth behind.

State, under ROOT/networks/ (0700), changed only under ROOT/networks/lock:
    nets/<name>.json  a network: bridge, subnet, gateway, MTU, NAT
    leases.json    container id -> network, address, name, published ports
A lease lives from a container's first start to its removal (the address
stays the same across restarts, and /etc/hosts of the others stays true).
Leases whose container is gone (removed by a crash half way) are swept by
every network operation and when the fork server starts.

Published ports (`-p [IP:]HOST:CONTAINER[/tcp|udp]`) are DNAT rules in one
nftables table of our own (`inet terrarium` for the default root,
`inet terrarium_<rid>` for others), written whole from the leases and the
networks in one `nft -f` transaction each time they change, and deleted
when nothing is left in it.  No other table is ever read or written.  Where
nftables is absent (no `nft`; TERRARIUM_NFT names another path) the
container's shim forwards them in userland instead (runtime/portfwd.py).
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from .errors import Conflict, InvalidArgument, KernelError, NotFound, TerrariumError
from .fsutil import locked, private_dir, read_json, write_json

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Mapping
    from concurrent.futures import ThreadPoolExecutor
    from types import ModuleType
    from typing import Any, ParamSpec, Protocol, TypedDict, TypeVar

    _P = ParamSpec("_P")
    _R = TypeVar("_R")

    # The records' shapes, for mypy only (import them under TYPE_CHECKING too):
    # a command that names a network must not pay for importing typing.
    class PortMap(TypedDict):
        """A published port, `-p [IP:]HOST:CONTAINER[/proto]` parsed."""
        host_ip: str                       # "": every address of the host
        host_port: int
        container_port: int
        proto: str                         # "tcp" or "udp"

    class Forward(PortMap):
        """A published port the shim forwards in userland (runtime/portfwd.py)."""
        address: str                       # the container's

    class NetworkRecord(TypedDict):
        """nets/<name>.json."""
        name: str
        id: str
        bridge: str
        subnet: str                        # CIDR
        gateway: str
        mtu: int
        nat: bool
        created_at: float

    class Lease(TypedDict):
        """A container's entry in leases.json."""
        network: str
        address: str
        name: str                          # the container's
        hostname: str
        ports: list[PortMap]
        at: float

    class LeaseView(Lease):
        """What Networks.lease returns: the lease and what attach() needs of its network."""
        prefixlen: int
        gateway: str
        bridge: str
        mtu: int

    class Member(TypedDict):
        """A container on a network, as Networks.inspect shows it."""
        id: str
        name: str
        address: str
        veth: str
        ports: list[PortMap]

    class NetworkView(NetworkRecord):
        """Networks.inspect and .list: the record, its table, its containers."""
        table: str
        containers: list[Member]
        bridge_up: bool

    class NsLink(TypedDict):
        index: int
        name: str | None
        mtu: int | None
        state: str | None
        mac: str | None
        rx_bytes: int | None
        tx_bytes: int | None

    class NsAddress(TypedDict):
        index: int
        address: str | None
        prefixlen: int

    class NsRoute(TypedDict):
        dst: str
        gateway: str | None
        oif: int | None

    class NamespaceView(TypedDict):
        """read_namespace: a network namespace as `ip link/addr/route` would show it."""
        links: list[NsLink]
        addresses: list[NsAddress]
        routes: list[NsRoute]

    class _NlMsg(Protocol):
        """A pyroute2 netlink message (pyroute2 has no type hints): the parts used here."""

        def get_attr(self, name: str) -> Any: ...

        def __getitem__(self, key: str) -> Any: ...

    class _IPRoute(Protocol):
        """pyroute2.IPRoute: the calls made here."""

        def link_lookup(self, *, ifname: str) -> list[int]: ...

        def link(self, command: str, **kwargs: Any) -> Any: ...

        def addr(self, command: str, **kwargs: Any) -> Any: ...

        def route(self, command: str, **kwargs: Any) -> Any: ...

        def get_links(self) -> Iterable[_NlMsg]: ...

        def get_addr(self, **kwargs: Any) -> Iterable[_NlMsg]: ...

        def get_routes(self, **kwargs: Any) -> Iterable[_NlMsg]: ...

        def close(self) -> None: ...


DEFAULT_NETWORK = "bridge"
MODES = ("none", "host", DEFAULT_NETWORK)
DEFAULT_MTU = 1500
# Where an automatic subnet is looked for: the first /16 here that no route
# of the host (and so no other root's bridge) overlaps.
AUTO_SUBNETS = [f"10.{n}.0.0/16" for n in range(88, 255)]
# held across roots while a bridge's subnet is chosen and its address set
GLOBAL_LOCK = "/run/lock/terrarium-networks.lock" if os.path.isdir("/run/lock") else "/run/terrarium-networks.lock"
NETWORK_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}", re.ASCII)
_PORT_RE = re.compile(r"(?:(?P<ip>[0-9.]+):)?(?P<host>[0-9]{1,5}):(?P<cont>[0-9]{1,5})(?:/(?P<proto>tcp|udp))?",
                      re.ASCII)
IFACE_PREFIXES = ("tb", "tv")          # bridges tb<rid>..., host ends of veths tv<rid><id>
NFT = shutil.which("nft") or "/usr/sbin/nft"


def nft_path() -> str:
    """The nft command: TERRARIUM_NFT when set (a path that is not there makes
    nftables absent: published ports then go through the userland forwarder,
    runtime/portfwd.py), else the one on PATH."""
    return os.environ.get("TERRARIUM_NFT") or NFT


def nft_available() -> bool:
    return os.access(nft_path(), os.X_OK)


def root_id(root: str) -> str:
    """Six hex digits naming a state root in interface and table names."""
    return hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:6]


def is_default_root(root: str) -> bool:
    from .containers import DEFAULT_ROOT
    return os.path.abspath(root) == DEFAULT_ROOT


def table_name(root: str) -> str:
    return "terrarium" if is_default_root(root) else f"terrarium_{root_id(root)}"


def veth_name(root: str, cid: str) -> str:
    return f"tv{root_id(root)}{cid[:7]}"         # 15 characters, IFNAMSIZ's most


# --------------------------------------------------------------- checking input

def check_network(value: object) -> str:
    """What `--network` takes: none, host, bridge, a network name or container:REF."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidArgument(f"invalid network {value!r}")
    if value.startswith("container:"):
        ref = value[len("container:"):]
        if not NETWORK_NAME_RE.fullmatch(ref):
            raise InvalidArgument(f"invalid network {ascii(value)[:80]}: container:NAME needs a container name or id")
        return value
    if not NETWORK_NAME_RE.fullmatch(value):
        raise InvalidArgument(f"invalid network {ascii(value)[:80]}: use none, host, bridge, a network's "
                              "name or container:NAME")
    return value


def check_network_name(name: object) -> str:
    if not isinstance(name, str) or not NETWORK_NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid network name {ascii(name)[:80]}: use 1-64 ASCII letters, digits, "
                              "'_', '.' or '-', starting with a letter or digit")
    if name in ("none", "host"):
        raise InvalidArgument(f"network name {name!r} is reserved")
    return name


def parse_port(text: object) -> PortMap:
    """'8080:80', '127.0.0.1:8080:80/udp' -> {host_ip, host_port, container_port, proto}
    (a PortMap given is checked again)."""
    if isinstance(text, dict):
        text = format_port(text)
    m = _PORT_RE.fullmatch(text) if isinstance(text, str) else None
    shown = ascii(text)[:80]
    if not m:
        raise InvalidArgument(f"invalid port {shown}: use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80")
    host_ip = m.group("ip") or ""
    if host_ip:
        try:
            addr = ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid port {shown}: {host_ip!r} is not an IPv4 address") from None
        host_ip = "" if addr.is_unspecified else str(addr)
    host_port, cont_port = int(m.group("host")), int(m.group("cont"))
    for p in (host_port, cont_port):
        if not 1 <= p <= 65535:
            raise InvalidArgument(f"invalid port {shown}: ports are 1 to 65535")
    return {"host_ip": host_ip, "host_port": host_port, "container_port": cont_port,
            "proto": m.group("proto") or "tcp"}


def format_port(p: Mapping[str, object]) -> str:
    """A PortMap as `-p` takes it."""
    ip = f"{p['host_ip']}:" if p.get("host_ip") else ""
    return f"{ip}{p['host_port']}:{p['container_port']}/{p['proto']}"


def check_ports(ports: Iterable[object] | None) -> tuple[str, ...]:
    out = tuple(format_port(parse_port(p)) for p in ports or ())
    seen: set[tuple[str, int, str]] = set()
    for text in out:
        p = parse_port(text)
        key = (p["host_ip"], p["host_port"], p["proto"])
        if key in seen or (("", p["host_port"], p["proto"]) in seen) or \
                (not p["host_ip"] and any(k[1:] == key[1:] for k in seen)):
            raise InvalidArgument(f"port {text} is published twice")
        seen.add(key)
    return out


# --------------------------------------------------------------- netlink

_worker_lock = threading.Lock()
_worker: tuple[int, ThreadPoolExecutor] | None = None       # (the pid it serves, the pool of one thread)
_WORKER_NAME = "terrarium-netlink"


def _in_netlink_thread(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run fn in this process's one netlink thread.

    pyroute2's synchronous API keeps an asyncio loop and a netlink socket
    per *thread* of each IPRoute, never freed when a thread ends: used from
    the agent's thread per connection (or Daphne's pool) it would gather
    them, and from a thread whose own loop is running (Daphne's, a test's
    Playwright) it cannot run at all.  So every pyroute2 call of a process
    is made in one thread of its own (made again after a fork)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        global _worker
        if threading.current_thread().name.startswith(_WORKER_NAME):
            return fn(*args, **kwargs)
        from concurrent.futures import ThreadPoolExecutor
        with _worker_lock:
            if _worker is None or _worker[0] != os.getpid():
                _worker = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix=_WORKER_NAME))
            pool = _worker[1]
        return pool.submit(fn, *args, **kwargs).result()
    return wrapper


def pyroute2() -> ModuleType:
    """The pyroute2 package, also in the `python -I -S` servers (the CLI
    server's workers, the agent), which find it in the venv."""
    try:
        import pyroute2 as p
    except ImportError:
        from .daemons import use_venv_packages
        use_venv_packages()
        import pyroute2 as p
    module: ModuleType = p
    return module


_ipr: dict[int, _IPRoute] = {}            # pid -> IPRoute, used in the netlink thread only


def _iproute() -> _IPRoute:
    IPRoute = pyroute2().IPRoute
    pid = os.getpid()
    ipr = _ipr.get(pid)
    if ipr is None:
        ipr = _ipr[pid] = IPRoute()
    return ipr


def _netlink_error(e: Exception, what: str) -> KernelError:
    code = getattr(e, "code", None) or getattr(e, "errno", None) or errno.EIO
    return KernelError(code, what)


def _ipr_in(nsfd: int) -> _IPRoute:
    """An IPRoute whose netlink socket lives in the namespace behind nsfd.

    The socket is made in a short-lived thread that setns()es first (a
    namespace is per thread; pyroute2's own netns= forks a helper process,
    which a threaded web server must not), then used from this thread."""
    IPRoute = pyroute2().IPRoute
    from . import linux
    sock: list[socket.socket] = []
    error: list[BaseException] = []

    def make() -> None:
        try:
            linux.setns(nsfd, linux.CLONE_NEWNET)
            sock.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)
    t = threading.Thread(target=make, name="terrarium-netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    ipr: _IPRoute = IPRoute(use_socket=sock[0])
    return ipr


def _host_routes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes (all tables), as networks."""
    out = []
    routes = _iproute().get_routes(family=socket.AF_INET)      # every table
    for r in routes:
        dst = r.get_attr("RTA_DST")
        if dst:
            out.append(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
    return out


def _link_index(ifname: str) -> int | None:
    found = _iproute().link_lookup(ifname=ifname)
    return found[0] if found else None


@_in_netlink_thread
def list_links(prefixes: Iterable[str] = IFACE_PREFIXES,
               kinds: Container[str] = ("bridge", "veth")) -> dict[str, str]:
    """name -> kind of the host's links whose names start with one of prefixes."""
    out: dict[str, str] = {}
    links = _iproute().get_links()
    for link in links:
        name = link.get_attr("IFLA_IFNAME") or ""
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if isinstance(kind, str) and kind in kinds and name.startswith(tuple(prefixes)):
            out[name] = kind
    return out


# --------------------------------------------------------------- the store

class Networks:
    """The networks and leases of one state root."""

    def __init__(self, root: str, containers_dir: str | None = None):
        self.root = os.path.abspath(root)
        self.dir = os.path.join(self.root, "networks")
        self.containers_dir = containers_dir or os.path.join(self.root, "containers")
        self.rid = root_id(self.root)
        self.table = table_name(self.root)
        self.lock_path = os.path.join(self.dir, "lock")
        self.leases_path = os.path.join(self.dir, "leases.json")

    # --------------------------------------------------------- records
    def _path(self, name: str) -> str:
        return os.path.join(self.dir, "nets", f"{name}.json")

    def _make_dir(self) -> None:
        try:
            private_dir(self.dir)
            private_dir(os.path.join(self.dir, "nets"))
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"make {self.dir}") from None

    def _records(self) -> dict[str, NetworkRecord]:
        out: dict[str, NetworkRecord] = {}
        try:
            names = sorted(os.listdir(os.path.join(self.dir, "nets")))
        except FileNotFoundError:
            return out
        for n in names:
            if n.endswith(".json"):
                rec: NetworkRecord | None = read_json(os.path.join(self.dir, "nets", n))   # or garbage:
                if isinstance(rec, dict) and rec.get("name") == n[:-5]:                   # skipped
                    out[rec["name"]] = rec
        return out

    def _leases(self) -> dict[str, Lease]:
        leases: dict[str, Lease] | None = read_json(self.leases_path, {})      # or garbage: ignored
        return leases if isinstance(leases, dict) else {}

    def _default_bridge(self) -> str:
        name = os.environ.get("TERRARIUM_BRIDGE")
        if name:
            if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,15}", name, re.ASCII):
                raise InvalidArgument(f"invalid TERRARIUM_BRIDGE {name!r}: an interface name of 1-15 characters")
            return name
        return "terrarium0" if is_default_root(self.root) else f"tb{self.rid}0"

    # --------------------------------------------------------- networks
    @_in_netlink_thread
    def create(self, name: str, subnet: str | None = None, mtu: int | None = None,
               nat: bool = False) -> NetworkView:
        """Make a network: its record, its bridge with the gateway address, its
        nftables rules.  subnet None: the first free /16 of AUTO_SUBNETS."""
        check_network_name(name)
        self._make_dir()
        with locked(self.lock_path):
            self._sweep_locked()
            if name in self._records():
                raise Conflict(f"network {name!r} already exists")
            rec = self._create_locked(name, subnet, mtu, nat)
            self._sync_nft_locked()
        return self.inspect(rec["name"])

    def _create_locked(self, name: str, subnet: str | None, mtu: int | None, nat: bool) -> NetworkRecord:
        mtu = DEFAULT_MTU if mtu is None else mtu
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 65535:
            raise InvalidArgument(f"invalid MTU {mtu!r}: 576 to 65535")
        if subnet is not None:
            try:
                net = ipaddress.IPv4Network(subnet, strict=False)
            except ValueError:
                raise InvalidArgument(f"invalid subnet {ascii(subnet)[:60]}: use an IPv4 CIDR "
                                      "such as 10.89.0.0/16") from None
            if not 8 <= net.prefixlen <= 28 or not net.is_private:
                raise InvalidArgument(f"invalid subnet {net}: a private range from /8 to /28")
        if name == DEFAULT_NETWORK:
            bridge = self._default_bridge()
            subnet = subnet or os.environ.get("TERRARIUM_SUBNET") or None
        else:
            bridge = f"tb{self.rid}{os.urandom(3).hex()}"
        with locked(GLOBAL_LOCK):              # other roots choose subnets too
            taken = _host_routes() + [ipaddress.IPv4Network(r["subnet"]) for r in self._records().values()]
            if subnet is None:
                free = next((ipaddress.IPv4Network(c) for c in AUTO_SUBNETS
                             if not any(ipaddress.IPv4Network(c).overlaps(t) for t in taken)), None)
                if free is None:
                    raise Conflict("no free subnet for a new network: give one with --subnet")
                net = free
            else:
                net = ipaddress.IPv4Network(subnet, strict=False)
                clash = next((t for t in taken if net.overlaps(t)), None)
                if clash is not None:
                    raise Conflict(f"subnet {net} overlaps {clash}, already routed on this host")
            rec: NetworkRecord = {"name": name, "id": os.urandom(32).hex(), "bridge": bridge, "subnet": str(net),
                   "gateway": str(net.network_address + 1), "mtu": mtu, "nat": bool(nat),
                   "created_at": time.time()}
            self._ensure_bridge(rec)
            write_json(self._path(name), rec, durable=True)
        return rec

    def _ensure_bridge(self, rec: NetworkRecord) -> None:
        """The network's bridge, up, with the gateway address (made again after a reboot)."""
        NetlinkError = pyroute2().NetlinkError
        net = ipaddress.IPv4Network(rec["subnet"])
        try:
            ipr = _iproute()
            found = ipr.link_lookup(ifname=rec["bridge"])
            if not found:
                ipr.link("add", ifname=rec["bridge"], kind="bridge", mtu=rec["mtu"])
                found = ipr.link_lookup(ifname=rec["bridge"])
            idx = found[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
            if rec["gateway"] not in have:
                ipr.addr("add", index=idx, address=rec["gateway"], prefixlen=net.prefixlen)
            ipr.link("set", index=idx, state="up")
        except NetlinkError as e:
            raise _netlink_error(e, f"set up bridge {rec['bridge']} for network {rec['name']!r}") from None
        # Published ports on 127.0.0.1 are DNATed to the container: the kernel
        # routes a loopback source out of this bridge only with route_localnet
        # (the nftables table drops 127/8 coming *in* from the bridge).
        try:
            with open(f"/proc/sys/net/ipv4/conf/{rec['bridge']}/route_localnet", "w") as f:
                f.write("1")
        except OSError:
            pass

    def _delete_bridge(self, bridge: str) -> None:
        NetlinkError = pyroute2().NetlinkError
        ipr = _iproute()
        found = ipr.link_lookup(ifname=bridge)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise _netlink_error(e, f"delete bridge {bridge}") from None

    @_in_netlink_thread
    def ensure(self, name: str) -> NetworkRecord:
        """The network's record, the default one made on first use; its bridge up."""
        self._make_dir()
        with locked(self.lock_path):
            return self._ensure_locked(name)

    def _ensure_locked(self, name: str) -> NetworkRecord:
        rec = self._records().get(name)
        if rec is None:
            if name != DEFAULT_NETWORK:
                raise NotFound(f"network {name!r} not found")
            rec = self._create_locked(name, None, None, False)
            self._sync_nft_locked()
        elif _link_index(rec["bridge"]) is None:
            with locked(GLOBAL_LOCK):
                self._ensure_bridge(rec)
        return rec

    @_in_netlink_thread
    def list(self) -> builtins.list[NetworkView]:
        self._sweep()
        leases = self._leases()
        return [self._view(rec, leases) for rec in self._records().values()]

    @_in_netlink_thread
    def inspect(self, name: str) -> NetworkView:
        rec = self._records().get(name)
        if rec is None:
            raise NotFound(f"network {name!r} not found")
        return self._view(rec, self._leases())

    def _view(self, rec: NetworkRecord, leases: dict[str, Lease]) -> NetworkView:
        members: builtins.list[Member] = [
            {"id": cid, "name": lease["name"], "address": lease["address"],
             "veth": veth_name(self.root, cid), "ports": lease.get("ports", [])}
            for cid, lease in sorted(leases.items(), key=lambda kv: kv[1]["address"])
            if lease.get("network") == rec["name"]]
        return {**rec, "table": self.table, "containers": members,
                "bridge_up": _link_index(rec["bridge"]) is not None}

    @_in_netlink_thread
    def remove(self, name: str) -> None:
        """Remove a network: refused while a container has an address on it."""
        check_network_name(name)
        self._make_dir()
        with locked(self.lock_path):
            self._sweep_locked()
            rec = self._records().get(name)
            if rec is None:
                raise NotFound(f"network {name!r} not found")
            users = [lease["name"] for lease in self._leases().values() if lease.get("network") == name]
            if users:
                raise Conflict(f"network {name!r} is in use by container {', '.join(map(repr, users[:3]))}"
                               f"{' and more' if len(users) > 3 else ''}: remove them first")
            os.unlink(self._path(name))
            self._delete_bridge(rec["bridge"])
            self._sync_nft_locked()

    # --------------------------------------------------------- leases
    @_in_netlink_thread
    def lease(self, cid: str, cname: str, hostname: str, network: str,
              ports: Iterable[object] = ()) -> LeaseView:
        """The container's lease on network (made on its first start, the same
        one after): {network, address, prefixlen, gateway, bridge, mtu, ports}.
        Writes the hosts files of every container on that network."""
        self._make_dir()
        with locked(self.lock_path):
            self._sweep_locked()
            rec = self._ensure_locked(network)
            leases = self._leases()
            lease = leases.get(cid)
            if lease is not None and lease.get("network") != network:
                del leases[cid]
                lease = None
            if lease is None:
                parsed = [parse_port(p) for p in ports]
                self._check_ports_free(cid, parsed, leases)
                lease = {"network": network, "address": self._free_address(rec, leases), "name": cname,
                         "hostname": hostname, "ports": parsed, "at": time.time()}
                leases[cid] = lease
                write_json(self.leases_path, leases)
                if parsed:
                    self._sync_nft_locked(leases)
            self._write_hosts_locked(network, leases)
        net = ipaddress.IPv4Network(rec["subnet"])
        return {**lease, "prefixlen": net.prefixlen, "gateway": rec["gateway"], "bridge": rec["bridge"],
                "mtu": rec["mtu"]}

    def _check_ports_free(self, cid: str, ports: builtins.list[PortMap], leases: dict[str, Lease]) -> None:
        for p in ports:
            for other, lease in leases.items():
                for q in lease.get("ports", []):
                    if (other != cid and q["proto"] == p["proto"] and q["host_port"] == p["host_port"]
                            and (not q["host_ip"] or not p["host_ip"] or q["host_ip"] == p["host_ip"])):
                        raise Conflict(f"port {format_port(p)}: host port {p['host_port']}/{p['proto']} is "
                                       f"already published by container {lease['name']!r}")

    @staticmethod
    def _free_address(rec: NetworkRecord, leases: dict[str, Lease]) -> str:
        net = ipaddress.IPv4Network(rec["subnet"])
        used = {lease["address"] for lease in leases.values() if lease.get("network") == rec["name"]}
        used.add(rec["gateway"])
        for addr in net.hosts():
            if str(addr) not in used:
                return str(addr)
        raise Conflict(f"network {rec['name']!r} has no free address left ({net})")

    @_in_netlink_thread
    def release(self, cid: str) -> bool:
        """Free the container's lease (its removal); False if it had none."""
        if not os.path.isdir(self.dir):
            return False
        with locked(self.lock_path):
            leases = self._leases()
            lease = leases.pop(cid, None)
            if lease is None:
                return False
            write_json(self.leases_path, leases)
            if lease.get("ports"):
                self._sync_nft_locked(leases)
            self._write_hosts_locked(lease["network"], leases)
        return True

    def lease_of(self, cid: str) -> Lease | None:
        return self._leases().get(cid)

    # --------------------------------------------------------- /etc/hosts
    def _write_hosts_locked(self, network: str, leases: dict[str, Lease]) -> None:
        """Each container on network gets a hosts file naming all of them.

        Rewritten in place (not renamed over): init bind-mounts the file, and
        a bind mount follows the inode."""
        members = [(cid, lease) for cid, lease in leases.items() if lease.get("network") == network]
        for cid, lease in members:
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"{lease['address']}\t{' '.join(dict.fromkeys([lease['hostname'], lease['name']]))}"]
            lines += [f"{o['address']}\t{o['name']}" for ocid, o in members if ocid != cid]
            _rewrite(os.path.join(self.containers_dir, cid, "hosts"), "\n".join(lines) + "\n")

    def write_resolv(self, cdir: str) -> str:
        """The container's resolv.conf: the host's, without loopback name servers
        (they would be the container's own loopback)."""
        try:
            with open("/etc/resolv.conf") as f:
                host = f.read().splitlines()
        except OSError:
            host = []
        lines = [line for line in host
                 if not re.match(r"\s*nameserver\s+(127\.|::1\b)", line)]
        path = os.path.join(cdir, "resolv.conf")
        _rewrite(path, "\n".join(lines) + "\n" if lines else "")
        return path

    # --------------------------------------------------------- the veth
    @_in_netlink_thread
    def attach(self, pid: int, cid: str, lease: LeaseView) -> str:
        """Join init `pid`'s namespace to the lease's bridge: a veth pair, the
        host end on the bridge, `eth0` inside with the address, MTU and default
        route.  Returns the host end's name."""
        NetlinkError = pyroute2().NetlinkError
        host_end = veth_name(self.root, cid)
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr = _iproute()
            bridge = ipr.link_lookup(ifname=lease["bridge"])
            if not bridge:
                raise KernelError(errno.ENODEV, f"bridge {lease['bridge']} of network {lease['network']!r} is gone")
            stale = ipr.link_lookup(ifname=host_end)
            if stale:                      # a run whose namespace is still being torn down
                try:
                    ipr.link("del", index=stale[0])
                except NetlinkError:
                    pass
            ipr.link("add", ifname=host_end, kind="veth", mtu=lease["mtu"],
                     peer={"ifname": "eth0", "net_ns_fd": nsfd, "mtu": lease["mtu"]})
            idx = ipr.link_lookup(ifname=host_end)[0]
            ipr.link("set", index=idx, master=bridge[0], state="up")
            inside = _ipr_in(nsfd)
            try:
                eth0 = inside.link_lookup(ifname="eth0")[0]
                inside.addr("add", index=eth0, address=lease["address"], prefixlen=lease["prefixlen"])
                inside.link("set", index=eth0, state="up")
                inside.route("add", dst="0.0.0.0/0", gateway=lease["gateway"])
            finally:
                inside.close()
        except NetlinkError as e:
            raise _netlink_error(e, f"connect the container to network {lease['network']!r}") from None
        finally:
            os.close(nsfd)
        return host_end

    # --------------------------------------------------------- sweep
    @_in_netlink_thread
    def sweep(self) -> builtins.list[str]:
        """Free the leases of containers that are gone, and bring the nftables
        table in line with what is left.  Returns what was removed."""
        if not os.path.isdir(self.dir):
            return []
        return self._sweep()

    def _sweep(self) -> builtins.list[str]:
        if not os.path.isdir(self.dir):
            return []
        with locked(self.lock_path):
            return self._sweep_locked()

    def _sweep_locked(self) -> builtins.list[str]:
        leases = self._leases()
        gone = [cid for cid in leases
                if not os.path.lexists(os.path.join(self.containers_dir, cid, "config.json"))]
        if not gone:
            return []
        networks = {leases[cid]["network"] for cid in gone}
        out = [f"lease {leases[cid]['address']} of gone container {cid[:12]}" for cid in gone]
        had_ports = any(leases[cid].get("ports") for cid in gone)
        for cid in gone:
            del leases[cid]
        write_json(self.leases_path, leases)
        if had_ports:
            self._sync_nft_locked(leases)
        for n in networks:
            self._write_hosts_locked(n, leases)
        return out

    @_in_netlink_thread
    def remove_all(self) -> None:
        """Every network of this root (tests, benchmarks): leases first."""
        if not os.path.isdir(self.dir):
            return
        with locked(self.lock_path):
            write_json(self.leases_path, {})
            for name, rec in self._records().items():
                os.unlink(self._path(name))
                self._delete_bridge(rec["bridge"])
            self._sync_nft_locked({})

    # --------------------------------------------------------- nftables
    def nft_rules(self, leases: dict[str, Lease] | None = None) -> str:
        """The whole table as `nft -f` reads it ("" when nothing needs one)."""
        leases = self._leases() if leases is None else leases
        records = self._records()
        if not records:
            return ""
        pre: builtins.list[str] = []
        out: builtins.list[str] = []
        post: builtins.list[str] = []
        fwd: builtins.list[str] = []
        guard: builtins.list[str] = []
        bridges = ", ".join(f'"{rec["bridge"]}"' for rec in records.values())
        for rec in records.values():
            br = rec["bridge"]
            # containers on one network reach each other through the bridge;
            # nothing is routed from one of our bridges into another
            fwd.append(f'iifname "{br}" oifname != "{br}" oifname {{ {bridges} }} drop')
            guard.append(f'iifname "{br}" ip daddr 127.0.0.0/8 drop')
            post.append(f'ip saddr 127.0.0.0/8 oifname "{br}" masquerade')
            if rec.get("nat"):
                post.append(f'ip saddr {rec["subnet"]} oifname != "{br}" masquerade')
        for cid, lease in sorted(leases.items()):
            for p in lease.get("ports", []):
                match = f'ip daddr {p["host_ip"]}' if p["host_ip"] else "fib daddr type local"
                rule = (f'{match} {p["proto"]} dport {p["host_port"]} '
                        f'dnat ip to {lease["address"]}:{p["container_port"]} comment "{cid[:12]}"')
                pre.append(rule)
                out.append(rule)
        t = f"inet {self.table}"

        def chain(name: str, hook: str, rules: builtins.list[str]) -> str:
            return f"  chain {name} {{\n    {hook}\n" + "".join(f"    {r}\n" for r in rules) + "  }\n"
        return (f"table {t} {{\n"
                + chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre)
                + chain("output", "type nat hook output priority -100; policy accept;", out)
                + chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post)
                + chain("forward", "type filter hook forward priority filter; policy accept;", fwd)
                + chain("guard", "type filter hook prerouting priority raw; policy accept;", guard)
                + "}\n")

    def _sync_nft_locked(self, leases: dict[str, Lease] | None = None) -> None:
        """Replace our table with nft_rules() in one transaction (or delete it)."""
        body = self.nft_rules(leases)
        t = f"inet {self.table}"
        script = f"table {t}\ndelete table {t}\n{body}"
        try:
            r = subprocess.run([nft_path(), "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
        except (FileNotFoundError, PermissionError):
            # Without nftables a network still works, but nothing keeps two
            # networks apart when the host forwards; published ports go
            # through each container's userland forwarder (runtime/portfwd.py).
            return
        if r.returncode != 0:
            raise TerrariumError(f"nft refused the rules of table {t}: {r.stderr.strip().splitlines()[:1]}")

    def nft_table_exists(self) -> bool:
        try:
            r = subprocess.run([nft_path(), "list", "table", "inet", self.table], capture_output=True, text=True)
        except (FileNotFoundError, PermissionError):
            return False
        return r.returncode == 0


def _rewrite(path: str, text: str) -> None:
    """Replace a file's content keeping its inode (it may be bind-mounted)."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


@_in_netlink_thread
def read_namespace(pid: int) -> NamespaceView:
    """Interfaces, addresses and routes as seen inside pid's network namespace."""
    nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr = _ipr_in(nsfd)
    finally:
        os.close(nsfd)
    try:
        links: list[NsLink] = []
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or {}
            links.append({"index": link["index"], "name": link.get_attr("IFLA_IFNAME"),
                          "mtu": link.get_attr("IFLA_MTU"), "state": link.get_attr("IFLA_OPERSTATE"),
                          "mac": link.get_attr("IFLA_ADDRESS"),
                          "rx_bytes": stats.get("rx_bytes"), "tx_bytes": stats.get("tx_bytes")})
        addrs: list[NsAddress] = [
            {"index": a["index"], "address": a.get_attr("IFA_ADDRESS"), "prefixlen": a["prefixlen"]}
            for a in ipr.get_addr()]
        routes: list[NsRoute] = [
            {"dst": f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}",
             "gateway": r.get_attr("RTA_GATEWAY"), "oif": r.get_attr("RTA_OIF")}
            for r in ipr.get_routes(family=socket.AF_INET, table=254)]     # main, as `ip route`
    finally:
        ipr.close()
    return {"links": links, "addresses": addrs, "routes": routes}

