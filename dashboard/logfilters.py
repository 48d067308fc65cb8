"""Logging filters for the dashboard's own settings.LOGGING."""
import logging

from django.core.exceptions import PermissionDenied


class DeniedOneLine(logging.Filter):
    """A refused request is a fact, not a fault: Django logs each 403 from
    PermissionDenied with its traceback (every viewer pressing a button they
    may not press).  Keep the one line, and say who it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PermissionDenied):
            record.exc_info, record.exc_text = None, None
            user = getattr(getattr(record, "request", None), "user", None)
            name = getattr(user, "username", "") or "anonymous"
            text = record.getMessage().replace("%", "%%")      # the path may hold a % of its own
            record.msg, record.args = text + " (user %s)", (name,)
        return True
