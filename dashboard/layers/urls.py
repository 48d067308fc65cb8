from django.urls import path, re_path

from . import views

app_name = "layers"
ID = r"(?P<container_id>[0-9a-f]{64})"

urlpatterns = [
    re_path(rf"^containers/{ID}/layers/$", views.container_layers, name="container"),
    re_path(rf"^containers/{ID}/layers/changes/$", views.container_changes, name="changes"),
    re_path(rf"^containers/{ID}/layers/origin/$", views.container_origin, name="origin"),
    re_path(rf"^containers/{ID}/commit/$", views.container_commit, name="commit"),
    path("images/import/", views.image_import, name="image_import"),
    path("images/gc/", views.images_gc, name="images_gc"),
    path("images/registries/", views.registries, name="registries"),
    # actions before the page: an image name may hold '/'
    path("image/<path:name>/export/", views.image_export, name="image_export"),
    path("image/<path:name>/remove/", views.image_remove, name="image_remove"),
    path("image/<path:name>/", views.image_detail, name="image"),
]
