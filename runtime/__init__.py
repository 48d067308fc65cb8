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
__all__ = [
    "Runtime", "Container", "Image", "ImageConfig", "Layer", "Limits", "LogConfig", "Spec", "Healthcheck",
    "TerrariumError", "InvalidArgument", "NotFound", "Conflict", "KernelError",
    "ExecFailed", "Sample",
]

_HOME = {"Runtime": "containers",
         "Container": "model", "Image": "model", "ImageConfig": "model", "Layer": "model",
         "Limits": "model", "LogConfig": "model", "Spec": "model", "Healthcheck": "model",
         "TerrariumError": "errors", "InvalidArgument": "errors", "NotFound": "errors",
         "Conflict": "errors", "KernelError": "errors", "ExecFailed": "errors", "Forbidden": "errors",
         "Sample": "cgroups.record"}


def __getattr__(name: str) -> object:
    # Lazy, so that `import runtime.forkserver` in the fork server and the
    # `terrarium` command (runtime.client) load only what they use.
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    module = __import__(f"{__name__}.{home}", fromlist=[name])
    return getattr(module, name)
