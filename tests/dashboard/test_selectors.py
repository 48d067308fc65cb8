import datetime as dt
import secrets

import pytest

from dashboard.containers import selectors, services
from dashboard.containers.models import AuditEntry, Container

pytestmark = pytest.mark.django_db


def _row(status, **kw):
    return Container.objects.create(id=kw.pop("id", "a" * 64), name=kw.pop("name", "c1"), image="busybox",
                                    status=status, created_at=dt.datetime.now(dt.timezone.utc), **kw)


@pytest.mark.parametrize("status,expected", [
    ("created", ("start", "remove")),
    ("running", ("stop", "restart", "pause", "kill")),
    ("paused", ("resume", "stop", "kill")),
    ("exited", ("start", "remove")),
])
def test_actions_follow_state_for_operators(operator, status, expected):
    assert selectors.container_actions(container=_row(status), user=operator) == expected


def test_viewers_get_no_actions(viewer):
    assert selectors.container_actions(container=_row("running"), user=viewer) == ()


def test_list_counts_and_get():
    _row("running", id="a" * 64, name="one")
    _row("exited", id="b" * 64, name="two", exit_code=137, oom_killed=True)
    assert {c.name for c in selectors.container_list()} == {"one", "two"}
    assert selectors.container_counts() == {"running": 1, "exited": 1}
    assert selectors.container_get(container_id="b" * 64).oom_killed
    assert selectors.container_get(container_id="c" * 64) is None


def test_audit_list_search(operator):
    """The page's rows and the CLI's (the runtime's audit log, shared by this
    test session: other tests' CLI actions are in it too) are searched alike."""
    tag = secrets.token_hex(3)
    AuditEntry.objects.create(user=operator, username="otto", action="stop", container_name=f"web-{tag}", result="ok")
    AuditEntry.objects.create(username="ada", action="start", container_name=f"db-{tag}", result="error")
    rows, note = selectors.audit_list(query=f"web-{tag}")
    assert (note, [e.username for e in rows]) == ("", ["otto"])
    rows, _ = selectors.audit_list(query="start")
    assert [e.username for e in rows if isinstance(e, AuditEntry)] == ["ada"]
    assert all(e.action == "start" and e.source == "cli" for e in rows if not isinstance(e, AuditEntry))
    assert len([e for e in selectors.audit_list()[0] if isinstance(e, AuditEntry)]) == 2


def test_image_list_knows_containers_using_each_image(rt, idle_container):
    services.images_sync()
    services.containers_reconcile()
    images = {i.name: i for i in selectors.image_list()}
    assert [c.id for c in images["busybox"].containers] == [idle_container.id]
    assert images["busybox"].total_size > 0
    assert images["lab"].containers == []


def test_container_logs_and_layers(rt, idle_container):
    services.images_sync()
    services.containers_reconcile()
    row = Container.objects.get(id=idle_container.id)
    layers = selectors.container_layers(container=row)
    assert len(layers) == 1 and layers[0]["layer"].digest.startswith("sha256:")
    assert isinstance(selectors.container_logs(container_id=row.id), str)


def test_container_logs_are_the_last_lines(rt, name, cleanup):
    from runtime import Spec
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name,
                    cmd=("sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done")))
    rt.wait(c.id, timeout=60)
    assert selectors.container_logs(container_id=c.id).splitlines() == [f"line-{i}" for i in range(2950, 3000)]


def test_container_logs_show_at_most_a_bounded_tail_of_one_huge_line(rt, name, cleanup):
    from runtime import Spec
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x")))
    rt.wait(c.id, timeout=60)
    assert selectors.container_logs(container_id=c.id) == "x" * selectors.LOG_TAIL_BYTES
