"""`terrarium`: Docker-like verbs over runtime.Runtime.

Errors are one line on stderr and a non-zero exit, never a traceback:
125 when the runtime refused (like Docker's daemon errors), 126/127 when the
command could not be started, otherwise the container's own exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from .model import to_dict

from .errors import ExecFailed, InvalidArgument, TerrariumError
from .model import Limits
from . import cli_registry as _cli_registry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from types import FrameType
    from typing import IO, NoReturn, TypeAlias
    from .agent_client import AgentRuntime
    from .audit import Audited
    from .containers import Runtime
    from .model import Container, Image, Spec

    # what a verb drives: the runtime in this process (audited when it changes
    # something), or the root agent's (TERRARIUM_AGENT=1)
    CliRuntime: TypeAlias = "Runtime | AgentRuntime | Audited"
    Subparsers: TypeAlias = "argparse._SubParsersAction[_Parser]"
    Verb = Callable[[CliRuntime, argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's answer to a usage mistake: one line, exit 125."""

    def error(self, message: str) -> NoReturn:
        self.exit(125, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _seconds(text: str) -> float:
    """A timeout as typed: ASCII digits, finite, not negative (float() takes 'nan' and '٦')."""
    import re
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"invalid seconds {ascii(text)[:40]}: use a number such as 10")
    return float(text)


def _add_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--memory", help="memory limit, e.g. 64m or 1g")
    p.add_argument("--memory-swap", help="memory+swap limit (-1: unlimited swap); default: no swap")
    p.add_argument("--cpus", help="CPU limit in cores, e.g. 0.5")
    p.add_argument("--pids", "--pids-limit", dest="pids", help="the most processes at once")


def _add_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--hostname")
    p.add_argument("-w", "--workdir")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined, seccomp=PROFILE.json (Docker's format), "
                        "no-new-privileges=false (repeatable)")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="log rotation: max-size=10m, max-file=3 (the defaults; repeatable)")
    p.add_argument("--network", "--net", default="none",
                   help="none (the default), bridge, a network's name, host, or container:NAME")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="PORT",
                   help="publish a container port on the host: [IP:]HOST:CONTAINER[/tcp|udp] "
                        "(bridged networks; repeatable)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="a named volume (NAME:/path, made on first use), a host directory "
                        "(/host/path:/path) or a new anonymous volume (/path) (repeatable)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTS]",
                   help="a tmpfs at PATH: size=64m, mode=1777, ro (nosuid,nodev,noexec; repeatable)")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    _add_limits(p)
    _add_lifecycle(p)
    p.add_argument("image")
    p.add_argument("cmd", nargs=argparse.REMAINDER)


def _add_lifecycle(p: argparse.ArgumentParser) -> None:
    """Restart policy and health check (runtime/lifecycle.py)."""
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="no (the default), on-failure[:N], always or unless-stopped")
    p.add_argument("--health-cmd", metavar="CMD", help="command run in the container (sh -c) to check its health")
    p.add_argument("--health-interval", metavar="DUR", help="time between checks (default 30s)")
    p.add_argument("--health-timeout", metavar="DUR", help="longest a check may take (default 30s)")
    p.add_argument("--health-retries", metavar="N", help="failures in a row that make it unhealthy (default 3)")
    p.add_argument("--health-start-period", metavar="DUR",
                   help="time after the start when failures do not count (default 0s)")
    p.add_argument("--no-healthcheck", action="store_true", help="no health check, not even the image's")


def _p_run(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="create and start a container")
    p.add_argument("-d", "--detach", action="store_true")
    _add_create(p)


def _p_create(sub: Subparsers) -> None:
    _add_create(sub.add_parser("create", help="create a container"))


def _p_start(sub: Subparsers) -> None:
    p = sub.add_parser("start", help="start containers")
    p.add_argument("-a", "--attach", action="store_true", help="follow the output and return its exit code")
    p.add_argument("containers", nargs="+")


def _p_stop_like(verb: str) -> Callable[[Subparsers], None]:
    def add(sub: Subparsers) -> None:
        p = sub.add_parser(verb, help=f"{verb} containers")
        p.add_argument("-t", "--time", type=_seconds, default=10.0, help="seconds before SIGKILL")
        p.add_argument("containers", nargs="+")
    return add


def _p_kill(sub: Subparsers) -> None:
    p = sub.add_parser("kill", help="send a signal (default SIGKILL)")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")


def _p_many(verb: str, text: str) -> Callable[[Subparsers], None]:
    def add(sub: Subparsers) -> None:
        sub.add_parser(verb, help=text).add_argument("containers", nargs="+")
    return add


def _p_rm(sub: Subparsers) -> None:
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true", help="also remove its anonymous volumes")
    p.add_argument("containers", nargs="+")


def _p_ps(sub: Subparsers) -> None:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--all-engines", action="store_true",
                   help="every container on the host, whoever owns it (Docker, Kubernetes, systemd, bare ...)")


def _p_logs(sub: Subparsers) -> None:
    p = sub.add_parser("logs", help="show a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", help='the last N lines only ("all": every line)')
    p.add_argument("--since", help="from this time on: RFC 3339, a unix time, or back from now (10m, 1h30m)")
    p.add_argument("--until", help="before this time (as --since); -f stops at the first line stamped at or after it")
    p.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    p.add_argument("--stream", choices=("stdout", "stderr"), help="one stream's lines only")
    p.add_argument("-g", "--grep", metavar="TEXT",
                   help="only lines containing TEXT, ignoring case (as the dashboard's search)")
    p.add_argument("container")


def _p_exec(sub: Subparsers) -> None:
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER)


def _p_update(sub: Subparsers) -> None:
    p = sub.add_parser("update", help="change the limits or restart policy of containers")
    _add_limits(p)
    p.add_argument("--restart", metavar="POLICY", help="no, on-failure[:N], always or unless-stopped")
    p.add_argument("containers", nargs="+")


def _p_images(sub: Subparsers) -> None:
    sub.add_parser("images", help="list images (builds the built-in ones if missing)")


def _p_load(sub: Subparsers) -> None:
    p = sub.add_parser("load", help="import images from a docker save archive or an OCI layout")
    p.add_argument("-i", "--input", required=True, metavar="FILE", help="tar, tar.gz or layout directory")
    p.add_argument("--name", help="name for the image (the archive must hold only one)")


def _p_save(sub: Subparsers) -> None:
    p = sub.add_parser("save", help="write an image as an OCI layout tar")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("image")


def _p_commit(sub: Subparsers) -> None:
    p = sub.add_parser("commit", help="make a container's writable layer a new image")
    p.add_argument("-m", "--message", default="")
    p.add_argument("--no-pause", dest="pause", action="store_false",
                   help="refused on a running container: its layer is always packed frozen")
    p.add_argument("container")
    p.add_argument("image")


def _p_rmi(sub: Subparsers) -> None:
    p = sub.add_parser("rmi", help="remove images (their layers stay until image-gc)")
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    p.add_argument("images", nargs="+")


def _p_diff(sub: Subparsers) -> None:
    p = sub.add_parser("diff", help="files added (A), changed (C) and deleted (D) in a container")
    p.add_argument("container")


def _p_image_gc(sub: Subparsers) -> None:
    sub.add_parser("image-gc", help="remove layers no image and no container uses")


def _p_network(sub: Subparsers) -> None:
    p = sub.add_parser("network", help="manage networks: create, ls, inspect, rm")
    verbs = p.add_subparsers(dest="network_verb", metavar="COMMAND")
    verbs.required = True
    c = verbs.add_parser("create", help="make a network: a bridge with a subnet of its own")
    c.add_argument("--subnet", help="IPv4 CIDR (default: the first free /16 from 10.88.0.0)")
    c.add_argument("--mtu", type=int)
    c.add_argument("--nat", action="store_true", help="masquerade its outbound traffic (off by default)")
    c.add_argument("name")
    verbs.add_parser("ls", help="list networks")
    verbs.add_parser("inspect", help="show networks as JSON").add_argument("names", nargs="+")
    verbs.add_parser("rm", help="remove networks no container uses").add_argument("names", nargs="+")


def _p_volume(sub: Subparsers) -> None:
    p = sub.add_parser("volume", help="manage volumes: create, ls, inspect, rm")
    verbs = p.add_subparsers(dest="volume_verb", metavar="COMMAND")
    verbs.required = True
    verbs.add_parser("create", help="make a volume (a random name when none is given)") \
        .add_argument("name", nargs="?")
    verbs.add_parser("ls", help="list volumes")
    verbs.add_parser("inspect", help="show volumes as JSON").add_argument("names", nargs="+")
    r = verbs.add_parser("rm", help="remove volumes no container uses")
    r.add_argument("-f", "--force", action="store_true",
                   help="accepted as Docker does; a volume in use is still refused")
    r.add_argument("names", nargs="+")


def _p_port(sub: Subparsers) -> None:
    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container")


def _p_agent(sub: Subparsers) -> None:
    p = sub.add_parser("agent", help="serve the runtime on a local socket in the foreground (root)")
    p.add_argument("--socket", help="socket path (default: $TERRARIUM_AGENT_SOCKET or ROOT/run/agent.sock)")
    p.add_argument("--group", help="group that may reach the socket (default: $TERRARIUM_AGENT_GROUP)")
    p.add_argument("--uids", help="uids or user names allowed besides root (default: $TERRARIUM_AGENT_UIDS)")
    p.add_argument("--background", action="store_true",
                   help="start it detached unless one answers on the socket, and return once it "
                        "does; it stays until stopped (SIGTERM to ROOT/run/agent.pid)")


# verb -> adds its subparser.  Only the verb asked for is built: argparse
# takes about a millisecond per subparser, which a CLI start can't spare.
_PARSERS: dict[str, Callable[[Subparsers], None]] = {
    "run": _p_run, "create": _p_create, "start": _p_start,
    "stop": _p_stop_like("stop"), "restart": _p_stop_like("restart"), "kill": _p_kill,
    "pause": _p_many("pause", "pause containers"), "unpause": _p_many("unpause", "unpause containers"),
    "rm": _p_rm, "ps": _p_ps, "logs": _p_logs, "exec": _p_exec,
    "inspect": _p_many("inspect", "show containers as JSON"), "update": _p_update,
    "wait": _p_many("wait", "wait for containers to stop; print their exit codes"),
    "images": _p_images, "load": _p_load, "save": _p_save, "commit": _p_commit,
    "rmi": _p_rmi, "diff": _p_diff, "image-gc": _p_image_gc, "agent": _p_agent,
    "network": _p_network, "port": _p_port, "volume": _p_volume,
}
_PARSERS.update(_cli_registry.PARSERS)      # pull push login logout tag


_built: dict[str | None, argparse.ArgumentParser] = {}


def parser_for(only: str | None) -> argparse.ArgumentParser:
    """build_parser(only), made once per process.  parse_args leaves a parser
    as it was, so the CLI server builds every verb's once and each worker it
    forks parses with them (~2 ms a command); a local command builds one."""
    parser = _built.get(only)
    if parser is None:
        parser = _built[only] = build_parser(only)
    return parser


def warm_parsers() -> None:
    """Build every verb's parser now (the CLI server, before it forks workers)."""
    for verb in (None, *_PARSERS):
        parser_for(verb)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="terrarium", description="Run and inspect containers.")
    parser.add_argument("--root", help="state directory (default: $TERRARIUM_ROOT or /var/lib/terrarium)")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    sub.required = True
    for verb, add in _PARSERS.items():
        if only is None or verb == only:
            add(sub)
    return parser


def _verb_of(argv: list[str]) -> str | None:
    """The verb in argv, if it is one we know (skipping --root DIR)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--root":
            i += 2
            continue
        if arg.startswith("--root="):
            i += 1
            continue
        return arg if arg in _PARSERS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; every way it can end is an exit code and at most one
    line on stderr: 125 refused, 126/127 not runnable, 2 bad usage (argparse)."""
    raw = sys.argv[1:] if argv is None else argv
    try:
        args = parser_for(_verb_of(raw)).parse_args(raw)
        code = _dispatch(args)
    except ExecFailed as e:
        _say(str(e))
        code = e.exit_code
    except TerrariumError as e:
        _say(f"error: {e}")
        code = 125
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except SystemExit:
        raise                                  # argparse: usage, --help
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request
        _say(f"internal error: {type(e).__name__}: {e}")
        if os.environ.get("TERRARIUM_DEBUG") == "1":
            import traceback
            traceback.print_exc()
        code = 125
    if argv is None:
        sys.exit(code)
    return code


def _print_table(table: Sequence[tuple[str, ...]]) -> None:
    """Rows (the first the header) in columns as wide as their widest cell, three spaces apart."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _say(message: str) -> None:
    """One line on stderr, however many lines the message came with (tarfile
    explains itself over several)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0].rstrip(":") if lines else message
    if len(lines) > 1:
        text += " (" + "; ".join(lines[1:])[:200] + ")"
    try:
        print(f"terrarium: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass                                   # stderr gone: the exit code still tells


def _dispatch(args: argparse.Namespace) -> int:
    from .containers import Runtime
    if args.verb != "agent" and os.environ.get("TERRARIUM_AGENT"):
        from .agent_client import AgentRuntime, wanted
        if wanted():                       # through the root agent: audited as cli:<uid>
            return _VERBS[args.verb](AgentRuntime(args.root, user=f"cli:{os.getuid()}"), args)
    rt = Runtime(args.root)
    if args.verb in _AUDITED:             # in the audit log as the agent would record it
        from .audit import Audited
        return _VERBS[args.verb](Audited(rt, f"cli:{os.getuid()}"), args)
    return _VERBS[args.verb](rt, args)


# ------------------------------------------------------------------- verbs

def _spec(args: argparse.Namespace, auto_remove: bool) -> Spec:
    from .spec import make_limits, make_spec, parse_log_opts
    limits = make_limits(args.memory, args.memory_swap, args.cpus, args.pids)
    seccomp = None
    if args.security_opt:
        from .seccomp import setting_from_options
        seccomp = setting_from_options(args.security_opt)
    from .lifecycle import healthcheck_from_options
    health = healthcheck_from_options(args.health_cmd, args.health_interval, args.health_timeout,
                                      args.health_retries, args.health_start_period, args.no_healthcheck)
    if args.rm and args.restart not in ("", "no"):
        raise InvalidArgument("conflicting options: --restart and --rm")
    from .mounts import parse_tmpfs, parse_volume
    mounts = [*map(parse_volume, args.volume), *map(parse_tmpfs, args.tmpfs)]
    return make_spec(image=args.image, name=args.name, cmd=args.cmd, env=args.env,
                     hostname=args.hostname, workdir=args.workdir, limits=limits,
                     auto_remove=auto_remove, seccomp=seccomp, log=parse_log_opts(args.log_opt),
                     network=args.network, ports=args.publish, restart=args.restart, healthcheck=health,
                     mounts=mounts, read_only=args.read_only)


def _create_container(rt: CliRuntime, spec: Spec) -> Container:
    # `--network host` and `-v /host/path:...` typed here are the explicit consent
    # create() asks for: the CLI runs as root, or as a user the agent trusts as it
    # trusts the dashboard.
    return rt.create(spec, allow_host_network=spec.network == "host",
                     allow_bind_mounts=any(m.type == "bind" for m in spec.mounts))


def _run(rt: CliRuntime, args: argparse.Namespace) -> int:
    # Foreground --rm is done here, after the exit code is read (as Docker's client did).
    spec = _spec(args, auto_remove=args.rm and args.detach)
    c = _create_container(rt, spec)
    held = None if args.detach else rt.hold_log(c.id)     # before the start: miss no output
    try:
        c = rt.start(c.id)
    except ExecFailed:
        if held:
            held.close()
        if args.rm:
            rt.remove(c.id, force=True, volumes=True)
        raise
    if args.detach:
        print(c.id)
        return 0
    try:
        return _attach(rt, c, held)
    finally:
        if args.rm:
            rt.remove(c.id, force=True, volumes=True)


def _attach(rt: CliRuntime, c: Container, held: IO[bytes] | None = None) -> int:
    """Print the output as it comes; pass Ctrl-C on as SIGINT (twice: SIGKILL).
    held: the log file rt.hold_log() took before the start (it is closed here)."""
    interrupts = 0

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        try:
            rt.kill(c.id, signal.SIGKILL if interrupts > 1 else signum)
        except TerrariumError:
            pass
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _print_output(rt.log_output(c.id, follow=True, attach=held or True, on_wait=_flush))
        end = rt.wait(c.id)
    finally:
        if held:
            held.close()        # (log_output closed it already, unless it failed first)
        for s, h in old.items():
            signal.signal(s, h)
    if end.oom_killed:
        print(f"terrarium: container {end.name!r} was OOM-killed (memory limit "
              f"{_size(end.limits.memory)})", file=sys.stderr)
    return end.exit_code if end.exit_code is not None else 255


def _create(rt: CliRuntime, args: argparse.Namespace) -> int:
    print(_create_container(rt, _spec(args, auto_remove=args.rm)).id)
    return 0


def _start(rt: CliRuntime, args: argparse.Namespace) -> int:
    code = 0
    for ref in args.containers:
        held = rt.hold_log(ref) if args.attach else None
        try:
            c = rt.start(ref)
        except BaseException:
            if held:
                held.close()
            raise
        if args.attach:
            code = _attach(rt, c, held)
        else:
            print(ref)
    return code


def _each(action: Callable[[CliRuntime, argparse.Namespace, str], object]) -> Verb:
    def verb(rt: CliRuntime, args: argparse.Namespace) -> int:
        failed = 0
        for ref in args.containers:
            try:
                action(rt, args, ref)
                print(ref)
            except TerrariumError as e:
                _say(f"error: {e}")
                failed = 125
        return failed
    return verb


def _ps(rt: CliRuntime, args: argparse.Namespace) -> int:
    if args.all_engines:
        return _ps_engines(rt, args)
    rows = rt.list(all=args.all)
    if args.quiet:
        for c in rows:
            print(c.id[:12])
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    now = time.time()
    for c in rows:
        cmd = " ".join(c.cmd)
        table.append((c.id[:12], c.image, f'"{cmd[:20]}…"' if len(cmd) > 20 else f'"{cmd}"',
                      f"{_ago(now - c.created_at)} ago", status_text(c, now), c.name))
    _print_table(table)
    return 0


def _ps_engines(rt: CliRuntime, args: argparse.Namespace) -> int:
    """`ps --all-engines`: one discovery pass; engines that are not there
    said in one line after the table (not an error)."""
    if hasattr(rt, "discovery"):            # the runtime's own Discovery (the agent's, through it)
        found, states = rt.discovery().discover()
    else:
        from .discovery import discover
        from .discovery.registry import default_sources
        found, states = discover(default_sources(rt))
    if not args.all:
        found = [f for f in found if f.state in ("running", "paused")]
    if args.quiet:
        for f in found:
            print(f.key)
        return 0
    table = [("ENGINE", "ID", "NAME", "STATE", "PID", "CGROUP")]
    for f in found:
        ident = f.id[:12] if len(f.id) == 64 else f.id
        name = f.name if len(f.name) <= 40 else f.name[:39] + "…"
        table.append((f.engine, ident, name, f.state, str(f.pid or "-"), f.cgroup or "-"))
    _print_table(table)
    for state in ("absent", "refused"):
        missing = [f"{s.engine} ({s.detail})" if s.detail else s.engine for s in states if s.state == state]
        if missing:
            print(f"{state}: " + ", ".join(missing))
    return 0


def status_text(c: Container, now: float | None = None) -> str:
    now = now or time.time()
    if c.stopping:
        left = c.stopping["since"] + c.stopping["timeout"] - now
        return f"Stopping (SIGKILL in {_ago(left)})"
    if c.status in ("running", "paused"):
        text = f"Up {_ago(now - (c.started_at or now))}"
        if c.health and c.health.get("status"):
            text += " (health: starting)" if c.health["status"] == "starting" else f" ({c.health['status']})"
        return text + " (Paused)" if c.status == "paused" else text
    if c.status == "broken":
        return f"Broken: {c.error}"
    if c.status == "exited" and c.restarting:
        code = c.exit_code if c.exit_code is not None else "?"
        return f"Restarting ({code}) {_ago(now - (c.finished_at or now))} ago"
    if c.status == "exited":
        text = f"Exited ({c.exit_code if c.exit_code is not None else '?'}) {_ago(now - (c.finished_at or now))} ago"
        return text + " (OOM killed)" if c.oom_killed else text
    return "Created"


def _logs(rt: CliRuntime, args: argparse.Namespace) -> int:
    tail = args.tail
    if tail is not None:
        if tail.strip() == "all":
            tail = None
        elif not (tail.strip().isascii() and tail.strip().isdigit() and len(tail.strip()) <= 18):
            shown = ascii(args.tail) if len(args.tail) <= 60 else ascii(args.tail[:60]) + "..."
            raise InvalidArgument(f"invalid --tail {shown}: use a number of lines or \"all\"")
        else:
            tail = int(tail)
    if args.stream or args.grep or args.until:
        _print_filtered(rt, args, tail)
        return 0
    _print_output(rt.log_output(args.container, tail=tail, since=args.since, follow=args.follow,
                                timestamps=args.timestamps, on_wait=_flush))
    return 0


def _print_filtered(rt: CliRuntime, args: argparse.Namespace, tail: int | None) -> None:
    """`logs` with --stream, --grep or --until: whole lines (runtime/logfilter.py).
    --tail counts the log's lines before the filter, as Docker's does."""
    from . import logfilter, logs
    streams, grep = logfilter.check_stream(args.stream), logfilter.check_grep(args.grep)
    until = logs.parse_since(args.until) if args.until else None
    pieces = rt.log_output(args.container, tail=tail, since=args.since, follow=args.follow,
                           timestamps=True, on_wait=_flush)
    try:
        _print_output((stream, logfilter.render(line, args.timestamps)) for line in
                      logfilter.filtered(pieces, streams=streams, grep=grep, until=until)
                      for stream in (line[1],))
    finally:
        pieces.close()


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def _print_output(pieces: Iterable[tuple[str, bytes]]) -> None:
    """A log's content as `docker logs` prints it: stdout's on stdout, stderr's on stderr."""
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    last = None
    try:
        for stream, data in pieces:
            if stream != last and last is not None:
                out[last].flush()       # keep the order when both go to one terminal
            out[stream].write(data)
            last = stream
    finally:
        _flush()


def _exec(rt: CliRuntime, args: argparse.Namespace) -> int:
    return rt.exec(args.container, args.cmd, env=args.env, tty=args.tty,
                   interactive=args.interactive, workdir=args.workdir)


def _inspect(rt: CliRuntime, args: argparse.Namespace) -> int:
    print(json.dumps([to_dict(rt.inspect(ref)) for ref in args.containers], indent=2))
    return 0


def _update(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .spec import make_limits
    change = make_limits(args.memory, args.memory_swap, args.cpus, args.pids)
    failed = 0
    limits_given = any(v is not None for v in (args.memory, args.memory_swap, args.cpus, args.pids))
    if not limits_given and args.restart is None:
        raise InvalidArgument("update: give a limit or --restart")
    for ref in args.containers:
        try:
            if not limits_given:
                rt.update(ref, restart=args.restart)
                print(ref)
                continue
            old = rt.inspect(ref).limits
            memory = change.memory if args.memory else old.memory
            swap = change.memory_swap if args.memory_swap else (old.memory_swap if not args.memory else None)
            new = Limits(memory=memory, memory_swap=swap,
                         cpus=change.cpus if args.cpus else old.cpus,
                         pids=change.pids if args.pids else old.pids)
            rt.update(ref, new, restart=args.restart)
            print(ref)
        except TerrariumError as e:
            _say(f"error: {e}")
            failed = 125
    return failed


def _wait(rt: CliRuntime, args: argparse.Namespace) -> int:
    for ref in args.containers:
        print(rt.wait(ref).exit_code)
    return 0


def _images(rt: CliRuntime, args: argparse.Namespace) -> int:
    rt.images.ensure_builtin()
    table = [("IMAGE", "ID", "LAYERS", "SIZE", "CMD")]
    for image in [*rt.images.list(), *rt.images.dangling()]:
        size = sum(layer.size for layer in image.layers)
        table.append((image.name or "<none>", image.id[7:19], str(len(image.layers)), _size(size),
                      " ".join(image.config.cmd)))
    _print_table(table)
    return 0


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    if s < 3600:
        return f"{s // 60} minute{'s' if s >= 120 else ''}"
    if s < 86400:
        return f"{s // 3600} hour{'s' if s >= 7200 else ''}"
    return f"{s // 86400} days"


def _size(n: float | None) -> str:
    if n is None:
        return "unlimited"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------- images and layers

@contextmanager
def _file_errors(what: str) -> Iterator[None]:
    """OSError from a file the person named -> one TerrariumError line."""
    try:
        yield
    except TerrariumError:
        raise
    except OSError as e:
        raise TerrariumError(f"{what}: {e.strerror or e}") from None


def _load(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .images import importers
    with _file_errors(args.input):
        if os.path.isdir(args.input):    # a layout directory: read in this process (root)
            # (the agent's images pass what load uses on to a local store)
            images = importers.load(rt.images, args.input, name=args.name)  # type: ignore[arg-type]
        else:                            # through the agent: sent as a descriptor
            images = rt.load_image(args.input, name=args.name)
    for image in images:
        _say_moved(image)
        print(f"Loaded image: {image.name}")
    return 0


def _say_moved(image: Image) -> None:
    """What Docker says when a load moves a name, and where the old image went."""
    if image.replaced:
        print(f"The image {image.name} already exists, renaming the old one with ID "
              f"{image.replaced} to empty string (kept by id until image-gc)")


def _save(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .images import importers
    with _file_errors(args.output):
        importers.save(rt.images, args.image, args.output,  # type: ignore[arg-type]  # (as in _load)
                       writer=lambda out: rt.save_image(args.image, out))
    return 0


def _commit(rt: CliRuntime, args: argparse.Namespace) -> int:
    image = rt.commit(args.container, args.image, message=args.message, pause=args.pause)
    _say_moved(image)
    print(f"{image.name} {image.layers[-1].digest}")
    return 0


def _rmi(rt: CliRuntime, args: argparse.Namespace) -> int:
    failed = 0
    for name in args.images:
        try:
            rt.remove_image(name, force=args.force)
            print(f"Untagged: {name}")
        except TerrariumError as e:
            _say(f"error: {e}")
            failed = 125
    return failed


def _diff(rt: CliRuntime, args: argparse.Namespace) -> int:
    changes = rt.diff(args.container)
    for ch in changes:
        print(f"{ch.kind} {ch.path}")
    if changes.truncated:
        print(f"terrarium: diff truncated at {len(changes)} changes (in walk order, not sorted)",
              file=sys.stderr)
    return 0


def _image_gc(rt: CliRuntime, args: argparse.Namespace) -> int:
    for digest in rt.image_gc():
        print(f"Deleted: {digest}")
    return 0


def _network(rt: CliRuntime, args: argparse.Namespace) -> int:
    verb = args.network_verb
    if verb == "create":
        print(rt.networks.create(args.name, subnet=args.subnet, mtu=args.mtu, nat=args.nat)["name"])
        return 0
    if verb == "ls":
        table = [("NAME", "BRIDGE", "SUBNET", "GATEWAY", "CONTAINERS")]
        for n in rt.networks.list():
            table.append((n["name"], n["bridge"], n["subnet"], n["gateway"], str(len(n["containers"]))))
        _print_table(table)
        return 0
    if verb == "inspect":
        print(json.dumps([rt.networks.inspect(n) for n in args.names], indent=2))
        return 0
    failed = 0
    for name in args.names:                      # rm
        try:
            rt.networks.remove(name)
            print(name)
        except TerrariumError as e:
            _say(f"error: {e}")
            failed = 125
    return failed


def _volume(rt: CliRuntime, args: argparse.Namespace) -> int:
    verb = args.volume_verb
    if verb == "create":
        print(rt.volumes.create(args.name)["name"])
        return 0
    if verb == "ls":
        table = [("VOLUME NAME", "SIZE", "CONTAINERS")]
        for v in rt.volumes.list():
            table.append((v["name"], _size(v.get("size")), ", ".join(u["name"] for u in v["containers"]) or "-"))
        _print_table(table)
        return 0
    if verb == "inspect":
        print(json.dumps([rt.volumes.inspect(n) for n in args.names], indent=2))
        return 0
    failed = 0
    for name in args.names:                      # rm (-f changes nothing for a volume in use)
        try:
            rt.volumes.remove(name)
            print(name)
        except TerrariumError as e:
            _say(f"error: {e}")
            failed = 125
    return failed


def _port(rt: CliRuntime, args: argparse.Namespace) -> int:
    """As `docker port`: CONTAINER_PORT/PROTO -> HOST_IP:HOST_PORT."""
    from .network import parse_port
    for text in rt.inspect(args.container).ports:
        p = parse_port(text)
        print(f"{p['container_port']}/{p['proto']} -> {p['host_ip'] or '0.0.0.0'}:{p['host_port']}")
    return 0


def _agent(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .agent import Agent, ensure_agent
    if args.background:
        # the detached agent takes its settings from the environment
        for var, value in (("TERRARIUM_AGENT_SOCKET", args.socket), ("TERRARIUM_AGENT_GROUP", args.group),
                           ("TERRARIUM_AGENT_UIDS", args.uids)):
            if value is not None:
                os.environ[var] = value
        os.environ.setdefault("TERRARIUM_AGENT_IDLE_EXIT", "0")
        ensure_agent(rt.root, rt.cgroup_parent)
        return 0
    Agent(rt.root, rt.cgroup_parent, path=args.socket, group=args.group, uids=args.uids).serve()
    return 0


# the commands that change something: their runtime calls go to ROOT/audit.log
_AUDITED = frozenset({"run", "create", "start", "stop", "restart", "kill", "pause", "unpause", "rm",
                      "update", "load", "save", "commit", "rmi", "image-gc",
                      "pull", "push", "tag", "login", "logout", "volume"})

_VERBS: dict[str, Verb] = {
    "run": _run, "create": _create, "start": _start,
    "stop": _each(lambda rt, a, ref: rt.stop(ref, a.time)),
    "restart": _each(lambda rt, a, ref: rt.restart(ref, a.time)),
    "kill": _each(lambda rt, a, ref: rt.kill(ref, a.signal)),
    "pause": _each(lambda rt, a, ref: rt.pause(ref)),
    "unpause": _each(lambda rt, a, ref: rt.resume(ref)),
    "rm": _each(lambda rt, a, ref: rt.remove(ref, force=a.force, volumes=a.volumes)),
    "ps": _ps, "logs": _logs, "exec": _exec, "inspect": _inspect, "update": _update,
    "wait": _wait, "images": _images,
    "load": _load, "save": _save, "commit": _commit, "rmi": _rmi, "diff": _diff,
    "image-gc": _image_gc, "agent": _agent, "network": _network, "port": _port,
    **_cli_registry.VERBS,
    "volume": _volume,
}
