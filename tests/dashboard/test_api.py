"""The JSON API (dashboard/api): every route × anonymous / viewer / operator /
administrator, each action seen on the real runtime and in the audit log;
tokens (header only, hashed, revoked, deactivated users); errors as JSON; the
OpenAPI document."""
from __future__ import annotations

import io
import json
import secrets
import tarfile

import pytest
from django.test import Client

from dashboard.api import tokens
from dashboard.api.models import ApiToken
from dashboard.containers.models import AuditEntry, OomEvent
from dashboard.containers.roles import ADMINISTRATOR, OPERATOR, VIEWER, assign_role
from runtime import Limits, NotFound, Spec

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "viewer", "operator", "administrator")
# PID 1 that leaves on SIGTERM at once (a bare `sleep` as PID 1 ignores it: stop would wait 10 s)
QUICK_STOP = ("sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait")


@pytest.fixture
def users(django_user_model):
    """Role → a user in it.  No password: these log in by token or force_login, and
    hashing three passwords per test is most of a test's time."""
    out = {}
    for role, username in ((VIEWER, "vera"), (OPERATOR, "otto"), (ADMINISTRATOR, "ada")):
        out[role] = django_user_model.objects.create_user(username=username, password=None)
        assign_role(out[role], role)
    return out


@pytest.fixture
def viewer(users):
    return users[VIEWER]


@pytest.fixture
def operator(users):
    return users[OPERATOR]


@pytest.fixture
def sessions(users):
    """Role → a Client logged in with a session (as a browser is)."""
    out = {}
    for role, user in users.items():
        out[role] = Client()
        out[role].force_login(user)
    return out


@pytest.fixture
def api_clients(users):
    """Role → a Client sending that user's token (anonymous: none)."""
    out = {"anonymous": Client()}
    for role, user in users.items():
        _, token = tokens.token_create(user=user, name=f"{role} tests")
        out[role] = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
        out[role].token = token
    return out


@pytest.fixture
def fresh(rt, made):
    """fresh(state) → a new container in that state: created, running or paused."""
    def make(state="created"):
        c = rt.create(Spec(image="busybox", name=f"api-{secrets.token_hex(4)}", cmd=QUICK_STOP,
                           env=("API_TOKEN=ctr-secret-9c2d", "MODE=debug")))
        if state in ("running", "paused"):
            rt.start(c.id)
        if state == "paused":
            rt.pause(c.id)
        return rt.inspect(c.id)
    return make


@pytest.fixture
def spare_images(rt):
    """Image names a test makes (commit, import) are removed after it."""
    names: list[str] = []
    yield names
    for n in names:
        try:
            rt.remove_image(n, force=True)
        except NotFound:
            pass


def _archive(rt) -> bytes:
    buf = io.BytesIO()
    rt.save_image("busybox", buf)
    return buf.getvalue()


# One row per route: (id, method, prepare(ctx) -> (path, kwargs), expected status per role in
# ROLES order, check(rt, ctx) run after each success (the effect on the real runtime), the
# audit action written for an operator's or administrator's success (None: a read)).
# prepare runs once per role, so each role acts on its own fresh target.
def _c(state):
    return lambda t: t.fresh(state)


ROUTES = [
    ("list", "get", lambda t: ("/api/containers", {}), (401, 200, 200, 200), None, None),
    ("detail", "get", lambda t: (f"/api/containers/{t.target.name}", {}), (401, 200, 200, 200), None, None),
    ("logs", "get", lambda t: (f"/api/containers/{t.target.id}/logs?lines=5", {}),
     (401, 200, 200, 200), None, None),
    ("diff", "get", lambda t: (f"/api/containers/{t.target.id}/diff", {}), (401, 200, 200, 200), None, None),
    ("create", "post", lambda t: ("/api/containers", {"data": {
        "image": "busybox", "name": t.new_name, "cmd": ["sleep", "300"], "memory": "32m", "start": True},
        "content_type": "application/json"}),
     (401, 403, 201, 201),
     lambda rt, t: rt.inspect(t.new_name).status == "running"
     and rt.inspect(t.new_name).limits.memory == 32 << 20, "create"),
    ("start", "post", lambda t: (f"/api/containers/{t.target.id}/start", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "running", "start"),
    ("stop", "post", lambda t: (f"/api/containers/{t.target.id}/stop", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "exited", "stop"),
    ("restart", "post", lambda t: (f"/api/containers/{t.target.id}/restart", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "running"
     and rt.inspect(t.target.id).pid != t.target.pid, "restart"),
    ("kill", "post", lambda t: (f"/api/containers/{t.target.id}/kill", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "exited", "kill"),
    ("pause", "post", lambda t: (f"/api/containers/{t.target.id}/pause", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "paused", "pause"),
    ("resume", "post", lambda t: (f"/api/containers/{t.target.id}/resume", {}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).status == "running", "resume"),
    ("remove", "delete", lambda t: (f"/api/containers/{t.target.id}", {}), (401, 403, 204, 204),
     lambda rt, t: not any(c.id == t.target.id for c in rt.list(all=True)), "remove"),
    ("limits", "put", lambda t: (f"/api/containers/{t.target.id}/limits", {
        "data": {"memory": "48m", "pids": 20}, "content_type": "application/json"}), (401, 403, 200, 200),
     lambda rt, t: rt.inspect(t.target.id).limits[::3] == (48 << 20, 20), "update"),
    ("commit", "post", lambda t: (f"/api/containers/{t.target.id}/commit", {
        "data": {"image": t.new_image, "message": "from the API"}, "content_type": "application/json"}),
     (401, 403, 201, 201), lambda rt, t: rt.images.get(t.new_image).name == t.new_image, "commit"),
    ("images", "get", lambda t: ("/api/images", {}), (401, 200, 200, 200), None, None),
    ("image", "get", lambda t: ("/api/images/busybox", {}), (401, 200, 200, 200), None, None),
    ("export", "get", lambda t: ("/api/images/busybox/export", {}), (401, 403, 200, 200),
     None, "image-export"),
    ("import", "post", lambda t: ("/api/images/import", {"data": {
        "archive": _upload(t), "name": t.new_image}}), (401, 403, 201, 201),
     lambda rt, t: rt.images.get(t.new_image).name == t.new_image, "image-import"),
    ("image-remove", "delete", lambda t: (f"/api/images/{t.own_image()}", {}), (401, 403, 204, 204),
     lambda rt, t: t.new_image not in {i.name for i in rt.images.list()}, "image-remove"),
    ("gc", "post", lambda t: ("/api/images/gc", {}), (401, 403, 200, 200), None, "image-gc"),
    ("audit", "get", lambda t: ("/api/audit", {}), (401, 403, 403, 200), None, None),
    ("oom", "get", lambda t: ("/api/oom?since=24h", {}), (401, 200, 200, 200), None, None),
    ("oom-event", "get", lambda t: (f"/api/oom/{t.oom_event().pk}", {}), (401, 200, 200, 200), None, None),
    ("me", "get", lambda t: ("/api/me", {}), (401, 200, 200, 200), None, None),
    ("processes", "get", lambda t: ("/api/host/processes", {}), (401, 200, 200, 200), None, None),
    ("namespaces", "get", lambda t: ("/api/host/namespaces", {}), (401, 200, 200, 200), None, None),
]
NEEDS = {"detail": "created", "logs": "created", "diff": "created", "start": "created", "stop": "running",
         "restart": "running", "kill": "running", "pause": "running", "resume": "paused",
         "remove": "created", "limits": "created", "commit": "created"}


def _upload(t):
    from django.core.files.uploadedfile import SimpleUploadedFile
    return SimpleUploadedFile("busybox.oci.tar", t.archive(), content_type="application/x-tar")


class Target:
    """What one role's request acts on: a fresh container, new names, a spare image."""

    def __init__(self, rt, fresh, route, spare_images):
        self.rt, self.fresh, self.spare = rt, fresh, spare_images
        self.target = fresh(NEEDS[route]) if route in NEEDS else None
        self.new_name = f"api-new-{secrets.token_hex(4)}"
        self.new_image = f"api-img-{secrets.token_hex(4)}:1"
        spare_images.append(self.new_image)

    def own_image(self):
        c = self.fresh("created")
        self.rt.commit(c.id, self.new_image)
        return self.new_image

    def archive(self):
        return _archive(self.rt)

    def oom_event(self):
        from django.utils import timezone
        return OomEvent.objects.create(at=timezone.now(), container_name="gone", killed_pid=4242,
                                       killed_command="tail", raw="Memory cgroup out of memory: ...")


@pytest.mark.parametrize("route,method,prepare,expected,check,audited", ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_for_every_role(route, method, prepare, expected, check, audited, api_clients, rt, fresh,
                                    spare_images):
    got = {}
    for role, want in zip(ROLES, expected):
        t = Target(rt, fresh, route, spare_images)
        path, kwargs = prepare(t)
        before = AuditEntry.objects.count()
        r = getattr(api_clients[role], method)(path, **kwargs)
        got[role] = r.status_code
        if r.status_code >= 400:
            assert r["Content-Type"].startswith("application/json"), (role, r.content[:200])
            assert r.json()["detail"]
        elif r.status_code != 204 and route != "export":
            r.json()
        if route == "export" and r.status_code == 200:
            with tarfile.open(fileobj=io.BytesIO(b"".join(r.streaming_content))) as tar:
                assert "index.json" in tar.getnames()
            r.close()
        if want < 300 and check is not None:
            assert check(rt, t), (route, role)                   # it really happened
        new = list(AuditEntry.objects.order_by("id")[before:])
        if role == "viewer" and want == 403 and method != "get":
            assert [(a.username, a.action, a.result) for a in new] == [("vera", audited, "denied")]
        elif want < 300 and audited:
            mine = [a for a in new if a.action == audited]
            assert [(a.username, a.result) for a in mine] == [
                ({"operator": "otto", "administrator": "ada"}[role], "ok")], route
        elif role == "anonymous":
            assert new == []
    assert tuple(got[r] for r in ROLES) == expected


# ------------------------------------------------------------ what viewers do not get
def test_env_values_are_masked_for_viewers(api_clients, fresh):
    c = fresh("created")
    seen = {role: [e for e in api_clients[role].get(f"/api/containers/{c.id}").json()["env"]
                   if e["name"] in ("API_TOKEN", "MODE")] for role in ("viewer", "operator", "administrator")}
    assert seen["viewer"] == [{"name": "API_TOKEN", "value": None}, {"name": "MODE", "value": None}]
    assert seen["operator"] == seen["administrator"] == [
        {"name": "API_TOKEN", "value": "ctr-secret-9c2d"}, {"name": "MODE", "value": "debug"}]
    assert "ctr-secret-9c2d" not in api_clients["viewer"].get("/api/containers").content.decode()
    images = {role: api_clients[role].get("/api/images/busybox").json()["env"] for role in ("viewer", "operator")}
    assert images["viewer"][0]["value"] is None and images["operator"][0]["value"].startswith("/")
    assert api_clients["viewer"].get("/api/containers").json()[0]["actions"] == []
    assert api_clients["operator"].get("/api/containers").json()[0]["actions"] == ["start", "remove"]


@pytest.fixture
def secret_process():
    """A host process with a secret on its command line (sh stays sh: two commands)."""
    import subprocess
    p = subprocess.Popen(["/bin/sh", "-c", "sleep 300; : host-secret-4f1e"])
    yield p
    p.kill()
    p.wait()


def test_host_command_lines_are_for_operators(api_clients, secret_process):
    from dashboard.live import selectors as live_selectors
    for role, shown in (("viewer", False), ("operator", True), ("administrator", True)):
        live_selectors.reset_host_cache()
        procs = api_clients[role].get("/api/host/processes").json()
        mine = next(p for p in procs if p["pid"] == secret_process.pid)         # listed for everyone
        assert mine["comm"] == "sh"
        assert (mine["cmdline"] == ["/bin/sh", "-c", "sleep 300; : host-secret-4f1e"]) is shown, role
        assert ("host-secret-4f1e" in api_clients[role].get("/api/host/namespaces").content.decode()
                + json.dumps(procs)) is shown, role


# ------------------------------------------------------------------ errors
def test_errors_are_json_with_the_runtimes_message(api_clients, fresh, rt):
    op = api_clients["operator"]
    r = op.post("/api/containers/no-such-container/start")
    assert (r.status_code, r.json()) == (404, {"detail": "container 'no-such-container' not found"})
    created = fresh("created")
    r = op.post(f"/api/containers/{created.id}/pause")
    assert r.status_code == 409 and "not running" in r.json()["detail"], r.json()
    running = fresh("running")
    r = op.delete(f"/api/containers/{running.id}")
    assert r.status_code == 409 and r.json()["detail"]
    assert rt.inspect(running.id).status == "running"
    r = op.post("/api/containers/x/explode")
    assert r.status_code == 400 and r.json()["detail"].startswith("action:")
    r = op.get("/api/oom?since=forever")
    assert r.status_code == 400
    r = op.get("/api/nothing/here")
    assert r.status_code == 404 and r["Content-Type"].startswith("application/json")
    r = op.delete("/api/images/no-such-image:1")
    assert r.status_code == 404 and "no-such-image" in r.json()["detail"]


@pytest.mark.parametrize("body,says", [
    ({"image": "busybox", "memory": "lots"}, "memory: invalid memory limit 'lots'"),
    ({"image": "busybox", "memory": "1m"}, "memory: memory limit '1m' is too small"),
    ({"image": "busybox", "cpus": "-1"}, "cpus: invalid cpus"),
    ({"image": "busybox", "cmd": "sleep 300"}, "cmd: Input should be a valid list"),
    ({"image": "busybox", "env": ["NOEQUALS"]}, "env:"),
    ({"image": "busybox", "name": "bad name!"}, "name:"),
    ({"image": "busybox", "seccomp": "custom"}, "seccomp:"),
    ({"name": "x"}, "image: Field required"),
    ({"image": "busybox", "restart": "sometimes"}, "restart: invalid restart policy 'sometimes'"),
])
def test_bad_create_is_a_400_and_creates_nothing(api_clients, rt, made, body, says):
    before = len(rt.list(all=True))
    r = api_clients["operator"].post("/api/containers", body, content_type="application/json")
    assert r.status_code == 400, r.content
    assert says in r.json()["detail"]
    assert len(rt.list(all=True)) == before
    assert not AuditEntry.objects.exclude(action="token-create").exists()


def test_unreadable_bodies_are_400(api_clients, fresh, rt):
    op = api_clients["operator"]
    assert op.post("/api/containers", "{not json", content_type="application/json").status_code == 400
    c = fresh("created")
    rt.update(c.id, Limits(memory=64 << 20))
    for body in ("[]", '{"memory": [1]}', '{"pids": "many"}', "null", ""):
        r = op.put(f"/api/containers/{c.id}/limits", body, content_type="application/json")
        assert r.status_code == 400, (body, r.content)
    assert rt.inspect(c.id).limits.memory == 64 << 20
    r = op.post("/api/images/import", {"name": "x"})                   # no file
    assert r.status_code == 400 and "archive" in r.json()["detail"]
    r = op.post("/api/images/import", {"archive": io.BytesIO(b"not a tar at all" * 100)})
    assert r.status_code == 400 and r.json()["detail"]


def test_an_upload_over_the_limit_is_a_json_413(api_clients, settings, spare_images, rt):
    settings.TERRARIUM_MAX_UPLOAD_BYTES = 1 << 20
    r = api_clients["operator"].post("/api/images/import", {"archive": io.BytesIO(b"x" * (2 << 20))})
    assert r.status_code == 413 and "TERRARIUM_MAX_UPLOAD" in r.json()["detail"]


def test_an_unknown_image_is_a_404_from_the_runtime(api_clients, made):
    r = api_clients["operator"].post("/api/containers", {"image": "nothere:9"}, content_type="application/json")
    assert r.status_code == 404 and "nothere" in r.json()["detail"]


# ------------------------------------------------------------------ tokens
def test_the_token_is_stored_hashed(operator):
    row, token = tokens.token_create(user=operator, name="ci")
    assert token.startswith("trm_") and len(token) > 40
    stored = json.dumps(list(ApiToken.objects.values()), default=str)
    assert token not in stored and token[12:] not in stored
    assert row.digest == tokens.digest(token) and row.prefix == token[:12]
    assert AuditEntry.objects.get().action == "token-create"


def test_a_token_in_the_url_is_refused(api_clients, fresh, rt):
    c = fresh("created")
    token = api_clients["operator"].token
    for query in (f"access_token={token}", f"token={token}", f"x={token}", "api_key=whatever"):
        r = Client().post(f"/api/containers/{c.id}/start?{query}")
        assert r.status_code == 400 and "never in a URL" in r.json()["detail"], query
        r = api_clients["operator"].post(f"/api/containers/{c.id}/start?{query}")   # even with the header
        assert r.status_code == 400
    assert rt.inspect(c.id).status == "created"
    assert not AuditEntry.objects.exclude(action="token-create").exists()


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer trm_nope", "Basic b3R0bzpwdw==", "trm_x", "Token trm_x"])
def test_no_or_bad_token_is_401(header):
    r = Client(HTTP_AUTHORIZATION=header).get("/api/containers") if header else Client().get("/api/containers")
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["detail"]


def test_a_session_cookie_is_not_a_token(sessions, fresh, rt):
    operator_client = sessions["operator"]
    c = fresh("created")
    assert operator_client.get("/api/containers").status_code == 401
    assert operator_client.post(f"/api/containers/{c.id}/start").status_code == 401
    assert rt.inspect(c.id).status == "created"


def test_a_revoked_token_stops_working(operator, api_clients):
    op = api_clients["operator"]
    assert op.get("/api/me").json() == {"username": "otto", "role": "operator", "can_operate": True,
                                        "can_audit": False}
    row = ApiToken.objects.get(user=operator)
    assert tokens.token_revoke(user=operator, token_id=row.pk) is not None
    assert op.get("/api/me").status_code == 401
    assert AuditEntry.objects.filter(action="token-revoke", username="otto").exists()


def test_a_deactivated_users_tokens_stop_at_once(operator, api_clients):
    op = api_clients["operator"]
    assert op.get("/api/me").status_code == 200
    operator.is_active = False
    operator.save()
    assert op.get("/api/me").status_code == 401
    operator.is_active = True
    operator.save()
    assert op.get("/api/me").status_code == 200


def test_a_role_change_applies_to_the_next_request(operator, api_clients, fresh, rt):
    from dashboard.containers.roles import VIEWER, assign_role
    c = fresh("created")
    assign_role(operator, VIEWER)
    assert api_clients["operator"].post(f"/api/containers/{c.id}/start").status_code == 403
    assert rt.inspect(c.id).status == "created"


def test_nobody_revokes_someone_elses_token_on_the_page(operator, sessions):
    viewer_client = sessions["viewer"]
    row, _ = tokens.token_create(user=operator, name="otto's")
    r = viewer_client.post(f"/account/tokens/{row.pk}/revoke/", follow=True)
    assert r.status_code == 200 and ApiToken.objects.filter(pk=row.pk).exists()


def test_the_token_page_shows_a_new_token_once(sessions):
    viewer_client = sessions["viewer"]
    r = viewer_client.post("/account/tokens/", {"name": "laptop"})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    token = r.context["new_token"]
    assert token in r.content.decode()
    page = viewer_client.get("/account/tokens/").content.decode()
    assert token not in page and token[:12] in page and "laptop" in page
    assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/me").json()["username"] == "vera"
    assert viewer_client.post("/account/tokens/", {"name": "  "}).status_code == 400


def test_administrators_see_and_revoke_tokens_in_the_admin(sessions, operator, api_clients):
    admin_client_role, operator_client = sessions["administrator"], sessions["operator"]
    row = ApiToken.objects.get(user=operator)
    assert operator_client.get("/admin/api/apitoken/").status_code == 302
    page = admin_client_role.get("/admin/api/apitoken/").content.decode()
    assert row.prefix in page and api_clients["operator"].token not in page
    r = admin_client_role.post(f"/admin/api/apitoken/{row.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert api_clients["operator"].get("/api/me").status_code == 401


# ------------------------------------------------------------------ OpenAPI
def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(pairs)


def test_the_openapi_document_validates(api_clients, sessions):
    viewer_client = sessions["viewer"]
    from openapi_spec_validator import validate
    assert Client().get("/api/openapi.json").status_code == 401
    r = api_clients["viewer"].get("/api/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.content, object_pairs_hook=_no_duplicate_keys)   # Swagger UI refuses those
    validate(doc)
    assert doc["components"]["securitySchemes"]["TokenAuth"] == {"type": "http", "scheme": "bearer"}
    assert "application/x-tar" in doc["paths"]["/api/images/{name}/export"]["get"]["responses"]["200"]["content"]
    for path in ("/api/containers", "/api/containers/{ref}/{action}", "/api/images/import", "/api/audit",
                 "/api/oom/{event_id}"):
        assert path in doc["paths"], path
    assert viewer_client.get("/api/openapi.json").json() == doc           # a logged-in browser too


def test_the_docs_page_is_served_from_here(sessions):
    viewer_client = sessions["viewer"]
    assert Client().get("/api/docs").status_code == 302                  # to the login page
    html = viewer_client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html and "cdn" not in html.lower()


def test_create_with_a_restart_policy_and_a_failed_start_leaves_nothing(api_clients, rt, made, name):
    op = api_clients["operator"]
    r = op.post("/api/containers", {"image": "busybox", "name": name, "cmd": ["sleep", "300"],
                                    "restart": "on-failure:2"}, content_type="application/json")
    assert r.status_code == 201, r.content
    assert r.json()["lifecycle"]["restart_policy"] == "on-failure:2"
    r = op.post("/api/containers", {"image": "busybox", "name": f"{name}-x", "cmd": ["no-such-program"],
                                    "start": True}, content_type="application/json")
    assert r.status_code == 409 and "the container was removed" in r.json()["detail"]
    assert f"{name}-x" not in {c.name for c in rt.list(all=True)}
