"""Fake hosts for the cgroup-tree recognisers, built from the path lists in
tests/fixtures/cgroups/ (their README gives the format and each file its
sources): a cgroup tree (v1: memory/ and systemd/ hierarchies; v2: one tree),
a /proc with the listed processes, and a /var/log with the kubelet's files."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakeproc import FakeProc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroups"
HOST_PIDNS = 4026531836


@dataclass
class FakeHost:
    name: str
    kind: str
    cgroup_root: str
    proc: str
    log_root: str
    expect: dict[tuple[str, str], str] = field(default_factory=dict)   # (engine, id) -> name
    cgroups: list[str] = field(default_factory=list)


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.txt"))


def _procs(tokens: list[str]) -> list[tuple[int, tuple[int, ...], str, int]]:
    """[(pid, nspid, comm, pidns inode)] of one cg line."""
    out, ns = [], HOST_PIDNS
    for tok in tokens:
        spec, _, comm = tok.partition("=")
        pid_s, slash, inner = spec.partition("/")
        pid = int(pid_s)
        if slash:
            if int(inner) == 1:
                ns = 4026532000 + pid
            out.append((pid, (pid, int(inner)), comm, ns))
        else:
            out.append((pid, (pid,), comm, HOST_PIDNS))
    return out


def build(name: str, tmp: Path) -> FakeHost:
    lines = (FIXTURES / f"{name}.txt").read_text().splitlines()
    base = tmp / name
    host = FakeHost(name, "", str(base / "cgroup"), str(base / "proc"), str(base / "log"))
    fake = FakeProc(host.proc)
    os.makedirs(host.proc)
    seen = {1}
    fake.add(1, "init", ns={"pid": HOST_PIDNS, "mnt": 4026531840})
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "kind":
            host.kind = words[1]
            roots = [host.cgroup_root] if host.kind == "v2" else [
                os.path.join(host.cgroup_root, h) for h in ("memory", "systemd")]
            for r in roots:
                os.makedirs(r)
            if host.kind == "v2":
                Path(host.cgroup_root, "cgroup.controllers").write_text("cpu io memory pids\n")
        elif words[0] == "cg":
            path, procs = words[1], _procs(words[2:])
            host.cgroups.append(path)
            for r in roots:
                d = Path(r + path)
                d.mkdir(parents=True, exist_ok=True)
                (d / "cgroup.procs").write_text("".join(f"{p[0]}\n" for p in procs))
            for pid, nspid, comm, ns in procs:
                if pid not in seen:
                    seen.add(pid)
                    fake.add(pid, comm, nspid=list(nspid), ns={"pid": ns, "mnt": ns + 1})
        elif words[0] == "log":
            target = Path(host.log_root, words[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            if len(words) == 4 and words[2] == "->":
                os.symlink(words[3], target)
            else:
                target.write_text("")
        elif words[0] == "expect":
            host.expect[(words[1], words[2])] = words[3]
        else:
            raise ValueError(f"{name}: not a fixture line: {line!r}")
    # empty cgroup.procs in every directory the kernel would have one in
    for r in roots:
        for d, _, files in os.walk(r):
            if "cgroup.procs" not in files:
                Path(d, "cgroup.procs").write_text("")
    return host
