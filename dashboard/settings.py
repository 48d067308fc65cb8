"""Settings of the Terrarium dashboard, with embedded defaults.

Everything works without configuration: SQLite in /var/lib/terrarium-web, the
in-memory channel layer, one Daphne process on 127.0.0.1.  Environment:

    TERRARIUM_WEB_DIR       the database and the secret key, private (default /var/lib/terrarium-web)
    TERRARIUM_DB            SQLite file (default $TERRARIUM_WEB_DIR/db.sqlite3)
    TERRARIUM_REDIS_URL     use the Redis channel layer (several workers), with
    TERRARIUM_REDIS_PASSWORD_FILE / TERRARIUM_REDIS_USER  its credentials (dashboard/redisconf.py)
    TERRARIUM_DEBUG=1       Django's debug mode
    DJANGO_SECRET_KEY       secret key (default: generated once into $TERRARIUM_WEB_DIR/secret_key)
    TERRARIUM_ALLOWED_HOSTS comma-separated (default 127.0.0.1,localhost)
    TERRARIUM_SETTINGS=production   the hardening of dashboard/production.py
    TERRARIUM_MAX_UPLOAD    the largest upload (image import) accepted, e.g. 8g (default)
    TERRARIUM_MAX_BODY      the largest body of any other request (default 1m)
    TERRARIUM_BODY_TIMEOUT  seconds a request's head and body may take to arrive (default 30)
    TERRARIUM_METRICS_TOKEN / TERRARIUM_METRICS_ALLOW_LOCAL  who may scrape /metrics (README)
"""
import datetime as dt
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from runtime.spec import parse_size

from . import redisconf, webstate

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_list(name: str, default: str) -> list[str]:
    return [h.strip() for h in os.environ.get(name, default).split(",") if h.strip()]


try:
    # both 0600 in a 0700 directory, tightened at every start (dashboard/webstate.py)
    SECRET_KEY = webstate.secret_key()
    _DATABASE = webstate.database_path()
    # /metrics (dashboard/live/views.py metrics): the bearer token Prometheus
    # sends, from TERRARIUM_METRICS_TOKEN or the 0600 file metrics_token
    TERRARIUM_METRICS_TOKEN = webstate.metrics_token()
except webstate.WebStateError as e:
    raise ImproperlyConfigured(str(e)) from None

DEBUG = os.environ.get("TERRARIUM_DEBUG") == "1"
ALLOWED_HOSTS = _env_list("TERRARIUM_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = _env_list("TERRARIUM_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "dashboard.containers",
    "dashboard.live",
    "dashboard.oom",
    "dashboard.layers",
    "ninja",                 # the JSON API: its docs page's assets, served from here (no CDN)
    "dashboard.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "dashboard.uploads.UploadLimitMiddleware",        # before CSRF, which parses uploads
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",                # last: turns a lockout into its page
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.containers.context_processors.roles",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DATABASE,
        # The reconciler thread and request threads both write: wait, don't fail.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

if os.environ.get("TERRARIUM_REDIS_URL"):
    try:
        _REDIS_HOST = redisconf.channel_host()
    except redisconf.RedisConfigError as e:
        raise ImproperlyConfigured(str(e)) from None
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_REDIS_HOST]},
    }}
else:
    # channels' in-memory layer with a cheaper group_send (dashboard/live/layers.py)
    CHANNEL_LAYERS = {"default": {"BACKEND": "dashboard.live.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "containers:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# The reconciler (dashboard/containers/reconciler.py) follows the runtime's
# state changes as they happen (inotify, through the agent when there is one)
# and lists everything once every TERRARIUM_RECONCILE_FULL seconds; when the
# changes cannot be followed it polls every TERRARIUM_RECONCILE_INTERVAL
# seconds (0 disables the reconciler, for tests).
TERRARIUM_RECONCILE_INTERVAL = float(os.environ.get("TERRARIUM_RECONCILE_INTERVAL", "1.0"))
TERRARIUM_RECONCILE_FULL = float(os.environ.get("TERRARIUM_RECONCILE_FULL", "30"))
# Other owners' containers (runtime/discovery): the reconciler follows their
# engines' events too (Docker's event stream) so that the pages show a `docker
# run` at once.  "0" turns that off (the pages still list them when drawn).
# The engines' sockets: TERRARIUM_DOCKER_HOST (else DOCKER_HOST, else
# unix:///var/run/docker.sock) and TERRARIUM_PODMAN_HOST (else CONTAINER_HOST,
# else unix:///run/podman/podman.sock), read by whichever process talks to
# them: the root agent in agent mode, which inherits them from `make run`.
TERRARIUM_ENGINE_EVENTS = os.environ.get("TERRARIUM_ENGINE_EVENTS", "1") != "0"
# Open websockets (dashboard/containers/access.py): seconds between re-checks of
# their session and role, and how many one session may hold open per process.
TERRARIUM_WS_RECHECK = float(os.environ.get("TERRARIUM_WS_RECHECK", "3"))
TERRARIUM_WS_PER_SESSION = int(os.environ.get("TERRARIUM_WS_PER_SESSION", "32"))
# The web terminal (dashboard/containers/terminal.py): sessions one user may have
# open at once (per Daphne process), and output bytes sent to a browser before it
# acknowledges them (beyond it the pty is not read, so the shell waits).
TERRARIUM_TERMINALS_PER_USER = int(os.environ.get("TERRARIUM_TERMINALS_PER_USER", "4"))
TERRARIUM_TERMINAL_WINDOW = int(os.environ.get("TERRARIUM_TERMINAL_WINDOW", str(256 << 10)))
# The live feed's sampler (dashboard/live/sampler.py): "internal" runs it in the
# Daphne process; "external" leaves it to `manage.py sampler` (Redis layer).
TERRARIUM_SAMPLER = os.environ.get("TERRARIUM_SAMPLER", "internal")
TERRARIUM_LIVE_TICK = float(os.environ.get("TERRARIUM_LIVE_TICK", "1.0"))
# /metrics without a token: "1" serves it to loopback clients only (404 otherwise).
TERRARIUM_METRICS_ALLOW_LOCAL = os.environ.get("TERRARIUM_METRICS_ALLOW_LOCAL") == "1"
# Uploads (dashboard/uploads.py): the largest body accepted, and the disk space
# an accepted upload must still leave free where it is copied to.
TERRARIUM_MAX_UPLOAD_BYTES = parse_size(os.environ.get("TERRARIUM_MAX_UPLOAD", "8g"), "TERRARIUM_MAX_UPLOAD")
TERRARIUM_UPLOAD_SPARE_BYTES = 256 << 20
# Every other request body, and the seconds a request's head and body may take
# to arrive (dashboard/serve.py refuses both before Twisted buffers a body).
TERRARIUM_MAX_BODY_BYTES = parse_size(os.environ.get("TERRARIUM_MAX_BODY", "1m"), "TERRARIUM_MAX_BODY")
TERRARIUM_BODY_TIMEOUT = float(os.environ.get("TERRARIUM_BODY_TIMEOUT", "30"))
# Refused attempts written to the audit log, per user and minute (the rest are only logged).
TERRARIUM_AUDIT_DENIED_PER_MINUTE = int(os.environ.get("TERRARIUM_AUDIT_DENIED_PER_MINUTE", "10"))
# Retention (dashboard/containers/services.py records_prune, run by the reconciler
# every TERRARIUM_PRUNE_EVERY seconds and by `manage.py prune_records`): rows older
# than the days, or beyond the newest rows, are deleted.  Shown on the admin pages.
TERRARIUM_AUDIT_KEEP_DAYS = float(os.environ.get("TERRARIUM_AUDIT_KEEP_DAYS", "180"))
TERRARIUM_AUDIT_KEEP_ROWS = int(os.environ.get("TERRARIUM_AUDIT_KEEP_ROWS", "200000"))
TERRARIUM_OOM_KEEP_DAYS = float(os.environ.get("TERRARIUM_OOM_KEEP_DAYS", "30"))
TERRARIUM_OOM_KEEP_ROWS = int(os.environ.get("TERRARIUM_OOM_KEEP_ROWS", "10000"))
TERRARIUM_HISTORY_HOURS = float(os.environ.get("TERRARIUM_HISTORY_HOURS", "24"))   # per-minute graphs
TERRARIUM_PRUNE_EVERY = float(os.environ.get("TERRARIUM_PRUNE_EVERY", "600"))

# Login throttling (django-axes): after TERRARIUM_LOGIN_FAILURES (5) wrong passwords
# for one username, or from one address (any usernames), the next attempts are
# refused with a 429 page for TERRARIUM_LOGIN_COOLOFF seconds after the last
# failure; trying during the lockout extends it.  The address is REMOTE_ADDR:
# behind a proxy, run Daphne with --proxy-headers so it is the client's.
# `manage.py axes_reset` lifts every lockout (`axes_reset_username NAME`, one).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend",
                           "django.contrib.auth.backends.ModelBackend"]
# axes locks out at the failure that reaches its limit: the 6th wrong password gets the page
AXES_FAILURE_LIMIT = int(os.environ.get("TERRARIUM_LOGIN_FAILURES", "5")) + 1
AXES_COOLOFF_TIME = dt.timedelta(seconds=float(os.environ.get("TERRARIUM_LOGIN_COOLOFF", "60")))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]     # either one locks
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"denied_one_line": {"()": "dashboard.logfilters.DeniedOneLine"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"dashboard": {"handlers": ["console"], "level": "INFO"},
                "django.request": {"filters": ["denied_one_line"]}},   # a 403: one line, no traceback
}

if os.environ.get("TERRARIUM_SETTINGS") == "production":
    from .production import *  # noqa: E402,F401,F403

# The container list asks the other engines (discovery) at most this often
# (seconds); a change event about one of their containers asks again at once.
TERRARIUM_LIST_DISCOVERY_AGE = float(os.environ.get("TERRARIUM_LIST_DISCOVERY_AGE", "5"))
