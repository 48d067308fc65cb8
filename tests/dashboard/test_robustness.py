"""Bad input never gives a 500 or a traceback: unknown objects are 404s, odd
form values are messages, and nothing is changed by them."""
from __future__ import annotations

import pytest

from runtime import Spec

GHOST = "f" * 64

GET_ROUTES = [
    f"/containers/{GHOST}/", f"/containers/{GHOST}/row/", f"/containers/{GHOST}/head/",
    f"/containers/{GHOST}/layers/", f"/containers/{GHOST}/layers/changes/",
    f"/containers/{GHOST}/layers/origin/?path=/etc/passwd", f"/containers/{GHOST}/history/",
    "/image/no-such-image/", "/image/no-such-image/export/", "/image/..%2F..%2Fetc/",
    "/oom/999999/", "/oom/?container=%00&since=yesterday&scope=nonsense",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", GET_ROUTES)
def test_unknown_things_are_404_or_a_page_never_500(operator_client, rt, url):
    r = operator_client.get(url)
    assert r.status_code in (200, 302, 400, 404, 405), (url, r.status_code)


POST_ROUTES = [
    f"/containers/{GHOST}/start/", f"/containers/{GHOST}/stop/", f"/containers/{GHOST}/remove/",
    f"/containers/{GHOST}/limits/", f"/containers/{GHOST}/commit/",
    "/image/no-such-image/remove/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", POST_ROUTES)
def test_actions_on_unknown_things_are_handled(operator_client, rt, url):
    r = operator_client.post(url, {"memory": "12zz", "image": "../x", "cpus": "-1"})
    assert r.status_code in (302, 400, 404), (url, r.status_code)


@pytest.mark.django_db
def test_odd_values_on_a_real_container_are_a_message(operator_client, rt, made, name):
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "300")))
    for data in ({"memory": "12zz"}, {"cpus": "-1"}, {"pids": "many"}, {"memory": "1k"}):
        r = operator_client.post(f"/containers/{c.id}/limits/", data, follow=True)
        assert r.status_code == 200, data
        assert rt.inspect(c.id).limits == c.limits          # nothing changed
    r = operator_client.post(f"/containers/{c.id}/commit/", {"image": "Bad Name!"}, follow=True)
    assert r.status_code == 200
    assert not any(i.name == "Bad Name!" for i in rt.images.list())
