"""Seccomp and capabilities on the real kernel: the default profile, unconfined,
custom profiles in Docker's format, and an empty inheritable set.

The calls are made from inside containers by busybox's applets where one
exists (unshare) and otherwise by tests/syscall_probe.py, a tiny static
program written into the container's writable layer that makes one raw
syscall and exits with its errno (0 on success)."""
from __future__ import annotations

import errno
import json
import os

import pytest

from runtime import ExecFailed, InvalidArgument, Spec, seccomp
from runtime.linux import DEFAULT_CAPS, caps_mask
from runtime.spec import make_spec
from tests.conftest import cli
from tests.syscall_probe import SCRATCH, probe

pytestmark = pytest.mark.root

UNCONFINED = {"mode": "unconfined"}
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
AF_VSOCK = 40
KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, KEY_SPEC_PROCESS_KEYRING = 0, -4, -2

# name -> (syscall, args, strings)
PROBES = {
    "keyctl": ("keyctl", (KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0), ()),
    # a key in the probe's own process keyring: gone with the process
    "add_key": ("add_key", (("str", 0), ("str", 1), ("str", 2), 4, KEY_SPEC_PROCESS_KEYRING),
                (b"user", b"terrarium-seccomp-test", b"data")),
    "io_uring_setup": ("io_uring_setup", (1, SCRATCH), ()),
    "unshare_user": ("unshare", (CLONE_NEWUSER,), ()),
    "clone_user": ("clone", (CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), ()),
    "clone3": ("clone3", (0, 0), ()),
    "personality_odd": ("personality", (0x0400000,), ()),       # READ_IMPLIES_EXEC
    "socket_vsock": ("socket", (AF_VSOCK, 1, 0), ()),
    "socket_unix": ("socket", (1, 1, 0), ()),
    # newer than libseccomp 2.5.4 knows, so allowed by number: mseal(NULL, 0, 0)
    "mseal": (462, (0, 0, 0), ()),
    # in this kernel, newer than any call the profile names: ENOSYS, as runc
    # answers, so libc falls back; setxattrat(-1, NULL, ...)
    "setxattrat": (463, (2**64 - 1, 0, 0, 0, 0, 0), ()),
    # older than the newest the profile names, and not in it: the default EPERM
    "listmount": (458, (0, 0, 0, 0), ()),
}


def _install_probes(rt, cid: str) -> None:
    """Put every probe in /probe/ of the container's writable layer."""
    base = os.path.join(rt.inspect(cid).upperdir, "probe")
    os.makedirs(base, exist_ok=True)
    for name, (call, args, strings) in PROBES.items():
        path = os.path.join(base, name)
        with open(path, "wb") as f:
            f.write(probe(call, *args, strings=strings))
        os.chmod(path, 0o755)


def _run(rt, name, cleanup, script: str, seccomp_setting=None) -> str:
    cleanup.append(name)
    c = rt.create(make_spec(image="busybox", name=name, cmd=("sh", "-c", script),
                            seccomp=seccomp_setting))
    _install_probes(rt, c.id)
    rt.start(c.id)
    c = rt.wait(c.id, timeout=60)
    out = rt.logs(c.id).decode()
    assert c.exit_code == 0, out
    return out


def _probe_results(rt, name, cleanup, seccomp_setting=None) -> dict[str, int]:
    """{probe: errno (0 = the call worked)} from inside one container."""
    script = "for p in /probe/*; do $p; echo ${p#/probe/} $?; done"
    out = _run(rt, name, cleanup, script, seccomp_setting)
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# ------------------------------------------------------------ the default

def test_default_profile_filters_pid_1(rt, name, cleanup):
    out = _run(rt, name, cleanup, "cat /proc/1/status")
    status = _status(out)
    assert (status["Seccomp"], status["Seccomp_filters"], status["NoNewPrivs"]) == ("2", "1", "1")


def test_default_profile_refuses_what_docker_refuses(rt, name, cleanup):
    got = _probe_results(rt, name, cleanup)
    assert got == {
        "keyctl": errno.EPERM, "add_key": errno.EPERM, "io_uring_setup": errno.EPERM,
        "unshare_user": errno.EPERM, "clone_user": errno.EPERM,
        "clone3": errno.ENOSYS,                  # so libc falls back to clone, which is filtered
        "personality_odd": errno.EPERM, "socket_vsock": errno.EPERM,
        "socket_unix": 0, "mseal": 0, "setxattrat": errno.ENOSYS, "listmount": errno.EPERM,
    }


def test_unconfined_lets_the_same_calls_through(rt, name, cleanup):
    got = _probe_results(rt, name, cleanup, UNCONFINED)
    assert {k: got[k] for k in ("keyctl", "add_key", "io_uring_setup", "unshare_user",
                                "clone_user", "personality_odd", "socket_unix")} == dict.fromkeys(
        ("keyctl", "add_key", "io_uring_setup", "unshare_user", "clone_user", "personality_odd",
         "socket_unix"), 0)
    assert got["clone3"] == errno.EINVAL      # the kernel's own answer to a zero size
    # the kernel's own answers (it has these calls): not the filter's
    assert (got["mseal"], got["setxattrat"], got["listmount"]) == (0, errno.EINVAL, errno.EFAULT)


def test_busybox_unshare_user_namespace(rt, name, cleanup):
    out = _run(rt, name, cleanup, "unshare -U -r id 2>&1; echo rc=$?")
    assert out.splitlines()[-1] == "rc=1"
    out = _run(rt, name + "-u", cleanup, "unshare -U -r id", UNCONFINED)
    assert out.startswith("uid=0(root) gid=0(root)")


def test_ordinary_work_still_runs_under_the_filter(rt, name, cleanup):
    script = ("mkdir -p /tmp/d/e && echo hi > /tmp/d/f && cat /tmp/d/f && ln -s f /tmp/d/l && "
              "chmod 600 /tmp/d/f && chown nobody /tmp/d/f && rm -r /tmp/d && (sleep 0.01 &) && wait && "
              "ping -c 1 -W 2 127.0.0.1 >/dev/null && echo net && unshare -f true && echo plain-unshare")
    assert _run(rt, name, cleanup, script) == "hi\nnet\nplain-unshare\n"


# ----------------------------------------------------------- capabilities

def test_no_inheritable_capabilities(rt, name, cleanup):
    status = _status(_run(rt, name, cleanup, "cat /proc/self/status"))
    assert int(status["CapInh"], 16) == 0
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == caps_mask(DEFAULT_CAPS)


def test_exec_gets_the_filter_and_no_inheritable_capabilities(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(Spec(image="busybox", name=name, cmd=("sleep", "60")))
    out = cli("exec", c.id, "cat", "/proc/self/status")
    status = _status(out.stdout)
    assert (status["Seccomp"], int(status["CapInh"], 16)) == ("2", 0), out.stderr


def test_exec_into_an_unconfined_container_is_unconfined(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(make_spec(image="busybox", name=name, cmd=("sleep", "60"), seccomp=UNCONFINED))
    out = cli("exec", c.id, "grep", "Seccomp:", "/proc/self/status")
    assert out.stdout.split() == ["Seccomp:", "0"], out.stderr


# --------------------------------------------------------- custom profiles

def test_custom_profile_in_dockers_format(rt, name, cleanup, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    setting = seccomp.setting_from_options([f"seccomp={path}"])
    out = _run(rt, name, cleanup, "mkdir /x 2>&1; true", setting)
    assert out == "mkdir: can't create directory '/x': Permission denied\n"
    assert rt.inspect(name).seccomp == "custom"


def test_custom_profile_is_kept_in_the_config(rt, name, cleanup, tmp_path):
    """Like Docker: the profile is copied at create; the file may go."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    cleanup.append(name)
    c = rt.create(make_spec(image="busybox", name=name, cmd=("true",),
                            seccomp=seccomp.setting_from_options([f"seccomp={path}"])))
    path.unlink()
    rt.start(c.id)
    assert rt.wait(c.id, timeout=60).exit_code == 0


def test_inspect_shows_the_mode(rt, name, cleanup):
    cleanup.extend([name, name + "-u"])
    a = rt.create(make_spec(image="busybox", name=name, cmd=("true",)))
    b = rt.create(make_spec(image="busybox", name=name + "-u", cmd=("true",), seccomp=UNCONFINED))
    assert (a.seccomp, b.seccomp) == ("default", "unconfined")


def test_a_profile_that_refuses_execve_fails_the_start(rt, name, cleanup):
    cleanup.append(name)
    setting = {"mode": "custom", "profile": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ERRNO"}]}}
    c = rt.create(make_spec(image="busybox", name=name, cmd=("true",), seccomp=setting))
    with pytest.raises(ExecFailed) as e:
        rt.start(c.id)
    assert e.value.exit_code == 126


@pytest.mark.parametrize("text, says", [
    ("{", "is not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"defaultAction": "SCMP_ACT_FOO"}', "defaultAction 'SCMP_ACT_FOO' is not one of"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": '
     '"SCMP_ACT_ERRNO", "args": [{"index": 9, "op": "SCMP_CMP_EQ", "value": 1}]}]}',
     "args[0].index 9 must be 0 to 5"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": '
     '"SCMP_ACT_ERRNO", "args": [{"index": 0, "op": ["SCMP_CMP_EQ"], "value": 1}]}]}',
     "args[0].op ['SCMP_CMP_EQ'] is not one of"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}',
     "names must be a non-empty list"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL", '
     '"errnoRet": 1}]}', "errnoRet is only allowed with"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]}',
     "unknown architecture 'SCMP_ARCH_VAX'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}',
     "SCMP_ACT_NOTIFY is not supported"),
])
def test_bad_profiles_give_one_clear_sentence_and_exit_125(tmp_path, text, says):
    path = tmp_path / "bad.json"
    path.write_text(text)
    r = cli("create", "--security-opt", f"seccomp={path}", "busybox")
    assert (r.returncode, r.stdout) == (125, "")
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unknown_security_option_is_refused(rt):
    with pytest.raises(InvalidArgument, match="unsupported security option 'apparmor=x'"):
        seccomp.setting_from_options(["apparmor=x"])
    assert seccomp.setting_from_options(["no-new-privileges", "seccomp=unconfined"]) == UNCONFINED


def test_cli_run_unconfined(rt, name, cleanup):
    cleanup.append(name)
    r = cli("run", "--name", name, "--security-opt", "seccomp=unconfined",
            "busybox", "grep", "Seccomp:", "/proc/self/status")
    assert (r.returncode, r.stdout.split()) == (0, ["Seccomp:", "0"]), r.stderr


# ------------------------------------------------------ Docker's semantics

def test_dockers_includes_and_excludes_are_resolved_for_our_capabilities():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_KILL"]}},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
    ]}
    _, _, _, rules = seccomp._rules(profile, "p")
    assert [r[0] for r in rules] == [["chroot"]]


def test_program_is_cached_root_only(rt):
    path = seccomp.program_path(rt.root, {"mode": "default"})
    assert path == seccomp.program_path(rt.root, None)
    st, parent = os.stat(path), os.stat(os.path.dirname(path))
    assert (st.st_mode & 0o777, parent.st_mode & 0o777, st.st_size % 8) == (0o600, 0o700, 0)
    assert seccomp.program_path(rt.root, UNCONFINED) is None


def test_create_refuses_a_setting_it_cannot_use(rt, name):
    with pytest.raises(InvalidArgument, match="mode must be one of default, unconfined, custom"):
        rt.create(Spec(image="busybox", name=name, seccomp={"mode": "bogus"}))
    with pytest.raises(InvalidArgument, match="needs its profile"):
        rt.create(Spec(image="busybox", name=name, seccomp={"mode": "custom"}))
    assert name not in {c.name for c in rt.list(all=True)}


def test_load_refuses_bytes_that_are_not_a_program():
    from runtime import KernelError
    from runtime.linux import seccomp_filter
    for bad in (b"", b"\0" * 7, b"\0" * 8 * 4097):
        with pytest.raises(KernelError) as e:
            seccomp_filter(bad)
        assert e.value.code == errno.EINVAL


# ------------------------------------------ --security-opt no-new-privileges

NNP_OFF = {"mode": "default", "no_new_privileges": False}


@pytest.mark.parametrize("opt", ["no-new-privileges=false", "no-new-privileges:false",
                                 "no-new-privileges=False", "no-new-privileges=0"])
def test_no_new_privileges_false_in_dockers_spellings(opt):
    assert seccomp.setting_from_options([opt]) == NNP_OFF


def test_no_new_privileges_the_last_one_wins_and_true_is_the_default():
    got = [seccomp.setting_from_options(o) for o in (
        ["no-new-privileges=false", "seccomp=unconfined"], ["no-new-privileges=false", "no-new-privileges"],
        ["no-new-privileges:true"], [])]
    assert got == [dict(UNCONFINED, no_new_privileges=False), {"mode": "default"},
                   {"mode": "default"}, {"mode": "default"}]


def test_malformed_no_new_privileges_exits_125_with_one_sentence():
    r = cli("create", "--security-opt", "no-new-privileges=maybe", "busybox")
    assert (r.returncode, r.stdout, r.stderr.strip().splitlines()) == (
        125, "", ["terrarium: error: invalid security option 'no-new-privileges=maybe': "
                  "no-new-privileges takes true or false"])


def test_inspect_and_the_config_show_no_new_privileges(rt, name, cleanup):
    cleanup.extend([name, name + "-off"])
    a = rt.create(make_spec(image="busybox", name=name, cmd=("true",)))
    r = cli("create", "--name", name + "-off", "--security-opt", "no-new-privileges=false", "busybox")
    assert r.returncode == 0, r.stderr
    b = rt.inspect(name + "-off")
    with open(os.path.join(rt.containers_dir, b.id, "config.json")) as f:
        stored = json.load(f)["seccomp"]
    assert (a.no_new_privileges, b.no_new_privileges, b.seccomp, stored) == (True, False, "default", NNP_OFF)


def test_without_no_new_privs_pid_1_is_still_filtered(rt, name, cleanup):
    status = _status(_run(rt, name, cleanup, "cat /proc/1/status", NNP_OFF))
    assert (status["Seccomp"], status["Seccomp_filters"], status["NoNewPrivs"]) == ("2", "1", "0")
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == caps_mask(DEFAULT_CAPS)


def test_without_no_new_privs_the_filter_still_refuses(rt, name, cleanup):
    got = _probe_results(rt, name, cleanup, NNP_OFF)
    assert {k: got[k] for k in ("keyctl", "unshare_user", "clone_user", "socket_unix")} == {
        "keyctl": errno.EPERM, "unshare_user": errno.EPERM, "clone_user": errno.EPERM, "socket_unix": 0}


def test_without_no_new_privs_busybox_unshare_user_is_refused(rt, name, cleanup):
    out = _run(rt, name, cleanup, "unshare -U -r id 2>&1; echo rc=$?", NNP_OFF)
    assert out.splitlines()[-1] == "rc=1"


def test_exec_without_no_new_privs_is_filtered_with_dockers_capabilities(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(make_spec(image="busybox", name=name, cmd=("sleep", "60"), seccomp=NNP_OFF))
    out = cli("exec", c.id, "cat", "/proc/self/status")
    status = _status(out.stdout)
    assert (status["Seccomp"], status["NoNewPrivs"], int(status["CapInh"], 16),
            int(status["CapEff"], 16)) == ("2", "0", 0, caps_mask(DEFAULT_CAPS)), out.stderr


def test_exec_with_a_tty_without_no_new_privs(rt, name, cleanup):
    cleanup.append(name)
    c = rt.run(make_spec(image="busybox", name=name, cmd=("sleep", "60"), seccomp=NNP_OFF))
    out = cli("exec", "-t", c.id, "grep", "NoNewPrivs", "/proc/self/status")
    assert (out.returncode, out.stdout.split()) == (0, ["NoNewPrivs:", "0"]), out.stderr


def test_without_no_new_privs_a_profile_that_refuses_capset_fails_the_start_clearly(rt, name, cleanup):
    """The filter comes before the capability drop then: the profile must allow it."""
    cleanup.append(name)
    setting = {"mode": "custom", "no_new_privileges": False, "profile": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["capset"], "action": "SCMP_ACT_ERRNO"}]}}
    c = rt.create(make_spec(image="busybox", name=name, cmd=("true",), seccomp=setting))
    with pytest.raises(ExecFailed) as e:
        rt.start(c.id)
    assert str(e.value) == (
        f"container {name!r} failed to start: with no-new-privileges=false the seccomp profile "
        "is loaded before the capabilities are dropped and must allow prctl and capset; "
        "capset: Operation not permitted [EPERM]")


def test_without_no_new_privs_a_profile_that_kills_capset_is_refused_at_create(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["capset"], "action": "SCMP_ACT_KILL_PROCESS"}]}))
    r = cli("create", "--security-opt", "no-new-privileges=false", "--security-opt", f"seccomp={path}",
            "busybox")
    assert (r.returncode, r.stdout, r.stderr.strip().splitlines()) == (
        125, "", ["terrarium: error: the seccomp profile kills capset (SCMP_ACT_KILL_PROCESS), which "
                  "the container's init needs after loading it when no-new-privileges=false"])
