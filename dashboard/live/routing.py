from django.urls import re_path

from .consumers import ContainerLiveConsumer

websocket_urlpatterns = [
    re_path(r"^ws/containers/(?P<container_id>[0-9a-f]{64})/live/$", ContainerLiveConsumer.as_asgi()),
]
