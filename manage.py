#!/usr/bin/env python
"""Django's command-line utility for the Terrarium dashboard."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from dashboard.rlimits import raise_nofile
    raise_nofile()                     # `manage.py sampler` keeps kernel files open
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
