from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.api.urls import api_urlpatterns

admin.site.site_header = "Terrarium administration"
admin.site.site_title = "Terrarium"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("account/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("admin/", admin.site.urls),
    path("", include("dashboard.oom.urls")),
    path("", include("dashboard.live.urls")),
    path("", include("dashboard.layers.urls")),
    path("", include("dashboard.containers.urls")),
    path("", include("dashboard.api.urls")),
    *api_urlpatterns,
]
