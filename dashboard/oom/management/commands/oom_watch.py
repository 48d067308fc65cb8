"""Run the OOM watcher on its own (with the Redis channel layer, one per host)."""
import asyncio

from django.core.management.base import BaseCommand

from dashboard.oom.watcher import OomWatcher


class Command(BaseCommand):
    help = "Follow /dev/kmsg and the cgroup OOM counters; record and publish OOM kills."

    def handle(self, *args, **options):
        self.stdout.write("watching for OOM kills (Ctrl-C to stop)")
        try:
            asyncio.run(OomWatcher().run())
        except KeyboardInterrupt:
            pass
