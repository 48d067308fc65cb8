"""Image references as Docker parses them: `[registry[:port]/]path[:tag][@digest]`.

    ref = parse("busybox")          # Reference(domain='docker.io', path='library/busybox', tag='latest')
    ref.full                        # 'docker.io/library/busybox:latest'
    ref.familiar                    # 'busybox'           (how Docker shows it)
    ref.key                         # 'busybox'           (the image store's name: ':latest' left out)
    parse("localhost:5000/x:v1").key            # 'localhost:5000/x:v1'
    parse("docker.io/library/barsumoci:v2").key  # 'barsumoci:v2'

The grammar is the one of Docker's `distribution/reference` package:
- the first `/`-separated component is a registry (domain) when it holds a
  `.` or a `:` or is `localhost`; otherwise the registry is `docker.io`, and
  a one-component path there gets the `library/` namespace;
  `index.docker.io` is `docker.io`;
- path components are lowercase letters and digits, joined by `.`, `_`,
  `__` or any run of `-`; the whole name is at most 255 characters;
- a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, `latest` when absent;
- a digest is `sha256:<64 lowercase hex>` (the only algorithm the store knows);
- 64 hexadecimal characters alone are an image id, never a name.

Errors are InvalidArgument with Docker's wording (`invalid reference format`,
`... must be lowercase`).  The same parser serves the CLI, the agent, the
dashboard's forms and the names (RepoTags, ref.name annotations) archives carry.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_ID = re.compile(r"[0-9a-f]{64}")


class Reference(NamedTuple):
    domain: str
    path: str
    tag: str | None          # None only with a digest and no tag given
    digest: str | None = None

    @property
    def repository(self) -> str:
        """'docker.io/library/busybox'"""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """'busybox', 'user/app', 'localhost:5000/x': the repository as Docker shows it."""
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_NAMESPACE + "/") and path.count("/") == 1:
                return path[len(OFFICIAL_NAMESPACE) + 1:]
            return path
        return self.repository

    @property
    def full(self) -> str:
        """'docker.io/library/busybox:latest' (and '@sha256:...' when it has one)."""
        return self._tagged(self.repository)

    @property
    def familiar(self) -> str:
        """'busybox:latest', 'barsumoci:v2': as `docker images` pairs REPOSITORY and TAG."""
        return self._tagged(self.familiar_repository)

    def _tagged(self, repository: str) -> str:
        out = repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def key(self) -> str:
        """The image store's name for this reference: the familiar repository,
        with ':tag' unless the tag is 'latest' ('busybox', 'barsumoci:v2');
        a digest with no tag is kept instead ('localhost:5000/x@sha256:...':
        an image pulled by digest alone is stored and shown under it)."""
        if self.tag is None and self.digest:
            return f"{self.familiar_repository}@{self.digest}"
        tag = self.tag or DEFAULT_TAG
        return self.familiar_repository + ("" if tag == DEFAULT_TAG else f":{tag}")


def _error(ref: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {ascii(ref)[:140]}")


def parse(ref: object) -> Reference:
    """Parse `ref` as `docker pull` does; InvalidArgument with Docker's kind of message
    (for anything but a string too: `ref` may come straight from a request)."""
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument("invalid reference format: the image reference is empty"
                              if ref == "" else f"invalid reference format: {ascii(ref)[:80]}")
    if "\0" in ref or not ref.isascii() or any(c.isspace() for c in ref):
        raise _error(ref)
    if _ID.fullmatch(ref):
        raise InvalidArgument(f"invalid repository name ({ref}), cannot specify 64-byte "
                              "hexadecimal strings")
    rest, digest = ref, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _ANY_DIGEST.fullmatch(digest):
            raise _error(ref)
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(f"unsupported digest in {ref!r}: only sha256:<64 lowercase hex> "
                                  "is supported")
    tag = None
    last = rest.rfind(":")
    if last > rest.rfind("/"):              # a ':' after the last '/' starts the tag
        rest, tag = rest[:last], rest[last + 1:]
        if not _TAG.fullmatch(tag):
            raise _error(ref)
    name = rest
    if not name:
        raise _error(ref)
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN.fullmatch(domain):
            raise _error(ref)
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    components = path.split("/")
    for c in components:
        if not _PATH_COMPONENT.fullmatch(c):
            if _PATH_COMPONENT.fullmatch(c.lower()):
                raise InvalidArgument(f"invalid reference format: repository name ({path}) "
                                      "must be lowercase")
            raise _error(ref)
    if domain == DEFAULT_DOMAIN and len(components) == 1:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    if len(name) > NAME_TOTAL_MAX:
        raise InvalidArgument(f"invalid reference format: repository name must not be more than "
                              f"{NAME_TOTAL_MAX} characters ({name[:40]}...)")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_name(ref: object) -> Reference:
    """parse(), for a reference that names an image (a tag to write): no digest."""
    r = parse(ref)
    if r.digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference ({ref!r}): "
                              "name an image with [registry/]name[:tag]")
    return r


def normalize(ref: str, *, by_digest: bool = False) -> str:
    """The store key of a name: parse_name(ref).key; with `by_digest`, a
    digest reference with no tag too (what a pull by digest records)."""
    if by_digest:
        r = parse(ref)
        if r.digest is not None and r.tag is None:
            return r.key
    return parse_name(ref).key


def image_id_prefix(ref: str) -> str | None:
    """'sha256:<hex>' or a hex prefix of at least 4 digits -> the hex; None otherwise
    (what Docker takes as an image id when no name matches)."""
    if not isinstance(ref, str):
        return None
    hexpart = ref[7:] if ref.startswith("sha256:") else ref
    if 4 <= len(hexpart) <= 64 and re.fullmatch(r"[0-9a-f]+", hexpart):
        return hexpart
    return None


def shown(key: str) -> str:
    """A store key as `docker images` shows it: 'busybox' -> 'busybox:latest'."""
    try:
        return parse(key).familiar
    except InvalidArgument:
        return key
