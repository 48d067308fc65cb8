"""Bring the dashboard's mirror in step with the runtime once."""
from django.core.management.base import BaseCommand

from dashboard.containers import services


class Command(BaseCommand):
    help = "Reconcile containers and images with the runtime (the runtime is the truth)."

    def handle(self, *args, **options):
        services.images_sync()
        changes = services.containers_reconcile()
        self.stdout.write(f"reconcile: {len(changes)} change(s)")
