"""DJANGO_SETTINGS_MODULE=dashboard.settings_production: the defaults plus hardening."""
from .settings import *  # noqa: F401,F403
from .production import *  # noqa: F401,F403
