"""owner_of_memcg (an OOM kill outside our containers → its owner's container)
asks the last discovery pass first: a full pass (~0.5 s at 1,000 containers)
only for a memcg that pass does not know, and not again for the same unknown
memcg within UNKNOWN_FOR.  The passes are the real discovery of this host,
counted; one Docker container is added to what they find (no Docker here).
The list page's pass, kept across page loads until a change event, too."""
import secrets

from dashboard.containers import engines
from runtime.discovery import Found
from runtime.discovery.registry import Discovery


def _docker(ident: str) -> Found:
    return Found(key=f"docker-{ident}", engine="docker", id=ident, name=f"web-{ident[:4]}",
                 image="nginx", state="running", pid=None, cgroup=f"/docker/{ident}", namespaces={},
                 rootfs="", upperdir="", labels={}, created_at=None, controls=frozenset(), owner_note="")


def test_foreign_oom_kills_reuse_the_last_pass(monkeypatch):
    monkeypatch.setattr(engines, "_known", [])
    monkeypatch.setattr(engines, "_unknown", {})
    monkeypatch.setattr(engines, "_recent", None)
    extra = [_docker(secrets.token_hex(32))]
    passes = []
    real = Discovery.discover

    def counted(self, *a, **kw):
        found, states = real(self, *a, **kw)
        passes.append(1)
        return found + extra, states
    monkeypatch.setattr(Discovery, "discover", counted)
    first = extra[0]

    assert engines.owner_of_memcg(f"/docker/{first.id}") == first and len(passes) == 1
    # its next kills, one below its cgroup, and after a change event forgot the list page's pass
    assert engines.owner_of_memcg(f"docker/{first.id}/") == first
    engines.forget()
    assert engines.owner_of_memcg(f"/docker/{first.id}/sub") == first
    assert len(passes) == 1

    # a kill outside any container: one pass says so, the next kills there cost none
    stray = f"/system.slice/tb-{secrets.token_hex(4)}.service"
    assert engines.owner_of_memcg(stray) is None and len(passes) == 2
    assert engines.owner_of_memcg(stray) is None and len(passes) == 2
    monkeypatch.setattr(engines, "UNKNOWN_FOR", 0.0)        # until it is old: then asked again
    assert engines.owner_of_memcg(stray) is None and len(passes) == 3

    # a container started after the last pass: a fresh one finds it
    extra.append(_docker(secrets.token_hex(32)))
    assert engines.owner_of_memcg(f"/docker/{extra[1].id}") == extra[1] and len(passes) == 4
    assert engines.owner_of_memcg("") is None and len(passes) == 4


def test_a_bare_namespace_seen_mid_start_is_asked_again(monkeypatch):
    """A pass made while runc set a Docker container up saw its init ("runc
    init") in a new PID namespace no engine listed yet: a bare namespace.
    A kill in that memcg goes to a fresh pass, which finds Docker's."""
    ident = secrets.token_hex(32)
    memcg = f"/process_api/{secrets.token_hex(4)}/tb-dockerd/{ident}"   # dockerd in a nested memcg
    bare = Found(key="bare-pidns-4026532999", engine="bare", id="pidns-4026532999", name="runc init",
                 state="running", cgroup=memcg)
    monkeypatch.setattr(engines, "_known", [bare])
    monkeypatch.setattr(engines, "_unknown", {})
    monkeypatch.setattr(engines, "_recent", None)
    docker = _docker(ident)._replace(cgroup=f"/tb-dockerd/{ident}")     # its cgroup in another hierarchy
    passes = []
    real = Discovery.discover

    def counted(self, *a, **kw):
        found, states = real(self, *a, **kw)
        passes.append(1)
        return [docker, *found], states
    monkeypatch.setattr(Discovery, "discover", counted)
    assert engines.owner_of_memcg(memcg) == docker and len(passes) == 1
    assert engines.owner_of_memcg(memcg) == docker and len(passes) == 1      # known now


def test_a_pass_that_a_change_event_overtook_is_not_kept(monkeypatch):
    """The list's pass (discovered with a max age) is kept for the next page
    loads, and a change event forgets it.  A pass begun before the event and
    ended after it (a `docker run`: the list drawn again on "create" while
    "start" comes) saw the container as it was: the next load asks again
    rather than show it "created" until the pass ages out."""
    monkeypatch.setattr(engines, "_recent", None)
    ident = secrets.token_hex(32)
    state = ["created"]
    passes = []
    real = Discovery.discover

    def racing(self, *a, **kw):
        found, states = real(self, *a, **kw)
        seen = _docker(ident)._replace(state=state[0])
        passes.append(seen.state)
        if len(passes) == 1:                    # the "start" event, while this pass runs
            state[0] = "running"
            engines.forget()
        return [seen, *found], states
    monkeypatch.setattr(Discovery, "discover", racing)

    def shown() -> str:
        found, _, error = engines.discovered(max_age=60)
        assert error == ""
        return next(f.state for f in found if f.id == ident)
    assert shown() == "created"                 # what that pass saw
    assert shown() == "running" and len(passes) == 2      # not kept: asked again
    assert shown() == "running" and len(passes) == 2      # this one is kept
    engines.forget()
    assert shown() == "running" and len(passes) == 3
