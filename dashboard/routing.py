from django.urls import path

from dashboard.containers.consumers import ContainersConsumer
from dashboard.oom.consumers import EventsConsumer
from dashboard.live.routing import websocket_urlpatterns as live_patterns

websocket_urlpatterns = [
    path("ws/containers/", ContainersConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
    *live_patterns,
]
