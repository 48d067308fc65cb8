from django.urls import path

from dashboard.containers.consumers import ContainersConsumer

websocket_urlpatterns = [
    path("ws/containers/", ContainersConsumer.as_asgi()),
]
