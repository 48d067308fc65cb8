import time

from .roles import CAN_AUDIT, CAN_OPERATE, role_of


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"can_operate": user.has_perm(CAN_OPERATE), "can_audit": user.has_perm(CAN_AUDIT),
            "role": role_of(user), "server_now": f"{time.time():.3f}"}
