"""One parser per /proc/<pid> file: stat, status, cgroup, mountinfo and the
ns links, and the few reads of them the runtime's hot paths make.

The parsers are pure (text in, value out) and tested from strings
(tests/runtime/test_pidinfo.py); procs.py builds process trees and the lsns
view on them, cgroups/ finds the hierarchies with parse_mountinfo, overlay.py
reads a container's root mount with it.  Kept apart from linux.py and from
procs.py so that status reads (every `terrarium ps`, every dashboard refresh)
and the shims, which import this, load neither ctypes nor dataclasses.
"""
from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterable

from .errors import InvalidArgument

# The types lsns lists; *_for_children links are the same namespaces again.
NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


# --- reading ------------------------------------------------------------------

def read_text(path: str) -> str | None:
    """A small kernel file's text, read to its end; None when it cannot be
    read (the process or cgroup is gone).  os.open and os.read, not open():
    a text-mode open() builds a FileIO, a buffer and a decoder for each file,
    which cost more than the syscalls on discovery's per-container reads
    (cgroup.procs, status, cgroup; bench/README.md, docker_bench).  Read
    until an empty read: a seq_file may answer with less than was asked
    before its end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 65536)
        while data and (more := os.read(fd, 65536)):
            data += more
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


# --- /proc/<pid>/stat ---------------------------------------------------------

StatFields = namedtuple("StatFields", "pid comm state ppid flags utime stime threads start_ticks rss_pages")
StatFields.__doc__ = """The fields of /proc/<pid>/stat we use: proc(5) numbers 1, 2
(raw: may hold spaces and ')'), 3, 4, 9, 14 and 15 (clock ticks), 20, 22
(ticks after boot) and 24 (pages)."""


def _stat_rest(text: str) -> tuple[int, list[str]]:
    """comm is cut at the *last* ')' since it may contain any byte but NUL
    (fs/proc/array.c: do_task_stat prints it unescaped).  Returns the index
    of that ')' and the fields after it (rest[0] is field 3)."""
    rpar = text.rindex(")")
    return rpar, text[rpar + 2:].split()


def parse_stat(text: str) -> StatFields:
    """/proc/<pid>/stat -> StatFields."""
    try:
        lpar = text.index("(")
        rpar, rest = _stat_rest(text)
        def f(n: int) -> int:                   # proc(5) field numbers
            return int(rest[n - 3])
        return StatFields(pid=int(text[:lpar]), comm=text[lpar + 1:rpar], state=rest[0],
                          ppid=f(4), flags=f(9), utime=f(14), stime=f(15), threads=f(20),
                          start_ticks=f(22), rss_pages=f(24))
    except (ValueError, IndexError):
        raise InvalidArgument(f"not a /proc/<pid>/stat line: {text[:80]!r}") from None


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid it
    names one process for its whole life, so a recycled pid is not mistaken
    for ours.  None when the process is gone (or a zombie: it has finished,
    only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    _, rest = _stat_rest(text)
    return None if rest[0] == "Z" else int(rest[19])


# --- /proc/<pid>/status -------------------------------------------------------

def parse_status(text: str, keys: Iterable[str] | None = None) -> dict[str, str]:
    """/proc/<pid>/status -> {key: raw line}, e.g. {"NSpid": "NSpid:\\t123\\t1"}.
    With ``keys``, only those (absent ones left out): finding six keys in the
    ~57 lines is 3x cheaper than splitting them all."""
    out = {}
    if keys is None:
        for line in text.splitlines():
            key, sep, _ = line.partition(":")
            if sep:
                out[key] = line
        return out
    for key in keys:
        head = key + ":"
        if text.startswith(head):
            i = 0
        else:
            i = text.find("\n" + head) + 1
            if not i:
                continue
        j = text.find("\n", i)
        out[key] = text[i:] if j < 0 else text[i:j]
    return out


def status_value(line: str) -> str:
    """"VmRSS:\\t    1712 kB" -> "1712 kB"."""
    return line.partition(":")[2].strip()


def parse_nspid(line: str) -> tuple[int, ...]:
    """"NSpid:\\t4711\\t1" -> (4711, 1)."""
    return tuple(int(v) for v in status_value(line).split())


def parse_uid(line: str) -> int:
    """"Uid:\\treal\\teffective\\tsaved\\tfs" -> the effective uid (ps's USER)."""
    return int(status_value(line).split()[1])


def parse_kb(line: str) -> int:
    """"VmRSS:\\t    1712 kB" -> bytes."""
    value, _, unit = status_value(line).partition(" ")
    if unit.strip() != "kB":
        raise InvalidArgument(f"expected a kB value: {line!r}")
    return int(value) * 1024


def parse_sigmask(line: str) -> int:
    """"SigCgt:\\t0000000000004002" -> the mask; bit N-1 is signal N."""
    return int(status_value(line), 16)


def catches_signal(pid: int, sig: int) -> bool | None:
    """Whether pid has a handler for sig (SigCgt); None when that cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = parse_status(f.read(), ("SigCgt",)).get("SigCgt")
        return None if line is None else bool(parse_sigmask(line) & (1 << (sig - 1)))
    except (OSError, ValueError):
        return None


# --- /proc/<pid>/cgroup -------------------------------------------------------

def parse_cgroup(text: str) -> dict[str, str]:
    """``4:memory:/a/b`` lines -> {"memory": "/a/b"}; the v2 line ``0::/x`` is key ""."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        for c in (ctrls.split(",") if ctrls else [""]):
            out[c] = path
    return out


def memory_cgroup(text: str) -> str | None:
    """The memory cgroup in a /proc/<pid>/cgroup: v1's ``N:memory:/x``, else v2's ``0::/x``."""
    paths = parse_cgroup(text)
    return paths.get("memory", paths.get(""))


def memory_cgroup_of(pid: int) -> str | None:
    """memory_cgroup() of a live process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return memory_cgroup(f.read())
    except OSError:
        return None


# --- /proc/<pid>/mountinfo ----------------------------------------------------

MountInfo = namedtuple("MountInfo", "mount_id parent_id root mount_point mount_options "
                                    "fstype source super_options line")
MountInfo.__doc__ = """One mountinfo line.  Paths are unescaped; mount_options and
super_options stay the raw comma-separated text (overlay's lowerdir carries
escapes of its own, see overlay.parse_super_options)."""


def unescape_octal(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (fs/proc_namespace.c)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        digits = field[i + 1:i + 4]
        if c == "\\" and len(digits) == 3 and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo_line(line: str) -> MountInfo | None:
    """Format (proc(5)): ``id parent maj:min root mount_point mount_opts
    [optional fields...] - fstype source super_opts``; the optional fields
    end at a lone "-".  None for a line that is not one."""
    fields = line.split()
    try:
        sep = fields.index("-", 6)
        return MountInfo(int(fields[0]), int(fields[1]), unescape_octal(fields[3]),
                         unescape_octal(fields[4]), fields[5], fields[sep + 1],
                         unescape_octal(fields[sep + 2]),
                         fields[sep + 3] if len(fields) > sep + 3 else "", line)
    except (ValueError, IndexError):
        return None


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Every mount of a mountinfo text, in order (lines that are not one skipped)."""
    return [m for m in map(parse_mountinfo_line, text.splitlines()) if m is not None]


# --- /proc/<pid>/ns/* ---------------------------------------------------------

def parse_ns_link(target: str) -> tuple[str, int]:
    """readlink of /proc/<pid>/ns/<type>: "net:[4026531833]" -> ("net", 4026531833)."""
    kind, sep, rest = target.partition(":[")
    if not sep or not rest.endswith("]"):
        raise InvalidArgument(f"not a namespace link: {target!r}")
    return kind, int(rest[:-1])


def namespace_inodes(pid: int, proc: str = "/proc") -> dict[str, int]:
    """{type: inode} of every namespace pid is in (those this kernel has).
    readlink, not stat: 1.5-2x cheaper, as procs.py measured."""
    out = {}
    for ns in NS_TYPES:
        try:
            out[ns] = parse_ns_link(os.readlink(f"{proc}/{pid}/ns/{ns}"))[1]
        except (OSError, InvalidArgument):
            pass
    return out


# --- /proc/<pid>/net/{tcp,tcp6,udp,udp6} ----------------------------------------
# The sockets of the network namespace pid is in (/proc/net is the reader's own
# namespace: psutil.net_connections() reads that one, so it never sees a
# container's).  Addresses are hex in the kernel's byte order, word by word.

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
Socket = namedtuple("Socket", "proto local remote state inode")


def _hex_endpoint(field: str) -> str:
    addr, _, port = field.partition(":")
    raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))
    import ipaddress
    ip = ipaddress.ip_address(raw)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{int(port, 16)}" if ip.version == 6 else f"{ip}:{int(port, 16)}"


def parse_net_sockets(text: str, proto: str) -> list[Socket]:
    """/proc/<pid>/net/tcp (or tcp6, udp, udp6) -> Sockets.  UDP's "state" is
    CLOSE when unconnected (listening, for a server), ESTABLISHED when connected."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            state = TCP_STATES.get(int(f[3], 16), f[3])
            if proto.startswith("udp") and state == "CLOSE":
                state = "UNCONN"
            out.append(Socket(proto, _hex_endpoint(f[1]), _hex_endpoint(f[2]), state, int(f[9])))
        except ValueError:
            continue
    return out


def net_sockets(pid: int, proc: str = "/proc") -> list[Socket]:
    """Every TCP and UDP socket of pid's network namespace; [] if it is gone."""
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"{proc}/{pid}/net/{proto}") as f:
                out += parse_net_sockets(f.read(), proto)
        except OSError:
            continue
    return out
