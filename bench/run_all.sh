#!/usr/bin/env bash
# Run Terrarium's benchmarks (`make bench`).  As root.
#
#   bench/run_all.sh                 # every benchmark, default sizes
#   bench/run_all.sh --n 10 --k 5    # arguments go to start_latency.py
#
# Installs the peers it compares against (runc, crun) and busybox-static
# with apt-get only when they are missing; sets up .venv only when it is
# missing.  Results: the printed report and bench/results/*.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (containers need it)" >&2
    exit 1
fi

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
have runc || missing+=(runc)
have crun || missing+=(crun)
[ -x /bin/busybox ] || missing+=(busybox-static)
have unshare || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/terrarium ]; then
    echo "bench: no .venv yet, running scripts/setup.sh"
    scripts/setup.sh
fi

mkdir -p bench/results
.venv/bin/python bench/start_latency.py "$@"
.venv/bin/python bench/layers_bench.py
.venv/bin/python bench/archive_bench.py
.venv/bin/python bench/registry_bench.py
.venv/bin/python bench/agent_bench.py
.venv/bin/python bench/log_relay.py
.venv/bin/python bench/sampler_cost.py 50 100
have redis-server || echo "bench: redis-server missing (scripts/setup.sh installs it): the scale-out delay is skipped"
.venv/bin/python bench/live_bench.py 200
.venv/bin/python bench/metrics_bench.py 100 1000
.venv/bin/python bench/discovery_cost.py
.venv/bin/python bench/list_scale.py --rounds 9
.venv/bin/python bench/oom_record_bench.py 200 30 3
.venv/bin/python bench/once_pass.py 100 11
.venv/bin/python bench/daphne_scale.py
if have dockerd; then
    .venv/bin/python bench/docker_bench.py 50 20 20 5
else
    echo "bench: dockerd missing (scripts/setup.sh installs docker.io): the Docker comparison is skipped"
fi
