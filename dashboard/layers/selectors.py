"""Every read of layer data: the rootfs stack, the writable layer's changes,
the overlay mount, image anatomy.  Blocking (filesystem walks): call them from
a thread in async code.  The only place dashboard/layers reads the runtime."""
from __future__ import annotations

import os
import threading
import time

from runtime import TerrariumError

from dashboard.containers.runtime_client import get_runtime

MAX_CHANGES = 2000          # rows sent to a browser per refresh
DIFF_TTL = 0.8              # seconds a diff is shared between viewers


class LayerError(Exception):
    """A read failed; str(e) is a message for the person."""


def _digest_of(path: str) -> str:
    """<root>/layers/<hex>/fs -> 'sha256:<hex>'."""
    return "sha256:" + os.path.basename(os.path.dirname(path))


# ------------------------------------------------------------ sharing
def _layer_users(rt) -> dict[str, list[dict]]:
    """digest -> containers whose rootfs uses that layer."""
    users: dict[str, list[dict]] = {}
    for c in rt.list(all=True):
        for p in c.layers:
            users.setdefault(_digest_of(p), []).append({"id": c.id, "name": c.name,
                                                        "status": c.status})
    return users


def _image_users(rt) -> dict[str, list[str]]:
    """digest -> names of the images that have that layer."""
    out: dict[str, list[str]] = {}
    for img in rt.images.list():
        for layer in img.layers:
            out.setdefault(layer.digest, []).append(img.name)
    return out


# ------------------------------------------------------------ containers
def container_layer_stack(*, container_id: str) -> dict:
    """The container's rootfs top first: writable layer, then image layers to the base."""
    rt = get_runtime()
    try:
        c = rt.inspect(container_id)
        upper = rt.upper_size(container_id)
    except (TerrariumError, OSError) as e:
        raise LayerError(str(e)) from None
    users = _layer_users(rt)
    images = _image_users(rt)
    lowers = []
    for i in reversed(range(len(c.layers))):
        path = c.layers[i]
        digest = _digest_of(path)
        try:
            meta = rt.images.layer(digest)
            size, files, made = meta.size, meta.files, meta.created_by
        except TerrariumError:
            size = files = None
            made = ""
        lowers.append({"index": i, "digest": digest, "path": path, "size": size, "files": files,
                       "created_by": made, "containers": users.get(digest, []),
                       "images": images.get(digest, [])})
    return {"container": c, "upper": {"path": c.upperdir, "bytes": upper.bytes,
                                      "files": upper.files},
            "lowers": lowers, "mounts": container_mounts(rt, c)}


def container_mounts(rt, c) -> list[dict]:
    """What lies outside the overlay: each volume (its directory and size),
    bind mount (the host path) and tmpfs, with where it is mounted and how."""
    out = []
    for m in c.mounts:
        item = {"type": m.type, "source": m.source, "target": m.target,
                "mode": "ro" if m.read_only else "rw", "host_path": None, "size": None, "files": None}
        if m.type == "volume":
            try:
                vol = rt.volumes.inspect(m.source)
                item.update(host_path=vol["mountpoint"], size=vol["size"], files=vol["files"])
            except (TerrariumError, OSError):
                pass                                  # gone meanwhile: shown without its size
        elif m.type == "bind":
            item["host_path"] = m.source
        else:
            item["size"] = m.size
        out.append(item)
    return out


def container_mount(*, container_id: str) -> dict | None:
    """The overlay mount from /proc/<pid>/mountinfo; None when it is not running."""
    try:
        return get_runtime().mount_info(container_id)
    except (TerrariumError, OSError):
        return None


_diff_cache: dict[str, tuple[float, dict]] = {}
_diff_lock = threading.Lock()


def container_changes(*, container_id: str) -> dict:
    """The writable layer's changes and size, shared for DIFF_TTL between viewers."""
    now = time.monotonic()
    with _diff_lock:
        hit = _diff_cache.get(container_id)
        if hit and now - hit[0] < DIFF_TTL:
            return hit[1]
    rt = get_runtime()
    try:
        c = rt.inspect(container_id)
        changes = rt.diff(container_id)
        size = rt.upper_size(container_id)
    except (TerrariumError, OSError) as e:
        raise LayerError(str(e)) from None
    counts = {"A": 0, "C": 0, "D": 0}
    for ch in changes:
        counts[ch.kind] += 1
    data = {
        "status": c.status, "t": time.time(),
        "upper": {"bytes": size.bytes, "files": size.files},
        "counts": counts, "total": len(changes), "truncated": len(changes) > MAX_CHANGES or changes.truncated,
        "changes": [{"path": ch.path, "kind": ch.kind, "dir": ch.is_dir, "size": ch.size,
                     "opaque": ch.opaque, "from": ch.from_layer, "whiteout": ch.whiteout,
                     "from_digest": _digest_of(ch.from_dir) if ch.from_dir else None}
                    for ch in changes[:MAX_CHANGES]],
    }
    with _diff_lock:
        _diff_cache[container_id] = (time.monotonic(), data)
        for k in [k for k, (t, _) in _diff_cache.items() if now - t > 60]:
            del _diff_cache[k]
    return data


def container_path_origin(*, container_id: str, path: str) -> dict:
    """Which layer shows `path` in the container's view, and the lower copies it hides."""
    rt = get_runtime()
    try:
        c = rt.inspect(container_id)
        origin = rt.layer_of(container_id, path)
    except (TerrariumError, OSError) as e:
        raise LayerError(str(e)) from None

    def describe(layer):
        if layer is None:
            return None
        if layer == "upper":
            return {"layer": "upper", "digest": None}
        return {"layer": layer, "digest": _digest_of(c.layers[layer])}
    return {"path": path, "shown": describe(origin.layer),
            "hidden": [describe(i) for i in origin.hidden]}


# ------------------------------------------------------------ images
def image_detail(*, name: str) -> dict:
    """An image's layer stack (top first), config, history, and disk use alone vs shared."""
    rt = get_runtime()
    try:
        image = rt.images.get(name)
    except (TerrariumError, OSError) as e:
        raise LayerError(str(e)) from None
    images = _image_users(rt)
    users = _layer_users(rt)
    history = list(image.history) + [""] * (len(image.layers) - len(image.history))
    stack, alone, shared = [], 0, 0
    for i, layer in enumerate(image.layers):
        others = [n for n in images.get(layer.digest, []) if n != image.name]
        if others:
            shared += layer.size
        else:
            alone += layer.size
        stack.append({"index": i, "layer": layer, "history": history[i] or layer.created_by,
                      "other_images": others, "containers": users.get(layer.digest, [])})
    stack.reverse()
    containers = [c for c in rt.list(all=True) if c.image == image.name]
    from runtime.images import reference
    return {"image": image, "stack": stack, "alone": alone, "shared": shared,
            "total": alone + shared, "containers": containers,
            "reference": reference.parse(image.name).full if image.name else ""}
