"""Create or update a user with one role: viewer, operator or administrator."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from dashboard.containers.roles import ROLE_PERMS, assign_role


class Command(BaseCommand):
    help = "Create (or change the role of) a user; prints a generated password for new users."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=list(ROLE_PERMS), required=True)
        parser.add_argument("--password", help="default: generated and printed once")

    def handle(self, *args, username, role, password, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        generated = created and not password
        if created or password:
            password = password or secrets.token_urlsafe(15)
            user.set_password(password)
            user.save()
        assign_role(user, role)
        line = f"terrarium_user: {username} is {role}"
        if generated:
            line += f"; password (shown once): {password}"
        self.stdout.write(line)
