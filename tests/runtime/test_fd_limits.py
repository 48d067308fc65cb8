"""select() cannot watch a descriptor numbered 1024 or more (ValueError): the
runtime's waits must work in a process that holds more than that (`make
bench` stopped in daemons.stop once it did).  Each is called from a fresh
process whose every new descriptor is numbered above 1100."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, needs_root

SCRIPT = r"""
import os, resource, sys
sys.path.insert(0, sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
null = os.open("/dev/null", os.O_RDONLY)
held = [os.dup(null)]
while held[-1] < 1100:
    held.append(os.dup(null))

from runtime import Runtime, client, daemons
from runtime.spec import make_spec

r, w = os.pipe()
assert r > 1024, r
os.write(w, b"x")
assert daemons.wait_readable([r], 1.0) == [r]
print("wait_readable", r)

rt = Runtime()
rt.shutdown_servers()                        # daemons.stop, on pidfds above 1100
print("daemons.stop")
c = rt.run(make_spec(image="busybox", cmd=["sleep", "30"]))      # starts the fork server
rt.stop(c.id, timeout=5)                                          # waits on a pidfd above 1100
end = rt.wait(c.id, timeout=10)
rt.remove(c.id)
print("fork server", end.status, end.exit_code)

try:                                         # the `terrarium` command, through its CLI server
    client.main(["ps", "-a"])
except SystemExit as e:
    print("cli", e.code)
rt.shutdown_servers()
print("stopped")
"""


@needs_root
def test_waits_work_with_descriptors_above_1024(rt):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, REPO], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    lines = proc.stdout.splitlines()
    for expected in ("daemons.stop", "fork server exited 137", "cli 0", "stopped"):
        assert expected in lines          # (sleep has no SIGTERM handler: SIGKILL, 137)
