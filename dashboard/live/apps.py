from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "dashboard.live"
    label = "live"
    verbose_name = "Live feed"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .wiring import wire
        wire()
