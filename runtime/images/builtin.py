"""The built-in images, made on this machine from Debian's busybox-static.

- `busybox`: one layer holding /bin/busybox, a symlink for each applet
  `busybox --list-full` names, and a minimal /etc.
- `lab`: the busybox layer plus a small layer of teaching tools in
  /usr/local/bin: memhog, cpuburn, spawn; and /etc/motd.

The tars are deterministic (fixed mtimes, sorted entries, uid 0, no user
names), so the same busybox binary always gives the same layer digests and
both images share one busybox layer directory.
"""
from __future__ import annotations

import io
import re
import struct
from typing import TYPE_CHECKING, NamedTuple

from ..errors import InvalidArgument, NotFound
from ..model import ImageConfig

if TYPE_CHECKING:
    from collections.abc import Collection

    from .store import ImageStore

BUSYBOX = "/bin/busybox"
MTIME = 1672531200          # 2023-01-01T00:00:00Z, for every entry
_INSTALL = "install it with `apt-get install busybox-static`"

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# name -> mode; parents of applet links are added as 0755
DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
        "root": 0o700, "run": 0o755, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777,
        "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "usr/local": 0o755,
        "usr/local/bin": 0o755, "var": 0o755}

MEMHOG = r"""#!/bin/sh
# memhog STEP_MB STEPS [SLEEP]: grow resident memory by STEP_MB every SLEEP
# seconds (default 1), STEPS times, then hold it until killed.
# The memory is anonymous memory of `tail -c`, which keeps the last N bytes
# of its input in a buffer: it is charged to the cgroup and can't be reclaimed
# without swap, so a memory limit ends in an OOM kill.
step=${1:?usage: memhog STEP_MB STEPS [SLEEP]}
steps=${2:?usage: memhog STEP_MB STEPS [SLEEP]}
pause=${3:-1}
total=$((step * steps))
echo "memhog: $steps steps of ${step} MB, every ${pause}s (pid $$)"
{
    i=1
    while [ "$i" -le "$steps" ]; do
        head -c "${step}m" /dev/zero
        echo "memhog: $((i * step)) MB" >&2
        sleep "$pause"
        i=$((i + 1))
    done
    echo "memhog: holding ${total} MB" >&2
    while kill -0 $$ 2>/dev/null; do sleep 1; done   # until memhog itself is killed
} | tail -c "${total}m" >/dev/null
"""

CPUBURN = r"""#!/bin/sh
# cpuburn [N]: keep N CPUs busy (default 1) until killed.
n=${1:-1}
echo "cpuburn: $n busy loop(s) (pid $$)"
pids=
i=1
while [ "$i" -lt "$n" ]; do
    ( while :; do :; done ) &
    pids="$pids $!"
    i=$((i + 1))
done
trap 'kill $pids 2>/dev/null; exit 0' INT TERM
while :; do :; done
"""

SPAWN = r"""#!/bin/sh
# spawn N [SECONDS]: start N sleeping processes (default 600 s) and wait;
# against a pids limit, forks start failing.
n=${1:?usage: spawn N [SECONDS]}
secs=${2:-600}
i=0
while [ "$i" -lt "$n" ]; do
    sleep "$secs" &
    i=$((i + 1))
done
echo "spawn: started $n sleeps"
wait
"""

MOTD = """Welcome to the Terrarium lab image.

  memhog STEP_MB STEPS [SLEEP]   grow memory step by step and hold it
  cpuburn [N]                    keep N CPUs busy
  spawn N [SECONDS]              start N sleeping processes

Watch what the kernel does about it in the dashboard.
"""

LAB_FILES = {"usr/local/bin/memhog": MEMHOG, "usr/local/bin/cpuburn": CPUBURN,
             "usr/local/bin/spawn": SPAWN}


class _Entry(NamedTuple):
    """One member of a built-in layer's tar."""
    kind: str               # "file", "symlink" or "dir"
    mode: int
    data: bytes = b""       # a file's content
    linkname: str = ""      # a symlink's target


def ensure(store: ImageStore, busybox: str = BUSYBOX) -> None:
    """Build whichever built-in image is missing; two stats when both exist."""
    import os
    missing = [n for n in ("busybox", "lab") if not os.path.exists(store._image_path(n))]
    if missing:
        with store.lock():                # a gc must not take the base layer before its image
            missing = [n for n in missing if not os.path.exists(store._image_path(n))]
            if missing:
                build(store, busybox, only=missing)


def build(store: ImageStore, busybox: str = BUSYBOX,
          only: Collection[str] = ("busybox", "lab")) -> None:
    """(Re)build the built-in images into `store`."""
    data, applets, version = _read_busybox(busybox)
    base = store.add_layer_from_tar(io.BytesIO(busybox_tar(data, applets)),
                                    created_by=f"busybox-static {version} from Debian")
    config = ImageConfig(cmd=("sh",))
    if "busybox" in only:
        store.add_image("busybox", [base.digest], config)
    if "lab" in only:
        lab = store.add_layer_from_tar(io.BytesIO(lab_tar()),
                                       created_by="terrarium lab tools: memhog, cpuburn, spawn, motd")
        store.add_image("lab", [base.digest, lab.digest], config)


def busybox_tar(data: bytes, applets: list[str]) -> bytes:
    """The busybox layer: the binary, applet symlinks, a minimal tree."""
    entries: dict[str, _Entry] = {}
    for d, mode in DIRS.items():
        entries[d] = _Entry("dir", mode)
    for path in applets:
        entries[path] = _Entry("symlink", 0o777, linkname="/bin/busybox")
        parent = path.rpartition("/")[0]
        while parent and parent not in entries:
            entries[parent] = _Entry("dir", 0o755)
            parent = parent.rpartition("/")[0]
    entries["bin/busybox"] = _Entry("file", 0o755, data)
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP), ("etc/hostname", ""),
                       ("etc/hosts", HOSTS)):
        entries[name] = _Entry("file", 0o644, text.encode())
    return _tar(entries)


def lab_tar() -> bytes:
    entries = {d: _Entry("dir", DIRS[d]) for d in ("etc", "usr", "usr/local", "usr/local/bin")}
    for name, text in LAB_FILES.items():
        entries[name] = _Entry("file", 0o755, text.encode())
    entries["etc/motd"] = _Entry("file", 0o644, MOTD.encode())
    return _tar(entries)


def _tar(entries: dict[str, _Entry]) -> bytes:
    from .tarsafe import open_writer, sort_key, tarinfo
    buf = io.BytesIO()
    with open_writer(buf) as tf:
        for name in sorted(entries, key=sort_key):
            e = entries[name]
            if e.kind == "file":
                tf.addfile(tarinfo(name, "file", mode=e.mode, mtime=MTIME, size=len(e.data)),
                           io.BytesIO(e.data))
            elif e.kind == "symlink":
                tf.addfile(tarinfo(name, "symlink", mode=e.mode, mtime=MTIME, linkname=e.linkname))
            else:
                tf.addfile(tarinfo(name, "dir", mode=e.mode, mtime=MTIME))
    return buf.getvalue()


def _read_busybox(path: str) -> tuple[bytes, list[str], str]:
    """(binary, applet paths, Debian version) of a static busybox, or a clear error."""
    import subprocess
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFound(f"{path} not found: the built-in images need Debian's busybox-static; "
                       f"{_INSTALL}") from None
    if _is_dynamic(data):
        raise InvalidArgument(f"{path} is dynamically linked and won't run inside a container; "
                              f"{_INSTALL}")
    try:
        out = subprocess.run([path, "--list-full"], capture_output=True, check=True,
                             timeout=30).stdout.decode()
    except (OSError, subprocess.SubprocessError) as e:
        raise InvalidArgument(f"{path} --list-full failed ({e}); {_INSTALL}") from None
    applets = sorted({a.strip() for a in out.split()} - {"bin/busybox", ""})
    for a in applets:
        if a.startswith("/") or ".." in a.split("/"):
            raise InvalidArgument(f"{path} --list-full gave a strange applet path {a!r}")
    m = re.search(rb"BusyBox v([0-9][0-9A-Za-z.\-]*) \(([^)\n]{0,80})\)", data)
    if m and m.group(2).startswith(b"Debian "):
        version = m.group(2)[7:].decode()
    else:
        version = m.group(1).decode() if m else "unknown"
    return data, applets, version


def _is_dynamic(data: bytes) -> bool:
    """True if the ELF file has a PT_INTERP program header (needs ld.so)."""
    if data[:4] != b"\x7fELF":
        raise InvalidArgument("busybox is not an ELF executable; " + _INSTALL)
    bits, endian = data[4], "<" if data[5] == 1 else ">"
    if bits == 2:
        phoff, = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:           # PT_INTERP
            return True
    return False

