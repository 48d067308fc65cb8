from django.apps import AppConfig


class LayersConfig(AppConfig):
    name = "dashboard.layers"
    label = "layers"
    verbose_name = "Layers and images"
    default_auto_field = "django.db.models.BigAutoField"
