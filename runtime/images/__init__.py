"""Images: a content-addressed layer store, image records, importers.

    from runtime.images import ImageStore
    store = ImageStore("/var/lib/terrarium")
    store.ensure_builtin()                  # busybox and lab, built from /bin/busybox
    img = store.get("busybox")              # Image(layers=(Layer(path=".../fs"), ...))

    from runtime.images import importers
    importers.load(store, "busybox.tar")    # docker save archive or OCI layout
    importers.save(store, "lab", "lab.oci.tar")

Layers unpack through runtime.images.tarsafe, which refuses anything that
would write outside the layer.
"""
from .store import ImageStore, normalize_name

__all__ = ["ImageStore", "normalize_name"]
