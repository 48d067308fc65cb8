"""Uploads too large, or larger than the disk can hold, are refused before
Django parses them (dashboard/uploads.py), with a clear message."""
import io

import pytest
from django.http import multipartparser
from django.urls import reverse

from dashboard import uploads
from dashboard.containers.models import AuditEntry

from .conftest import store_leftovers

pytestmark = pytest.mark.django_db
JSON = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture
def never_parsed(monkeypatch):
    """Fails the test if Django's multipart parser runs (the body was read)."""
    def parse(self):
        raise AssertionError("the upload was parsed")
    monkeypatch.setattr(multipartparser.MultiPartParser, "parse", parse)


def _upload(size: int, name: str = "big.tar") -> io.BytesIO:
    f = io.BytesIO(b"\0" * size)
    f.name = name
    return f


def test_over_the_limit_is_refused_unread(rt, operator_client, settings, never_parsed):
    settings.TERRARIUM_MAX_UPLOAD_BYTES = 2 << 20
    before = store_leftovers(rt)
    r = operator_client.post(reverse("layers:image_import"), {"archive": _upload(3 << 20)}, **JSON)
    assert r.status_code == 413
    msg = r.json()["message"]
    assert not r.json()["ok"] and "the largest this dashboard accepts is 2.0" in msg, msg
    assert "TERRARIUM_MAX_UPLOAD" in msg
    assert store_leftovers(rt) == before
    assert not AuditEntry.objects.filter(action="image-import").exists()   # the view never ran
    # the form without JavaScript gets the same sentence as text
    r = operator_client.post(reverse("layers:image_import"), {"archive": _upload(3 << 20)})
    assert r.status_code == 413 and "the largest this dashboard accepts" in r.content.decode()


def test_more_than_the_disk_holds_is_refused_unread(rt, operator_client, monkeypatch, never_parsed):
    monkeypatch.setattr(uploads, "_free", lambda path: 100 << 20)   # 100 MiB free, 256 MiB kept spare
    r = operator_client.post(reverse("layers:image_import"), {"archive": _upload(2 << 20)}, **JSON)
    assert r.status_code == 507
    assert "Not enough disk space" in r.json()["message"]


def test_small_bodies_and_uploads_under_the_limit_pass(rt, operator_client, settings, monkeypatch):
    settings.TERRARIUM_MAX_UPLOAD_BYTES = 8 << 20
    seen = []
    monkeypatch.setattr(uploads, "refusal", lambda length: seen.append(length))
    r = operator_client.post(reverse("layers:image_import"), {"archive": _upload(3 << 20, "junk.tar")},
                             **JSON)
    assert r.status_code == 400 and r.json()["message"].startswith("Import refused:")  # parsed, then refused
    assert seen and seen[0] > 3 << 20                       # checked, and let through
    seen.clear()
    operator_client.get(reverse("containers:images"))
    assert seen == []                                        # no body: no check
