from django.contrib import admin

from .models import AuditEntry, Container, Image, ImageLayer, Layer, OomEvent
from .selectors import retention_notes


class RetentionNote:
    """A changelist that says how long its rows are kept."""
    change_list_template = "admin/containers/retention_change_list.html"
    retention_key = ""

    def changelist_view(self, request, extra_context=None):
        extra = {"retention_note": retention_notes()[self.retention_key], **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)


@admin.register(Container)
class ContainerAdmin(admin.ModelAdmin):
    list_display = ("name", "short_id", "image", "status", "exit_code", "oom_killed", "pid",
                    "memory_limit", "cpus_limit", "pids_limit", "created_at", "started_at")
    list_filter = ("status", "oom_killed", "image")
    search_fields = ("name", "id", "image", "hostname")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Container._meta.fields]   # the runtime is the truth

    def has_add_permission(self, request):
        return False


class ImageLayerInline(admin.TabularInline):
    model = ImageLayer
    extra = 0
    readonly_fields = ("position", "layer")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("name", "created", "workdir")
    search_fields = ("name",)
    inlines = [ImageLayerInline]


@admin.register(Layer)
class LayerAdmin(admin.ModelAdmin):
    list_display = ("digest", "size", "files", "created_by")
    search_fields = ("digest", "created_by")
    list_filter = ("images",)


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

