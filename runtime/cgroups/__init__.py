"""cgroups: detect how the host mounts them, then drive one container's cgroup.

    from runtime.cgroups import detect, driver
    layout = detect()                   # Layout(kind="hybrid", v1={"memory": ...}, ...)
    cg = driver("terrarium")            # V1Driver here, V2Driver on a pure v2 host
    cg.create(cid, Limits(memory=64 << 20))
    cg.attach(cid, pid); cg.sample(cid); cg.kill_all(cid); cg.remove(cid)

Stdlib only and cheap to import: the fork server imports this.
"""
from __future__ import annotations

import os

from .base import FS, CgroupDriver, Layout, layout_from_mounts
from .v1 import V1Driver
from .v2 import V2Driver
from . import parse
from .record import Sample
from ..pidinfo import parse_mountinfo

__all__ = ["detect", "driver", "Layout", "CgroupDriver", "V1Driver", "V2Driver", "FS", "Sample"]


def detect(mountinfo: str = "/proc/self/mountinfo", *, text: str | None = None,
           fs: FS | None = None) -> Layout:
    """Read the host's cgroup layout from mountinfo (or its ``text``).

    v1 controllers come from each "cgroup" mount's super options (``rw,cpu``,
    ``rw,cpu,cpuacct``); a "cgroup2" mount is the unified tree, and what its
    root offers is read from its cgroup.controllers.  Any v1 controller
    mounted means v1 (or hybrid, with a cgroup2 beside it): those hosts keep
    the real controllers in v1, so the v1 driver is used.
    """
    fs = fs or FS()
    if text is None:
        text = fs.read(mountinfo)
    mounts = parse_mountinfo(text)
    v2_controllers: tuple[str, ...] = ()
    for m in mounts:
        if m.fstype == "cgroup2":
            path = os.path.join(m.mount_point, "cgroup.controllers")
            if fs.exists(path):
                v2_controllers = parse.controllers(fs.read(path))
            break
    return layout_from_mounts(mounts, v2_controllers)


def driver(parent: str = "terrarium", layout: Layout | None = None,
           root_override: str | dict[str, str] | None = None, *, fs: FS | None = None) -> CgroupDriver:
    """The driver for this host (or for a fake tree).

    parent: path relative to the ROOT of every hierarchy (absolute, never
    the caller's own cgroup).  layout: from detect() when not given.
    root_override: point the driver elsewhere, for tests on temp trees --
    a dict {controller: directory} is a set of v1 hierarchies; a string is a
    directory that is either a cgroup2 root (it has cgroup.controllers) or
    holds one v1 hierarchy per controller as <dir>/<controller>.
    """
    fs = fs or FS()
    if isinstance(root_override, dict):
        return V1Driver(root_override, parent, fs)
    if isinstance(root_override, str):
        if layout is None:
            if fs.exists(os.path.join(root_override, "cgroup.controllers")):
                return V2Driver(root_override, parent, fs)
            mounts = {c: os.path.join(root_override, c) for c in os.listdir(root_override)}
            return V1Driver(mounts, parent, fs)
        if layout.kind == "v2":
            return V2Driver(root_override, parent, fs)
        return V1Driver({c: os.path.join(root_override, c) for c in layout.v1}, parent, fs)
    layout = layout or detect(fs=fs)
    if layout.kind == "v2":
        return V2Driver(layout.v2, parent, fs)
    tracking = dict(layout.named)
    if layout.v2:
        tracking[""] = layout.v2                    # "0::/path" in /proc/<pid>/cgroup
    return V1Driver(layout.v1, parent, fs, tracking)
