#!/usr/bin/env python
"""Django's command-line utility for the Terrarium dashboard."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from dashboard.rlimits import raise_nofile
    raise_nofile()                     # `manage.py sampler` keeps kernel files open
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as e:     # a setting refused (dashboard/settings.py): one line
        sys.exit(f"manage.py: {e}")


if __name__ == "__main__":
    main()
