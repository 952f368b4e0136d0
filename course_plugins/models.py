"""Database state of the plugin system: plugin rows, plugin storage, audit log, notifications."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class PluginStatus(models.TextChoices):
    INACTIVE = "inactive", _("Inactive")
    ACTIVE = "active", _("Active")
    ERROR = "error", _("Error")
    FAULTED = "faulted", _("Faulted")


class Plugin(models.Model):
    """One discovered plugin (by name). ``enabled`` is the admin's choice and is never changed by
    discovery or upgrade; ``status`` is what actually happened when the site tried to honour it."""

    name = models.SlugField(max_length=100, unique=True)
    version = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    author = models.CharField(max_length=200, blank=True)
    path = models.CharField(
        max_length=1000, blank=True, help_text=_("Folder the plugin was found in.")
    )
    manifest = models.JSONField(default=dict, blank=True, help_text=_("plugin.yaml as last read."))
    hooks = models.JSONField(default=list, blank=True)
    events = models.JSONField(default=list, blank=True)
    permissions = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=False, help_text=_("The admin wants this plugin active."))
    status = models.CharField(
        max_length=16, choices=PluginStatus.choices, default=PluginStatus.INACTIVE
    )
    missing = models.BooleanField(
        default=False, help_text=_("The plugin's folder was not found at the last discovery.")
    )
    last_error = models.TextField(blank=True)
    last_traceback = models.TextField(blank=True)
    settings = models.JSONField(default=dict, blank=True)
    discovered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("activate_plugin", "Can activate, deactivate and reload plugins"),
            ("change_plugin_settings", "Can change plugin settings"),
        ]

    def __str__(self) -> str:
        return self.plugin_id

    @property
    def plugin_id(self) -> str:
        """``name@version``, or the bare name while no version is known (a broken manifest)."""
        return f"{self.name}@{self.version}" if self.version else self.name


class PluginStorage(models.Model):
    """One key of a plugin's key-value store (JSON values), namespaced by plugin name so that it
    survives reloads and upgrades, and by organization (``""``: site-wide)."""

    plugin = models.CharField(max_length=100, db_index=True)
    organization = models.CharField(max_length=64, blank=True, default="")
    key = models.CharField(max_length=255)
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["plugin", "organization", "key"], name="course_plugins_storage_org_key"
            )
        ]
        ordering = ["plugin", "organization", "key"]

    def __str__(self) -> str:
        where = f"@{self.organization}" if self.organization else ""
        return f"{self.plugin}{where}:{self.key}"


class OrganizationPlugin(models.Model):
    """What one organization changes about one plugin: its own activation and settings.

    ``enabled`` ``None`` follows the site (active where the site activated it); ``True`` opts
    the organization in (also when the site has not activated the plugin), ``False`` opts it out.
    ``settings`` override the site's key by key for this organization only. ``organization`` is
    the primary key of a ``COURSE_PLUGINS["ORGANIZATION_MODEL"]`` row, as text.
    """

    organization = models.CharField(max_length=64, db_index=True)
    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="organizations")
    enabled = models.BooleanField(
        null=True,
        blank=True,
        help_text=_("Empty: as the site. Yes: active here even if not site-wide. No: off here."),
    )
    settings = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "plugin"], name="course_plugins_org_plugin_once"
            )
        ]
        ordering = ["organization", "plugin__name"]
        permissions = [
            (
                "manage_organization_plugins",
                "Can activate and configure plugins of the organizations they administer",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plugin.name} in organization {self.organization}"


class AuditKind(models.TextChoices):
    REJECTED = "rejected", _("Code rejected by analysis")
    BLOCKED = "blocked", _("Blocked operation")
    TIMEOUT = "timeout", _("Timeout")
    MEMORY = "memory", _("Memory limit")
    ABNORMAL_EXIT = "abnormal_exit", _("Abnormal exit")
    PERMISSION = "permission", _("Permission refused")
    QUARANTINE = "quarantine", _("Plugin quarantined")


class SecurityAuditEvent(models.Model):
    """A security event (read-only in the admin)."""

    plugin = models.CharField(max_length=200, blank=True, db_index=True)
    kind = models.CharField(max_length=32, choices=AuditKind.choices, db_index=True)
    detail = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind} {self.plugin}"


class Notification(models.Model):
    """An in-site notification, written by the default notify backend."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="plugin_notifications"
    )
    title = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    plugin = models.CharField(max_length=200, blank=True)
    read = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class AnalyticsEvent(models.Model):
    """One analytics event, written by the default analytics backend."""

    name = models.CharField(max_length=200, db_index=True)
    properties = models.JSONField(default=dict, blank=True)
    plugin = models.CharField(max_length=200, blank=True, db_index=True)
    user_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name
