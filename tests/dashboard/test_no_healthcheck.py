"""The create form's "No health check" box: --no-healthcheck from the page."""
from django.urls import reverse

from dashboard.containers.models import AuditEntry
from tests.conftest import needs_root
from tests.runtime.test_import import docker_archive, layer_tar


@needs_root
def test_no_healthcheck_box_drops_the_images_check(rt, made, name, tmp_path, operator_client):
    image = f"{name}-hc:1"
    docker_archive(tmp_path / "hc.tar", [layer_tar(("srv/ok", b"1"))], tags=(image,), config_extra={
        "config": {"Cmd": ["sleep", "60"], "Env": [], "WorkingDir": "/",
                   "Healthcheck": {"Test": ["CMD-SHELL", "test -e /srv/ok"], "Interval": 2_000_000_000}}})
    rt.load_image(str(tmp_path / "hc.tar"))
    try:
        create = reverse("containers:create")
        assert b'name="no_healthcheck"' in operator_client.get(create).content
        base = {"image": image, "seccomp": "default"}
        r = operator_client.post(create, {**base, "name": f"{name}-img"})
        assert r.status_code == 302, r.content
        assert rt.inspect(f"{name}-img").healthcheck["test"] == ["/bin/sh", "-c", "test -e /srv/ok"]
        r = operator_client.post(create, {**base, "name": f"{name}-none", "no_healthcheck": "on"})
        assert r.status_code == 302, r.content
        assert rt.inspect(f"{name}-none").healthcheck["test"] == []          # none, not even the image's
        page = operator_client.get(r["Location"]).content.decode()
        assert 'id="card-health"' not in page
        # with a command of its own it is a contradiction, said on the field
        r = operator_client.post(create, {**base, "name": f"{name}-both", "no_healthcheck": "on",
                                          "health_cmd": "true"})
        assert r.status_code == 200 and b"conflicts with the --health-* options" in r.content
        assert f"{name}-both" not in {c.name for c in rt.list(all=True)}
        assert AuditEntry.objects.filter(action="create", result="ok").count() == 2
    finally:
        for c in rt.list(all=True):
            if c.name.startswith(name):
                rt.remove(c.id, force=True)
        rt.remove_image(image)
