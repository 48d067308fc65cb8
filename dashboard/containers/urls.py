from django.urls import path, re_path

from runtime.discovery import ENGINES

from . import engine_views, logviews, views

app_name = "containers"
ID = r"(?P<container_id>[0-9a-f]{64})"
# another owner's container: its discovery key (runtime/discovery.make_key)
KEY = r"(?P<container_id>(?:%s)-[A-Za-z0-9._@-]{1,200})" % "|".join(e for e in ENGINES if e != "terrarium")

urlpatterns = [
    path("", views.container_list, name="list"),
    path("containers/new/", views.container_create, name="create"),
    re_path(r"^containers/bulk/(?P<action>stop|remove)/$", views.container_bulk, name="bulk"),
    re_path(rf"^containers/{ID}/$", views.container_detail, name="detail"),
    re_path(rf"^containers/{ID}/row/$", views.container_row, name="row"),
    re_path(rf"^containers/{ID}/head/$", views.container_head, name="head"),
    re_path(rf"^containers/{ID}/terminal/$", views.container_terminal, name="terminal"),
    re_path(rf"^containers/{ID}/limits/$", views.container_limits, name="limits"),
    re_path(rf"^containers/{ID}/logs/$", logviews.container_logs, name="logs"),
    re_path(rf"^containers/{ID}/logs/download/$", logviews.container_logs_download, name="logs-download"),
    re_path(rf"^containers/{ID}/(?P<action>start|stop|kill|restart|pause|resume|remove)/$",
            views.container_action, name="action"),
    re_path(rf"^containers/{KEY}/$", engine_views.engine_detail, name="engine-detail"),
    re_path(rf"^containers/{KEY}/row/$", engine_views.engine_row, name="engine-row"),
    re_path(rf"^containers/{KEY}/head/$", engine_views.engine_head, name="engine-head"),
    re_path(rf"^containers/{KEY}/limits/$", engine_views.engine_limits, name="engine-limits"),
    re_path(rf"^containers/{KEY}/logs/$", engine_views.engine_logs, name="engine-logs"),
    re_path(rf"^containers/{KEY}/logs/download/$", engine_views.engine_logs_download, name="engine-logs-download"),
    re_path(rf"^containers/{KEY}/terminal/$", engine_views.engine_terminal, name="engine-terminal"),
    re_path(rf"^containers/{KEY}/layers/$", engine_views.engine_layers, name="engine-layers"),
    re_path(rf"^containers/{KEY}/layers/changes/$", engine_views.engine_changes, name="engine-changes"),
    re_path(rf"^containers/{KEY}/(?P<action>start|stop|restart|pause|unpause|kill|remove)/$",
            engine_views.engine_action, name="engine-action"),
    path("images/", views.image_list, name="images"),
    path("networks/", views.network_list, name="networks"),
    path("volumes/", views.volume_list, name="volumes"),
    path("volumes/new/", views.volume_create, name="volume_create"),
    re_path(r"^volumes/(?P<name>[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127})/remove/$", views.volume_remove,
            name="volume_remove"),
    path("audit/", views.audit_list, name="audit"),
]
