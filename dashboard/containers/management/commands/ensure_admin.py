"""Create the first administrator when no user exists; print its password once."""
import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from dashboard.containers.roles import ADMINISTRATOR, assign_role


class Command(BaseCommand):
    help = "Create an administrator with a generated password if there is no user yet."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("TERRARIUM_ADMIN_USER", "admin"))

    def handle(self, *args, username, **options):
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("ensure_admin: users exist; nothing to do")
            return
        password = secrets.token_urlsafe(15)
        user = User.objects.create_superuser(username=username, email="", password=password)
        assign_role(user, ADMINISTRATOR)
        self.stdout.write(self.style.SUCCESS(
            f"ensure_admin: created administrator {username!r} with password: {password}\n"
            "ensure_admin: this password is shown once: log in and change it at once, at "
            "/account/password/ (the Password button at the top right of every page)."))
