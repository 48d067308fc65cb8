"""Terrarium's container runtime: the one front door the dashboard uses.

    from runtime import Runtime, Spec, Limits
    rt = Runtime()                      # root: $TERRARIUM_ROOT or /var/lib/terrarium
    c = rt.run(Spec(image="busybox", name="web", cmd=("sleep", "300"),
                    limits=Limits(memory=64 << 20)))
    rt.stop("web"); rt.remove("web")

A container is namespaces + cgroups + a union filesystem; each verb below is
a short walk over those three.  Every error is a runtime.errors.TerrariumError
whose message names what it is about.
"""
from .errors import (Conflict, ExecFailed, InvalidArgument, KernelError,
                     NotFound, TerrariumError)
from .model import Container, Image, ImageConfig, Layer, Limits, Spec

__all__ = [
    "Runtime", "Container", "Image", "ImageConfig", "Layer", "Limits", "Spec",
    "TerrariumError", "InvalidArgument", "NotFound", "Conflict", "KernelError",
    "ExecFailed",
]


def __getattr__(name):
    # Lazy so that `import runtime.shim` in the fork server stays small.
    if name == "Runtime":
        from .containers import Runtime
        return Runtime
    raise AttributeError(name)
