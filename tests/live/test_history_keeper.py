"""History between viewers: the reconciler's signal runs the minute pass at most
once a minute, and only while no sampler of this process (or an external one)
keeps the history itself."""
import pytest

from dashboard.containers import services
from dashboard.live import history, sampler


@pytest.fixture
def passes(monkeypatch):
    calls = []
    monkeypatch.setattr(history, "minute_pass", lambda **kw: calls.append(kw["now"]))
    monkeypatch.setattr(history, "_kept_at", 0.0)
    return calls


@pytest.mark.django_db
def test_reconcile_runs_the_minute_pass_once_a_minute(rt, passes, monkeypatch):
    clock = iter([1000.0, 1010.0, 1061.0])
    monkeypatch.setattr(history.time, "time", lambda: next(clock))
    for _ in range(3):
        services.containers_reconcile()
    assert passes == [1000.0, 1061.0]


@pytest.mark.django_db
def test_no_pass_while_the_sampler_runs_or_is_external(rt, passes, monkeypatch, settings):
    monkeypatch.setattr(type(sampler.get_sampler()), "running", property(lambda self: True))
    services.containers_reconcile()
    monkeypatch.setattr(type(sampler.get_sampler()), "running", property(lambda self: False))
    settings.TERRARIUM_SAMPLER = "external"
    services.containers_reconcile()
    assert passes == []
    settings.TERRARIUM_SAMPLER = "internal"
    services.containers_reconcile()
    assert len(passes) == 1
