"""API tokens: one person's key to the JSON API (dashboard/api/api.py).

Only a SHA-256 of the token is stored.  A token is 32 random bytes, so a fast
hash is enough (a password hash's slowness guards guessable secrets; nobody
guesses 256 bits): a leaked database gives no usable token, and a lookup per
request stays one indexed query.  The first characters are kept in clear to
tell one's tokens apart on the page and in the admin."""
from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, help_text="what the person called it (which script, which host)")
    prefix = models.CharField(max_length=16, help_text="the token's first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token, hex")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.user} · {self.name} ({self.prefix}…)"
