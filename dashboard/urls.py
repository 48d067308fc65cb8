from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from dashboard.api.urls import api_urlpatterns

admin.site.site_header = "Terrarium administration"
admin.site.site_title = "Terrarium"

urlpatterns = [
    # browsers ask for /favicon.ico on pages that name no icon (the admin's); also
    # what the pages probe when a socket drops, to tell "server unreachable"
    path("favicon.ico", login_not_required(RedirectView.as_view(url=static("favicon.svg"), permanent=True))),
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
