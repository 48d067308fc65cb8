"""The token page: each person makes and revokes their own API tokens."""
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.containers.roles import CAN_VIEW

from . import tokens

can_view = permission_required(CAN_VIEW, raise_exception=True)


@never_cache                  # the page that shows a new token must not be kept anywhere
@require_http_methods(["GET", "POST"])
@can_view
def token_list(request):
    new_token = error = None
    name = ""
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            row, new_token = tokens.token_create(user=request.user, name=name)
        except tokens.TokenError as e:
            error = str(e)
        else:
            name = ""
            messages.success(request, f"Token {row.name} made. Copy it now: it is not shown again.")
    return render(request, "api/tokens.html", {
        "tokens": tokens.token_list(user=request.user), "new_token": new_token, "error": error,
        "name": name}, status=400 if error else 200)


@require_POST
@can_view
def token_revoke(request, token_id: int):
    row = tokens.token_revoke(user=request.user, token_id=token_id)
    if row is None:
        messages.error(request, "No such token (already revoked?).")
    else:
        messages.success(request, f"Token {row.name} ({row.prefix}…) revoked: it no longer works.")
    return redirect("api_tokens:tokens")
