#!/usr/bin/env bash
# Run the Terrarium dashboard: setup, built-in images, database migrations,
# first administrator, then Daphne in the foreground.
#
#   TERRARIUM_HOST (default 127.0.0.1)  TERRARIUM_PORT (default 8000)
#   TERRARIUM_HTTP_TIMEOUT (default 300): seconds a request may take, response included
#   TERRARIUM_MAX_BODY, TERRARIUM_BODY_TIMEOUT: see dashboard/serve.py
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

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

scripts/setup.sh

# Built-in images (busybox base); does nothing when they are already there.
.venv/bin/python -m runtime images

# The database used to be db.sqlite3 in the checkout, readable by every user:
# move it once into the private web directory (dashboard/webstate.py).
web_dir=${TERRARIUM_WEB_DIR:-/var/lib/terrarium-web}
if [ -z "${TERRARIUM_DB:-}" ] && [ -s db.sqlite3 ] && [ ! -s "$web_dir/db.sqlite3" ]; then
    install -d -m 0700 "$web_dir"
    mv db.sqlite3 "$web_dir/db.sqlite3"
    chmod 0600 "$web_dir/db.sqlite3"
    echo "run: moved db.sqlite3 to $web_dir/ (0600 in a 0700 directory)"
fi

.venv/bin/python manage.py migrate --noinput
# Creates the first administrator when no user exists; prints its password once.
.venv/bin/python manage.py ensure_admin

echo "run: dashboard at http://$host:$port/"
exec .venv/bin/python -m dashboard.serve -b "$host" -p "$port" --http-timeout "${TERRARIUM_HTTP_TIMEOUT:-300}" \
    dashboard.asgi:application
