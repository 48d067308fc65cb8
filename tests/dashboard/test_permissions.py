"""Every route × anonymous / viewer / operator / administrator."""
import pytest
from django.test import Client
from django.urls import reverse

from dashboard.containers.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def cid(idle_container):
    return idle_container.id


def _clients(viewer_client, operator_client, admin_client_role):
    return {"anonymous": Client(), "viewer": viewer_client, "operator": operator_client,
            "administrator": admin_client_role}


# (name, url kwargs needing the container, expected status for anon/viewer/operator/admin)
PAGES = [
    ("containers:list", False, (302, 200, 200, 200)),
    ("containers:detail", True, (302, 200, 200, 200)),
    ("containers:row", True, (302, 200, 200, 200)),
    ("containers:head", True, (302, 200, 200, 200)),
    ("containers:images", False, (302, 200, 200, 200)),
    ("containers:networks", False, (302, 200, 200, 200)),
    ("containers:create", False, (302, 403, 200, 200)),
    ("containers:audit", False, (302, 403, 403, 200)),
]
ROLES = ("anonymous", "viewer", "operator", "administrator")


@pytest.mark.parametrize("route,needs_id,expected", PAGES, ids=[p[0] for p in PAGES])
def test_get_pages(route, needs_id, expected, cid, viewer_client, operator_client, admin_client_role):
    url = reverse(route, args=[cid] if needs_id else [])
    clients = _clients(viewer_client, operator_client, admin_client_role)
    got = tuple(clients[r].get(url).status_code for r in ROLES)
    assert got == expected
    assert clients["anonymous"].get(url)["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("action", ["start", "stop", "kill", "restart", "pause", "resume", "remove"])
def test_actions_are_post_only_and_operator_only(action, cid, rt, viewer_client, operator_client,
                                                 admin_client_role):
    url = reverse("containers:action", args=[cid, action])
    clients = _clients(viewer_client, operator_client, admin_client_role)
    # GET does nothing, whoever asks (anonymous is sent to log in first)
    assert [clients[r].get(url).status_code for r in ROLES] == [302, 405, 405, 405]
    assert clients["anonymous"].post(url).status_code == 302
    assert not AuditEntry.objects.exists()           # not logged in: nobody to name
    assert clients["viewer"].post(url).status_code == 403
    assert rt.inspect(cid).status == "created"       # nothing happened so far
    denied = AuditEntry.objects.get()                # but the attempt is on record
    assert (denied.username, denied.action, denied.result, denied.container_id) == \
        ("vera", action, "denied", cid)
    r = clients["operator"].post(url, HTTP_X_REQUESTED_WITH="fetch")
    assert r.status_code in (200, 409) and "message" in r.json()   # the runtime decides, never a 500
    assert AuditEntry.objects.exclude(result="denied").get().action == action


def test_limits_and_create_post_permissions(cid, rt, viewer_client, operator_client, admin_client_role):
    limits = reverse("containers:limits", args=[cid])
    create = reverse("containers:create")
    clients = _clients(viewer_client, operator_client, admin_client_role)
    assert clients["viewer"].post(limits, {"memory": "64m"}).status_code == 403
    assert clients["viewer"].post(create, {"image": "busybox"}).status_code == 403
    assert clients["viewer"].get(create).status_code == 403      # looking is not an attempt
    assert sorted(AuditEntry.objects.filter(result="denied").values_list("action", flat=True)) == \
        ["create", "update"]
    assert clients["anonymous"].post(limits, {"memory": "64m"}).status_code == 302
    assert clients["operator"].get(limits).status_code == 405
    assert clients["operator"].post(limits, {"memory": "64m", "cpus": "", "pids": ""}).status_code == 302
    assert rt.inspect(cid).limits.memory == 64 << 20


def test_csrf_is_enforced(operator, cid, rt):
    c = Client(enforce_csrf_checks=True)
    c.force_login(operator)
    r = c.post(reverse("containers:action", args=[cid, "start"]))
    assert r.status_code == 403
    assert rt.inspect(cid).status == "created"


def test_admin_site_only_for_administrators(viewer_client, operator_client, admin_client_role):
    assert viewer_client.get("/admin/").status_code == 302       # to the admin login
    assert operator_client.get("/admin/").status_code == 302
    assert admin_client_role.get("/admin/").status_code == 200
    for model in ("container", "image", "layer", "auditentry", "oomevent"):
        assert admin_client_role.get(f"/admin/containers/{model}/").status_code == 200, model


def test_runtime_error_is_a_message_not_a_500(cid, operator_client):
    r = operator_client.post(reverse("containers:action", args=[cid, "pause"]), follow=True)
    assert r.status_code == 200
    assert any("Pause failed" in str(m) for m in r.context["messages"])


def test_bad_create_shows_field_error_and_creates_nothing(operator_client, rt, made):
    before = len(rt.list())
    r = operator_client.post(reverse("containers:create"),
                             {"image": "busybox", "name": "x1", "command": "sleep 300", "memory": "lots"})
    assert r.status_code == 200
    assert "invalid memory limit" in r.content.decode()
    assert len(rt.list()) == before and not AuditEntry.objects.exists()


def test_create_and_start_through_the_form(operator_client, rt, made, name):
    r = operator_client.post(reverse("containers:create"),
                             {"image": "busybox", "name": name, "command": "sleep 300", "memory": "32m",
                              "start": "on"})
    assert r.status_code == 302
    c = rt.inspect(name)
    assert c.status == "running" and c.limits.memory == 32 << 20 and c.cmd == ("sleep", "300")
    assert r["Location"] == reverse("containers:detail", args=[c.id])
    page = operator_client.get(r["Location"]).content.decode()
    assert str(c.pid) in page and str(c.namespaces["pid"]) in page


def test_create_unconfined_through_the_form_and_detail_shows_the_mode(operator_client, rt, made, name):
    r = operator_client.post(reverse("containers:create"),
                             {"image": "busybox", "name": name, "command": "sleep 300",
                              "seccomp": "unconfined"})
    assert r.status_code == 302
    c = rt.inspect(name)
    assert (c.status, c.seccomp) == ("created", "unconfined")
    page = operator_client.get(r["Location"]).content.decode()
    assert '<dd class="mono" id="seccomp-mode">unconfined</dd>' in page


def test_create_with_setuid_allowed_through_the_form_and_detail_shows_it(operator_client, rt, made, name):
    r = operator_client.post(reverse("containers:create"),
                             {"image": "busybox", "name": name, "command": "sleep 300", "setuid": "on"})
    assert r.status_code == 302
    c = rt.inspect(name)
    assert (c.seccomp, c.no_new_privileges) == ("default", False)
    page = operator_client.get(r["Location"]).content.decode()
    assert '<dd class="mono" id="seccomp-mode">default, no-new-privileges=false</dd>' in page


# ---------------------------------------------- least privilege: what viewers do not get
def test_image_export_is_for_operators(viewer_client, operator_client, admin_client_role):
    url = reverse("layers:image_export", args=["busybox"])
    clients = _clients(viewer_client, operator_client, admin_client_role)
    got = {}
    for role in ROLES:
        r = clients[role].get(url)
        got[role] = r.status_code
        if hasattr(r, "streaming_content"):
            r.close()                                  # the export's temp file
    assert got == {"anonymous": 302, "viewer": 403, "operator": 200, "administrator": 200}
    assert clients["operator"].post(url).status_code == 405
    exports = reverse("containers:images")
    assert url not in viewer_client.get(exports).content.decode()      # no link to a 403
    assert url in operator_client.get(exports).content.decode()


@pytest.fixture
def secret_process():
    """A host process with a secret on its command line (sh stays sh: two commands)."""
    import subprocess
    p = subprocess.Popen(["/bin/sh", "-c", "sleep 300; : host-secret-4f1e"])
    yield p
    p.kill()
    p.wait()


@pytest.mark.parametrize("client,shown", [("viewer_client", False), ("operator_client", True),
                                          ("admin_client_role", True)])
def test_host_command_lines_are_for_operators(client, shown, secret_process, request):
    from dashboard.live import selectors as live_selectors
    live_selectors.reset_host_cache()
    c = request.getfixturevalue(client)
    r = c.get(reverse("live:namespaces"))
    assert r.status_code == 200
    html = r.content.decode()
    assert f'data-pid="{secret_process.pid}"' in html          # every process is listed
    assert ("host-secret-4f1e" in html) is shown
    assert ('id="cmdlines-hidden"' in html) is not shown
    assert ("host-secret-4f1e" in c.get(reverse("live:namespaces") + "?fragment=1").content.decode()) is shown


@pytest.fixture
def env_container(rt, made, name):
    from runtime import Spec
    return rt.create(Spec(image="busybox", name=name, cmd=("sleep", "300"),
                          env=("API_TOKEN=ctr-secret-9c2d", "MODE=debug")))


@pytest.mark.parametrize("client,shown", [("viewer_client", False), ("operator_client", True),
                                          ("admin_client_role", True)])
def test_container_env_values_are_for_operators(client, shown, env_container, request):
    c = request.getfixturevalue(client)
    html = c.get(reverse("containers:detail", args=[env_container.id])).content.decode()
    assert "API_TOKEN=" in html and "MODE=" in html                   # names for everyone
    assert ("ctr-secret-9c2d" in html) is shown
    assert ("MODE=debug" in html) is shown


@pytest.mark.parametrize("client,shown", [("viewer_client", False), ("operator_client", True),
                                          ("admin_client_role", True)])
def test_image_env_values_are_for_operators(client, shown, rt, request):
    c = request.getfixturevalue(client)
    path = next(e for e in rt.images.get("busybox").config.env if e.startswith("PATH="))
    html = c.get(reverse("layers:image", args=["busybox"])).content.decode()
    assert "PATH=" in html
    assert (path in html) is shown


def test_a_refused_request_logs_one_line_without_traceback(viewer_client, caplog):
    import logging
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert viewer_client.get(reverse("containers:audit")).status_code == 403
    records = [r for r in caplog.records if r.name == "django.request"]
    assert len(records) == 1
    line = logging.Formatter().format(records[0])
    assert line == "Forbidden (Permission denied): /audit/ (user vera)"


def test_a_viewer_repeating_a_refused_post_grows_the_audit_log_only_so_far(cid, viewer_client, settings):
    settings.TERRARIUM_AUDIT_DENIED_PER_MINUTE = 4
    url = reverse("containers:action", args=[cid, "kill"])
    assert [viewer_client.post(url).status_code for _ in range(7)] == [403] * 7
    assert AuditEntry.objects.filter(result="denied").count() == 4


def test_admin_pages_show_the_retention(admin_client_role, settings):
    settings.TERRARIUM_AUDIT_KEEP_DAYS, settings.TERRARIUM_OOM_KEEP_ROWS = 90, 5000
    audit = admin_client_role.get("/admin/containers/auditentry/").content.decode()
    assert "Audit entries are kept 90 days, at most the newest 200,000" in audit
    oom = admin_client_role.get("/admin/containers/oomevent/").content.decode()
    assert "OOM events are kept 30 days, at most the newest 5,000" in oom
    index = admin_client_role.get("/admin/").content.decode()
    assert 'id="retention-module"' in index and "Per-minute history is kept 24 hours" in index


def test_a_refused_path_with_a_percent_sign_logs_cleanly(viewer_client, caplog):
    import logging
    url = reverse("layers:image_export", args=["busy%25box"])
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert viewer_client.get(url).status_code == 403
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert logging.Formatter().format(record).endswith("/export/ (user vera)")
    assert "/image/busy%25box/export/" in record.getMessage()
