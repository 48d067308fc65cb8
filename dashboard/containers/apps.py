from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ContainersConfig(AppConfig):
    name = "dashboard.containers"
    label = "containers"
    verbose_name = "Containers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import access
        from .roles import ensure_role_groups
        post_migrate.connect(ensure_role_groups, sender=self)
        access.connect_signals()         # open websockets follow logouts and role changes
