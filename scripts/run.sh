#!/usr/bin/env bash
# Run the Terrarium dashboard: setup, built-in images, database migrations,
# first administrator, then Daphne in the foreground.
#
#   TERRARIUM_HOST (default 127.0.0.1)  TERRARIUM_PORT (default 8000)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

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

host=${TERRARIUM_HOST:-127.0.0.1}
port=${TERRARIUM_PORT:-8000}
echo "run: dashboard at http://$host:$port/"
exec .venv/bin/daphne -b "$host" -p "$port" dashboard.asgi:application
