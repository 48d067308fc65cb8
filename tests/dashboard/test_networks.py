"""The dashboard's networks: the Networks page, a container's network panel
(read inside its namespace), and the create form's network and ports, with
`host` for administrators only."""
import re

import pytest
from django.urls import reverse

from runtime import Spec
from runtime.network import veth_name

pytestmark = pytest.mark.django_db


@pytest.fixture
def bridged(rt, made, name):
    """A running container on the default network serving HTTP on port 80."""
    return rt.run(Spec(image="busybox", name=name, network="bridge",
                       cmd=("sh", "-c", "mkdir -p /w && echo hi > /w/index.html && exec httpd -f -p 80 -h /w")))


def test_networks_page_shows_bridge_address_and_veth_pair(bridged, rt, viewer_client):
    r = viewer_client.get(reverse("containers:networks"))
    assert r.status_code == 200
    page = r.content.decode()
    net = rt.networks.inspect("bridge")
    assert net["bridge"] in page and net["subnet"] in page
    assert bridged.address in page and f"{veth_name(rt.root, bridged.id)} ⟷ eth0" in page
    assert reverse("containers:detail", args=[bridged.id]) in page


def test_network_panel_reads_the_containers_namespace(bridged, rt, viewer_client):
    from tests.runtime.test_network import fetch_in      # busybox wget, retried while httpd starts
    assert fetch_in(rt, f"{bridged.name}-c", [], f"http://{bridged.address}/")[0] == 0
    page = viewer_client.get(reverse("containers:detail", args=[bridged.id])).content.decode()
    panel = page[page.index('id="network"'):]
    assert f'id="net-address">{bridged.address}<' in panel
    assert re.search(r"<td class=\"mono\">eth0</td>", panel) and "<td class=\"mono\">lo</td>" in panel
    assert "default via" not in panel and f"via {rt.networks.inspect('bridge')['gateway']}" in panel
    assert re.search(r"(0\.0\.0\.0|\[::\]):80</td>.*?LISTEN", panel, re.S)     # httpd: /proc/<pid>/net/tcp(6)
    rt.remove(f"{bridged.name}-c", force=True)


def test_create_form_network_and_ports(rt, made, name, operator_client):
    r = operator_client.post(reverse("containers:create"), {
        "image": "busybox", "name": name, "command": "sleep 60", "network": "bridge",
        "ports": "127.0.0.1:18997:80", "seccomp": "default", "start": "on"})
    assert r.status_code == 302, r.content.decode()[-2000:]
    c = rt.inspect(name)
    assert (c.network, c.ports, c.status) == ("bridge", ("127.0.0.1:18997:80/tcp",), "running")
    # bad ports, or ports without a bridge: the form says so, nothing is made
    for ports, network in (("80", "bridge"), ("8080:80", "none")):
        r = operator_client.post(reverse("containers:create"), {
            "image": "busybox", "name": f"{name}-x", "network": network, "ports": ports, "seccomp": "default"})
        assert r.status_code == 200 and b"field-error" in r.content
    assert [x.name for x in rt.list() if x.name == f"{name}-x"] == []


def test_host_network_is_for_administrators_only(rt, made, name, operator_client, admin_client_role):
    form = {"image": "busybox", "name": name, "command": "true", "network": "host", "seccomp": "default"}
    assert b'value="host"' not in operator_client.get(reverse("containers:create")).content
    r = operator_client.post(reverse("containers:create"), form)
    assert r.status_code == 200 and b"Select a valid choice" in r.content
    assert b'value="host"' in admin_client_role.get(reverse("containers:create")).content
    assert admin_client_role.post(reverse("containers:create"), form).status_code == 302
    assert rt.inspect(name).network == "host"
