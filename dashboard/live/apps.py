from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "dashboard.live"
    label = "live"
    verbose_name = "Live feed"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from dashboard.containers.signals import reconciled

        from .history import keep_history_between_viewers
        reconciled.connect(keep_history_between_viewers, dispatch_uid="live-history")
