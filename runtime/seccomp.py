"""Seccomp profiles: Docker's JSON format in, a classic BPF program out.

A container's setting is one of
    {"mode": "default"}                      seccomp_default.json, beside this file
    {"mode": "unconfined"}                   no filter
    {"mode": "custom", "profile": {...}}     a profile the person gave, kept whole
plus "no_new_privileges": false when --security-opt no-new-privileges=false
asked for it (absent: on, the default here, unlike Docker's), and lives in
its config.json (a custom profile is copied in, as Docker does: the file may
change or vanish after `create`).

libseccomp (through pyseccomp) compiles a profile, on the caller's side, once
per distinct profile: the program is cached as ROOT/seccomp/<sha256>.bpf
(root only) and the start request names that file.  The container's init,
a `python -I -S` fork with no third-party packages and a start to keep
cheap, only reads it and loads it with prctl (linux.seccomp_filter), last,
after no_new_privs, right before execve; or, with no-new-privileges=false,
before it drops its capabilities (the kernel wants no_new_privs or
CAP_SYS_ADMIN to load a filter), so the profile must allow what init does
after it: prctl, capset, execve (Docker's does).

The default profile is Docker's (moby profiles/seccomp) with its
capability-conditional parts resolved for the 14 capabilities every container
here has (linux.DEFAULT_CAPS): no mount, bpf, perf_event_open, keyctl,
io_uring (Docker dropped it in 2023), userfaultfd, ...; clone and unshare only
without namespace flags (Docker refuses unshare outright; unshare(CLONE_FS)
and the like are harmless, and unshare's mask also covers CLONE_NEWTIME);
clone3 answers ENOSYS so that libc falls back to clone, whose flags the
filter can see; personality only for the few values Docker allows; socket for
every family but AF_VSOCK.
"""
from __future__ import annotations

import errno
import json
import os

from .errors import InvalidArgument, TerrariumError

TYPE_CHECKING = False       # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import ModuleType
    from typing import Any, BinaryIO, Protocol, Required, TypedDict

    # Docker's seccomp JSON as the person gave it: open-ended, read by _rules
    Profile = dict[str, Any]

    class Setting(TypedDict, total=False):
        """A container's seccomp setting (its config.json "seccomp"); see above."""
        mode: Required[str]                # default, unconfined or custom
        profile: Profile                   # custom
        no_new_privileges: bool            # only ever False (absent: on)

    _Arg = tuple[int, int, int, int]       # (index, op, value, valueTwo) of one comparison
    _Rule = tuple[list[str], str, "int | None", list[_Arg]]   # (names, action, errno, args)
    _Rules = tuple[str, "int | None", list[str], list[_Rule]]  # (default, its errno, arches, rules)

    class _Filter(Protocol):
        """pyseccomp.SyscallFilter (no type hints of its own): the calls made here."""

        def add_rule(self, action: int, syscall: str, *args: Any) -> None: ...

        def add_rule_exactly(self, action: int, syscall: int, *args: Any) -> None: ...

        def merge(self, other: _Filter) -> None: ...

        def export_bpf(self, file: BinaryIO) -> None: ...

        def set_attr(self, attr: int, value: int) -> None: ...

        def exist_arch(self, arch: int) -> bool: ...

        def add_arch(self, arch: int) -> None: ...

        def remove_arch(self, arch: int) -> None: ...

DEFAULT_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")
MODES = ("default", "unconfined", "custom")
# Part of every cache key: change it when compile_profile() changes what it emits.
COMPILER_VERSION = "2"

_ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
            "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# Docker's names (Go's GOARCH) for includes/excludes "arches", by machine.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class ProfileError(InvalidArgument):
    """A profile libseccomp or Docker's format does not accept."""


# ------------------------------------------------------------- the setting

def setting_from_options(options: Iterable[object] | None) -> Setting:
    """--security-opt values -> the container's seccomp setting.

    Accepts seccomp=unconfined, seccomp=default, seccomp=PATH (Docker's JSON
    format, read and checked now) and no-new-privileges[=true|false] (on
    unless the last one says false)."""
    setting: Setting = {"mode": "default"}
    nnp = True
    for opt in options or ():
        opt = str(opt)
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")         # Docker's old spelling
        key = key.strip()
        if key == "no-new-privileges":
            nnp = _bool(value.strip(), opt)
            continue
        if key != "seccomp" or not value:
            raise InvalidArgument(f"unsupported security option {opt!r}: use seccomp=unconfined, "
                                  "seccomp=PROFILE.json or no-new-privileges=true|false")
        if value in ("unconfined", "default"):
            setting = {"mode": value}
        else:
            setting = {"mode": "custom", "profile": read_profile(value)}
    return setting if nnp else {**setting, "no_new_privileges": False}


def _bool(value: str, opt: str) -> bool:
    """Go's strconv.ParseBool, as Docker reads the option; empty is true."""
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise InvalidArgument(f"invalid security option {opt!r}: no-new-privileges takes true or false")


def check_setting(setting: object, full: bool = True) -> Setting:
    """A passed-in setting, checked; a custom profile is compiled unless full is
    False (create, after make_spec did it, checks only the shape)."""
    if setting is None:
        return {"mode": "default"}
    if not isinstance(setting, dict) or setting.get("mode") not in MODES:
        raise InvalidArgument(f"invalid seccomp setting {setting!r}: mode must be one of "
                              + ", ".join(MODES))
    nnp = setting.get("no_new_privileges", True)
    if not isinstance(nnp, bool):
        raise InvalidArgument(f"invalid seccomp setting: no_new_privileges {nnp!r} must be true or false")
    out: Setting = {"mode": setting["mode"]}
    if setting["mode"] == "custom":
        profile = setting.get("profile")
        if full:
            check_profile(profile, "the seccomp profile")        # a ProfileError unless an object
            if not nnp:
                _check_the_drop(profile)
        if not isinstance(profile, dict):
            raise InvalidArgument("a custom seccomp setting needs its profile")
        out["profile"] = profile
    if not nnp:
        out["no_new_privileges"] = False
    return out


def mode_of(setting: Mapping[str, Any] | None) -> str:
    """"default", "unconfined" or "custom"; containers made before seccomp existed
    read as "default" (they get the filter on their next start)."""
    mode: str = (setting or {}).get("mode", "default")
    return mode


def _check_the_drop(profile: object) -> None:
    """Without no_new_privs, init drops its capabilities (prctl, capset) under
    the filter: refuse a profile that kills for them, which would leave only
    a SIGSYS exit status.  (One that answers an errno fails the start with a
    sentence of init's.)  Conditional rules are not judged."""
    default, _, _, rules = _rules(profile, "the seccomp profile")
    for call in ("prctl", "capset"):
        action = default
        for names, act, _, args in rules:
            if call in names and not args:
                action = act
        if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"):
            raise ProfileError(f"the seccomp profile kills {call} ({action}), which the container's "
                               "init needs after loading it when no-new-privileges=false")


def no_new_privs(setting: Mapping[str, Any] | None) -> bool:
    """Whether the container's processes run with no_new_privs (the default)."""
    return (setting or {}).get("no_new_privileges", True) is not False


def read_profile(path: str) -> Profile:
    """Read and check a profile file; one sentence on any problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read((1 << 20) + 1)
    except OSError as e:
        raise ProfileError(f"cannot read seccomp profile {path!r}: {e.strerror}") from None
    if len(raw) > 1 << 20:
        raise ProfileError(f"seccomp profile {path!r} is larger than 1 MiB")
    try:
        profile: Profile = json.loads(raw)         # an object: _rules checks it below
    except (ValueError, UnicodeDecodeError) as e:
        raise ProfileError(f"seccomp profile {path!r} is not valid JSON: {e}") from None
    _rules(profile, f"seccomp profile {path!r}")     # make_spec compiles it (check_setting)
    return profile


def check_profile(profile: object, what: str = "the seccomp profile") -> None:
    """Compile it (the cheapest complete check: libseccomp has the last word)."""
    _rules(profile, what)
    compile_profile(profile, what)


# ------------------------------------------------------------ the program

def program_path(root: str, setting: Mapping[str, Any] | None) -> str | None:
    """The cached BPF file for a container's setting (made if missing); None
    when unconfined.  Runs in the caller (CLI server, dashboard), never in init."""
    mode = mode_of(setting)
    if mode == "unconfined":
        return None
    profile: object
    if mode == "default" or setting is None:        # (mode_of(None) is "default")
        with open(DEFAULT_PROFILE, "rb") as f:
            text = f.read()
        profile = None
    else:
        profile = setting["profile"]
        text = json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()
    import hashlib
    key = hashlib.sha256(b"\0".join([COMPILER_VERSION.encode(), os.uname().release.encode(),
                                     text])).hexdigest()
    cache = os.path.join(root, "seccomp")
    path = os.path.join(cache, f"{key}.bpf")
    if os.path.exists(path):
        return path
    if profile is None:
        profile = json.loads(text)
    program = compile_profile(profile, "the default seccomp profile" if mode == "default"
                              else "the container's seccomp profile")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.urandom(4).hex()}"    # the dashboard's threads share a pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def read_program(path: str | None) -> bytes | None:
    """The program program_path() cached (for exec, which loads it itself)."""
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def compile_profile(profile: object, what: str = "the seccomp profile") -> bytes:
    """The profile as a classic BPF program (struct sock_filter[]), by libseccomp.

    Two things beyond a plain rule-by-rule translation, both as runc does for
    Docker: a syscall newer than any the profile names answers ENOSYS rather
    than the default EPERM (libc then falls back to an older call, as it would
    on an older kernel), and names this libseccomp does not know are skipped.
    Both only on the native architecture: libseccomp takes a syscall by
    number only there, so the native rules go in a filter of their own and
    the other architectures' (x86 and x32 beside x86-64) are merged in."""
    default, default_errno, arches, rules = _rules(profile, what)
    sc = _libseccomp()
    default_action = _action(sc, default, default_errno)
    native = sc.system_arch()
    others = [v for v in (getattr(sc.Arch, a[len("SCMP_ARCH_"):]) for a in arches) if v != native]
    try:
        main = _new_filter(sc, default_action, [])
        extra = _new_filter(sc, default_action, others) if others else None
    except OSError as e:
        raise ProfileError(f"{what}: libseccomp refused its architectures: {e.strerror}") from None
    highest = -1
    for i, (names, action, errno_ret, args) in enumerate(rules):
        act = _action(sc, action, errno_ret)
        if act == default_action:
            continue              # libseccomp refuses a rule that changes nothing
        # Docker (runc) semantics: conditions on distinct arguments are ANDed in
        # one rule; several on the same argument become one rule each (ORed).
        indexes = [a[0] for a in args]
        groups = [args] if len(set(indexes)) == len(indexes) else [[a] for a in args]
        for name in names:
            known = sc.resolve_syscall(sc.Arch.NATIVE, name)
            nr = known if known >= 0 else _UNIFIED.get(name, -1)
            highest = max(highest, nr)
            for group in groups:
                conds = [sc.Arg(ix, op, a, b) for ix, op, a, b in group]
                try:
                    # known < -1: a pseudo-number, a call this architecture
                    # does not have (socketcall on x86-64); the others may
                    if known >= 0:
                        main.add_rule(act, name, *conds)
                    elif known == -1 and nr >= 0:
                        main.add_rule_exactly(act, nr, *conds)
                    if extra is not None and known != -1:
                        extra.add_rule(act, name, *conds)
                except OSError as e:
                    raise ProfileError(f"{what}: syscalls[{i}] ({name}): libseccomp refused the "
                                       f"rule: {e.strerror}") from None
    enosys = sc.ERRNO(errno.ENOSYS)
    if default not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG") and default_action != enosys:
        for nr in range(highest + 1, _NATIVE_END):
            main.add_rule_exactly(enosys, nr)
    if extra is not None:
        main.merge(extra)
    import tempfile
    with tempfile.TemporaryFile() as out:
        try:
            main.export_bpf(out)
        except OSError as e:
            raise ProfileError(f"{what}: libseccomp could not build the program: {e.strerror}") from None
        out.seek(0)
        return out.read()


# Syscalls added since Linux 5.1 have one number on every architecture (424
# up; x32 adds its bit): the ones this libseccomp (2.5.4 in Debian 12) may
# not know by name.  Only used when it does not.
_UNIFIED = {"statmount": 457, "listmount": 458, "lsm_get_self_attr": 459,
            "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462,
            "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466,
            "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469}
# The ENOSYS stub covers native numbers up to here (x86-64's own table and the
# generic one are well below it; on x86-64 512 and up are x32's compat calls).
_NATIVE_END = 512


def _new_filter(sc: ModuleType, default_action: int, arches: list[int]) -> _Filter:
    """A libseccomp filter over arches, or over the native one alone if empty."""
    filt: _Filter = sc.SyscallFilter(default_action)
    # A binary tree over syscall numbers rather than a linear list: every
    # syscall of the container runs this program.
    filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    if arches:
        for arch in arches:
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
        filt.remove_arch(sc.Arch.NATIVE)
    return filt


def _libseccomp() -> ModuleType:
    try:
        import pyseccomp
    except ImportError:
        # The CLI server runs as `python -I -S`: look in the venv, for this
        # one module, only on a cache miss.
        from .daemons import use_venv_packages
        use_venv_packages()
    try:
        import pyseccomp
    except (ImportError, OSError):        # OSError: the package without libseccomp2
        raise TerrariumError("compiling a seccomp profile needs the pyseccomp package and "
                             "Debian's libseccomp2 (scripts/setup.sh installs both); or use "
                             "--security-opt seccomp=unconfined") from None
    module: ModuleType = pyseccomp
    return module


def _action(sc: ModuleType, name: str, errno_ret: int | None) -> int:
    action: int
    if name == "SCMP_ACT_ERRNO":
        action = sc.ERRNO(errno.EPERM if errno_ret is None else errno_ret)
        return action
    if name == "SCMP_ACT_TRACE":
        action = sc.TRACE(errno.EPERM if errno_ret is None else errno_ret)
        return action
    actions: dict[str, int] = {"SCMP_ACT_KILL": sc.KILL, "SCMP_ACT_KILL_THREAD": sc.KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS, "SCMP_ACT_TRAP": sc.TRAP,
            "SCMP_ACT_ALLOW": sc.ALLOW, "SCMP_ACT_LOG": sc.LOG}
    return actions[name]


# --------------------------------------------------------- Docker's format

def _rules(profile: object, what: str) -> _Rules:
    """(default action, its errno, architectures, [(names, action, errno, args)]),
    with Docker's includes/excludes resolved for this host and our capabilities."""
    if not isinstance(profile, dict):
        raise ProfileError(f"{what} must be a JSON object")
    if profile.get("listenerPath") or profile.get("flags"):
        raise ProfileError(f"{what}: listenerPath and flags are not supported")
    default = _check_action(profile.get("defaultAction"), f"{what}: defaultAction")
    default_errno = _errno(profile.get("defaultErrnoRet"), default, f"{what}: defaultErrnoRet")
    arches = _arches(profile, what)
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ProfileError(f"{what}: syscalls must be a list")
    rules: list[_Rule] = []
    for i, rule in enumerate(syscalls):
        where = f"{what}: syscalls[{i}]"
        if not isinstance(rule, dict):
            raise ProfileError(f"{where} must be an object")
        names = rule.get("names")
        if names is None and "name" in rule:
            names = [rule["name"]]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ProfileError(f"{where}: names must be a non-empty list of syscall names")
        action = _check_action(rule.get("action"), f"{where}.action")
        errno_ret = _errno(rule.get("errnoRet"), action, f"{where}.errnoRet")
        args = [_arg(a, f"{where}.args[{j}]") for j, a in enumerate(rule.get("args") or [])]
        if len(args) > 6:
            raise ProfileError(f"{where}: a syscall has at most 6 arguments to compare")
        if _applies(rule, where):
            rules.append((names, action, errno_ret, args))
    return default, default_errno, arches, rules


def _check_action(action: object, where: str) -> str:
    if action == "SCMP_ACT_NOTIFY":
        raise ProfileError(f"{where}: SCMP_ACT_NOTIFY is not supported")
    if not isinstance(action, str) or action not in _ACTIONS:
        raise ProfileError(f"{where} {action!r} is not one of " + ", ".join(_ACTIONS))
    return action


def _errno(value: object, action: str, where: str) -> int | None:
    if value is None:
        return None
    if action not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        raise ProfileError(f"{where} is only allowed with SCMP_ACT_ERRNO or SCMP_ACT_TRACE")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise ProfileError(f"{where} {value!r} must be a whole number from 0 to 65535")
    return value


def _arg(a: object, where: str) -> _Arg:
    if not isinstance(a, dict):
        raise ProfileError(f"{where} must be an object")
    index, op = a.get("index"), a.get("op")
    value, value_two = a.get("value", 0), a.get("valueTwo", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise ProfileError(f"{where}.index {index!r} must be 0 to 5")
    if not isinstance(op, str) or op not in _OPS:        # (a list is not hashable: no `in` test)
        raise ProfileError(f"{where}.op {op!r} is not one of " + ", ".join(_OPS))
    for v, name in ((value, "value"), (value_two, "valueTwo")):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
            raise ProfileError(f"{where}.{name} {v!r} must be a whole number from 0 to 2^64-1")
    return index, _OPS[op], value, value_two


def _arches(profile: Profile, what: str) -> list[str]:
    """Docker's archMap: the entry of this machine, with its sub-architectures;
    or the plain architectures list; or just this machine's."""
    sc = _libseccomp()
    native = {v: k for k, v in vars(sc.Arch).items() if isinstance(v, int) and k != "NATIVE"}
    this = "SCMP_ARCH_" + native.get(sc.system_arch(), "NATIVE")
    known = {f"SCMP_ARCH_{k}" for k in native.values()}
    names: list[str] = []
    for entry in profile.get("archMap") or []:
        if not isinstance(entry, dict):
            raise ProfileError(f"{what}: archMap entries must be objects")
        if entry.get("architecture") == this:
            names = [this, *(entry.get("subArchitectures") or [])]
    if not names:
        names = list(profile.get("architectures") or []) or [this]
    for name in names:
        if name not in known:
            raise ProfileError(f"{what}: unknown architecture {name!r}")
    return names


def _applies(rule: dict[str, Any], where: str) -> bool:
    """Docker's includes/excludes: caps (ours are fixed), arches, minKernel."""
    from .linux import DEFAULT_CAPS
    import platform
    caps = {f"CAP_{c}" for c in DEFAULT_CAPS}
    arch = _GOARCH.get(platform.machine(), platform.machine())
    for key, want in (("includes", True), ("excludes", False)):
        cond = rule.get(key) or {}
        if not isinstance(cond, dict):
            raise ProfileError(f"{where}.{key} must be an object")
        checks: list[bool] = []
        if cond.get("caps"):
            hits = [c in caps for c in cond["caps"]]
            checks.append(all(hits) if want else any(hits))
        if cond.get("arches"):
            checks.append(arch in cond["arches"])
        if cond.get("minKernel"):
            checks.append(_kernel_at_least(str(cond["minKernel"]), where))
        if want and not all(checks):
            return False
        if not want and any(checks):
            return False
    return True


def _kernel_at_least(version: str, where: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        out: list[int] = []
        for p in text.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in p if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)
    if not version.replace(".", "").isdigit():
        raise ProfileError(f"{where}: minKernel {version!r} is not a version like 4.8")
    return parts(os.uname().release) >= parts(version)
