"""The dashboard's one handle on the runtime.  Only services.py and
selectors.py use it.

With TERRARIUM_AGENT=1 (the setting, else the environment; `auto`: when
this process is not root) it is a runtime.agent_client.AgentRuntime: the
control and inventory verbs go to the root agent over its local socket, and
get_runtime(user=...) tags each request with the person's username for the
agent's audit log.  Otherwise it is the in-process runtime.Runtime."""
import threading

from runtime import Runtime

_lock = threading.Lock()
_runtime = None


def get_runtime(user=None) -> Runtime:
    """The runtime handle; through the agent, requests carry `user`'s username."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _make()
        rt = _runtime
    if user is not None and hasattr(rt, "as_user"):
        return rt.as_user(getattr(user, "username", "") or "dashboard")
    return rt


def _make():
    from django.conf import settings

    from runtime.agent_client import AgentRuntime, wanted
    if wanted(getattr(settings, "TERRARIUM_AGENT", None)):
        return AgentRuntime(user="dashboard")   # $TERRARIUM_ROOT, $TERRARIUM_AGENT_SOCKET
    return Runtime()     # $TERRARIUM_ROOT, $TERRARIUM_CGROUP_PARENT


def reset_runtime() -> None:
    """Forget the handle (tests change the root between sessions)."""
    global _runtime
    with _lock:
        old, _runtime = _runtime, None
    if hasattr(old, "close"):
        old.close()
