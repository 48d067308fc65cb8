from django.urls import path, re_path

from dashboard.containers.consumers import ContainersConsumer
from dashboard.containers.engine_terminal import EngineTerminalConsumer
from dashboard.containers.urls import KEY
from dashboard.containers.logsocket import ContainerLogsConsumer
from dashboard.containers.terminal import TerminalConsumer
from dashboard.oom.consumers import EventsConsumer
from dashboard.layers.consumers import PullSocket, PushSocket
from dashboard.live.routing import websocket_urlpatterns as live_patterns

websocket_urlpatterns = [
    path("ws/containers/", ContainersConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
    re_path(r"^ws/containers/(?P<container_id>[0-9a-f]{64})/terminal/$", TerminalConsumer.as_asgi()),
    path("ws/images/pull/", PullSocket.as_asgi()),
    path("ws/images/push/", PushSocket.as_asgi()),
    re_path(r"^ws/containers/(?P<container_id>[0-9a-f]{64})/logs/$", ContainerLogsConsumer.as_asgi()),
    # another owner's container (runtime/discovery): through its engine's API
    re_path(rf"^ws/containers/{KEY}/logs/$", ContainerLogsConsumer.as_asgi()),
    re_path(rf"^ws/containers/{KEY}/terminal/$", EngineTerminalConsumer.as_asgi()),
    *live_patterns,
]
