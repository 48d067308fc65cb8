#!/usr/bin/env bash
# Set up a Terrarium checkout: Debian packages, .venv, the project installed
# editable with its test extras. Idempotent; silent and quick when there is
# nothing to do. Prints one line per step that did something.
#
#   scripts/setup.sh          # everything needed to run and test
#   scripts/setup.sh --vm     # also qemu-system-x86 and cpio (cgroup v2 VM tier)
#   TERRARIUM_VM=1 scripts/setup.sh    # same as --vm
#   TERRARIUM_PYTHON=/path/to/python3.12 scripts/setup.sh   # pick the interpreter
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

want_vm=${TERRARIUM_VM:-0}
for arg in "$@"; do
    case "$arg" in
        --vm) want_vm=1 ;;
        -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

# --- Debian packages ---------------------------------------------------------
# gcc, libc6-dev: the exec tests build a static TIOCSTI probe to run in a container
# docker.io: the archive tests run a private dockerd (own data root and socket)
#   to check that `docker load` reads `terrarium save`; debootstrap builds a
#   Debian minbase image from the apt mirror for the real-world layer tests
# podman: the engine tests run a private Podman (own storage, runroot and API
#   socket; tests/podman.py); without recommends, so no network helpers
packages=(busybox-static chromium runc crun redis-server util-linux procps nftables
          iproute2 umoci skopeo gcc libc6-dev libseccomp2 debootstrap podman)
if [ "$want_vm" = 1 ]; then
    packages+=(qemu-system-x86 cpio)
fi

apt_updated=0
apt_install() {
    # apt_install PKG... : install only the ones not yet installed.
    local missing=() p
    for p in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get; install them by hand"
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install "${packages[@]}"

# docker.io on its own: its packages (docker.io, containerd) start and enable
# system services on a systemd or sysvinit host.  The tests start a private
# dockerd of their own and never use the system one, so when this script is
# what installed it, those services are stopped and disabled again at once.
if [ "$(dpkg-query -W -f='${Status}' docker.io 2>/dev/null || true)" != "install ok installed" ]; then
    apt_install docker.io
    say "docker.io: stopping and disabling the services its packages started (tests use a private dockerd)"
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now docker.socket docker.service containerd.service >/dev/null 2>&1 || true
    else
        for svc in docker containerd; do
            if [ -x "/etc/init.d/$svc" ]; then
                as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
                as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
            fi
        done
    fi
fi

# prometheus on its own, the same way: Debian's package enables and starts its
# service (listening on :9090, scraping itself into /var/lib/prometheus). The
# /metrics test starts its own server by pid on a free port and needs only the
# binary, so when this script installed it the service is stopped and disabled
# (a prometheus that was there before is the host's own and left alone).
if [ "$(dpkg-query -W -f='${Status}' prometheus 2>/dev/null || true)" != "install ok installed" ]; then
    apt_install prometheus
    say "prometheus: stopping and disabling the service its package started (the tests run their own)"
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        if systemctl is-active --quiet prometheus.service; then
            die "prometheus.service is still running after 'systemctl disable --now'; stop it by hand"
        fi
    else
        # no systemd running (a container): the package may have started its init
        # script; the unit's enablement link is removed too, for a later boot
        as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
        as_root systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
fi

# docker-registry on its own, the same way: Debian's package enables a service
# listening on :5000.  The pull/push tests run their own registry by pid on
# 127.0.0.1 with a private storage dir and config, so when this script installed
# it the service is stopped and disabled (one that was there before is left alone).
if [ "$(dpkg-query -W -f='${Status}' docker-registry 2>/dev/null || true)" != "install ok installed" ]; then
    apt_install docker-registry
    say "docker-registry: stopping and disabling the service its package started (the tests run their own)"
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    else
        as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
        as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
        as_root systemctl disable docker-registry.service >/dev/null 2>&1 || true
    fi
fi

# --- Python interpreter ------------------------------------------------------
# A Python >= 3.11 that can make a venv (has ensurepip). Order: $TERRARIUM_PYTHON,
# then python3.N / python3 on PATH (pyenv shims skipped: they are slow and may
# point anywhere), then pyenv's installed versions, newest first.
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
py_venv_ok() { "$1" -c 'import ensurepip, venv' 2>/dev/null; }

find_python() {
    local cands=() c name dir
    if [ -n "${TERRARIUM_PYTHON:-}" ]; then
        py_ok "$TERRARIUM_PYTHON" || die "TERRARIUM_PYTHON=$TERRARIUM_PYTHON is not Python >= 3.11"
        cands+=("$TERRARIUM_PYTHON")
    fi
    for name in python3.14 python3.13 python3.12 python3.11 python3; do
        while IFS= read -r c; do
            case "$c" in */shims/*) continue ;; esac
            cands+=("$c")
        done < <(type -aP "$name" 2>/dev/null || true)
    done
    dir=${PYENV_ROOT:-$HOME/.pyenv}/versions
    if [ -d "$dir" ]; then
        while IFS= read -r c; do
            c=${c%/}; [ -x "$c/bin/python3" ] && cands+=("$c/bin/python3")
        done < <(printf '%s\n' "$dir"/*/ | sort -rV)
    fi
    # First choice: one that can make a venv as it is.
    for c in "${cands[@]}"; do
        if py_ok "$c" && py_venv_ok "$c"; then echo "$c"; return 0; fi
    done
    # Debian's python3 without python3-venv: install it, then take that one.
    for c in "${cands[@]}"; do
        if py_ok "$c"; then
            local ver
            ver=$("$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            apt_install "python$ver-venv" >&2
            py_venv_ok "$c" && { echo "$c"; return 0; }
        fi
    done
    return 1
}

# --- .venv -------------------------------------------------------------------
venv=.venv
if [ -x "$venv/bin/python" ] && ! py_ok "$venv/bin/python"; then
    say "$venv is broken or older than Python 3.11; recreating it"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    py=$(find_python) || die "no Python >= 3.11 found (set TERRARIUM_PYTHON, or apt-get install python3 python3-venv)"
    say "creating $venv with $py ($("$py" -c 'import platform; print(platform.python_version())'))"
    rm -rf "$venv"
    "$py" -m venv "$venv"
fi

# --- the project, editable, with test extras ----------------------------------
# Reinstalled only when pyproject.toml or bin/terrarium (copied into .venv/bin
# at install, even when editable) changed since the last good install.
stamp=$venv/.terrarium-stamp
want=$(cat pyproject.toml bin/terrarium "$0" | sha256sum | cut -d" " -f1)   # the install line below counts too
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    say "pip install -e '.[test]' (pyproject.toml or bin/terrarium changed, or first install)"
    # compat mode: a plain path in a .pth file, no import-hook finder (~20 ms less
    # interpreter start for every `terrarium` command). setuptools warns about it.
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
            --config-settings editable_mode=compat >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    echo "$want" > "$stamp"
fi
# Playwright: the pip package only. Never `playwright install` (no download);
# the browser tests drive Debian's /usr/bin/chromium.
