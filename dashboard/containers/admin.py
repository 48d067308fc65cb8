from django.contrib import admin, messages

from ..layers import services as layer_services
from . import services
from .models import AuditEntry, Container, Image, ImageLayer, Layer, OomEvent, Volume
from .roles import CAN_OPERATE
from .selectors import retention_notes


class RetentionNote:
    """A changelist that says how long its rows are kept."""
    change_list_template = "admin/containers/retention_change_list.html"
    retention_key = ""

    def changelist_view(self, request, extra_context=None):
        extra = {"retention_note": retention_notes()[self.retention_key], **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)


class RuntimeOwned:
    """Rows mirrored from the runtime's own records.  Adding, editing or
    deleting one here would change only the mirror: the next sync undoes it
    (a deleted container comes back) or leaves a row with no files behind it
    (an added image).  So these pages are read-only even for superusers, and
    the changes they offer are actions that go through the same services as
    the dashboard's buttons: the runtime acts, the audit log records it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return request.user.has_perm(CAN_OPERATE)

    def _each(self, request, queryset, act, what: str) -> None:
        done = 0
        for obj in queryset:
            try:
                act(obj)
            except services.ServiceError as e:
                self.message_user(request, f"{obj}: {e}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"Removed {done} {what}{'' if done == 1 else 's'}.", messages.SUCCESS)


@admin.register(Container)
class ContainerAdmin(RuntimeOwned, admin.ModelAdmin):
    list_display = ("name", "short_id", "image", "status", "exit_code", "oom_killed", "pid",
                    "memory_limit", "cpus_limit", "pids_limit", "created_at", "started_at")
    list_filter = ("status", "oom_killed", "image")
    search_fields = ("name", "id", "image", "hostname")
    date_hierarchy = "created_at"
    actions = ["remove_selected"]

    @admin.action(description="Remove selected containers (stopped ones, through the runtime)",
                  permissions=["operate"])
    def remove_selected(self, request, queryset):
        self._each(request, queryset, lambda c: services.container_remove(
            user=request.user, container_id=c.id), "container")


class ImageLayerInline(admin.TabularInline):
    model = ImageLayer
    extra = 0
    readonly_fields = ("position", "layer")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Image)
class ImageAdmin(RuntimeOwned, admin.ModelAdmin):
    list_display = ("name", "created", "workdir")
    search_fields = ("name",)
    inlines = [ImageLayerInline]
    actions = ["remove_selected"]

    @admin.action(description="Remove selected images (unused ones, through the runtime)",
                  permissions=["operate"])
    def remove_selected(self, request, queryset):
        self._each(request, queryset, lambda i: layer_services.image_remove(
            user=request.user, name=i.name), "image")


@admin.register(Layer)
class LayerAdmin(RuntimeOwned, admin.ModelAdmin):
    """Layers go with the last image that uses them (Images page: clean up)."""
    list_display = ("digest", "size", "files", "created_by")
    search_fields = ("digest", "created_by")
    list_filter = ("images",)


@admin.register(Volume)
class VolumeAdmin(RuntimeOwned, admin.ModelAdmin):
    """Named volumes, read from the runtime on every visit of the list."""
    list_display = ("name", "in_use_by", "size", "files", "anonymous", "created", "mountpoint")
    list_filter = ("anonymous",)
    search_fields = ("name",)
    readonly_fields = ("name", "created", "anonymous", "size", "files", "mountpoint", "containers")
    actions = ["remove_selected"]

    def changelist_view(self, request, extra_context=None):
        self._sync(request)
        return super().changelist_view(request, extra_context=extra_context)

    def _sync(self, request) -> None:
        from runtime import TerrariumError
        try:
            services.volumes_sync()
        except (TerrariumError, OSError) as e:
            self.message_user(request, f"Could not read the volumes: {e}", messages.ERROR)

    @admin.display(description="in use by")
    def in_use_by(self, obj):
        return obj.in_use_by

    @admin.action(description="Remove selected volumes (unused ones, through the runtime)",
                  permissions=["operate"])
    def remove_selected(self, request, queryset):
        self._each(request, queryset, lambda v: services.volume_remove(user=request.user, name=v.name),
                   "volume")            # (the list it goes back to reads the runtime again)


@admin.register(AuditEntry)
class AuditEntryAdmin(RetentionNote, admin.ModelAdmin):
    retention_key = "audit"
    list_display = ("at", "username", "action", "container_name", "result", "message")
    list_filter = ("result", "action", "at")
    search_fields = ("username", "container_name", "container_id", "message")
    date_hierarchy = "at"
    readonly_fields = ("at", "user", "username", "action", "container_id", "container_name",
                       "result", "message", "details")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OomEvent)
class OomEventAdmin(RetentionNote, admin.ModelAdmin):
    retention_key = "oom"
    list_display = ("at", "scope", "container_name", "killed_pid", "killed_command", "is_init",
                    "usage_kb", "limit_kb", "detected_by")
    list_filter = ("scope", "is_global", "is_init", "detected_by", "at")
    search_fields = ("container_name", "container_key", "killed_command", "oom_memcg")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in OomEvent._meta.fields]   # the kernel's record

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

