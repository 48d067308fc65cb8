"""The three roles as Django groups.  Superusers are administrators too."""
VIEWER, OPERATOR, ADMINISTRATOR = "viewer", "operator", "administrator"

VIEW_PERMS = ["containers.view_container", "containers.view_image", "containers.view_layer",
              "containers.view_oomevent"]
OPERATE_PERMS = VIEW_PERMS + ["containers.operate_container"]
ADMIN_PERMS = OPERATE_PERMS + [
    "containers.view_auditentry",
    "auth.view_user", "auth.add_user", "auth.change_user", "auth.delete_user",
    "auth.view_group", "auth.change_group",
    "api.view_apitoken", "api.delete_apitoken",        # see and revoke anyone's API tokens
]
ROLE_PERMS = {VIEWER: VIEW_PERMS, OPERATOR: OPERATE_PERMS, ADMINISTRATOR: ADMIN_PERMS}

CAN_VIEW = "containers.view_container"
CAN_OPERATE = "containers.operate_container"
CAN_AUDIT = "containers.view_auditentry"


def ensure_role_groups(**kwargs):
    """post_migrate: create the groups and give them their permissions."""
    from django.contrib.auth.models import Group, Permission

    for role, perms in ROLE_PERMS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted += Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        group.permissions.set(wanted)


def assign_role(user, role: str) -> None:
    """Put user in exactly one role group; administrators may use the Django admin."""
    from django.contrib.auth.models import Group

    if role not in ROLE_PERMS:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLE_PERMS)}")
    ensure_role_groups()
    user.groups.remove(*Group.objects.filter(name__in=ROLE_PERMS))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == ADMINISTRATOR
    user.save(update_fields=["is_staff"])


def role_of(user) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser or user.has_perm(CAN_AUDIT):
        return ADMINISTRATOR
    if user.has_perm(CAN_OPERATE):
        return OPERATOR
    if user.has_perm(CAN_VIEW):
        return VIEWER
    return None
