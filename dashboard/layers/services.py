"""Every write about images and layers: import, export, commit, remove, gc.

Like dashboard/containers/services.py: call the runtime, write an AuditEntry
with the result, bring the image mirror in step; runtime errors come back as
ServiceError with the runtime's own message."""
from __future__ import annotations

import logging
import os
import tempfile

from runtime import TerrariumError

from dashboard.containers import services as container_services
from dashboard.containers.models import Container
from dashboard.containers.runtime_client import get_runtime
from dashboard.containers.services import ServiceError, _audit

log = logging.getLogger(__name__)

__all__ = ["ServiceError", "image_import", "image_export", "container_commit", "image_remove",
           "images_gc"]


def _first_line(e: Exception) -> str:
    """tarfile explains itself over several lines; the person needs the first."""
    lines = str(e).splitlines() or [type(e).__name__]
    return lines[0].rstrip(": ") + (" (not a tar or layout it can read)" if len(lines) > 1 else "")


def _moved(images) -> list[dict]:
    """Names a write moved off another image: the audit keeps old and new ids."""
    return [{"name": i.name, "old": i.replaced, "new": i.id} for i in images if i.replaced]


def moved_note(images) -> str:
    """What the person is told when a name moved (the old image is kept by id)."""
    return "".join(f" The name {i.name} moved off image {i.replaced[:19]}, which stays "
                   f"reachable by that id until a GC." for i in images if i.replaced)


def _sync() -> None:
    try:
        container_services.images_sync()
    except TerrariumError:
        pass                                 # the page says so when it reads the store


def image_import(*, user, upload, name: str = "", replace: bool = False) -> list:
    """Load a docker-archive or OCI layout tar (maybe gzip) from an uploaded file.
    A name the archive's images would take that already names an image is
    refused (ServiceError saying what uses it) unless replace.

    The upload is streamed to a temp file (Django's own when it made one);
    the runtime's load_image checks every digest and removes what it added on failure.
    """
    details = {"file": getattr(upload, "name", ""), "size": getattr(upload, "size", None),
               "name": name, "replace": replace}
    tmp = path = None
    try:
        path = getattr(upload, "temporary_file_path", None)
        if path is not None:
            path = path()
        else:
            fd, tmp = tempfile.mkstemp(prefix="terrarium-upload-", suffix=".tar")
            with os.fdopen(fd, "wb") as f:
                for chunk in upload.chunks():
                    f.write(chunk)
            path = tmp
        with open(path, "rb") as f:          # the agent gets this descriptor, never the path
            images = get_runtime(user=user).load_image(f, name=name or None,
                                                       label=details["file"] or "the upload",
                                                       replace=replace)
    except Exception as e:  # noqa: BLE001 - a bug in the importer: the person and the audit still learn of it
        msg = _first_line(e)
        if not isinstance(e, (TerrariumError, OSError)):
            log.exception("image import of %r failed", details["file"])
            msg = f"internal error: {type(e).__name__}: {msg}"
        if path:                             # name the person's file, not our temp copy
            msg = msg.replace(path, repr(details["file"] or "the upload"))
        _audit(user, "image-import", result="error", message=msg, details=details)
        raise ServiceError(msg) from e
    finally:
        if tmp is not None:
            os.unlink(tmp)
    details["images"] = [i.name for i in images]
    details["digests"] = {i.name: i.id for i in images}
    moved = _moved(images)
    if moved:
        details["moved"] = moved
    _audit(user, "image-import", result="ok", details=details)
    _sync()
    return images


def image_export(*, user, name: str):
    """The image as an OCI layout tar: an open, unnamed temp file (rewound),
    which the runtime (or the agent, sent its descriptor) writes."""
    f = tempfile.TemporaryFile(prefix="terrarium-export-")
    try:
        digest = get_runtime(user=user).save_image(name, f)
        f.seek(0)
    except (TerrariumError, OSError) as e:
        f.close()
        _audit(user, "image-export", result="error", message=str(e), details={"image": name})
        raise ServiceError(str(e)) from e
    _audit(user, "image-export", result="ok", details={"image": name, "manifest": digest})
    return f


def container_commit(*, user, container_id: str, image_name: str, message: str = "",
                     replace: bool = False):
    """The container's writable layer as the new top layer of image `image_name`;
    refused (ServiceError saying what uses it) if that name is taken, unless replace."""
    row = Container.objects.filter(id=container_id).first()
    cname = row.name if row else container_id[:12]
    details = {"image": image_name, "message": message, "replace": replace}
    try:
        image = get_runtime(user=user).commit(container_id, image_name, message=message, replace=replace)
    except (TerrariumError, OSError) as e:
        _audit(user, "commit", container_id=container_id, container_name=cname, result="error",
               message=str(e), details=details)
        raise ServiceError(str(e)) from e
    details["layer"] = image.layers[-1].digest
    details["id"] = image.id
    moved = _moved([image])
    if moved:
        details["moved"] = moved
    _audit(user, "commit", container_id=container_id, container_name=cname, result="ok",
           details=details)
    _sync()
    return image


def image_remove(*, user, name: str, force: bool = False) -> None:
    """Remove an image record; refused (ServiceError) while a container uses it,
    unless force (its containers keep its layers; only the name goes)."""
    details = {"image": name, **({"force": True} if force else {})}
    try:
        get_runtime(user=user).remove_image(name, force=force)
    except TerrariumError as e:
        _audit(user, "image-remove", result="error", message=str(e), details=details)
        raise ServiceError(str(e)) from e
    _audit(user, "image-remove", result="ok", details=details)
    _sync()


def images_gc(*, user) -> list[str]:
    """Remove the layers no image and no container uses; returns their digests."""
    try:
        removed = get_runtime(user=user).image_gc()
    except (TerrariumError, OSError) as e:
        _audit(user, "image-gc", result="error", message=str(e))
        raise ServiceError(str(e)) from e
    _audit(user, "image-gc", result="ok", details={"removed": removed})
    _sync()
    return removed


# ------------------------------------------------------------ registries
def registry_logins() -> tuple[list[dict], str]:
    """([{"server", "username"}], error): the kept registry credentials, no passwords."""
    try:
        return get_runtime().registry_logins(), ""
    except (TerrariumError, OSError) as e:
        return [], _first_line(e)


def registry_login(*, user, server: str, username: str, password: str, insecure: bool = False) -> str:
    """Check and keep credentials; the audit names the registry and user name only."""
    details = {"server": server, "username": username, "insecure": insecure}
    try:
        done = get_runtime(user=user).registry_login(server, username, password, insecure)
    except (TerrariumError, OSError) as e:
        msg = _first_line(e)
        _audit(user, "registry-login", result="error", message=msg, details=details)
        raise ServiceError(msg) from e
    _audit(user, "registry-login", result="ok", details=details)
    return done


def registry_logout(*, user, server: str) -> None:
    try:
        get_runtime(user=user).registry_logout(server)
    except (TerrariumError, OSError) as e:
        msg = _first_line(e)
        _audit(user, "registry-logout", result="error", message=msg, details={"server": server})
        raise ServiceError(msg) from e
    _audit(user, "registry-logout", result="ok", details={"server": server})
