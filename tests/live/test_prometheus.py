"""The real thing: Debian's `prometheus` (installed by scripts/setup.sh) scrapes
a real Daphne's /metrics with a bearer token every second, and the figures
come back out of its HTTP API as a Grafana dashboard for cAdvisor asks for them."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from runtime import Limits, Spec
from tests.webstack import WebStack, free_port, stop, wait_port

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: terrarium
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def _until(what: str, check, base: str, timeout: float = 60.0):
    """check() until it is truthy; on time-out, fail with what Prometheus says of
    the target (a scrape slower than the 1 s interval on a loaded machine counts as down)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as r:
                targets = [(t["health"], t["lastError"]) for t in json.load(r)["data"]["activeTargets"]]
            pytest.fail(f"timed out waiting for {what}; the target: {targets}")
        time.sleep(0.25)


def test_prometheus_scrapes_metrics_with_a_token(rt, made, name, tmp_path):
    if not os.path.exists(PROMETHEUS):
        pytest.fail("Debian's prometheus is not installed: run scripts/setup.sh")
    token = secrets.token_urlsafe(32)
    busy = rt.run(Spec(image="busybox", name=name, cmd=("sh", "-c", "while :; do :; done"),
                       limits=Limits(cpus=0.2)))
    (tmp_path / "web").mkdir()
    with WebStack(tmp_path / "web", env={"TERRARIUM_METRICS_TOKEN": token}) as web:
        token_file = tmp_path / "token"
        token_file.write_text(token)
        os.chmod(token_file, 0o600)
        config = tmp_path / "prometheus.yml"
        config.write_text(CONFIG.format(token_file=token_file, port=web.ports[0]))
        port = free_port()
        log_path = tmp_path / "prometheus.log"
        with open(log_path, "wb") as log:
            prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_port(port, prom, "prometheus", str(log_path))
            base = f"http://127.0.0.1:{port}"
            _until("prometheus to be ready", lambda: _ready(base), base)   # 503 while its TSDB opens
            # two scrapes, both successful (up=1: the token was taken)
            _until("two successful scrapes", lambda: [
                r for r in _query(base, 'sum_over_time(up{job="terrarium"}[1m])') if float(r["value"][1]) >= 2],
                base)

            ws = _query(base, f'container_memory_working_set_bytes{{name="{name}"}}')
            assert len(ws) == 1, ws
            assert ws[0]["metric"]["image"] == "busybox"
            assert ws[0]["metric"]["id"] == f"/{rt.cgroup_parent}/{busy.id}"
            assert float(ws[0]["value"][1]) > 0

            cpu = _until("a CPU rate", lambda: _query(
                base, f'rate(container_cpu_usage_seconds_total{{name="{name}"}}[1m])'), base)
            assert cpu[0]["metric"]["cpu"] == "total"
            assert 0 < float(cpu[0]["value"][1]) < 0.5, cpu          # a 0.2-CPU quota, spinning
            throttled = _query(base, f'container_cpu_cfs_throttled_periods_total{{name="{name}"}}')
            assert throttled and float(throttled[0]["value"][1]) > 0  # the quota bites
        finally:
            stop(prom)
