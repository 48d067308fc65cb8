from django.urls import path, re_path

from . import views

app_name = "containers"
ID = r"(?P<container_id>[0-9a-f]{64})"

urlpatterns = [
    path("", views.container_list, name="list"),
    path("containers/new/", views.container_create, name="create"),
    re_path(rf"^containers/{ID}/$", views.container_detail, name="detail"),
    re_path(rf"^containers/{ID}/row/$", views.container_row, name="row"),
    re_path(rf"^containers/{ID}/head/$", views.container_head, name="head"),
    re_path(rf"^containers/{ID}/limits/$", views.container_limits, name="limits"),
    re_path(rf"^containers/{ID}/(?P<action>start|stop|kill|restart|pause|resume|remove)/$",
            views.container_action, name="action"),
    path("images/", views.image_list, name="images"),
    path("networks/", views.network_list, name="networks"),
    path("audit/", views.audit_list, name="audit"),
]
