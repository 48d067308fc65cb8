from django.urls import path, re_path

from . import views

app_name = "live"

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),     # no slash: Prometheus' default path
    path("host/namespaces/", views.host_namespaces, name="namespaces"),
    path("host/cgroups/", views.host_cgroups, name="cgroups"),
    re_path(r"^containers/(?P<container_id>[0-9a-f]{64})/history/$", views.container_history,
            name="history"),
]
