#!/usr/bin/env bash
# Run the Terrarium dashboard (as root; idempotent): setup, built-in images,
# the web tier's user, its private directory, the root agent, database
# migrations and first administrator, then Daphne in the foreground as that
# user with no capabilities, reaching the runtime only through the agent.
#
#   TERRARIUM_HOST (default 127.0.0.1)  TERRARIUM_PORT (default 8000)
#   TERRARIUM_HTTP_TIMEOUT (default 300): seconds a request may take, response included
#   TERRARIUM_MAX_BODY, TERRARIUM_BODY_TIMEOUT: see dashboard/serve.py
#   TERRARIUM_WEB_USER (default terrarium): the system user (and group) the web tier runs as
#   TERRARIUM_WEB_DIR (default /var/lib/terrarium-web): its database and secret key
#   TERRARIUM_AGENT_SOCKET (default /run/terrarium/agent.sock): the root agent's socket
#   TERRARIUM_ROOT, TERRARIUM_CGROUP_PARENT: the runtime's state root and cgroup parent
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "run: $*" >&2; exit 1; }

host=${TERRARIUM_HOST:-127.0.0.1}
port=${TERRARIUM_PORT:-8000}
# Development settings send passwords and session cookies in clear text and
# trust any client: off loopback only with the production settings (secure
# cookies, HSTS), behind a TLS proxy (README: "Exposing the dashboard").
case "$host" in
    127.*|localhost|::1|"[::1]") ;;
    *)
        if [ "${TERRARIUM_SETTINGS:-}" != production ]; then
            echo "run: refusing to listen on $host with development settings:" \
                 "set TERRARIUM_SETTINGS=production (and put a TLS proxy in front), or use 127.0.0.1" >&2
            exit 2
        fi ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make run): it creates the web tier's user and starts" \
    "the root agent, then runs the dashboard itself as that user"

web_user=${TERRARIUM_WEB_USER:-terrarium}
case "$web_user" in
    ""|root|-*|*[!a-z0-9_-]*) die "TERRARIUM_WEB_USER=$web_user: a system user name (lower case), not root" ;;
esac
web_dir=$(realpath -m "${TERRARIUM_WEB_DIR:-/var/lib/terrarium-web}")
export TERRARIUM_WEB_DIR=$web_dir
export TERRARIUM_AGENT_SOCKET=${TERRARIUM_AGENT_SOCKET:-/run/terrarium/agent.sock}
export TERRARIUM_AGENT_GROUP=$web_user

scripts/setup.sh

# --- the web tier's user: a system user and group, no home, no login ----------
if ! getent group "$web_user" >/dev/null; then
    groupadd --system "$web_user"
fi
if ! getent passwd "$web_user" >/dev/null; then
    useradd --system --gid "$web_user" --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Terrarium web tier" "$web_user"
    echo "run: created the system user $web_user"
fi
[ "$(id -u "$web_user")" -ne 0 ] || die "the user $web_user is uid 0: pick another TERRARIUM_WEB_USER"

# Daphne and every step of the web tier below run as that user: its uid and
# groups, no capability (none held, none to inherit, an empty bounding set)
# and no way to gain one (no_new_privs: setuid files do nothing).
as_web=(setpriv --reuid "$web_user" --regid "$web_user" --init-groups
        --inh-caps=-all --bounding-set=-all --no-new-privs
        env HOME="$web_dir" USER="$web_user" LOGNAME="$web_user" TERRARIUM_AGENT=1)

if ! "${as_web[@]}" .venv/bin/python -c "import daphne, django, dashboard, runtime" 2>/dev/null; then
    die "the user $web_user cannot read this checkout ($PWD) or its .venv, and Daphne runs as" \
        "$web_user: put the checkout where every user can read it (e.g. /opt/terrarium, with" \
        "each directory on the way o+rx and the files o+r), or run: chmod -R o+rX $PWD" \
        "(and o+x on its parent directories)"
fi

# Built-in images (busybox base); does nothing when they are already there.
# In-process (as root): an agent it started on first use would leave when idle.
env -u TERRARIUM_AGENT .venv/bin/python -m runtime images

# --- the private web directory (dashboard/webstate.py) ------------------------
# The database used to be db.sqlite3 in the checkout, readable by every user:
# move it once into the private web directory.
if [ -z "${TERRARIUM_DB:-}" ] && [ -s db.sqlite3 ] && [ ! -s "$web_dir/db.sqlite3" ]; then
    install -d -m 0700 "$web_dir"
    mv db.sqlite3 "$web_dir/db.sqlite3"
    echo "run: moved db.sqlite3 to $web_dir/ (0600 in a 0700 directory)"
fi
mkdir -p "$web_dir"
chown -h "$web_user:$web_user" "$web_dir"
chmod 0700 "$web_dir"
"${as_web[@]}" test -w "$web_dir" -a -x "$web_dir" ||
    die "the user $web_user cannot reach $web_dir: every directory above it must be" \
        "traversable by others (o+x); pick another TERRARIUM_WEB_DIR"
for f in "$web_dir"/db.sqlite3 "$web_dir"/db.sqlite3-journal "$web_dir"/db.sqlite3-wal \
         "$web_dir"/db.sqlite3-shm "$web_dir"/secret_key "$web_dir"/.secret_key-* \
         ${TERRARIUM_DB:+"$TERRARIUM_DB"} ${TERRARIUM_SECRET_KEY_FILE:+"$TERRARIUM_SECRET_KEY_FILE"}; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then     # made by root before: now the web user's, 0600
        chown "$web_user:$web_user" "$f"
        chmod 0600 "$f"
    fi
done

# --- the root agent: the runtime's only door for the web tier -----------------
# Started detached unless one answers on the socket; it stays when the
# dashboard stops (containers are its business), like contrib/terrarium-agent.service.
.venv/bin/python -m runtime agent --background
agent_check='from runtime.agent_client import AgentRuntime; AgentRuntime(user="run.sh").call("info")'
if ! err=$("${as_web[@]}" .venv/bin/python -c "$agent_check" 2>&1); then
    die "the user $web_user cannot use the agent at $TERRARIUM_AGENT_SOCKET: ${err##*$'\n'}" \
        "(an agent started earlier for another group? stop it: kill \$(cat" \
        "\${TERRARIUM_ROOT:-/var/lib/terrarium}/run/agent.pid), then run this again)"
fi

"${as_web[@]}" .venv/bin/python manage.py migrate --noinput
# Creates the first administrator when no user exists; prints its password once.
"${as_web[@]}" .venv/bin/python manage.py ensure_admin

echo "run: dashboard at http://$host:$port/ (Daphne as $web_user, through the agent at $TERRARIUM_AGENT_SOCKET)"
exec "${as_web[@]}" .venv/bin/python -m dashboard.serve -b "$host" -p "$port" \
    --http-timeout "${TERRARIUM_HTTP_TIMEOUT:-300}" dashboard.asgi:application
