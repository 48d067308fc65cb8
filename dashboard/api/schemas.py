"""What the API takes and gives, as pydantic models (ninja.Schema).  The
OpenAPI document is generated from these and the routes in api.py.

Input is checked by runtime.spec's own parsers, the ones the pages' forms
call (dashboard/containers/forms.py): one rule, one message, wherever a size
or a name comes from."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from ninja import Schema
from pydantic import Field, field_validator

from runtime.spec import check_env, check_hostname, check_name, parse_cpus, parse_memory, parse_pids


class Error(Schema):
    detail: str = Field(description="what went wrong, in the runtime's words where it answered")


class ValidationFailure(Error):
    errors: list[dict[str, Any]] = Field(description="one entry per bad field (pydantic's)")


# ------------------------------------------------------------------ containers
class LimitsIn(Schema):
    """Replaces all three limits; a missing or null one means unlimited."""
    memory: str | int | None = Field(None, description='bytes, or a size such as "64m", "1g"',
                                     examples=["64m"])
    cpus: str | float | None = Field(None, description="fraction of cores, such as 0.5")
    pids: str | int | None = Field(None, description="the most processes at once")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v):
        return None if v in (None, "") else parse_memory(str(v))

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v):
        return None if v in (None, "") else parse_cpus(v if isinstance(v, (int, float)) else str(v))

    @field_validator("pids")
    @classmethod
    def _pids(cls, v):
        return None if v in (None, "") else parse_pids(str(v))


class ContainerIn(LimitsIn):
    image: str = Field(description="an image name, as GET /api/images lists them", examples=["busybox"])
    name: str = Field("", description="generated when empty")
    cmd: list[str] = Field(default_factory=list, description="the command as words (no shell); "
                           "empty: the image's command", examples=[["sleep", "300"]])
    env: list[str] = Field(default_factory=list, description="KEY=VALUE entries")
    hostname: str = Field("", description="default: the container's name")
    seccomp: Literal["default", "unconfined"] = "default"
    setuid: bool = Field(False, description="no-new-privileges=false: setuid files and file "
                         "capabilities work inside")
    start: bool = Field(False, description="start it once created (a failed start removes it)")
    restart: str = Field("no", description="restart policy: no, on-failure[:N], always or unless-stopped",
                         examples=["on-failure:3"])

    @field_validator("restart")
    @classmethod
    def _restart(cls, v):
        from runtime.lifecycle import check_restart
        return check_restart(v.strip())
    volumes: list[str] = Field(default_factory=list, description="`-v` as the CLI takes it: "
                               "NAME:/path[:ro], /path (anonymous), /host/path:/path[:ro] "
                               "(a bind mount: administrators only)", examples=[["data:/var/lib/app"]])
    tmpfs: list[str] = Field(default_factory=list, description="/path[:size=64m,mode=1777,ro]")
    read_only: bool = Field(False, description="mount the root filesystem read-only")

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v):
        from runtime.mounts import parse_volume
        return [parse_volume(x) for x in v]

    @field_validator("tmpfs")
    @classmethod
    def _tmpfs(cls, v):
        from runtime.mounts import parse_tmpfs
        return [parse_tmpfs(x) for x in v]

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return check_name(v.strip()) if v.strip() else ""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v):
        return check_hostname(v.strip()) if v.strip() else ""

    @field_validator("env")
    @classmethod
    def _env(cls, v):
        return list(check_env(v))


class Limits(Schema):
    memory: int | None = Field(description="bytes; null: unlimited")
    memory_swap: int | None = Field(description="bytes of memory + swap; -1 unlimited")
    cpus: float | None
    pids: int | None


class EnvEntry(Schema):
    name: str
    value: str | None = Field(description="null (masked) unless you may operate: environments hold secrets")


class ContainerOut(Schema):
    id: str
    name: str
    image: str
    status: str = Field(description="created | running | paused | exited")
    pid: int | None = Field(description="host pid of its init while running")
    exit_code: int | None
    oom_killed: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    limits: Limits
    actions: list[str] = Field(description="what you may do to it now (empty for viewers)")


class LayerOut(Schema):
    position: int = Field(description="0 = bottom")
    path: str
    digest: str | None
    size: int | None
    files: int | None


class ContainerDetail(ContainerOut):
    cmd: list[str]
    env: list[EnvEntry]
    hostname: str
    workdir: str
    shim_pid: int | None
    error: str
    restart_count: int
    cgroup: str
    namespaces: dict[str, int]
    layers: list[LayerOut]
    upperdir: str
    seccomp: str = Field(description='"default", "unconfined" or "custom", and ", no-new-privileges=false"')
    lifecycle: dict[str, Any] = Field(
        description="restart_policy, restart_history, healthcheck, health {status, failing_streak, log}, "
                    "stopping {since, timeout}, restarting {due, delay}: those that apply")


class LogsOut(Schema):
    container_id: str
    lines: int | None = Field(description="the tail asked for (null: the whole log)")
    truncated: bool = Field(False, description="the text stops at the JSON answer's size limit: "
                                               "use format=text for all of it")
    text: str = Field(description="the log's lines that pass the filters, stdout and stderr as the page "
                                  "shows them")


class Change(Schema):
    path: str
    kind: Literal["A", "C", "D"] = Field(description="added, changed (copied up), deleted")
    dir: bool
    size: int | None
    opaque: bool
    whiteout: bool
    from_layer: int | None = Field(description="the lower layer a copied-up or deleted path came from")
    from_digest: str | None


class DiffOut(Schema):
    container_id: str
    status: str
    upper_bytes: int
    upper_files: int
    counts: dict[str, int]
    total: int
    truncated: bool = Field(description="more changes than are listed")
    changes: list[Change]


class CommitIn(Schema):
    image: str = Field(description="name of the new image", examples=["mybox:1"])
    message: str = ""
    replace: bool = Field(False, description="move the name if it already names an image (409 otherwise)")

    @field_validator("image")
    @classmethod
    def _image(cls, v):
        if not v.strip():
            raise ValueError("give the new image a name")
        return v.strip()


class CommitOut(Schema):
    image: str
    layer: str = Field(description="digest of the new top layer")


# ---------------------------------------------------------------------- images
class ImageLayerOut(Schema):
    digest: str
    size: int
    files: int
    created_by: str


class ContainerRef(Schema):
    id: str
    name: str
    status: str


class ImageOut(Schema):
    name: str
    created: dt.datetime | None
    cmd: list[str]
    env: list[EnvEntry]
    workdir: str
    size: int = Field(description="bytes of its layers, unpacked")
    layers: list[ImageLayerOut] = Field(description="bottom first")
    containers: list[ContainerRef]


class StackEntry(Schema):
    index: int = Field(description="0 = bottom")
    digest: str
    size: int
    files: int
    history: str
    other_images: list[str] = Field(description="other images sharing this layer")
    containers: list[ContainerRef] = Field(description="containers whose rootfs uses it")


class ImageDetail(Schema):
    name: str
    created: float | None
    cmd: list[str]
    env: list[EnvEntry]
    workdir: str
    stack: list[StackEntry] = Field(description="top first")
    alone: int = Field(description="bytes in layers no other image has")
    shared: int
    total: int
    containers: list[ContainerRef]


class ImportOut(Schema):
    images: list[str]


class GcOut(Schema):
    removed: list[str] = Field(description="digests of the layers removed")


# ---------------------------------------------------------------------- records
class AuditOut(Schema):
    id: int | None = Field(None, description="None for a CLI record (from the runtime's audit log)")
    source: Literal["web", "cli"] = Field("web", description="web: the pages or this API; cli: `terrarium`")
    at: dt.datetime
    username: str
    action: str
    container_id: str
    container_name: str
    result: Literal["ok", "error", "denied"]
    message: str
    details: dict[str, Any]


class OomOut(Schema):
    id: int
    at: dt.datetime
    scope: str = Field(description="container | host")
    container_id: str = Field(description="kept after the container is removed")
    container_name: str
    is_global: bool
    is_init: bool
    killed_pid: int | None
    killed_command: str
    oom_memcg: str
    limit_kb: int | None
    usage_kb: int | None
    detected_by: str


class OomDetail(OomOut):
    kernel_usec: int | None
    task_memcg: str
    constraint: str
    failcnt: int | None
    anon_rss_kb: int | None
    file_rss_kb: int | None
    total_vm_kb: int | None
    counters: dict[str, Any]
    raw: str = Field(description="the kernel's lines, as logged")
    memory_window: dict[str, Any] = Field(description="{kill_t, limit, points: [[t, usage, working set]]}")
    before: dict[str, Any]
    procs_before: dict[str, Any] = Field(description="{t, tree}: the process tree just before, victim marked")
    victim_ns_pid: int | None


# ------------------------------------------------------------------------ host
class HostProcess(Schema):
    depth: int = Field(description="depth in the host's process tree (pstree)")
    pid: int
    ppid: int
    ns_pids: list[int] = Field(description="NSpid: host first, the innermost namespace's last")
    user: str | None
    state: str
    comm: str
    cmdline: list[str] | None = Field(description="null unless you may operate: arguments hold secrets")
    rss: int
    threads: int
    role: str | None = Field(description="shim, forkserver, cliserver or cli for Terrarium's own")
    container_id: str | None = Field(description="set on a container's init")
    container_name: str | None


class HostNamespace(Schema):
    type: str
    inode: int
    nprocs: int
    pid: int = Field(description="the lowest pid in it")
    command: str = Field(description="that pid's command line; only its program unless you may operate")
    container_id: str | None
    container_name: str | None


class Me(Schema):
    username: str
    role: str | None
    can_operate: bool
    can_audit: bool
