from django.urls import path

from . import views

app_name = "oom"

urlpatterns = [
    path("oom/", views.oom_list, name="list"),
    path("oom/<int:event_id>/", views.oom_detail, name="detail"),
]
