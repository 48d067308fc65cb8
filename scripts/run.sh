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

.venv/bin/python manage.py migrate --noinput
# Creates the first administrator when no user exists; prints its password once.
.venv/bin/python manage.py ensure_admin

host=${TERRARIUM_HOST:-127.0.0.1}
port=${TERRARIUM_PORT:-8000}
echo "run: dashboard at http://$host:$port/"
exec .venv/bin/daphne -b "$host" -p "$port" dashboard.asgi:application
