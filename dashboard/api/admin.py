from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Administrators see every token and revoke (delete) them; a token is made
    only by its owner, on /account/tokens/, where it is shown once."""
    list_display = ("user", "name", "prefix", "created", "last_used")
    list_filter = ("user",)
    search_fields = ("user__username", "name", "prefix")
    readonly_fields = ("user", "name", "prefix", "created", "last_used")
    exclude = ("digest",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
