"""Default users backend of the Platform API: ``django.contrib.auth`` users and permissions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from course_plugins.api.current_user import get_current_user
from course_plugins.exceptions import PlatformAPIError


def user_to_dict(user: Any) -> dict[str, Any]:
    """Return the plain data a plugin sees of a user (never the model instance)."""
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": getattr(user, "email", "") or "",
        "first_name": getattr(user, "first_name", "") or "",
        "last_name": getattr(user, "last_name", "") or "",
        "is_active": bool(getattr(user, "is_active", True)),
        "is_staff": bool(getattr(user, "is_staff", False)),
        "is_superuser": bool(getattr(user, "is_superuser", False)),
    }


class DjangoUsersBackend:
    """Users from ``get_user_model()``; the current user from ``CurrentUserMiddleware``.

    Every method is synchronous (the Platform API runs it off the event loop for ``await``).
    """

    def get_current(self, *, plugin: str | None = None) -> dict[str, Any] | None:
        """Return the current request's user as a dict; ``None`` when anonymous or outside one."""
        user = get_current_user()
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return user_to_dict(user)

    def get(self, user_id: Any, *, plugin: str | None = None) -> dict[str, Any] | None:
        """Return the user with primary key ``user_id`` as a dict, or ``None``."""
        user = self._user(user_id, plugin)
        return user_to_dict(user) if user is not None else None

    def has_permission(self, user_id: Any, permission: str, *, plugin: str | None = None) -> bool:
        """Return whether the user has ``permission``.

        ``"app_label.codename"`` is checked exactly (``user.has_perm``); a bare codename such as
        ``"add_course"`` matches that codename in any app. Inactive or unknown users have none;
        superusers have all. ``user_id`` may also be a user dict from ``get_current()``.
        """
        if not isinstance(permission, str) or not permission:
            raise PlatformAPIError(
                plugin, f"has_permission: permission must be a non-empty string, got {permission!r}"
            )
        user = self._user(user_id, plugin)
        if user is None or not user.is_active:
            return False
        if "." in permission:
            return bool(user.has_perm(permission))
        if user.is_superuser:
            return True
        return any(p.split(".", 1)[-1] == permission for p in user.get_all_permissions())

    def _user(self, user_id: Any, plugin: str | None) -> Any:
        from django.contrib.auth import get_user_model
        from django.core.exceptions import ValidationError

        if isinstance(user_id, Mapping):
            user_id = user_id.get("id")
        if user_id is None or isinstance(user_id, bool):
            raise PlatformAPIError(plugin, f"a user id is needed, got {user_id!r}")
        model = get_user_model()
        try:
            return model._default_manager.filter(pk=user_id).first()
        except (ValueError, TypeError, ValidationError):
            raise PlatformAPIError(plugin, f"{user_id!r} is not a valid user id") from None
