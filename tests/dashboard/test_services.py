"""services.py against the real runtime (temp root, test cgroup parent)."""
import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from dashboard.containers import events, services
from dashboard.containers.models import AuditEntry, Container, Image, Layer
from runtime import Spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def group_inbox():
    """A channel in the `containers` group; returns a function draining its events."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.GROUP, channel)

    def drain():
        out = []
        while _pending(layer, channel):
            out.append(async_to_sync(layer.receive)(channel))
        return out
    yield drain
    async_to_sync(layer.group_discard)(events.GROUP, channel)


def _pending(layer, channel) -> bool:
    queue = layer.channels.get(channel)
    return bool(queue and not queue.empty())


def test_create_start_stop_audits_mirrors_and_publishes(rt, made, operator, name, group_inbox):
    c = services.container_create(user=operator, image="busybox", name=name, cmd=["sleep", "300"],
                                  memory=32 << 20, start=True)
    assert c.status == "running" and c.limits.memory == 32 << 20
    row = Container.objects.get(id=c.id)
    assert row.status == "running" and row.memory_limit == 32 << 20 and row.pid == c.pid
    assert row.namespaces.get("pid")
    got = group_inbox()
    assert got and all(e["type"] == events.CHANGED for e in got)
    assert got[-1]["container"]["status"] == "running"

    stopped = services.container_stop(user=operator, container_id=c.id, timeout=5)
    assert stopped.status == "exited"
    assert Container.objects.get(id=c.id).status == "exited"
    assert group_inbox()[-1]["container"] == events.container_payload(Container.objects.get(id=c.id))
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "result", "username"))
    assert actions == [("create", "ok", "otto"), ("start", "ok", "otto"), ("stop", "ok", "otto")]

    services.container_remove(user=operator, container_id=c.id)
    assert not Container.objects.filter(id=c.id).exists()


def test_runtime_errors_become_service_errors_and_are_audited(rt, made, operator, name):
    with pytest.raises(services.ServiceError, match="nope"):
        services.container_create(user=operator, image="nope", name=name)
    assert not Container.objects.exists()
    c = services.container_create(user=operator, image="busybox", name=name, cmd=["true"])
    with pytest.raises(services.ServiceError, match="not running|created"):
        services.container_pause(user=operator, container_id=c.id)
    err = AuditEntry.objects.filter(result="error").order_by("id")
    assert [e.action for e in err] == ["create", "pause"]
    assert "nope" in err[0].message


def test_reconcile_adopts_outside_containers_and_drops_removed_ones(rt, made, name, group_inbox):
    outside = rt.create(Spec(image="busybox", name=name, cmd=("sleep", "1")))   # as the CLI would
    changes = services.containers_reconcile()
    assert [e["container"]["id"] for e in changes if e["type"] == events.CHANGED] == [outside.id]
    assert Container.objects.get(id=outside.id).status == "created"
    assert services.containers_reconcile() == []          # nothing changed: nothing published
    rt.remove(outside.id)
    changes = services.containers_reconcile()
    assert changes == [events.removed_event(outside.id, name)]
    assert not Container.objects.filter(id=outside.id).exists()


def test_update_limits(rt, made, operator, name):
    c = services.container_create(user=operator, image="busybox", name=name, cmd=["true"])
    services.container_update_limits(user=operator, container_id=c.id, memory=64 << 20, pids=10)
    row = Container.objects.get(id=c.id)
    assert (row.memory_limit, row.pids_limit, row.cpus_limit) == (64 << 20, 10, None)


def test_images_sync_mirrors_the_store(rt):
    services.images_sync()
    names = set(Image.objects.values_list("name", flat=True))
    assert {"busybox", "lab"} <= names
    lab = Image.objects.get(name="lab")
    assert lab.layers.count() == 2
    assert Layer.objects.filter(digest__startswith="sha256:").count() >= 2
    services.images_sync()       # idempotent
    assert Image.objects.get(name="lab").layers.count() == 2


def test_denied_audit_rows_are_rate_limited_per_user(viewer, operator, settings):
    settings.TERRARIUM_AUDIT_DENIED_PER_MINUTE = 3
    rows = [services.audit_denied(user=viewer, action="start") for _ in range(5)]
    assert [r is not None for r in rows] == [True, True, True, False, False]
    assert services.audit_denied(user=operator, action="start") is not None    # per user
    AuditEntry.objects.filter(username="vera").update(
        at=AuditEntry.objects.get(pk=rows[0].pk).at.replace(year=2000))       # a minute passed
    assert services.audit_denied(user=viewer, action="start") is not None
    assert AuditEntry.objects.filter(result="denied").count() == 5


# ---------------------------------------------------------------- retention
def _audit_rows(n, *, days_ago=0):
    rows = [AuditEntry.objects.create(username="x", action="start", result="ok") for _ in range(n)]
    if days_ago:
        when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago)
        AuditEntry.objects.filter(pk__in=[r.pk for r in rows]).update(at=when)
    return rows


def test_records_prune_deletes_by_age_then_keeps_only_the_newest(settings):
    from dashboard.containers.models import OomEvent
    from django.utils import timezone
    settings.TERRARIUM_AUDIT_KEEP_DAYS, settings.TERRARIUM_AUDIT_KEEP_ROWS = 10, 5
    settings.TERRARIUM_OOM_KEEP_DAYS, settings.TERRARIUM_OOM_KEEP_ROWS = 10, 100
    _audit_rows(3, days_ago=11)                          # too old
    kept = _audit_rows(8)                                # too many: the 3 oldest go
    OomEvent.objects.create(at=timezone.now() - dt.timedelta(days=11), scope="container")
    young = OomEvent.objects.create(at=timezone.now(), scope="container")
    assert services.records_prune() == {"audit": 6, "oom": 1}
    assert list(AuditEntry.objects.order_by("id").values_list("id", flat=True)) == [r.pk for r in kept[3:]]
    assert list(OomEvent.objects.all()) == [young]
    assert services.records_prune() == {"audit": 0, "oom": 0}


def test_prune_records_command(settings):
    from io import StringIO

    from django.core.management import call_command
    settings.TERRARIUM_AUDIT_KEEP_DAYS = 1
    _audit_rows(2, days_ago=3)
    out = StringIO()
    call_command("prune_records", stdout=out)
    assert out.getvalue().strip() == "prune_records: deleted 2 audit entries, 0 OOM events"


def test_every_stored_container_key_fits_the_longest_discovery_key():
    """Another owner's key (runtime.discovery.make_key) is longer than our 64
    hex: "podman-<64 hex>" is 71, a Kubernetes one up to 211.  Each column that
    keeps a container's key or engine id holds the longest."""
    from dashboard.containers.models import OomEvent
    from dashboard.live.models import MinutePoint
    from runtime.discovery import make_key
    from runtime.discovery.registry import is_key
    longest = make_key("kubernetes", "x" * 200)
    assert is_key(longest) and not is_key(longest + "x")
    for model, field in ((MinutePoint, "container_id"), (AuditEntry, "container_id"),
                         (OomEvent, "container_key")):
        assert model._meta.get_field(field).max_length >= len(longest), (model.__name__, field)
