"""Restart policies and health checks: what runs beside a container, never in the web tier.

Restart policy (`--restart no|on-failure[:N]|always|unless-stopped`).  When
init exits, its shim (runtime/shim.py) records the exit and then asks
`restart_delay()` whether the policy wants the container back.  If so it
forks a *restarter* (a child in the host's PID namespace, outliving the
shim), which notes itself in restart.json (the container reads "restarting"
meanwhile), sleeps the delay and starts the container again through
Runtime._start, under the container's lock, only if nothing happened since:
same generation, still exited, no manual stop.  The delay follows Docker's
restart manager: 100 ms for the first restart, doubled for each next one,
at most one minute; back to 100 ms once a run lasted 10 s or more.
`on-failure:N` gives up after N restarts in a row (a manual start counts
afresh).  A stop, kill or removal by a person is never undone by the
policy, for any policy: the verb marks the run (config "manual_stop") before
it signals, and cancels a restarter that is waiting.  Docker differs only
across a daemon restart, when `always` brings back even a manually stopped
container; Terrarium has no daemon whose restart could do that (shims and
restarters are per container), so `always` and `unless-stopped` behave the
same here, and nothing is restarted after the host reboots.

Health check (`--health-cmd` and friends, Docker's semantics).  The shim forks
a *checker* beside a container that has one: every interval it runs the test
inside the container through the runtime's exec (runtime/execute.py), in a
child whose stdout and stderr go to a memfd, kills it past the timeout, and
writes health.json: status starting / healthy / unhealthy, the failing
streak, and the last HEALTH_LOG results with their exit codes, times and
output (at most HEALTH_OUTPUT bytes each).  Success makes it healthy;
`retries` failures in a row unhealthy; failures within the start period do
not count while it is still starting.  The shim ends the checker when init
exits, before it records the exit.
"""
from __future__ import annotations

import json
import os
import re
import time

from .errors import InvalidArgument
from .model import Healthcheck

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, NoReturn, TypedDict
    from .model import Health, HealthcheckDict, Restarting
    from .state import ContainerConfig

    class RunEnded(TypedDict):
        """The run a restart policy starts the container again after (`after`)."""
        generation: int
        delay: float
        exit_code: int
        finished_at: float

BACKOFF_FIRST = 0.1          # seconds: Docker's restart manager's numbers
BACKOFF_FACTOR = 2
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0   # a run this long starts the backoff afresh
RESTART_HISTORY = 10         # policy restarts kept in config.json (bounded)
HEALTH_LOG = 5               # results kept in health.json, as Docker keeps
HEALTH_OUTPUT = 4096         # bytes of each result's output kept
MAX_SECONDS = 86400.0
MAX_RETRIES = 1000

HEALTH = "health.json"
PENDING = "restart.json"
CANCEL_WAIT = 2.0       # seconds cancel_pending waits for the restarter it killed to be gone

_RESTART_RE = re.compile(r"(no|always|unless-stopped|on-failure)(?::([0-9]{1,6}))?", re.ASCII)
_DURATION_RE = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{1,9})?(?:h|m|s|ms|us|µs|ns))+|[0-9]{1,9}(?:\.[0-9]{1,9})?",
                          re.ASCII)
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:60] + "..."


# ------------------------------------------------------------------ checks

def check_restart(text: object) -> str:
    """'on-failure:3' -> 'on-failure:3'; 'on-failure:0' -> 'on-failure' (no maximum)."""
    m = _RESTART_RE.fullmatch(text) if isinstance(text, str) else None
    if not m or (m.group(2) is not None and m.group(1) != "on-failure"):
        raise InvalidArgument(f"invalid restart policy {_show(text)}: use no, on-failure[:N], "
                              "always or unless-stopped")
    if m.group(2) and int(m.group(2)) > 0:
        return f"on-failure:{int(m.group(2))}"
    return m.group(1)


def parse_restart(policy: str) -> tuple[str, int]:
    """('on-failure', 3) from 'on-failure:3'; the maximum is 0 for none."""
    name, _, count = policy.partition(":")
    return name, int(count or 0)


def parse_duration(text: object, what: str = "duration") -> float:
    """Seconds from '30s', '1m30s', '500ms' (Go's units, as Docker takes them) or a bare number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        if not isinstance(text, str) or not _DURATION_RE.fullmatch(text.strip()):
            raise InvalidArgument(f"invalid {what} {_show(text)}: use e.g. 30s, 1m30s or 500ms")
        text = text.strip()
        if text[-1].isdigit():
            value = float(text)
        else:
            value = sum(float(n) * _UNIT[u.replace("µ", "u")]
                        for n, u in re.findall(r"([0-9.]+)(h|ms|m|s|us|µs|ns)", text))
    if not 0 <= value <= MAX_SECONDS:                # also NaN
        raise InvalidArgument(f"invalid {what} {_show(text)}: from 0 to {MAX_SECONDS:g} seconds")
    return value


def check_healthcheck(hc: Healthcheck | Mapping[str, Any]) -> Healthcheck:
    """A Healthcheck (or a dict of its fields, from the API) checked; test () means none."""
    if isinstance(hc, dict):
        unknown = set(hc) - set(Healthcheck._fields)
        if unknown:
            raise InvalidArgument(f"invalid health check: unknown fields {sorted(unknown)!r}")
        hc = Healthcheck(**hc)
    if not isinstance(hc, Healthcheck):
        raise InvalidArgument("health check: give a runtime.Healthcheck")
    test = hc.test
    if isinstance(test, (str, bytes)) or not isinstance(test, (list, tuple)) \
            or not all(isinstance(a, str) for a in test):
        raise InvalidArgument("invalid health check: test is a list of arguments")
    if any("\0" in a for a in test) or (test and not test[0]) or len(test) > 256 \
            or sum(len(a) for a in test) > 65536:
        raise InvalidArgument("invalid health check command: empty program, NUL byte or too long")
    interval = parse_duration(hc.interval, "health check interval")
    timeout = parse_duration(hc.timeout, "health check timeout")
    if test and (interval < 0.01 or timeout < 0.01):
        raise InvalidArgument("health check interval and timeout must be at least 10ms")
    retries = hc.retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 1 <= retries <= MAX_RETRIES:
        raise InvalidArgument(f"invalid health check retries {_show(retries)}: from 1 to {MAX_RETRIES}")
    return Healthcheck(test=tuple(test), interval=interval, timeout=timeout, retries=retries,
                       start_period=parse_duration(hc.start_period, "health check start period"))


def healthcheck_from_options(cmd: str | None = None, interval: str | float | None = None,
                             timeout: str | float | None = None, retries: str | int | None = None,
                             start_period: str | float | None = None,
                             disabled: bool = False) -> Healthcheck | None:
    """The CLI's and the form's --health-* options: None when none was given
    (the image's check applies); a Healthcheck with no test for --no-healthcheck."""
    given = [v for v in (cmd, interval, timeout, retries, start_period) if v not in (None, "")]
    if disabled:
        if given:
            raise InvalidArgument("--no-healthcheck conflicts with the --health-* options")
        return Healthcheck(test=())
    if not given:
        return None
    if cmd in (None, "") or not str(cmd).strip():
        raise InvalidArgument("the --health-* options need --health-cmd")
    d = Healthcheck()
    if retries not in (None, ""):
        text = str(retries).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 6):
            raise InvalidArgument(f"invalid health check retries {_show(retries)}: a whole number")
        retries = int(text)
    return check_healthcheck({          # unchecked values: a dict, which the check makes a record
        "test": ("/bin/sh", "-c", str(cmd)),
        "interval": d.interval if interval in (None, "") else interval,
        "timeout": d.timeout if timeout in (None, "") else timeout,
        "retries": d.retries if retries in (None, "") else retries,
        "start_period": d.start_period if start_period in (None, "") else start_period})


def describe_healthcheck(hc: HealthcheckDict | None) -> str:
    """'sh -c "curl -f localhost" every 30s (timeout 30s, 3 retries)' for pages and inspect."""
    if not hc or not hc.get("test"):
        return "none"
    test = hc["test"]
    cmd = test[2] if len(test) == 3 and test[:2] in (["/bin/sh", "-c"], ("/bin/sh", "-c")) else " ".join(test)
    text = f"{cmd} every {hc['interval']:g}s (timeout {hc['timeout']:g}s, {hc['retries']} retries"
    return text + (f", start period {hc['start_period']:g}s)" if hc.get("start_period") else ")")


# ---------------------------------------------------------------- restarts

def restart_delay(policy: str, exit_code: int, ran_for: float, config: ContainerConfig) -> float | None:
    """Seconds to wait before the policy starts the container again, or None:
    config is config.json as the run ended (its policy restarts in a row,
    last delay and manual stop mark)."""
    name, maximum = parse_restart(policy)
    if name == "no" or config.get("manual_stop") == config.get("generation"):
        return None
    if name == "on-failure" and (exit_code == 0 or (maximum and config.get("policy_restarts", 0) >= maximum)):
        return None
    last: float = config.get("backoff", 0.0)
    if ran_for >= BACKOFF_RESET_AFTER or not last:
        return BACKOFF_FIRST
    return min(last * BACKOFF_FACTOR, BACKOFF_MAX)


def note_start(config: ContainerConfig, after: RunEnded | None) -> None:
    """Before a start, under the container's lock: a policy restart (after: the
    run it follows) counts and keeps its delay; a person's start begins afresh."""
    if after is None:
        config.pop("policy_restarts", None)
        config.pop("backoff", None)
        config.pop("manual_stop", None)
        config.pop("restart_history", None)
        return
    config["policy_restarts"] = config.get("policy_restarts", 0) + 1
    config["backoff"] = after["delay"]
    history = config.get("restart_history", [])[-(RESTART_HISTORY - 1):]
    history.append({"exit_code": after.get("exit_code"), "finished_at": after.get("finished_at"),
                    "delay": after["delay"], "restarted_at": time.time()})
    config["restart_history"] = history


def still_due(config: ContainerConfig, status: str, after: RunEnded) -> bool:
    """Whether a waiting restart may go ahead: nothing has happened since its run ended."""
    return (status == "exited" and config.get("generation") == after["generation"]
            and config.get("manual_stop") != after["generation"]
            and config.get("restart", "no") != "no")


def pending(cdir: str, generation: int) -> Restarting | None:
    """{"due", "delay"} while a restarter waits to start this container's next run."""
    from . import pidinfo
    try:
        with open(os.path.join(cdir, PENDING), "rb") as f:
            p = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(p, dict) or p.get("generation") != generation \
            or pidinfo.process_start_time(p.get("pid") or 0) != p.get("pid_start"):
        return None
    return {"due": p.get("due"), "delay": p.get("delay")}


def cancel_pending(cdir: str) -> None:
    """End a restarter that waits (a person stopped, started or removed the
    container meanwhile): by its pidfd, checked against its start time."""
    import signal
    from . import pidinfo
    from .daemons import wait_readable
    try:
        with open(os.path.join(cdir, PENDING), "rb") as f:
            p = json.loads(f.read())
        os.unlink(os.path.join(cdir, PENDING))
    except (OSError, ValueError):
        return
    pid = p.get("pid") if isinstance(p, dict) else None
    if not isinstance(pid, int) or pid <= 1:
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if pidinfo.process_start_time(pid) == p.get("pid_start"):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            # a SIGKILL takes effect when the process next runs: gone before
            # the stop returns (its pidfd reads ready once it has exited)
            wait_readable((fd,), CANCEL_WAIT)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host_pid_namespace() -> None:
    """The shim's next child goes to its own (the host's) PID namespace again,
    not to the container's, which it unshared for init."""
    from . import linux
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWPID)
    finally:
        os.close(fd)


def spawn_restarter(req: dict[str, Any], exit_code: int, started_at: float, finished_at: float) -> None:
    """In the shim, after the exit is recorded: fork the restarter if the policy wants it."""
    from . import state
    try:
        config = state.read_config(req["dir"])
    except state.Unreadable:
        return
    if not config or config.get("generation") != req["generation"]:
        return
    policy = config.get("restart") or "no"
    if policy == "no":
        return
    delay = restart_delay(policy, exit_code, finished_at - started_at, config)
    if delay is None:
        return
    _host_pid_namespace()
    if os.fork() == 0:
        _restarter(req, {"generation": req["generation"], "delay": delay, "exit_code": exit_code,
                         "finished_at": finished_at})


def _restarter(req: dict[str, Any], after: RunEnded) -> NoReturn:
    """The restarter: never returns."""
    from . import daemons, linux, logs, pidinfo
    from .shim import _write_json
    status = 0
    try:
        os.setsid()
        linux.set_name("terrarium-restart")
        _write_json(os.path.join(req["dir"], PENDING),
                    {"generation": after["generation"], "pid": os.getpid(),
                     "pid_start": pidinfo.process_start_time(os.getpid()),
                     "due": time.time() + after["delay"], "delay": after["delay"]})
        time.sleep(after["delay"])
        from .containers import Runtime
        from .errors import NotFound, TerrariumError
        try:
            Runtime(os.path.dirname(req["containers_dir"]), req["cgroup_parent"])._start(req["id"], after=after)
        except NotFound:
            pass                                    # removed meanwhile
        except TerrariumError as e:
            logs.write_message(req["log"], f"terrarium: restart policy: {e}")
            status = 1
    except BaseException:  # noqa: BLE001 - a child of the shim: never back into its code
        status = 1
    finally:
        daemons.leave()
        os._exit(status)


# ----------------------------------------------------------- health checks

def read_health(cdir: str, generation: int) -> Health | None:
    try:
        with open(os.path.join(cdir, HEALTH), "rb") as f:
            h = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(h, dict) or h.get("generation") != generation:
        return None
    health: Health = {"status": h.get("status"), "failing_streak": h.get("failing_streak", 0),
                      "log": h.get("log", [])}
    return health


def spawn_checker(req: dict[str, Any], init_pid: int, close_fds: Iterable[int] = ()) -> int | None:
    """In the shim, once the container runs: fork its health checker (its pid), if it has one."""
    hc = req.get("healthcheck")
    if not hc or not hc.get("test"):
        return None
    _host_pid_namespace()
    pid = os.fork()
    if pid == 0:
        _checker(req, init_pid, Healthcheck(**hc), close_fds)
    return pid


def _checker(req: dict[str, Any], init_pid: int, hc: Healthcheck, close_fds: Iterable[int]) -> NoReturn:
    """The health checker: never returns; SIGKILLed by the shim when init exits."""
    import select
    import signal
    from . import linux
    from .shim import _write_json
    try:
        for fd in close_fds:
            os.close(fd)
        linux.set_name("terrarium-health")
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pidfd = os.pidfd_open(init_pid)
        path = os.path.join(req["dir"], HEALTH)
        state = {"generation": req["generation"], "status": "starting", "failing_streak": 0, "log": []}
        _write_json(path, state)
        began = time.monotonic()
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        while not poll.poll(int(hc.interval * 1000)):
            if _paused(req["dir"]):
                continue
            start = time.time()
            code, output = _probe(req, hc)
            end = time.time()
            state["log"] = (state["log"] + [{"start": start, "end": end, "exit_code": code,
                                             "output": output}])[-HEALTH_LOG:]
            if code == 0:
                state["status"], state["failing_streak"] = "healthy", 0
            elif not (state["status"] == "starting" and time.monotonic() - began < hc.start_period):
                state["failing_streak"] += 1
                if state["failing_streak"] >= hc.retries:
                    state["status"] = "unhealthy"
            _write_json(path, state)
    finally:
        os._exit(0)


def _paused(cdir: str) -> bool:
    try:
        with open(os.path.join(cdir, "config.json"), "rb") as f:
            return bool(json.loads(f.read()).get("paused"))
    except (OSError, ValueError):
        return False


def _probe(req: dict[str, Any], hc: Healthcheck) -> tuple[int, str]:
    """Run the test once in the container: (exit code, output); -1 past the timeout.
    Its output comes through a pipe read all along: the first HEALTH_OUTPUT
    bytes are kept, the rest read and dropped (never held)."""
    import select
    import signal
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.close(out_r)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            from .containers import Runtime
            from .errors import ExecFailed, TerrariumError
            rt = Runtime(os.path.dirname(req["containers_dir"]), req["cgroup_parent"])
            try:
                code = rt.exec(req["id"], list(hc.test))
            except ExecFailed as e:
                os.write(2, f"{e}\n".encode())
                code = e.exit_code
            except TerrariumError as e:
                os.write(2, f"{e}\n".encode())
        finally:
            os._exit(code & 0xff)
    os.close(out_w)
    pidfd = os.pidfd_open(pid)
    kept = b""
    try:
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        poll.register(out_r, select.POLLIN)
        deadline = time.monotonic() + hc.timeout
        timed_out = exited = False
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for fd, _ in poll.poll(int(left * 1000) + 1):
                if fd == pidfd:
                    exited = True
                else:
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        poll.unregister(out_r)
                    kept = (kept + chunk)[:HEALTH_OUTPUT]
        if timed_out:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)     # exec passes it to the process
            if not select.select([pidfd], [], [], 1.0)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.set_blocking(out_r, False)
        try:
            while len(kept) < HEALTH_OUTPUT and (chunk := os.read(out_r, 65536)):
                kept = (kept + chunk)[:HEALTH_OUTPUT]
        except BlockingIOError:
            pass
    finally:
        os.close(pidfd)
        os.close(out_r)
    if timed_out:
        return -1, f"Health check exceeded timeout ({hc.timeout:g}s)"
    return os.waitstatus_to_exitcode(status), kept.decode("utf-8", "replace")
