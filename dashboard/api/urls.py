from django.urls import path, re_path

from . import views
from .api import api, not_found

app_name = "api_tokens"

urlpatterns = [
    path("account/tokens/", views.token_list, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="revoke"),
]

# Included at the site's root (dashboard/urls.py): the API itself and its JSON 404.
api_urlpatterns = [
    path("api/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", not_found),
]
