"""ASGI entry point: HTTP (with static files) and websockets in one process."""
import os

from django.core.asgi import get_asgi_application

from dashboard.rlimits import raise_nofile

raise_nofile()                         # sockets + SQLite + the sampler's kernel files
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django_http = get_asgi_application()   # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from dashboard.api.sockets import websocket_urlpatterns as api_websocket_urlpatterns  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402

pages_websocket = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
# The API's sockets take a token in the Authorization header, never a session
# cookie, so neither the session middleware nor the Origin check is theirs
# (dashboard/api/sockets.py says why).
api_websocket = URLRouter(api_websocket_urlpatterns)


async def websocket(scope, receive, send):
    app = api_websocket if scope["path"].startswith("/api/") else pages_websocket
    return await app(scope, receive, send)


application = ProtocolTypeRouter({
    # One embedded process serves its own assets; no separate web server needed.
    "http": ASGIStaticFilesHandler(django_http),
    "websocket": websocket,
})
