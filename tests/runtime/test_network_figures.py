"""The network counters of a container as rows of the figure table
(runtime/cgroups/figures.py NET_DEV): /proc/<pid>/net/dev of a process of the
container, read by the driver's sample() and by the sampler's fast reader
(runtime/stats.py) alike, with the file named in each figure's source.

Traffic goes from the host to the address of a container this test made."""
from __future__ import annotations

import time

import pytest

from runtime import Spec, stats
from runtime.cgroups import figures, parse
from tests.fds import targets as _fd_targets
from tests.runtime.test_network import HTTPD, _settled, counts, http_get

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   15000     150    0    0    0     0          0         0    15000     150    0    0    0     0       0          0
  eth0:    2048      20    1    2    0     0          0         0     1024      10    3    4    0     0       0          0
  eth1:     100       1    0    1    0     0          0         0      200       2    0    0    0     0       0          0
"""
NET_FIGURES = tuple(f"net_{d}_{w}" for d in ("rx", "tx") for w in ("bytes", "packets", "errors", "dropped"))


def test_net_dev_sums_every_interface_but_loopback():
    row = figures.NET_DEV
    got = row.parse(NET_DEV.encode())
    assert set(got) == set(row.figures) == set(NET_FIGURES)
    assert (got["net_rx_bytes"], got["net_rx_packets"], got["net_rx_errors"], got["net_rx_dropped"]) == (2148, 21, 1, 3)
    assert (got["net_tx_bytes"], got["net_tx_packets"], got["net_tx_errors"], got["net_tx_dropped"]) == (1224, 12, 3, 4)
    only_lo = "\n".join(NET_DEV.splitlines()[:3])
    assert set(parse.net_dev(only_lo).values()) == {0}                     # --network none
    assert row in figures.V1.rows and row in figures.V2.rows
    assert figures.sources(figures.V1, {}, "/proc/42")["net_tx_dropped"] == \
        "/proc/42/net/dev Transmit dropped (every interface but lo)"
    assert "net_rx_bytes" not in figures.sources(figures.V1, {"memory": "/x"})      # no namespace of its own


@pytest.mark.root
def test_both_readers_count_a_bridged_containers_traffic_and_let_its_namespace_go(rt, name, cleanup):
    before = counts(rt)
    cleanup.append(name)
    web = rt.run(Spec(image="busybox", name=name, cmd=HTTPD, network="bridge"))
    src = f"/proc/{web.pid}/net/dev"
    r = stats.StatsReader(rt.cgroups)
    try:
        first, _ = r.read(web.id, tree=False)
        assert first.sources["net_rx_bytes"] == f"{src} Receive bytes (every interface but lo)"
        assert first.sources["net_tx_packets"] == f"{src} Transmit packets (every interface but lo)"
        body = http_get(f"http://{web.address}/")            # host → bridge → the container's eth0
        assert body == f"served-by-{name}\n"
        # One moment, three reads.  The kernel's own IPv6 start-up traffic
        # (MLD reports, router solicitations: a 90-byte packet now and then
        # in the first seconds) can land between them, so the three are
        # compared at a moment the file read the same before and after them.
        for _ in range(50):
            with open(src) as f:
                direct = parse.net_dev(f.read())
            raw, _ = r.read(web.id, tree=False)
            ref = rt.cgroups.sample(web.id)
            with open(src) as f:
                if parse.net_dev(f.read()) == direct:
                    break
            time.sleep(0.05)
        for fig in NET_FIGURES:
            assert raw.figures[fig] == ref.figures[fig] == direct[fig[4:]], fig
        assert raw.sources == ref.sources
        assert raw.figures["net_rx_bytes"] - first.figures["net_rx_bytes"] > 70      # at least the GET request
        assert raw.figures["net_tx_bytes"] - first.figures["net_tx_bytes"] > len(body)
        assert raw.figures["net_rx_packets"] > first.figures["net_rx_packets"] and raw.figures["net_tx_packets"] > first.figures["net_tx_packets"]
        # only an O_PATH of /proc/<pid> stays open, never the namespace's file:
        # removing the container while the reader still watches it frees its veth
        assert src not in _fd_targets() and f"/proc/{web.pid}" in _fd_targets()
        rt.remove(web.id, force=True)
        assert _settled(rt, before) == before
    finally:
        r.close()


@pytest.mark.root
def test_a_container_on_the_hosts_network_has_no_network_figures(rt, name, cleanup):
    """cAdvisor's rule: the host's counters are not a container's."""
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "30"), network="host"), allow_host_network=True)
    r = stats.StatsReader(rt.cgroups)
    try:
        for raw in (rt.cgroups.sample(c.id), r.read(c.id, tree=False)[0], r.read(c.id, tree=False)[0]):
            assert all(raw.figures[f] is None for f in NET_FIGURES) and "net_rx_bytes" not in raw.sources
        assert r.containers[c.id].cgroup.net.reads == 1      # one look at cgroup.procs, then no read
    finally:
        r.close()
