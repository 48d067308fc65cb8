"""Volumes and mounts in the dashboard: bind mounts for administrators only
(form and API), the Volumes page, and the layer view's "outside the overlay"."""
import secrets

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.api import tokens
from dashboard.containers.models import AuditEntry
from runtime import NotFound, Spec
from runtime.mounts import parse_tmpfs, parse_volume

pytestmark = pytest.mark.django_db


@pytest.fixture
def volume(rt):
    name = f"dv-{secrets.token_hex(4)}"
    yield name
    try:
        rt.volumes.remove(name)
    except NotFound:
        pass


@pytest.mark.parametrize("role,status", [("viewer", 403), ("operator", 403), ("administrator", 201)])
def test_a_bind_mount_through_the_api_is_for_administrators(role, status, rt, made, name, tmp_path, request):
    user = request.getfixturevalue(role)
    _, token = tokens.token_create(user=user, name="bind test")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    r = client.post("/api/containers", {"image": "busybox", "name": name, "volumes": [f"{tmp_path}:/host:ro"]},
                    content_type="application/json")
    assert r.status_code == status, r.content
    if status == 201:
        assert rt.inspect(name).mounts[0].source == str(tmp_path)
    else:
        assert name not in [c.name for c in rt.list()]
        assert r.json()["detail"]


def test_the_form_offers_bind_mounts_to_administrators_only(rt, made, name, tmp_path, operator_client,
                                                            admin_client_role):
    assert b'name="binds"' not in operator_client.get(reverse("containers:create")).content
    r = operator_client.post(reverse("containers:create"), {
        "image": "busybox", "name": name, "seccomp": "default", "volumes": f"{tmp_path}:/host"})
    assert r.status_code == 200 and b"bind mounts are for administrators" in r.content
    r = operator_client.post(reverse("containers:create"), {
        "image": "busybox", "name": name, "seccomp": "default", "binds": f"{tmp_path}:/host"})
    assert r.status_code == 302 and rt.inspect(name).mounts == ()       # not a field of theirs: ignored
    r = admin_client_role.post(reverse("containers:create"), {
        "image": "busybox", "name": f"{name}-a", "seccomp": "default", "binds": "/etc:/host"})
    assert r.status_code == 200 and b"/etc is the host&#x27;s own" in r.content
    assert AuditEntry.objects.filter(action="create", result="error").exists()


def test_volumes_page_and_layer_view(rt, made, name, volume, tmp_path, viewer_client, operator_client):
    c = rt.create(Spec(image="busybox", name=name, read_only=True,
                       mounts=(parse_volume(f"{volume}:/data"), parse_volume(f"{tmp_path}:/host:ro"),
                               parse_tmpfs("/scratch:size=2m"))), allow_bind_mounts=True)
    page = viewer_client.get(reverse("containers:volumes")).content.decode()
    row = page[page.index(f'id="volume-{volume}"'):]
    row = row[:row.index("</tr>")]
    assert reverse("containers:detail", args=[c.id]) in row and name in row
    assert "volume-remove" not in page                              # viewers get no buttons
    layers = viewer_client.get(reverse("layers:container", args=[c.id])).content.decode()
    box = layers[layers.index('id="outside-overlay"'):layers.index('id="mount"')]
    assert "root read-only" in box
    assert rt.volumes.data_path(volume) in box and str(tmp_path) in box and "2 MiB max" in box
    assert [m in box for m in ('data-target="/data"', 'data-target="/host"', 'data-target="/scratch"')] == [True] * 3
    # removal of a volume in use is refused, and says why
    r = operator_client.post(reverse("containers:volume_remove", args=[volume]), follow=True)
    assert b"is in use by container" in r.content
    rt.remove(c.id)
    r = operator_client.post(reverse("containers:volume_remove", args=[volume]), follow=True)
    assert f"Volume {volume} removed.".encode() in r.content
    with pytest.raises(NotFound):
        rt.volumes.inspect(volume)
