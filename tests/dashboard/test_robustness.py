"""Bad input never gives a 500 or a traceback: unknown objects are 404s, odd
form values are messages, and nothing is changed by them."""
from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from runtime import Spec

GHOST = "f" * 64

GET_ROUTES = {
    f"/containers/{GHOST}/": 404, f"/containers/{GHOST}/row/": 404,
    f"/containers/{GHOST}/head/": 404, f"/containers/{GHOST}/layers/": 404,
    f"/containers/{GHOST}/layers/changes/": 404,
    f"/containers/{GHOST}/layers/origin/?path=/etc/passwd": 400,      # JSON error: no such container
    f"/containers/{GHOST}/history/": 200,     # history outlives its container: an empty series
    "/image/no-such-image/": 404, "/image/no-such-image/export/": 404, "/image/..%2F..%2Fetc/": 404,
    "/oom/999999/": 404, "/oom/?container=%00&since=yesterday&scope=nonsense": 200,   # filters ignored
}


@pytest.mark.django_db
@pytest.mark.parametrize("url,status", GET_ROUTES.items())
def test_unknown_things_are_404_or_a_page_never_500(operator_client, rt, url, status):
    assert operator_client.get(url).status_code == status, url


POST_ROUTES = {
    f"/containers/{GHOST}/start/": f"/containers/{GHOST}/",
    f"/containers/{GHOST}/stop/": f"/containers/{GHOST}/",
    f"/containers/{GHOST}/remove/": f"/containers/{GHOST}/",
    f"/containers/{GHOST}/limits/": f"/containers/{GHOST}/",
    f"/containers/{GHOST}/commit/": f"/containers/{GHOST}/layers/",
    "/image/no-such-image/remove/": "/image/no-such-image/",
}


@pytest.mark.django_db
@pytest.mark.parametrize("url,back", POST_ROUTES.items())
def test_actions_on_unknown_things_are_handled(operator_client, rt, url, back):
    """Back where the button was, with the runtime's message (never a 500)."""
    r = operator_client.post(url, {"memory": "12zz", "image": "../x", "cpus": "-1"})
    assert (r.status_code, r["Location"]) == (302, back), url
    said = [str(m) for m in get_messages(r.wsgi_request)]
    assert said and all("not found" in m or "invalid" in m for m in said), said


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
