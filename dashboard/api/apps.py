from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ApiConfig(AppConfig):
    name = "dashboard.api"
    label = "api"
    verbose_name = "JSON API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from dashboard.containers.roles import ensure_role_groups
        # again once this app's permissions exist (administrators revoke tokens in the admin)
        post_migrate.connect(ensure_role_groups, sender=self, dispatch_uid="terrarium-api-roles")
