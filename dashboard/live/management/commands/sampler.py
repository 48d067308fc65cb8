"""`manage.py sampler`: the host's one sampler as its own process.

For the Redis channel layer (TERRARIUM_REDIS_URL), with the Daphne workers
run with TERRARIUM_SAMPLER=external: their sockets send sampler.subscribe /
sampler.unsubscribe to the `sampler` channel; this process samples what is
subscribed once per tick and publishes to the `container.<id>` groups that
every worker's sockets are in.  Stops on SIGTERM or SIGINT.
"""
import asyncio
import signal

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.live.wiring import make_sampler


class Command(BaseCommand):
    help = "Run the live feed's sampler as its own process (Redis channel layer)."

    def add_arguments(self, parser):
        parser.add_argument("--tick", type=float, default=None,
                            help="seconds between samples (default TERRARIUM_LIVE_TICK or 1.0)")

    def handle(self, *args, tick=None, **opts):
        backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
        if "InMemory" in backend:
            raise CommandError("the in-memory channel layer is per process: set TERRARIUM_REDIS_URL "
                               "(the sampler then runs here, and Daphne with TERRARIUM_SAMPLER=external)")
        asyncio.run(self._main(tick))

    async def _main(self, tick):
        sampler = make_sampler(tick=tick, keep_history=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        serve = loop.create_task(sampler.serve(ready=lambda: self.stdout.write(
            f"sampler: ready, tick {sampler.tick}s, layer {type(get_channel_layer()).__name__}", ending="\n")))
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({serve, stopped}, return_when=asyncio.FIRST_COMPLETED)
        serve.cancel()
        try:
            await serve
        except asyncio.CancelledError:
            pass
        if serve.done() and not serve.cancelled() and serve.exception():
            raise serve.exception()
        self.stdout.write(f"sampler: stopped after {sampler.ticks} ticks, {sampler.samples_taken} samples")
