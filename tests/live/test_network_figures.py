"""The network rows of the figure table in the live feed and /metrics: rates
per second on the point, each with its /proc/<pid>/net/dev source, and the
raw counters under cAdvisor's names."""
from __future__ import annotations

import pytest

from dashboard.live import exporter, metrics
from runtime import Sample
from runtime.cgroups import figures

SRC = figures.sources(figures.V1, {}, "/proc/4242")


def _raw(rx, tx, rxp, txp, rxd=0, txd=0) -> Sample:
    return Sample.of("v1", {"net_rx_bytes": rx, "net_tx_bytes": tx, "net_rx_packets": rxp, "net_tx_packets": txp,
                            "net_rx_errors": 0, "net_tx_errors": 0, "net_rx_dropped": rxd,
                            "net_tx_dropped": txd}, SRC)


def test_points_carry_network_rates_and_their_sources():
    prev, raw = _raw(1000, 500, 10, 5), _raw(3048, 1524, 30, 13, rxd=2)
    p = metrics.point(prev, raw, 2.0, 1000.0)
    assert (p["net_rx"], p["net_tx"], p["net_rx_p"], p["net_tx_p"]) == (1024, 512, 10, 4)
    assert (p["net_rx_drop"], p["net_tx_drop"]) == (1, 0)
    assert metrics.point(None, raw, 0, 1000.0)["net_rx"] is None          # one reading: no rate yet
    src = metrics.point_sources(raw)
    assert src["net_rx"] == "/proc/4242/net/dev Receive bytes (every interface but lo)"
    assert src["net_tx_drop"] == "/proc/4242/net/dev Transmit dropped (every interface but lo)"
    host = Sample.of("v1", dict.fromkeys(k for k in raw.figures if k.startswith("net_")), {})
    assert not [k for k in metrics.point(raw, host, 1.0, 1001.0) if k.startswith("net")]  # --network host
    assert metrics.figures(raw)["net_rx_dropped"] == 2                     # the kernel files panel


def test_metrics_export_the_counters_under_cadvisors_names():
    fams = {f.name: f for f in exporter.families([(("/p/x", "busybox", "x"), _raw(3048, 1524, 30, 13, rxd=2))])}
    want = {"container_network_receive_bytes": 3048, "container_network_transmit_bytes": 1524,
            "container_network_receive_packets": 30, "container_network_transmit_packets": 13,
            "container_network_receive_packets_dropped": 2, "container_network_transmit_packets_dropped": 0,
            "container_network_receive_errors": 0, "container_network_transmit_errors": 0}
    got = {}
    for name in want:
        (s,) = fams[name].samples
        assert fams[name].type == "counter" and s.name == name + "_total"
        got[name] = s.value
    assert got == pytest.approx(want)
    assert not [n for n in exporter.families([(("/p/y", "busybox", "y"), Sample.of("v1", {"net_rx_bytes": None}))])
                if n.name.startswith("container_network")]
