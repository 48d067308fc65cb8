"""The shape every discovery source shares (runtime/discovery)."""
from runtime.discovery import Availability, Found, discover, make_key


class _Fixed:
    def __init__(self, engine, items, state="up"):
        self.engine, self._items, self._state = engine, items, state

    def availability(self):
        return Availability(self.engine, self._state)

    def list(self, skip=None):
        self.skip = skip                    # what discover() passed (the bare source's claimed namespaces)
        return list(self._items)


def test_keys_keep_our_ids_and_prefix_others_url_safely():
    assert make_key("terrarium", "ab" * 32) == "ab" * 32
    assert make_key("docker", "cd" * 32) == "docker-" + "cd" * 32
    assert make_key("systemd", "getty@tty1.service") == "systemd-getty@tty1.service"
    assert make_key("kubernetes", "ns/pod/c") == "kubernetes-ns_pod_c"
    assert make_key("systemd", "café") == "systemd-café"           # letters are kept, any alphabet
    assert make_key("podman", "x y\n") == "podman-x_y_"


def test_an_earlier_source_claims_a_cgroup_and_a_pid_namespace():
    docker = Found(make_key("docker", "d1"), "docker", "d1", "web", cgroup="/docker/d1",
                   pid=10, namespaces={"pid": 401})
    systemd_view = Found(make_key("systemd", "x"), "systemd", "x", "x", cgroup="/docker/d1")
    bare_same = Found("bare-pidns-401", "bare", "pidns-401", "pidns-401", namespaces={"pid": 401})
    bare_other = Found("bare-pidns-402", "bare", "pidns-402", "pidns-402", namespaces={"pid": 402})
    bare = _Fixed("bare", [bare_same, bare_other])
    found, states = discover([_Fixed("docker", [docker]), _Fixed("systemd", [systemd_view]),
                              _Fixed("podman", [], "absent"), bare])
    assert [f.key for f in found] == [docker.key, "bare-pidns-402"]
    assert bare.skip == {401}               # told, so it need not read docker's processes at all
    assert [(s.engine, s.state) for s in states] == [
        ("docker", "up"), ("systemd", "up"), ("podman", "absent"), ("bare", "up")]


def test_a_pass_over_some_engines_keeps_the_others_last_answer():
    from runtime.discovery.registry import Discovery
    d1 = Found(make_key("docker", "d1"), "docker", "d1", "web", pid=10)
    unit = Found(make_key("systemd", "a.service"), "systemd", "a.service", "a.service")
    docker, systemd = _Fixed("docker", [d1]), _Fixed("systemd", [unit])
    disc = Discovery([docker, systemd])
    disc.discover()
    d2 = Found(make_key("docker", "d2"), "docker", "d2", "db", pid=11)
    docker._items, systemd._items = [d2], []
    found, states = disc.discover(["docker"])
    assert found == [d2] and [s.engine for s in states] == ["docker"]
    assert disc._by_key == {unit.key: unit, d2.key: d2}   # systemd not asked; docker's answer replaced
