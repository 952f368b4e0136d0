"""Admin pages of the records course_plugins writes (security audit, plugin storage,
notifications, analytics events): visible to staff with the view permission, never edited here.

``ReadOnlyAdmin`` is also the base of other pages that show rows the system keeps
(``organization_admin.OrganizationPluginAdmin``). ``admin.py`` registers the pages on its site
with ``register_records``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from course_plugins.models import AnalyticsEvent, Notification, PluginStorage, SecurityAuditEvent

__all__ = ["ReadOnlyAdmin", "register_records"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: visible to staff with view permission, never edited here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SecurityAuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "plugin", "short_detail")
    list_filter = ("kind", "plugin")
    search_fields = ("plugin", "detail")
    date_hierarchy = "created_at"

    @admin.display(description=gettext_lazy("Detail"))
    def short_detail(self, obj: SecurityAuditEvent) -> str:
        return obj.detail if len(obj.detail) <= 120 else obj.detail[:119] + "…"


class PluginStorageAdmin(ReadOnlyAdmin):
    list_display = ("plugin", "organization", "key", "updated_at")
    list_filter = ("plugin", "organization")
    search_fields = ("plugin", "organization", "key")


class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "title", "plugin", "read")
    list_filter = ("read", "plugin")
    search_fields = ("title", "message", "user__username")
    date_hierarchy = "created_at"


class AnalyticsEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "name", "plugin", "user_id")
    list_filter = ("name", "plugin")
    search_fields = ("name", "user_id")
    date_hierarchy = "created_at"


def register_records(site: admin.AdminSite) -> None:
    """Register the record pages on ``site``."""
    site.register(SecurityAuditEvent, SecurityAuditEventAdmin)
    site.register(PluginStorage, PluginStorageAdmin)
    site.register(Notification, NotificationAdmin)
    site.register(AnalyticsEvent, AnalyticsEventAdmin)
