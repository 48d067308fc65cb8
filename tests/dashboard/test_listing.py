"""The container list at scale (dashboard/containers/listing.py): the query in
the URL (search, filters, sort, page), bad values answered with a message and
never a 500, the page's own fetch, and bulk stop/remove with its permissions
and audit rows.  Containers are created, never started: cheap."""
import asyncio
import re
import secrets

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.containers import listing
from dashboard.containers.models import AuditEntry
from runtime import Spec

pytestmark = pytest.mark.django_db
LIST = "/"


@pytest.fixture
def five(rt, made):
    """Five created containers, p-00..p-04 under a unique prefix; p-03 runs the lab image."""
    prefix = f"ls{secrets.token_hex(3)}"
    out = []
    for i in range(5):
        out.append(rt.create(Spec(image="lab" if i == 3 else "busybox", name=f"{prefix}-{i:02d}",
                                  cmd=("sleep", str(100 + i)))))
    return prefix, out


def _names(r) -> list[str]:
    return re.findall(r'<tr data-container-id="[0-9a-f]{64}" data-engine="terrarium" data-status="\w+" '
                      r'data-name="([^"]+)"', r.content.decode())


def test_parse_drops_bad_values_and_says_why():
    q, errors = listing.parse({"page": "abc", "sort": "nonsense", "per": "7", "state": "bogus",
                               "engine": "nope", "q": "x" * 300})
    assert (q.page, q.sort, q.per, q.state, q.engine, len(q.q)) == (1, "-created", 50, "", "", 200)
    assert len(errors) == 6
    q, errors = listing.parse({"page": "3", "sort": "-name", "per": "25", "state": "running", "q": " web "})
    assert (q.page, q.sort, q.per, q.state, q.q, errors) == (3, "-name", 25, "running", "web", [])
    assert q.url() == "?q=web&state=running&sort=-name&per=25&page=3"
    assert q.sort_url("name") == "?q=web&state=running&sort=name&per=25"      # flips, back to page 1
    assert listing.parse({"page": "-1"})[0].page == 1 and listing.parse({"page": "٣"})[1]


BAD = [("page=abc", "Invalid page &#x27;abc&#x27;"), ("sort=nonsense", "Cannot sort by &#x27;nonsense&#x27;"),
       ("per=7", "Page size 7 is not offered"), ("state=bogus", "No state &#x27;bogus&#x27;"),
       ("page=99999999999", "Invalid page"), ("engine=nonsense", "No engine &#x27;nonsense&#x27;")]


def test_bad_query_parameters_get_a_message_not_a_500(operator_client):
    for query, message in BAD:
        for fetch in ({}, {"HTTP_X_REQUESTED_WITH": "fetch"}):       # the page and the page's own fetch
            r = operator_client.get(f"{LIST}?{query}", **fetch)
            assert r.status_code == 200, query
            assert message in r.content.decode(), query


def test_search_filter_sort_and_page(operator_client, five):
    prefix, cs = five
    r = operator_client.get(LIST, {"q": prefix, "sort": "name"})
    assert _names(r) == [c.name for c in cs]
    assert _names(operator_client.get(LIST, {"q": prefix, "sort": "-name"})) == [c.name for c in reversed(cs)]
    assert _names(operator_client.get(LIST, {"q": cs[2].id[:10]})) == [cs[2].name]          # id prefix
    assert _names(operator_client.get(LIST, {"q": f"sleep {102}"})) == [cs[2].name]          # command
    assert _names(operator_client.get(LIST, {"q": prefix, "image": "lab"})) == [cs[3].name]
    assert _names(operator_client.get(LIST, {"q": prefix, "state": "running"})) == []
    assert _names(operator_client.get(LIST, {"q": prefix, "sort": "command"})) == [c.name for c in cs]
    # 5 rows, 25 a page: page 2 does not exist, so the last page (1) is shown
    r = operator_client.get(LIST, {"q": prefix, "per": "25", "page": "2", "sort": "name"})
    # "matching" only when the host has other containers than these five (the
    # list shows every container on it: a quiet host has none)
    total = int(re.search(r'id="pager-range">[^<]* of (\d+)</span>',
                          operator_client.get(LIST).content.decode()).group(1))
    shown = "1–5 of 5" + (" matching" if total != 5 else "")
    assert _names(r) == [c.name for c in cs] and f'id="pager-range">{shown}</span>' in r.content.decode()


def test_a_page_shows_its_rows_and_counts_every_container(operator_client, five, rt):
    prefix, cs = five
    total = len(rt.list(all=True))
    r = operator_client.get(LIST, {"q": prefix, "per": "25", "engine": "terrarium"})   # ours: no other engine's
    body = r.content.decode()
    assert f'<span id="count-total">{total}</span>' in body
    assert 'id="pick-all"' in body and 'id="bulk-bar"' in body
    # the page's own fetch: the parts that change, not the whole page
    part = operator_client.get(LIST, {"q": prefix + "-04"}, HTTP_X_REQUESTED_WITH="fetch")
    text = part.content.decode()
    assert part.status_code == 200 and "<html" not in text and 'id="list-counts"' in text
    assert _names(part) == [cs[4].name]
    assert 'data-url="/?q=' + prefix + '-04"' in text


def test_viewer_sees_no_bulk_controls_and_a_bulk_post_is_refused(viewer_client, five, rt):
    prefix, cs = five
    body = viewer_client.get(LIST, {"q": prefix}).content.decode()
    assert "bulk-bar" not in body and "pick-one" not in body and 'data-action="remove"' not in body
    for action in ("stop", "remove"):
        r = viewer_client.post(reverse("containers:bulk", args=[action]), {"id": [cs[0].id]})
        assert r.status_code == 403
    assert rt.inspect(cs[0].id).status == "created"
    assert sorted(AuditEntry.objects.filter(result="denied").values_list("action", flat=True)) == \
        ["remove", "stop"]
    assert Client().post(reverse("containers:bulk", args=["remove"]), {"id": [cs[0].id]}).status_code == 302
    assert viewer_client.get(reverse("containers:bulk", args=["stop"])).status_code == 405


def test_bulk_remove_reports_each_container_and_goes_on_after_an_error(operator_client, five, rt):
    prefix, cs = five
    rt.start(cs[1].id)                                     # running: remove refuses it
    operator_client.get(LIST)                              # the mirror in step, as the page has it
    ids = [cs[0].id, cs[1].id, "f" * 64, "../etc", cs[2].id]
    r = operator_client.post(reverse("containers:bulk", args=["remove"]), {"id": ids},
                             HTTP_X_REQUESTED_WITH="fetch")
    assert r.status_code == 200
    got = r.json()
    assert [(x["name"], x["ok"]) for x in got["results"]] == [
        (cs[0].name, True), (cs[1].name, False), ("ffffffffffff", False), ("../etc", False), (cs[2].name, True)]
    assert got["ok"] is False and got["message"].startswith("Remove: 2 of 5 done.")
    assert "ffffffffffff" in got["results"][2]["message"] and got["results"][3]["message"] == "not a container id"
    assert {c.id for c in rt.list(all=True)} & {c.id for c in cs} == {cs[1].id, cs[3].id, cs[4].id}
    audit = AuditEntry.objects.filter(action="remove").values_list("container_name", "result")
    assert sorted(audit) == sorted([(cs[0].name, "ok"), (cs[1].name, "error"), ("ffffffffffff", "error"),
                                    (cs[2].name, "ok")])          # "../etc" never reached the runtime
    # stop: the running one with no wait, with the same audit rows as its button
    r = operator_client.post(reverse("containers:bulk", args=["stop"]), {"id": [cs[1].id], "timeout": "0"},
                             HTTP_X_REQUESTED_WITH="fetch")
    assert r.json()["results"][0]["ok"] is True and rt.inspect(cs[1].id).status == "exited"
    assert AuditEntry.objects.filter(action="stop", container_id=cs[1].id, result="ok").count() == 1
    bad = operator_client.post(reverse("containers:bulk", args=["stop"]), {"id": [cs[1].id], "timeout": "soon"},
                               HTTP_X_REQUESTED_WITH="fetch")
    assert bad.status_code == 400 and "invalid timeout" in bad.json()["message"]


@pytest.mark.django_db(transaction=True)
def test_the_list_socket_samples_the_running_rows_it_names_and_releases_them(viewer, rt, made, settings):
    """watch → the sampler samples those rows (running ones only), sends their
    usage, and lets them go when the page names others or closes."""
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from dashboard.asgi import application
    from dashboard.containers import services
    from dashboard.live import sampler
    from tests.dashboard.test_consumers import _headers
    settings.TERRARIUM_RECONCILE_INTERVAL = 0
    settings.TERRARIUM_LIVE_TICK = 0.2
    sampler.reset_sampler()
    busy = rt.create(Spec(image="busybox", name=f"w{secrets.token_hex(3)}", cmd=("sleep", "300")))
    rt.start(busy.id)
    idle = rt.create(Spec(image="busybox", name=f"w{secrets.token_hex(3)}", cmd=("sleep", "300")))
    services.containers_refresh()
    headers = _headers(viewer)

    async def run():
        comm = WebsocketCommunicator(application, "/ws/containers/", headers=headers)
        assert (await comm.connect())[0]
        # another owner's key that discovery does not know is not sampled either
        await comm.send_json_to({"type": "watch", "ids": [busy.id, idle.id, "nope", "docker-" + "0" * 64]})
        got = await comm.receive_json_from(timeout=5)
        while got.get("type") != "usage":
            got = await comm.receive_json_from(timeout=5)
        assert got["id"] == busy.id and got["mem"] > 0
        assert set(sampler.get_sampler().subscribers) == {busy.id}          # not the created one
        await comm.send_json_to({"type": "watch", "ids": []})              # the row left the page
        for _ in range(50):
            if not sampler.get_sampler().subscribers:
                break
            await asyncio.sleep(0.02)
        assert not sampler.get_sampler().subscribers
        await comm.send_json_to({"type": "watch", "ids": "all"})
        assert await comm.receive_json_from(timeout=2) == {"type": "error",
                                                          "error": "watch takes a list of container ids"}
        await comm.send_json_to({"type": "watch", "ids": [busy.id]})
        await comm.disconnect()                                             # closing releases it too
        assert not sampler.get_sampler().subscribers
    async_to_sync(run)()
    sampler.reset_sampler()
