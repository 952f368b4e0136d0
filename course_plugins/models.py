"""Database state of the plugin system: plugin rows, plugin storage, audit log, notifications.

A ``Plugin`` row keeps the admin's wishes (``enabled``, ``settings``), which discovery never
changes, and mirrors the plugin folder (version, manifest, hooks, events, permissions) and what
happened (``status``, ``last_error``, ``last_traceback``). Only the site runtime writes it, through
``Plugin.objects.upsert``, ``record`` and ``record_failure``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from course_plugins.core.manifest import PluginManifest, load_manifest
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState
from course_plugins.exceptions import PluginManifestError

_UNSET: Any = object()


class PluginStatus(models.TextChoices):
    """What the site made of a plugin row (a subset of ``core.plugin.PluginState``'s values)."""

    INACTIVE = PluginState.INACTIVE.value, _("Inactive")
    ACTIVE = PluginState.ACTIVE.value, _("Active")
    ERROR = PluginState.ERROR.value, _("Error")
    FAULTED = PluginState.FAULTED.value, _("Faulted")


def _metadata(plugin: LoadedPlugin, manifest: PluginManifest | None = _UNSET) -> dict[str, Any]:
    """Row fields that come from the plugin folder (never ``enabled`` nor ``settings``).

    ``manifest`` defaults to the one the plugin was loaded with.
    """
    manifest = plugin.manifest if manifest is _UNSET else manifest
    data: dict[str, Any] = {"path": str(plugin.path), "missing": False}
    if manifest is None:
        data["manifest"] = {}
        if plugin.version:
            data["version"] = plugin.version
    else:
        data.update(
            version=manifest.version,
            description=manifest.description,
            author=manifest.author,
            manifest=manifest.to_dict(),
            hooks=list(manifest.hooks),
            events=list(manifest.events),
            permissions=sorted(manifest.permissions),
        )
    return data


def _on_disk(plugin: LoadedPlugin) -> tuple[PluginManifest | None, str, str]:
    """``(manifest, error, traceback)`` of the plugin's folder as it is now.

    The loader keeps a loaded plugin's manifest until it is reloaded; the row shows what is on
    disk (an upgrade), so that every process reloads it (the version is in the fingerprint).
    """
    state = plugin.state
    if plugin.manifest is None or state in (PluginState.DISCOVERED, PluginState.ERROR):
        broken = state == PluginState.ERROR
        return plugin.manifest, plugin.error if broken else "", plugin.traceback if broken else ""
    try:
        return load_manifest(plugin.path), "", ""
    except PluginManifestError as exc:
        return None, str(exc), ""


class PluginQuerySet(models.QuerySet["Plugin"]):
    """``Plugin.objects``: rows by name, and discovery's upsert."""

    def upsert(self, plugin: LoadedPlugin, row: Plugin | None = None) -> Plugin:
        """Create (disabled, ``inactive``) or refresh the row of a discovered plugin; returns it.

        ``row`` is the plugin's existing row, if the caller has it. A bad ``plugin.yaml`` gives
        status ``error`` with the reason; a problem that is gone now resets the status.
        """
        manifest, error, tb = _on_disk(plugin)
        meta = _metadata(plugin, manifest)
        if row is None:
            row = self.model(
                name=plugin.name, enabled=False, status=PluginStatus.INACTIVE, **meta
            )
            row.version = row.version or ""
        else:
            changed = row.missing or meta.get("manifest") != row.manifest
            for key, value in meta.items():
                setattr(row, key, value)
            if changed and row.status == PluginStatus.ERROR and not error:
                # What was wrong (folder gone, bad plugin.yaml, old code) may be fixed now;
                # starting it tells (the runtime records the outcome).
                row.status, row.last_error, row.last_traceback = PluginStatus.INACTIVE, "", ""
        if error:
            row.status, row.last_error, row.last_traceback = PluginStatus.ERROR, error, tb
        row.save(using=self.db)
        return row


class PluginMode(models.TextChoices):
    LIVE = "live", _("Live")
    SHADOW = "shadow", _("Shadow (runs on copies; nothing applied)")


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
    trusted = models.BooleanField(
        default=False,
        help_text=_(
            "Run this plugin's code inside the site's own processes, with access to everything "
            "they can reach (settings, secrets, files, database, network). Leave it off unless "
            "you would accept this code in your own code base: an untrusted plugin runs isolated "
            "in a confined worker process, where it reaches only what its permissions grant."
        ),
    )
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
    mode = models.CharField(
        max_length=8,
        choices=PluginMode.choices,
        default=PluginMode.LIVE,
        help_text=_(
            "Shadow: the plugin's hook functions run on copies and what they would have changed "
            "or refused is only recorded; its event handlers and schedules do not run."
        ),
    )
    shadow_since = models.DateTimeField(
        null=True, blank=True, help_text=_("When the plugin last entered shadow mode.")
    )

    class Meta:
        ordering = ["name"]
        permissions = [
            ("activate_plugin", "Can activate, deactivate and reload plugins"),
            ("change_plugin_settings", "Can change plugin settings"),
        ]

    objects = PluginQuerySet.as_manager()

    def __str__(self) -> str:
        return self.plugin_id

    @property
    def plugin_id(self) -> str:
        """``name@version``, or the bare name while no version is known (a broken manifest)."""
        return f"{self.name}@{self.version}" if self.version else self.name

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """``(wanted active, version, activated_at, trusted)``: what a process acts on when it
        changes (a change of mode reloads the plugin in the other mode)."""
        wanted = self.enabled and self.status != PluginStatus.FAULTED and not self.missing
        return (wanted, self.version, self.activated_at, self.trusted)

    def missing_message(self, dirs: list[str]) -> str:
        """What the admin reads on the row of a plugin whose folder vanished from ``dirs``."""
        return (
            f"The folder of plugin {self.name!r} was not found in PLUGIN_DIRS ({', '.join(dirs)}) "
            "at the last discovery. Put the folder back (its settings and storage are kept), or "
            "delete this row to forget the plugin."
        )

    def record(self, plugin: LoadedPlugin | None = None, **fields: Any) -> None:
        """Save ``fields`` (plus the loaded ``plugin``'s metadata when given); only those columns
        are written, so concurrent writes of other columns are not undone."""
        if plugin is not None and plugin.manifest is not None:
            fields = {**_metadata(plugin), **fields}
        for key, value in fields.items():
            setattr(self, key, value)
        self.save(update_fields=[*fields, "updated_at"])

    def record_failure(self, plugin: LoadedPlugin | None, exc: BaseException) -> None:
        """Record status ``error`` with the plugin's (or the exception's) message and traceback."""
        error = (plugin.error if plugin is not None and plugin.error else "") or str(exc)
        tb = (plugin.traceback if plugin is not None else "") or getattr(exc, "traceback", "")
        self.record(plugin, status=PluginStatus.ERROR, last_error=error, last_traceback=tb or "")


class FunctionOverride(models.Model):
    """The operator's override of one registered function (hook function, event handler or
    advice), by its stable key ``plugin:qualname``: switched off and/or moved to another priority.

    A row with ``enabled`` true and no ``priority`` overrides nothing (the plugin's own choice
    applies); it is kept so that the admin history of the key stays reachable."""

    key = models.CharField(max_length=500, unique=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(
        null=True, blank=True, help_text=_("Empty: the priority the plugin asked for.")
    )
    hook = models.CharField(
        max_length=200, blank=True, help_text=_("Where the override was made (for reading).")
    )
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    @property
    def overrides(self) -> bool:
        """Whether this row changes anything."""
        return not self.enabled or self.priority is not None


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
    # The platform event this row was recorded for (``Event.id``), when the caller said: one row
    # per plugin and event id, so an event delivered twice (a retry) is recorded once.
    event_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["plugin", "event_id"],
                condition=models.Q(event_id__isnull=False),
                name="course_plugins_analytics_event_once",
            )
        ]

    def __str__(self) -> str:
        return self.name


class OutboxMessage(models.Model):
    """A background delivery not yet done (the transactional outbox).

    Written in the transaction of the change that caused the event, so it exists exactly when the
    change was committed; the relay sends it to the broker after the commit, and the worker that
    delivers the event deletes it. While the broker is down it stays, and is retried with a
    backoff; once sent, it is sent again if no worker delivered it within its lease (the broker
    lost the message). A one-shot's row is deleted once the broker took it.
    One row per event and plugin: ``keys`` are that plugin's background subscriptions.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event_id = models.CharField(max_length=64, db_index=True)
    plugin = models.CharField(max_length=100)
    keys = models.JSONField(default=list)
    event = models.JSONField(help_text=_("The event as Event.to_dict() gives it."))
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.event.get('name', '?')} -> {self.plugin}"


class EventDelivery(models.Model):
    """One background subscription (``key``) that handled one event (``event_id``).

    Written in the transaction around the handler: a redelivered message finds it and does not
    run the handler again. Rows older than ``DELIVERY_RETENTION`` are deleted by the relay.
    """

    event_id = models.CharField(max_length=64)
    key = models.CharField(max_length=300)
    delivered_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "key"], name="course_plugins_delivery_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.key}"
