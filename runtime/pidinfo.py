"""Which process a pid is, and its namespaces: read from /proc, no ctypes.

Kept apart from linux.py so that status reads (every `terrarium ps`, every
dashboard refresh) do not load ctypes and libc.
"""
from __future__ import annotations

import os


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid it
    names one process for its whole life, so a recycled pid is not mistaken
    for ours.  None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and ')' — split after the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] == b"Z":     # a zombie has finished; only its parent's wait is missing
        return None
    return int(rest[19])


NAMESPACES = ("ipc", "mnt", "net", "pid", "uts", "cgroup", "user")


def namespace_inodes(pid: int) -> dict[str, int]:
    out = {}
    for ns in NAMESPACES:
        try:
            out[ns] = os.stat(f"/proc/{pid}/ns/{ns}").st_ino
        except OSError:
            pass
    return out
