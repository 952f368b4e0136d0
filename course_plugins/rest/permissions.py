"""Who may use the REST API: active staff users holding the app's model permissions.

Reading needs one of the view's ``read_permissions`` (``view_plugin`` or ``change_plugin`` by
default); anything else needs every permission the view names for that request
(``activate_plugin`` to activate, deactivate or reload; ``change_plugin_settings`` for settings;
``change_functionoverride`` to switch off or move one function).
Superusers hold them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

VIEW_PLUGINS: tuple[str, ...] = ("course_plugins.view_plugin", "course_plugins.change_plugin")
ACTIVATE_PLUGINS = "course_plugins.activate_plugin"
CHANGE_SETTINGS = "course_plugins.change_plugin_settings"
CHANGE_OVERRIDES = "course_plugins.change_functionoverride"
VIEW_AUDIT: tuple[str, ...] = ("course_plugins.view_securityauditevent",)


class IsPluginStaff(BasePermission):
    """Grant access to active staff with the permissions the view asks for.

    A view sets ``read_permissions`` (any one suffices for GET/HEAD/OPTIONS) and implements
    ``write_permissions(request) -> Sequence[str]`` (all are needed for anything else; an empty
    sequence refuses, so a view that forgets to say is closed rather than open).
    """

    message = "Only staff users with the course_plugins permissions may use this endpoint."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        if request.method in SAFE_METHODS:
            read: Sequence[str] = getattr(view, "read_permissions", VIEW_PLUGINS)
            return any(user.has_perm(perm) for perm in read)
        write_permissions = getattr(view, "write_permissions", None)
        needed: Sequence[str] = write_permissions(request) if write_permissions else ()
        return bool(needed) and all(user.has_perm(perm) for perm in needed)
