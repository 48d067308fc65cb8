#!/usr/bin/env bash
# The cgroup v2 VM tier: boot a small VM with Debian's 6.1 kernel in pure
# cgroup v2 mode (QEMU, TCG) and run tests/vm_tests inside it with this
# checkout's .venv, the host's / shared read-only over 9p.
#
#   tests/vm/run_vm_tier.sh [PYTEST ARGS...]   # default: tests/vm_tests -q
#
# Exit 0 when the tests pass; non-zero when they fail, the VM dies or hangs.
# When qemu cannot be had or the kernel cannot be downloaded it prints
# "v2 VM tier: SKIPPED (<reason>)" and exits 0.
# The last line is always "v2 VM tier: N passed, M failed" (or SKIPPED).
#
# Environment:
#   TERRARIUM_VM_TIMEOUT  seconds before the VM is killed (default 420: TCG emulation on a
#                         loaded 2-core host runs the tier in ~3-6 min)
#   TERRARIUM_VM_CACHE    kernel/initramfs cache (default /var/cache/terrarium-vm)
#   TERRARIUM_VM_QEMU     the qemu binary (default qemu-system-x86_64)
#   TERRARIUM_VM_KEEP=1   keep the temporary directory (console log) for debugging
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
timeout_s=${TERRARIUM_VM_TIMEOUT:-420}
cache=${TERRARIUM_VM_CACHE:-/var/cache/terrarium-vm}
python=$repo/.venv/bin/python
qemu=${TERRARIUM_VM_QEMU:-qemu-system-x86_64}

say() { echo "v2 VM tier: $*"; }
skip() { say "SKIPPED ($*)"; exit 0; }
fail() { say "ERROR: $*" >&2; say "0 passed, 1 failed"; exit 1; }

# --- qemu ------------------------------------------------------------------------
if ! command -v "$qemu" >/dev/null 2>&1 || ! command -v cpio >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing qemu-system-x86 and cpio"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=180 install -y -qq \
            --no-install-recommends qemu-system-x86 cpio >/dev/null 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=180 update -qq >/dev/null 2>&1
             DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=180 install -y -qq \
                 --no-install-recommends qemu-system-x86 cpio >/dev/null 2>&1; }
    fi
    command -v "$qemu" >/dev/null 2>&1 || skip "$qemu is not installed and apt-get could not install qemu-system-x86"
    command -v cpio >/dev/null 2>&1 || skip "cpio is not installed and apt-get could not install it"
fi
[ -x "$python" ] || fail "$python does not exist (run scripts/setup.sh)"

# --- kernel + initramfs ------------------------------------------------------------
build_out=$("$here/build.sh" "$cache")
brc=$?
if [ "$brc" -eq 3 ]; then skip "the kernel could not be downloaded; see vm-build above"; fi
[ "$brc" -eq 0 ] || fail "building the kernel/initramfs failed (tests/vm/build.sh exit $brc)"
kernel=$(sed -n 's/^KERNEL=//p' <<<"$build_out")
initrd=$(sed -n 's/^INITRD=//p' <<<"$build_out")
if [ ! -s "$kernel" ] || [ ! -s "$initrd" ]; then fail "tests/vm/build.sh printed no kernel/initramfs"; fi

# --- the run -----------------------------------------------------------------------
tmp=$(mktemp -d -t terrarium-vm.XXXXXX) || fail "mktemp failed"
qpid=
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null; sleep 1; kill -9 "$qpid" 2>/dev/null
        wait "$qpid" 2>/dev/null
    fi
    if [ "${TERRARIUM_VM_KEEP:-0}" = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$#" -eq 0 ]; then set -- tests/vm_tests -q; fi
# The guest command: runs as PID 1's child under busybox sh, cwd = the repo
# (read-only 9p lower + tmpfs upper), TERRARIUM_ROOT on the guest's /tmp tmpfs.
{
    echo "cd $(printf '%q' "$repo") || exit 250"
    echo "export TERRARIUM_VM_TIER=1 TERRARIUM_ROOT=/tmp/terrarium"
    echo "mkdir -p \$TERRARIUM_ROOT"
    echo "echo; echo TVM-BEGIN"
    echo 'read up _ </proc/uptime; echo "guest: booted, ${up}s since kernel start; running pytest"'
    printf '%q ' "$python" -m pytest -p no:django -p no:cacheprovider -o timeout=60 \
        -W ignore::pytest.PytestConfigWarning "$@"
    echo
    echo 'rc=$?; read up _ </proc/uptime; echo "guest: pytest done at ${up}s"; exit $rc'
} > "$tmp/cmd.sh"

# The guest mounts its own /tmp, /run, /dev, /proc, /sys: a checkout below
# one of them (a CI clone in /tmp) is shown again through tvm.bind.
append="console=ttyS0 quiet panic=-1 psi=1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all tvm.script=$tmp/cmd.sh"
case "$repo" in
    /tmp/*|/run/*|/dev/*|/proc/*|/sys/*) append="$append tvm.bind=$repo" ;;
esac
case "$tmp" in *[[:space:]]*) fail "the temporary directory $tmp has a space: the kernel command line cannot carry it" ;; esac
case "$append" in *tvm.bind=*[[:space:]]*) fail "$repo has a space: the kernel command line cannot carry it" ;; esac
console=$tmp/console.log
start=$(date +%s)
"$qemu" -accel tcg -m 1024 -smp 2 -nographic -no-reboot -net none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "$append" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    </dev/null >"$console" 2>&1 &
qpid=$!
say "booting $(basename "$kernel") (pure cgroup v2) under qemu pid $qpid, time limit ${timeout_s}s"

timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
    if [ $(( $(date +%s) - start )) -ge "$timeout_s" ]; then
        timed_out=1
        kill "$qpid" 2>/dev/null; sleep 1; kill -9 "$qpid" 2>/dev/null
        break
    fi
    sleep 1
done
wait "$qpid" 2>/dev/null
qrc=$?
qpid=
elapsed=$(( $(date +%s) - start ))

# Guest output: from TVM-BEGIN on (or everything, when the VM never got there).
out=$(tr -d '\r' <"$console" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g')
if grep -q 'TVM-BEGIN$' <<<"$out"; then
    body=$(sed -n '/TVM-BEGIN$/,$p' <<<"$out" | sed '1d')
else
    body=$out
fi
# Up to the result marker (the power-off messages after it are noise).
sed -e '/^TVM-RESULT /,$d' -e 's/^/  vm| /' <<<"$body"

result=$(sed -n 's/^TVM-RESULT exit=\([0-9]*\)$/\1/p' <<<"$out" | tail -n 1)
if [ "$timed_out" = 1 ]; then
    say "FAILED: the VM did not finish within ${timeout_s}s and was killed"
    say "0 passed, 1 failed"; exit 1
fi
if [ -z "$result" ]; then
    say "FAILED: the VM ended (qemu exit $qrc) after ${elapsed}s without a result"
    say "0 passed, 1 failed"; exit 1
fi

summary=$(grep -E '^=* *[0-9]+ (passed|failed|skipped|error|errors|deselected|xfailed|xpassed|warnings?)\b.* in [0-9.]+s' <<<"$body" | tail -n 1)
passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)
failed=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || true)
errors=$(grep -oE '[0-9]+ errors?' <<<"$summary" | grep -oE '[0-9]+' || true)
passed=${passed:-0}
failed=$(( ${failed:-0} + ${errors:-0} ))
if [ "$result" -ne 0 ] && [ "$failed" -eq 0 ]; then
    # pytest failed without failing a test (usage error, no tests collected, crash).
    failed=1
fi
say "guest exit $result, ${elapsed}s including boot"
say "$passed passed, $failed failed"
[ "$result" -eq 0 ] && [ "$failed" -eq 0 ]
