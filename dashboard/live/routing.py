from django.urls import re_path

from .consumers import ContainerLiveConsumer

# ours by id; another owner's by its discovery key ("docker-<id>", runtime/discovery)
CONTAINER = r"(?P<container_id>[0-9a-f]{64}|[a-z]+-[A-Za-z0-9._@-]{1,200})"

websocket_urlpatterns = [
    re_path(rf"^ws/containers/{CONTAINER}/live/$", ContainerLiveConsumer.as_asgi()),
]
