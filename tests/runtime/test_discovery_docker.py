"""The Docker source without a dockerd: an absent or refusing engine is a
state, never an exception; the agent's verbs take keys and actions from a
fixed set; engine events wake the state watch.  (With a real dockerd:
tests/engines/test_docker.py.)"""
from __future__ import annotations

import socket
import threading

import pytest

from runtime.agent import VERBS, _check_args
from runtime.changes import KeyFeed, StateWatch
from runtime.discovery.docker import EngineSource, docker_host
from runtime.discovery.registry import is_key, split_key
from runtime.errors import InvalidArgument


def test_the_socket_is_found_as_the_docker_cli_finds_it(monkeypatch):
    monkeypatch.delenv("TERRARIUM_DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker_host() == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/a.sock")
    assert docker_host() == "unix:///run/a.sock"
    monkeypatch.setenv("TERRARIUM_DOCKER_HOST", "unix:///run/b.sock")
    assert docker_host() == "unix:///run/b.sock"


def test_no_socket_is_absent_and_lists_nothing(tmp_path):
    src = EngineSource(f"unix://{tmp_path}/none.sock")
    assert src.availability().state == "absent"
    assert src.list() == []


def test_a_socket_that_is_no_engine_is_refused(tmp_path):
    path = str(tmp_path / "not-docker.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    stop = threading.Event()

    def serve():                    # answer every connection with garbage, then close
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.sendall(b"nonsense\r\n\r\n")
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        src = EngineSource(f"unix://{path}")
        got = src.availability()
        assert got.state == "refused" and path in got.detail
        assert src.list() == []
    finally:
        stop.set()
        t.join(2)
        listener.close()


@pytest.mark.parametrize("args", [
    {"key": "docker-../../etc", "action": "stop"},
    {"key": "/var/run/docker.sock", "action": "stop"},
    {"key": "docker-" + "a" * 64, "action": "exec"},
    {"key": "docker-" + "a" * 64, "action": "stop", "url": "tcp://evil:2375"},
    {"key": "nosuchengine-abc", "action": "stop"},
])
def test_engine_control_takes_a_key_and_an_action_from_a_fixed_set(args):
    with pytest.raises(InvalidArgument):
        _check_args("engine-control", VERBS["engine-control"], args)


def test_keys():
    assert is_key("a" * 64) and is_key("docker-" + "b" * 64) and is_key("systemd-getty@tty1.service")
    assert not is_key("docker-a/b") and not is_key("docker-") and not is_key("x" * 64)
    assert split_key("docker-abc") == ("docker", "abc")
    assert split_key("c" * 64) == ("terrarium", "c" * 64)


def test_engine_events_wake_the_state_watch(tmp_path):
    feed = KeyFeed()
    try:
        with StateWatch(str(tmp_path), extra=feed) as w:
            threading.Timer(0.05, feed.push, args=("docker-" + "d" * 64,)).start()
            assert w.read(5000) == {"docker-" + "d" * 64}
            feed.push(None)
            assert w.read(5000) is None          # the stream reconnected: list everything
    finally:
        feed.close()
    feed.push("docker-x")                         # after close: dropped, no write to a stale fd


def test_a_containers_cgroup_is_found_by_its_id_where_the_engines_put_it(tmp_path):
    """CgroupFinder on a fake hierarchy: Docker's cgroupfs (/docker/<id>) and
    systemd (system.slice/docker-<id>.scope) names, a --cgroup-parent found by
    walking and then looked in first, Podman's libpod-<id> (never its
    libpod-conmon-<id> monitor); an id that is nowhere is simply missing."""
    from runtime.discovery.docker import CgroupFinder
    a, b, c, d, p = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
    for path in (f"docker/{a}", f"system.slice/docker-{b}.scope", f"x/y/custom/{c}",
                 f"machine.slice/libpod-conmon-{p}.scope", f"pod-parent/libpod-{p}", "system.slice/cron.service"):
        (tmp_path / path).mkdir(parents=True)
    docker = CgroupFinder("docker", root=str(tmp_path))
    assert docker.locate({a, b}) == {a: f"{tmp_path}/docker/{a}", b: f"{tmp_path}/system.slice/docker-{b}.scope"}
    assert docker.locate({a, c, d}) == {a: f"{tmp_path}/docker/{a}", c: f"{tmp_path}/x/y/custom/{c}"}
    assert docker.parents[0] == "x/y/custom"
    (tmp_path / f"x/y/custom/{d}").mkdir()
    assert docker.locate({d}) == {d: f"{tmp_path}/x/y/custom/{d}"}   # the learnt parent, first
    podman = CgroupFinder("podman", root=str(tmp_path))
    assert podman.locate({p}) == {p: f"{tmp_path}/pod-parent/libpod-{p}"}
