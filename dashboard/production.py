"""Production hardening, applied on top of dashboard.settings.

Selected by TERRARIUM_SETTINGS=production or
DJANGO_SETTINGS_MODULE=dashboard.settings_production.  Assumes HTTPS in
front (a TLS-terminating proxy that sets X-Forwarded-Proto); cookies are
then sent over HTTPS only.
"""
import os

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = os.environ.get("TERRARIUM_SSL_REDIRECT", "1") == "1"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = int(os.environ.get("TERRARIUM_HSTS_SECONDS", str(365 * 24 * 3600)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("TERRARIUM_HSTS_SUBDOMAINS", "1") == "1"
SECURE_HSTS_PRELOAD = os.environ.get("TERRARIUM_HSTS_PRELOAD", "1") == "1"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_AGE = 12 * 3600
