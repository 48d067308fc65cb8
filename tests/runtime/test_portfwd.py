"""Published ports without nftables: the shim's userland forwarder
(runtime/portfwd.py).  TERRARIUM_NFT names an nft that is not there, so the
runtime takes nftables as absent; traffic goes to 127.0.0.1 and to the
address of a container made here, nothing else."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from runtime import Spec, portfwd
from runtime.errors import ExecFailed
from tests.runtime.test_network import HTTPD, counts, free_port, http_get

NO_NFT = "/nonexistent/terrarium-test/nft"


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """The process has exited (gone, or a zombie waiting for its reaper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.root
def test_without_nftables_the_shims_forwarder_publishes_the_port(rt, name, cleanup, monkeypatch):
    monkeypatch.setenv("TERRARIUM_NFT", NO_NFT)
    before = counts(rt)
    port = free_port()
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=HTTPD, network="bridge", ports=(f"127.0.0.1:{port}:80",)))
    assert http_get(f"http://127.0.0.1:{port}/") == f"served-by-{name}\n"
    assert http_get(f"http://127.0.0.1:{port}/") == f"served-by-{name}\n"      # and again: it keeps serving
    assert counts(rt)["dnat"] == before["dnat"]                # no rule of ours carried it
    (fwd,) = [p for p in _children(c.shim_pid) if _comm(p) == "terrarium-ports"]
    # a host port already taken fails the start, naming it, and leaves no forwarder
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        cleanup.append(f"{name}-busy")
        with pytest.raises(ExecFailed, match=f"port 127.0.0.1:{busy}/tcp cannot be published: Address already in use"):
            rt.run(Spec(image="busybox", name=f"{name}-busy", cmd=HTTPD, network="bridge",
                        ports=(f"127.0.0.1:{busy}:80",)))
    # it dies with the container, and the port is free again
    rt.stop(c.id, timeout=1)
    assert _gone(fwd) and _refused(port)
    # ... also when the shim was SIGKILLed first: it watches init, not the shim
    c = rt.start(c.id)
    http_get(f"http://127.0.0.1:{port}/")
    (fwd,) = [p for p in _children(c.shim_pid) if _comm(p) == "terrarium-ports"]
    os.kill(c.shim_pid, signal.SIGKILL)                         # the shim of a container this test made
    assert http_get(f"http://127.0.0.1:{port}/") == f"served-by-{name}\n"    # the container still runs
    rt.remove(c.id, force=True)
    assert _gone(fwd) and _refused(port)


def test_the_forwarder_relays_udp_and_ends_with_the_process_it_watches():
    """UDP (busybox's nc has none): a host echo server on loopback behind a
    forwarder that watches a sleep of ours."""
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    port = free_port()
    listeners = portfwd.bind([{"proto": "udp", "host_ip": "127.0.0.1", "host_port": port,
                               "container_port": echo.getsockname()[1], "address": "127.0.0.1"}])
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        fwd = portfwd.spawn(listeners, sleeper.pid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            for word in (b"one", b"two"):
                client.sendto(word, ("127.0.0.1", port))
                data, back_to = echo.recvfrom(100)
                assert data == word
                echo.sendto(data.upper(), back_to)
                assert client.recvfrom(100) == (word.upper(), ("127.0.0.1", port))
        sleeper.kill()                                          # our own child, by its pid
        sleeper.wait()
        _, status = os.waitpid(fwd, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        echo.close()
