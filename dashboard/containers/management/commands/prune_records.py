"""Delete audit entries and OOM events past their retention (as the reconciler does)."""
from django.core.management.base import BaseCommand

from dashboard.containers import services


class Command(BaseCommand):
    help = "Delete audit entries and OOM events older than their retention (see settings)."

    def handle(self, *args, **options):
        n = services.records_prune()
        self.stdout.write(f"prune_records: deleted {n['audit']} audit entries, {n['oom']} OOM events")
