"""Layer and image pages: permissions, import (good and bad), export, commit, remove, gc."""
import io
import tarfile

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.containers.models import AuditEntry

from tests.runtime.test_fuzz_input import named_cases

from .conftest import store_leftovers

pytestmark = pytest.mark.django_db
JSON = {"HTTP_X_REQUESTED_WITH": "fetch"}


def _forget(rt, *names):
    for n in names:
        try:
            rt.remove_image(n, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


# ------------------------------------------------------------ permissions
def _get_urls(cid):
    return [reverse("layers:container", args=[cid]), reverse("layers:changes", args=[cid]),
            reverse("layers:origin", args=[cid]) + "?path=/bin/sh",
            reverse("layers:image", args=["busybox"])]


def test_viewer_sees_anonymous_is_sent_to_login(idle_container, viewer_client):
    for url in _get_urls(idle_container.id):
        assert viewer_client.get(url).status_code == 200, url
        r = Client().get(url)
        assert r.status_code == 302 and r["Location"].startswith(reverse("login")), url


def test_viewer_cannot_post(idle_container, viewer_client):
    posts = [reverse("layers:commit", args=[idle_container.id]), reverse("layers:image_import"),
             reverse("layers:images_gc"), reverse("layers:image_remove", args=["busybox"])]
    for url in posts:
        assert viewer_client.post(url, {"image": "x"}).status_code == 403, url
        assert Client().post(url).status_code == 302, url
        assert viewer_client.get(url).status_code == 405, url      # POST only, for anyone
    denied = AuditEntry.objects.filter(result="denied")
    assert sorted(denied.values_list("action", flat=True)) == \
        ["commit", "image-gc", "image-import", "image-remove"]
    assert denied.get(action="commit").container_id == idle_container.id


def test_layer_page_shows_the_stack(rt, idle_container, viewer_client):
    r = viewer_client.get(reverse("layers:container", args=[idle_container.id]))
    html = r.content.decode()
    for path in idle_container.layers:
        assert path in html
    assert "upper (rw)" in html and 'id="origin-form"' in html
    assert 'id="commit-form"' not in html              # viewers get no commit button
    assert reverse("layers:container", args=[idle_container.id]) in viewer_client.get(
        reverse("containers:detail", args=[idle_container.id])).content.decode()


def test_changes_and_origin_json(idle_container, viewer_client):
    data = viewer_client.get(reverse("layers:changes", args=[idle_container.id])).json()
    assert data["status"] == "created" and data["changes"] == [] and data["counts"]["A"] == 0
    o = viewer_client.get(reverse("layers:origin", args=[idle_container.id]),
                          {"path": "/bin/sh"}).json()
    assert o["shown"]["layer"] in range(len(idle_container.layers)) and o["shown"]["digest"]
    bad = viewer_client.get(reverse("layers:origin", args=[idle_container.id]), {"path": "/a/../b"})
    assert bad.status_code == 400 and "'..'" in bad.json()["error"]


def test_image_page_config_history_space(viewer_client):
    html = viewer_client.get(reverse("layers:image", args=["busybox"])).content.decode()
    assert "Config" in html and "Alone" in html and "Shared" in html
    assert viewer_client.get(reverse("layers:image", args=["no-such-image"])).status_code == 404


# ------------------------------------------------------------ import
def test_upload_good_archive(rt, busybox_tar, operator_client, operator):
    try:
        with open(busybox_tar, "rb") as f:
            r = operator_client.post(reverse("layers:image_import"),
                                     {"archive": f, "name": "uploaded/busybox:t1"}, **JSON)
        assert r.status_code == 200, r.content
        assert r.json()["ok"] and "uploaded/busybox:t1" in r.json()["message"]
        assert rt.images.get("uploaded/busybox:t1").layers == rt.images.get("busybox").layers
        entry = AuditEntry.objects.filter(action="image-import").first()
        assert entry.result == "ok" and entry.user == operator
        html = operator_client.get(reverse("containers:images")).content.decode()
        assert "uploaded/busybox:t1" in html and 'id="import-form"' in html
    finally:
        _forget(rt, "uploaded/busybox:t1")


def test_upload_new_layer_archive(rt, fresh_tar, operator_client):
    path, _marker, digest = fresh_tar
    try:
        with open(path, "rb") as f:
            r = operator_client.post(reverse("layers:image_import"), {"archive": f}, **JSON)
        assert r.status_code == 200, r.content
        assert rt.images.has_layer(digest)
    finally:
        _forget(rt, "layertest/fresh")
        rt.image_gc()
    assert not rt.images.has_layer(digest)


def _corrupt(path, marker, how):
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        return bytes(data[: len(data) * 2 // 3])
    i = data.index(marker) + len(marker) + 5           # a byte inside the layer's file
    data[i] ^= 0x01
    return bytes(data)


def _escaping_archive() -> bytes:
    """A hand-made OCI layout whose digests all match but whose layer writes ../escaped."""
    import hashlib
    import json

    def blob(b):
        return "sha256:" + hashlib.sha256(b).hexdigest()
    lb = io.BytesIO()
    with tarfile.open(fileobj=lb, mode="w") as tf:
        ti = tarfile.TarInfo("../escaped")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"hi\n"))
    layer = lb.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [blob(layer)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": blob(config), "size": len(config),
                           "mediaType": "application/vnd.oci.image.config.v1+json"},
                           "layers": [{"digest": blob(layer), "size": len(layer),
                                       "mediaType": "application/vnd.oci.image.layer.v1.tar"}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "digest": blob(manifest), "size": len(manifest),
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "annotations": {"org.opencontainers.image.ref.name": "layertest/escape"}}]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        for b in (layer, config, manifest):
            files[f"blobs/sha256/{blob(b)[7:]}"] = b
        for n, b in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))
    return out.getvalue()


@pytest.mark.parametrize("how", ["truncated", "digest", "escaping"])
def test_upload_bad_archive_is_refused_and_leaves_nothing(rt, fresh_tar, operator_client, how):
    path, marker, digest = fresh_tar
    data = _escaping_archive() if how == "escaping" else _corrupt(path, marker, how)
    before = store_leftovers(rt)
    images_before = {i.name for i in rt.images.list()}
    upload = io.BytesIO(data)
    upload.name = f"bad-{how}.tar"
    r = operator_client.post(reverse("layers:image_import"), {"archive": upload}, **JSON)
    assert r.status_code == 400, r.content
    msg = r.json()["message"]
    assert msg.startswith("Import refused:")
    expected = {"truncated": ("end of data", "truncated"), "digest": ("does not match its digest", "layer digest mismatch"),
                "escaping": ("'..'",)}[how]
    assert any(x in msg for x in expected) and "/tmp/" not in msg, msg
    assert store_leftovers(rt) == before
    assert {i.name for i in rt.images.list()} == images_before
    assert not rt.images.has_layer(digest)
    assert AuditEntry.objects.filter(action="image-import", result="error").exists()


_MALFORMED = dict(named_cases())


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_upload_malformed_archive_is_a_message_and_an_audit_row(rt, operator_client, case):
    before = store_leftovers(rt)
    images_before = {i.name for i in rt.images.list()}
    audits = AuditEntry.objects.filter(action="image-import", result="error").count()
    upload = io.BytesIO(_MALFORMED[case])
    upload.name = "malformed.tar"
    r = operator_client.post(reverse("layers:image_import"), {"archive": upload}, **JSON)
    assert r.status_code == 400, r.content
    msg = r.json()["message"]
    assert msg.startswith("Import refused:") and "\n" not in msg and "internal error" not in msg, msg
    assert "/tmp/" not in msg, msg
    entry = AuditEntry.objects.filter(action="image-import", result="error").order_by("-id").first()
    assert AuditEntry.objects.filter(action="image-import", result="error").count() == audits + 1
    assert entry.message and entry.message in msg
    assert store_leftovers(rt) == before
    assert {i.name for i in rt.images.list()} == images_before


def test_origin_path_with_nul_is_400(idle_container, viewer_client):
    r = viewer_client.get(reverse("layers:origin", args=[idle_container.id]) + "?path=/a%00b")
    assert r.status_code == 400 and "NUL" in r.json()["error"]


# ------------------------------------------------------------ export, commit, remove, gc
def test_export_is_an_oci_tar(operator_client):
    r = operator_client.get(reverse("layers:image_export", args=["busybox"]))
    assert r.status_code == 200 and "busybox.oci.tar" in r["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(b"".join(r.streaming_content))) as tf:
        names = tf.getnames()
    assert "oci-layout" in names and "index.json" in names


def test_commit_button_creates_an_image(rt, idle_container, operator_client):
    try:
        r = operator_client.post(reverse("layers:commit", args=[idle_container.id]),
                                 {"image": "layertest/committed", "message": "from a test"}, **JSON)
        assert r.status_code == 200 and r.json()["ok"], r.content
        image = rt.images.get("layertest/committed")
        assert len(image.layers) == len(idle_container.layers) + 1
        assert "from a test" in image.history[-1]
        entry = AuditEntry.objects.get(action="commit")
        assert entry.container_id == idle_container.id and entry.result == "ok"
        html = operator_client.get(reverse("layers:container", args=[idle_container.id])).content
        assert b'id="commit-form"' in html
    finally:
        _forget(rt, "layertest/committed")
        rt.image_gc()


def test_commit_onto_an_existing_name_moves_it_and_says_so(rt, idle_container, operator_client):
    """The second commit onto one name is refused, saying what uses the image,
    until replace is ticked; then the message says the name moved and
    where the old image went, the audit has old and new ids, the old image
    is reachable by id until the GC; a malformed name gets Docker's message."""
    url = reverse("layers:commit", args=[idle_container.id])
    try:
        r = operator_client.post(url, {"image": "docker.io/library/layertest-moved:v1"}, **JSON)
        assert r.status_code == 200 and r.json()["ok"], r.content
        first = rt.images.get("layertest-moved:v1")
        assert "moved off" not in r.json()["message"]
        layers = {layer.digest for layer in rt.images.layers()}
        r = operator_client.post(url, {"image": "layertest-moved:v1", "message": "again"}, **JSON)
        assert r.status_code == 409 and r.json()["message"] == (
            f"Commit failed: image name already taken: 'layertest-moved:v1' ({first.id[:19]}, used by no "
            "container). Replacing moves the name to the new image; the old one stays, by id, for the "
            "containers that use it until image-gc")
        assert rt.images.get("layertest-moved:v1").id == first.id                  # nothing moved
        assert {layer.digest for layer in rt.images.layers()} == layers            # nor packed
        r = operator_client.post(url, {"image": "layertest-moved:v1", "message": "again", "replace": "on"},
                                 **JSON)
        assert r.status_code == 200, r.content
        second = rt.images.get("layertest-moved:v1")
        assert second.id != first.id
        assert (f"The name layertest-moved:v1 moved off image {first.id[:19]}, which stays "
                "reachable by that id until a GC.") in r.json()["message"]
        entry = AuditEntry.objects.filter(action="commit").latest("id")
        assert entry.details["moved"] == [{"name": "layertest-moved:v1", "old": first.id,
                                           "new": second.id}]
        assert rt.images.get(first.id).name == ""
        html = operator_client.get(reverse("layers:image", args=["layertest-moved:v1"])).content.decode()
        assert "docker.io/library/layertest-moved:v1" in html and second.id in html
        r = operator_client.post(url, {"image": "LayerTest"}, **JSON)
        assert r.status_code == 409 and r.json()["message"] == (
            "Commit failed: invalid reference format: repository name (LayerTest) must be lowercase")
    finally:
        _forget(rt, "layertest-moved:v1")
        rt.image_gc()
    with pytest.raises(Exception, match="not found"):
        rt.images.get(first.id)


def test_remove_in_use_is_refused_then_gc(rt, idle_container, operator_client):
    r = operator_client.post(reverse("layers:image_remove", args=["busybox"]), **JSON)
    assert r.status_code == 409 and "in use" in r.json()["message"]
    assert rt.images.get("busybox")
    r = operator_client.post(reverse("layers:images_gc"), **JSON)
    assert r.status_code == 200 and r.json()["ok"]
    assert rt.images.get("busybox")                     # gc never takes a used layer
    assert AuditEntry.objects.filter(action="image-remove", result="error").exists()
