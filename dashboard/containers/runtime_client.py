"""The dashboard's one handle on the runtime.  Only services.py and
selectors.py use it, so the runtime can later move behind a local socket."""
import threading

from runtime import Runtime

_lock = threading.Lock()
_runtime = None


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime()     # $TERRARIUM_ROOT, $TERRARIUM_CGROUP_PARENT
        return _runtime


def reset_runtime() -> None:
    """Forget the handle (tests change the root between sessions)."""
    global _runtime
    with _lock:
        _runtime = None
