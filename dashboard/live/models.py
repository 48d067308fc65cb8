"""Down-sampled history: one row per container per minute, kept 24 hours
(written by dashboard/live/history.py from the sampler's points)."""
from django.db import models


class MinutePoint(models.Model):
    """One minute of one container, aggregated from the sampler's ticks."""
    # ours: 64 hex; another owner's discovery key (runtime.discovery.make_key,
    # "kubernetes-<id>"): up to 211
    container_id = models.CharField(max_length=255, db_index=True)
    minute = models.DateTimeField(help_text="start of the minute, UTC")
    samples = models.IntegerField(help_text="ticks aggregated")
    mem_avg = models.BigIntegerField(null=True, help_text="bytes")
    mem_max = models.BigIntegerField(null=True, help_text="bytes")
    mem_limit = models.BigIntegerField(null=True, help_text="bytes, last seen")
    cpu_avg = models.FloatField(null=True, help_text="share of one core")
    pids_max = models.IntegerField(null=True)
    io_r = models.FloatField(null=True, help_text="bytes/s read, average")
    io_w = models.FloatField(null=True, help_text="bytes/s written, average")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["container_id", "minute"],
                                               name="live_minute_unique")]
        indexes = [models.Index(fields=["minute"])]
        ordering = ["container_id", "minute"]

    def __str__(self):
        return f"{self.container_id[:12]} @ {self.minute:%Y-%m-%d %H:%M}"
