"""Pure parsers for cgroup files' text: str in, value out, no I/O.

Each function takes the text of one kernel file exactly as read and returns
plain values, so the drivers stay thin and every quirk is tested from a
string (tests/runtime/test_cgroup_parse.py).
"""
from __future__ import annotations


# The v1 "unlimited" is PAGE_COUNTER_MAX pages in bytes, rounded down to a
# page: 9223372036854771712 on 64-bit with 4k pages.  Anything this large is
# no limit at all; treat it as None rather than show an exabyte.
UNLIMITED_V1 = 1 << 62

# Controllers a v1 "cgroup" mount can carry in its super options
# (include/linux/cgroup_subsys.h).  Everything else there is a flag
# (rw, xattr, noprefix, clone_children) or a key=value (name=systemd).
V1_CONTROLLERS = frozenset((
    "cpuset", "cpu", "cpuacct", "io", "blkio", "memory", "devices", "freezer",
    "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    "debug",
))

def v1_controllers_of(super_options: str) -> tuple[str, ...]:
    """Controllers bound to a v1 mount, from its super options ("rw,cpu,cpuacct");
    mountinfo itself is parsed by pidinfo.parse_mountinfo."""
    return tuple(o for o in super_options.split(",") if o in V1_CONTROLLERS)


# --- single values

def integer(text: str) -> int:
    return int(text.strip())


def limit_v1(text: str) -> int | None:
    """memory.limit_in_bytes and friends: a byte count, None when unlimited."""
    v = int(text.strip())
    return None if v < 0 or v >= UNLIMITED_V1 else v


def max_or_int(text: str) -> int | None:
    """v2 memory.max, memory.swap.max, pids.max (v1 too): "max" -> None."""
    t = text.strip()
    return None if t == "max" else int(t)


def cpu_max(text: str) -> tuple[int | None, int]:
    """v2 cpu.max ``"50000 100000"`` -> (quota_us, period_us); quota None for "max"."""
    quota, _, period = text.strip().partition(" ")
    return (None if quota == "max" else int(quota)), int(period or 100000)


def quota_v1(text: str) -> int | None:
    """v1 cpu.cfs_quota_us: -1 -> None."""
    v = int(text.strip())
    return None if v < 0 else v


def freezer_state(text: str) -> str:
    """v1 freezer.state: THAWED, FREEZING or FROZEN."""
    return text.strip()


def controllers(text: str) -> tuple[str, ...]:
    """v2 cgroup.controllers / cgroup.subtree_control: ``"cpu io memory"``."""
    return tuple(text.split())


def pids(text: str) -> list[int]:
    """cgroup.procs: one pid a line, possibly repeated (v1 lists per thread group)."""
    return [int(x) for x in text.split()]


# --- key/value files

def flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines: memory.stat, cpu.stat, memory.events, memory.oom_control."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key and value:
            try:
                out[key] = int(value)
            except ValueError:
                pass
    return out


def nested_keyed(text: str) -> dict[str, dict[str, int]]:
    """v2 io.stat: ``8:0 rbytes=1 wbytes=2 ...`` -> {"8:0": {"rbytes": 1, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        row = out.setdefault(fields[0], {})
        for f in fields[1:]:
            k, _, v = f.partition("=")
            try:
                row[k] = int(v)
            except ValueError:
                pass
    return out


def io_stat_bytes(text: str) -> tuple[int, int]:
    """v2 io.stat -> (read bytes, write bytes) summed over devices."""
    rows = nested_keyed(text).values()
    return (sum(r.get("rbytes", 0) for r in rows), sum(r.get("wbytes", 0) for r in rows))


def blkio_bytes(text: str) -> tuple[int, int]:
    """v1 blkio.throttle.io_service_bytes[_recursive] -> (read, write) summed over devices.

    Lines are ``8:0 Read 4096`` ... ``8:0 Total 8192`` and a last ``Total N``.
    """
    read = write = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        if fields[1] == "Read":
            read += int(fields[2])
        elif fields[1] == "Write":
            write += int(fields[2])
    return read, write


def pressure(text: str) -> dict[str, dict[str, float | int]]:
    """<resource>.pressure (PSI): ``some avg10=0.12 avg60=0.05 avg300=0.00 total=1234``
    and a ``full`` line -> {"some": {"avg10": 0.12, ..., "total": 1234}, "full": {...}}.
    Averages are percentages of wall time; total is microseconds stalled."""
    out: dict[str, dict[str, float | int]] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        row = out.setdefault(kind, {})
        for f in fields:
            k, _, v = f.partition("=")
            try:
                row[k] = int(v) if k == "total" else float(v)
            except ValueError:
                pass
    return out


# --- /proc/<pid>/net/dev: not a cgroup file, but a row of the same table
# (runtime/cgroups/figures.py NET): the counters of the network namespace a
# container's processes are in.

# (figure suffix, column) of the receive half and the transmit half: bytes
# packets errs drop (then fifo frame compressed multicast / fifo colls carrier
# compressed, not kept).
NET_DEV_FIELDS = (("bytes", 0), ("packets", 1), ("errors", 2), ("dropped", 3))


def net_dev(text: str) -> dict[str, int]:
    """rx_/tx_ bytes, packets, errors and dropped summed over every interface
    but loopback (traffic a container sends itself is not network traffic;
    cAdvisor leaves lo out too).  No interface but lo: all 0."""
    rx = [0, 0, 0, 0]
    tx = [0, 0, 0, 0]
    for line in text.splitlines()[2:]:              # two header lines
        name, sep, rest = line.partition(":")
        if not sep or name.strip() == "lo":
            continue
        cols = rest.split()
        if len(cols) < 12:
            continue
        for i, (_, col) in enumerate(NET_DEV_FIELDS):
            rx[i] += int(cols[col])
            tx[i] += int(cols[8 + col])
    out = {}
    for i, (what, _) in enumerate(NET_DEV_FIELDS):
        out[f"rx_{what}"], out[f"tx_{what}"] = rx[i], tx[i]
    return out
