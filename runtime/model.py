"""Frozen value types the runtime hands out.  No behaviour, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container; None means unlimited.

    memory_swap follows Docker: the total of memory + swap.  None with a
    memory limit means "no swap at all" (swap max = 0), so the memory limit
    really holds on hosts with swap; -1 means unlimited swap.
    """
    memory: int | None = None        # bytes
    memory_swap: int | None = None   # bytes (memory + swap), -1 = unlimited
    cpus: float | None = None        # fraction of cores, e.g. 0.5
    pids: int | None = None


@dataclass(frozen=True)
class ImageConfig:
    cmd: tuple[str, ...] = ("sh",)
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = "/"


@dataclass(frozen=True)
class Layer:
    digest: str            # "sha256:<64 hex>" of the layer's uncompressed tar
    size: int              # bytes of file content, unpacked
    files: int             # entries (files, dirs, links) in the layer
    created_by: str = ""   # the instruction or source that made it
    path: str = ""         # the unpacked directory on disk (lowerdir entry)


@dataclass(frozen=True)
class Image:
    name: str                       # "busybox" (tag "latest" implied)
    layers: tuple[Layer, ...]       # bottom first
    config: ImageConfig
    created: float = 0.0            # unix time
    history: tuple[str, ...] = ()   # how each layer was made, bottom first


@dataclass(frozen=True)
class Spec:
    """What `create` needs.  Validated by runtime.spec.make_spec()."""
    image: str
    name: str | None = None
    cmd: tuple[str, ...] = ()       # empty: the image's cmd
    env: tuple[str, ...] = ()       # "K=V", added to the image's env
    hostname: str | None = None     # default: the container name
    workdir: str | None = None      # default: the image's workdir
    limits: Limits = field(default_factory=Limits)
    auto_remove: bool = False


@dataclass(frozen=True)
class Container:
    """What inspect/list report.  status: created|running|paused|exited."""
    id: str
    name: str
    image: str
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    hostname: str
    workdir: str
    limits: Limits
    status: str
    created_at: float
    layers: tuple[str, ...] = ()            # lower layer dirs, bottom first
    pid: int | None = None                  # host pid of the container's init
    shim_pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom_killed: bool = False                # the container's init died of an OOM kill
    oom_kills: int = 0                      # OOM kills in its cgroup during the last run
    error: str | None = None                # why the last start failed, if it did
    cgroup: str | None = None               # "<parent>/<id>", relative to each hierarchy
    namespaces: dict = field(default_factory=dict)   # {"pid": inode, ...} while running
    rootfs: str = ""                        # merged dir (mounted only inside the container)
    upperdir: str = ""
    workdir_overlay: str = ""
    log_path: str = ""
    auto_remove: bool = False
    restart_count: int = 0
