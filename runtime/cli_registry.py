"""`terrarium pull / push / login / logout / tag`: the CLI of runtime.images.distribution.

Progress goes to stdout as Docker prints it: on a terminal one line per
layer, redrawn in place (`1348d4136bd3: Downloading  1.2 MB / 2.1 MB`); to a
pipe or file one line per change of a layer's status (no byte counts), so a
log of a pull is short and a script can wait for `Verified`.
"""
from __future__ import annotations

import os
import sys

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO
    import argparse
    from .cli import CliRuntime, Subparsers


def p_pull(sub: Subparsers) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("--platform", help="os/arch[/variant] to pick from a manifest list (default: this machine's)")
    p.add_argument("--insecure-registry", action="store_true",
                   help="allow plain HTTP and unchecked TLS (always allowed for localhost and 127.0.0.0/8)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    p.add_argument("image")


def p_push(sub: Subparsers) -> None:
    p = sub.add_parser("push", help="push an image to the registry its name says")
    p.add_argument("--insecure-registry", action="store_true",
                   help="allow plain HTTP and unchecked TLS (always allowed for localhost and 127.0.0.0/8)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p.add_argument("image")


def p_login(sub: Subparsers) -> None:
    p = sub.add_parser("login", help="check and keep credentials for a registry (ROOT/registry-auth.json)")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="insecure: prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--insecure-registry", action="store_true")
    p.add_argument("server", nargs="?", help="host[:port] (default: Docker Hub)")


def p_logout(sub: Subparsers) -> None:
    p = sub.add_parser("logout", help="forget a registry's credentials")
    p.add_argument("server", nargs="?")


def p_tag(sub: Subparsers) -> None:
    p = sub.add_parser("tag", help="give an image another name (as docker tag)")
    p.add_argument("source")
    p.add_argument("target")


PARSERS = {"pull": p_pull, "push": p_push, "login": p_login, "logout": p_logout, "tag": p_tag}


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return str(n)


class Renderer:
    """Layer lines: redrawn in place on a terminal, a line per status change otherwise."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.tty = not quiet and self.out.isatty()
        self.lines: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.drawn = 0

    def __call__(self, ev: Mapping[str, Any]) -> None:
        if self.quiet or ev.get("status") == "done":
            return
        ident, status = ev.get("id", ""), ev.get("status", "")
        if self.tty:
            text = f"{ident}: {status}"
            if status in ("Downloading", "Pushing", "Extracting") and ev.get("total"):
                text += f"  {_size(ev.get('current', 0))} / {_size(ev['total'])}"
            self.lines[ident] = text
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            for line in self.lines.values():
                self.out.write(f"\x1b[2K{line}\n")
            self.drawn = len(self.lines)
            self.out.flush()
        elif self.status.get(ident) != status:
            self.status[ident] = status
            print(f"{ident}: {status}", file=self.out, flush=True)


def pull(rt: CliRuntime, args: argparse.Namespace) -> int:
    show = Renderer(quiet=args.quiet)
    image = rt.pull_image(args.image, platform=args.platform, insecure=args.insecure_registry, progress=show)
    if args.quiet:
        print(image.name)
        return 0
    if image.replaced:
        print(f"The image {image.name} already existed as {image.replaced}; the name moved "
              "(the old image is kept by id until image-gc)")
    print(f"Status: Downloaded {image.name} ({image.id})")
    return 0


def push(rt: CliRuntime, args: argparse.Namespace) -> int:
    show = Renderer(quiet=args.quiet)
    digest = rt.push_image(args.image, insecure=args.insecure_registry, progress=show)
    print(digest if args.quiet else f"Pushed {args.image}: digest: {digest}")
    return 0


def _local_needs_root(rt: CliRuntime) -> None:
    """In-process, the credentials file is the state root's: root only.
    (Through the agent, TERRARIUM_AGENT=1, the agent keeps it.)"""
    if getattr(rt, "call", None) is None and os.geteuid() != 0:
        raise InvalidArgument("login and logout need root: the credentials are kept in the state root "
                              "(0600), which only root and the agent read")


def login(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .images import distribution
    _local_needs_root(rt)
    user = args.username
    if args.password is not None and args.password_stdin:
        raise InvalidArgument("--password and --password-stdin are exclusive")
    if args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
        password = args.password
    elif args.password_stdin:
        if not user:
            raise InvalidArgument("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass
        if not sys.stdin.isatty():
            raise InvalidArgument("no terminal to ask for the password: use --password-stdin")
        if not user:
            user = input("Username: ").strip()
        password = getpass.getpass("Password: ")
    domain = rt.registry_login(args.server, user or "", password, args.insecure_registry)
    print(f"Login Succeeded ({domain}; kept in {distribution.auth_path(rt.root)})")
    return 0


def logout(rt: CliRuntime, args: argparse.Namespace) -> int:
    from .images import distribution
    _local_needs_root(rt)
    domain = distribution.server_of(args.server)
    if rt.registry_logout(args.server):
        print(f"Removing login credentials for {domain}")
    else:
        print(f"Not logged in to {domain}")
    return 0


def tag(rt: CliRuntime, args: argparse.Namespace) -> int:
    rt.tag_image(args.source, args.target)
    return 0


VERBS = {"pull": pull, "push": push, "login": login, "logout": logout, "tag": tag}
