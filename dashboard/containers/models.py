"""What the dashboard stores.  Container/Image/Layer/Volume mirror the runtime (the
runtime is the truth; the reconciler keeps these rows in step); AuditEntry
and OomEvent are the dashboard's own history."""
from django.conf import settings
from django.db import models


class Container(models.Model):
    STATUS_CHOICES = [(s, s) for s in ("created", "running", "paused", "exited")]

    id = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=128, unique=True)
    image = models.CharField(max_length=128, db_index=True)
    cmd = models.JSONField(default=list)
    env = models.JSONField(default=list)
    hostname = models.CharField(max_length=255, blank=True)
    workdir = models.CharField(max_length=1024, blank=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, db_index=True)
    memory_limit = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    memory_swap_limit = models.BigIntegerField(null=True, blank=True, help_text="bytes, memory + swap")
    cpus_limit = models.FloatField(null=True, blank=True)
    pids_limit = models.IntegerField(null=True, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    shim_pid = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    oom_killed = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    cgroup = models.CharField(max_length=512, blank=True)
    namespaces = models.JSONField(default=dict, blank=True)
    layers = models.JSONField(default=list, blank=True)
    rootfs = models.CharField(max_length=1024, blank=True)
    upperdir = models.CharField(max_length=1024, blank=True)
    log_path = models.CharField(max_length=1024, blank=True)
    restart_count = models.IntegerField(default=0)
    # restart policy, health check and its results, "stopping" and "restarting"
    # (runtime/lifecycle.py), as the runtime's Container has them
    lifecycle = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("operate_container",
             "Can create, start, stop, kill, restart, pause, resume, remove and change limits of containers"),
        ]

    def __str__(self):
        return self.name

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def is_active(self) -> bool:
        return self.status in ("running", "paused")

    @property
    def stopping(self) -> dict | None:
        """{"since", "timeout"} while a stop waits for SIGTERM to work."""
        return (self.lifecycle or {}).get("stopping")

    @property
    def restarting(self) -> dict | None:
        """{"due", "delay"} while the restart policy waits to start it again."""
        return (self.lifecycle or {}).get("restarting") if self.status == "exited" else None

    @property
    def health(self) -> dict | None:
        return (self.lifecycle or {}).get("health")

    @property
    def restart_policy(self) -> str:
        return (self.lifecycle or {}).get("restart_policy") or "no"


class Layer(models.Model):
    digest = models.CharField(max_length=80, unique=True)
    size = models.BigIntegerField(help_text="bytes of file content, unpacked")
    files = models.IntegerField(help_text="entries in the layer")
    created_by = models.TextField(blank=True)

    class Meta:
        ordering = ["digest"]

    def __str__(self):
        return self.digest[:19]


class Volume(models.Model):
    """A named volume (runtime/volumes.py), mirrored for the Django admin
    (services.volumes_sync, on each visit of its list): the runtime's
    directory is the truth; the /volumes/ page reads the runtime directly."""
    name = models.CharField(max_length=128, unique=True)
    created = models.DateTimeField(null=True, blank=True)
    anonymous = models.BooleanField(default=False, help_text="made by -v /path, for one container")
    size = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    files = models.IntegerField(null=True, blank=True)
    mountpoint = models.CharField(max_length=1024, blank=True)
    containers = models.JSONField(default=list, blank=True, help_text="[{id, name}] of the containers naming it")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def in_use_by(self) -> str:
        return ", ".join(c.get("name") or c.get("id", "")[:12] for c in self.containers) or "—"


class Image(models.Model):
    name = models.CharField(max_length=128, unique=True)
    created = models.DateTimeField(null=True, blank=True)
    cmd = models.JSONField(default=list)
    env = models.JSONField(default=list)
    workdir = models.CharField(max_length=1024, default="/")
    layers = models.ManyToManyField(Layer, through="ImageLayer", related_name="images")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ImageLayer(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE)
    layer = models.ForeignKey(Layer, on_delete=models.CASCADE)
    position = models.PositiveIntegerField(help_text="0 = bottom")

    class Meta:
        ordering = ["image", "position"]
        constraints = [models.UniqueConstraint(fields=["image", "position"], name="image_layer_position")]


class AuditEntry(models.Model):
    RESULT_CHOICES = [("ok", "ok"), ("error", "error"), ("denied", "denied")]

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, help_text="kept when the user is deleted")
    action = models.CharField(max_length=32, db_index=True)
    # ours: 64 hex; another owner's: its engine's id (a unit or pod container
    # name may be longer than 64)
    container_id = models.CharField(max_length=255, blank=True, db_index=True)
    container_name = models.CharField(max_length=128, blank=True)
    result = models.CharField(max_length=8, choices=RESULT_CHOICES)
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.username} {self.action} {self.container_name or self.container_id[:12]}: {self.result}"


class OomEvent(models.Model):
    """One OOM kill, as the dashboard's watcher (dashboard/oom) saw it.

    Sizes in kB as the kernel logs them.  ``container`` is set while the mirror
    row exists; ``container_key``/``container_name`` keep who it was after removal.
    """
    SCOPE_CONTAINER, SCOPE_HOST = "container", "host"
    SCOPE_CHOICES = [(SCOPE_CONTAINER, "container"), (SCOPE_HOST, "host")]
    DETECTED_CHOICES = [(d, d) for d in ("kmsg", "counter", "kmsg+counter", "counters-at-start")]

    at = models.DateTimeField(db_index=True, help_text="wall clock when the watcher saw it")
    kernel_usec = models.BigIntegerField(null=True, blank=True,
                                         help_text="kmsg timestamp of the kill (µs since boot)")
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="oom_events")
    container_key = models.CharField(max_length=255, blank=True, db_index=True,
                                     help_text="the runtime's container id (another owner's: its "
                                               "discovery key, docker-<id>), kept after removal")
    container_name = models.CharField(max_length=128, blank=True)
    scope = models.CharField(max_length=16, choices=SCOPE_CHOICES, db_index=True,
                             default=SCOPE_CONTAINER)
    is_global = models.BooleanField(default=False, help_text="host-wide OOM, no cgroup to blame")
    is_init = models.BooleanField(default=False, help_text="the victim was the container's init")
    killed_pid = models.IntegerField(null=True, blank=True, help_text="host pid")
    killed_command = models.CharField(max_length=256, blank=True)
    oom_memcg = models.CharField(max_length=512, blank=True, help_text="cgroup whose limit was hit")
    task_memcg = models.CharField(max_length=512, blank=True)
    constraint = models.CharField(max_length=32, blank=True)
    limit_kb = models.BigIntegerField(null=True, blank=True)
    usage_kb = models.BigIntegerField(null=True, blank=True)
    failcnt = models.BigIntegerField(null=True, blank=True)
    anon_rss_kb = models.BigIntegerField(null=True, blank=True)
    file_rss_kb = models.BigIntegerField(null=True, blank=True)
    total_vm_kb = models.BigIntegerField(null=True, blank=True)
    counters = models.JSONField(default=dict, blank=True, help_text="oom counters when seen")
    detected_by = models.CharField(max_length=24, choices=DETECTED_CHOICES, default="kmsg")
    raw = models.TextField(blank=True, help_text="the kernel's lines, as logged")
    # The OOM card (dashboard/oom/memrecord.py): the memory record around the kill.
    memory_window = models.JSONField(default=dict, blank=True,
                                     help_text="{kill_t, limit, points: [[t, usage, ws]]} ±60/10 s")
    before = models.JSONField(default=dict, blank=True,
                              help_text="usage, working set, limit, counters just before the kill")
    procs_before = models.JSONField(default=dict, blank=True,
                                    help_text="{t, tree}: the process tree just before, victim marked")
    victim_ns_pid = models.IntegerField(null=True, blank=True,
                                        help_text="the victim's pid inside the container")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["kernel_usec", "killed_pid"])]

    def __str__(self):
        who = self.container_name or self.container_key[:12] or "host"
        return f"OOM {who} pid {self.killed_pid} ({self.killed_command})"
