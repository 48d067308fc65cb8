from django.apps import AppConfig


class OomConfig(AppConfig):
    name = "dashboard.oom"
    label = "oom"
    verbose_name = "OOM kills"
