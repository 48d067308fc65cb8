"""Networks in Chromium: create a bridged container with a published port
from the form, see its veth pair on the Networks page and its namespace's
interfaces, routes and listening socket on its page, and a container's rx
graph move while its wget downloads from the first one."""
import os
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from runtime import Spec
from runtime.network import veth_name

pytestmark = pytest.mark.browser


def test_network_from_the_form_to_the_networks_page(login, server, rt, made, name, shots):
    page = login("operator")
    page.goto(server + "/containers/new/")
    expect(page.locator("#id_network option[value=host]")).to_have_count(0)     # administrators only
    page.select_option("#id_image", "busybox")
    page.fill("#id_name", name)
    page.fill("#id_command", "sh -c 'mkdir -p /w && echo from-the-form > /w/index.html && "
                             "dd if=/dev/zero of=/w/big bs=1024 count=256 2>/dev/null; exec httpd -f -p 80 -h /w'")
    page.select_option("#id_network", "bridge")
    page.fill("#id_ports", "127.0.0.1:18996:80")
    page.click("button:has-text('Create')")
    page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/$"))
    c = rt.inspect(name)
    assert (c.status, c.network, c.ports) == ("running", "bridge", ("127.0.0.1:18996:80/tcp",))
    # the published port answers on the host's loopback
    for _ in range(50):
        try:
            with urllib.request.urlopen("http://127.0.0.1:18996/", timeout=2) as r:
                assert r.read() == b"from-the-form\n"
            break
        except OSError:
            page.wait_for_timeout(100)
    else:
        pytest.fail("the published port never answered")
    page.reload()
    panel = page.locator("#network")
    expect(panel.locator("#net-address")).to_have_text(c.address)
    expect(panel.locator("#net-veth")).to_contain_text(veth_name(rt.root, c.id))
    expect(panel).to_contain_text("eth0")
    expect(panel).to_contain_text("LISTEN")
    panel.screenshot(path=os.path.join(shots, "network-panel.png"))

    page.click("nav >> text=Networks")
    net = page.locator("#network-bridge")
    expect(net).to_contain_text(rt.networks.inspect("bridge")["subnet"])
    member = net.locator("tr.member", has_text=name)
    expect(member.locator(".address")).to_have_text(c.address)
    expect(member.locator(".veth")).to_contain_text(f"{veth_name(rt.root, c.id)} ⟷ eth0")
    expect(member).to_contain_text("127.0.0.1:18996 → 80/tcp")
    page.screenshot(path=os.path.join(shots, "networks.png"), full_page=True)

    # a moving rx graph while wget runs: a second container downloads 256 KiB
    # from the first, again and again; its page plots its eth0's rx bytes/s
    # from the sampler's ticks (/proc/<pid>/net/dev, named on hover)
    w = rt.run(Spec(image="busybox", name=f"{name}-wget", network="bridge",
                    cmd=("sh", "-c", f"while :; do wget -q -O /dev/null http://{name}/big; sleep 0.2; done")))
    page.goto(f"{server}/containers/{w.id}/")
    page.wait_for_function("() => window.terrariumLive && window.terrariumLive.points"
                           ".filter(function (p) { return p.net_rx > 50000; }).length >= 2", timeout=20_000)
    plotted = page.evaluate("() => window.terrariumLive.charts.net.data[1].filter(function (v) { return v > 40; })")
    assert len(plotted) >= 2                                    # KiB/s on the chart, tick after tick
    rx = page.locator("#net-now dd[data-key=net_rx]")
    expect(rx).to_have_attribute("title", f"/proc/{w.pid}/net/dev Receive bytes (every interface but lo)")
    expect(rx).to_contain_text("/s")
    assert "KiB/s" in rx.inner_text() or "MiB/s" in rx.inner_text()
    page.locator("#network").screenshot(path=os.path.join(shots, "network-traffic.png"))
