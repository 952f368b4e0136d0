"""Serializers of the REST API: plugin rows, settings, inspector entries and audit events."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from course_plugins.forms import masked_settings, schema_of
from course_plugins.models import Plugin, SecurityAuditEvent


class PluginSerializer(serializers.ModelSerializer):
    """A plugin as listed: identity, state and what it uses."""

    id = serializers.CharField(source="plugin_id", read_only=True)
    url = serializers.HyperlinkedIdentityField(
        view_name="course_plugins_api:plugin-detail", lookup_field="name"
    )

    class Meta:
        model = Plugin
        fields = [
            "id",
            "url",
            "name",
            "version",
            "description",
            "author",
            "status",
            "enabled",
            "missing",
            "hooks",
            "events",
            "permissions",
            "last_error",
            "activated_at",
        ]
        read_only_fields = fields


class PluginDetailSerializer(PluginSerializer):
    """A plugin with its manifest, traceback, settings schema and (masked) settings."""

    settings = serializers.SerializerMethodField()
    settings_schema = serializers.SerializerMethodField()

    class Meta(PluginSerializer.Meta):
        fields = [
            *PluginSerializer.Meta.fields,
            "path",
            "manifest",
            "last_traceback",
            "settings",
            "settings_schema",
            "discovered_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_settings(self, obj: Plugin) -> dict[str, Any]:
        return masked_settings(obj)

    def get_settings_schema(self, obj: Plugin) -> dict[str, Any]:
        return schema_of(obj)


class CallStatsSerializer(serializers.Serializer):
    """One registered function (hook function, event handler or advice) with its call stats."""

    name = serializers.CharField()
    plugin = serializers.CharField(
        allow_null=True, help_text="Owner plugin id; null = platform code."
    )
    priority = serializers.IntegerField(required=False)
    how = serializers.CharField(required=False, help_text="Advice combinator (before, around...).")
    background = serializers.BooleanField(required=False)
    timeout = serializers.FloatField(
        required=False, allow_null=True, help_text="Time budget in seconds (null: the default)."
    )
    key = serializers.CharField(required=False, help_text="Subscription key (event handlers).")
    calls = serializers.IntegerField(required=False)
    errors = serializers.IntegerField(required=False)
    timeouts = serializers.IntegerField(required=False)
    mean_ms = serializers.FloatField(required=False, allow_null=True)
    p95_ms = serializers.FloatField(required=False, allow_null=True)


class HookSerializer(serializers.Serializer):
    """A hook and its functions in call order."""

    name = serializers.CharField()
    type = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    functions = CallStatsSerializer(many=True)


class SubscriptionSerializer(serializers.Serializer):
    """An event pattern and its handlers in the order they are started."""

    pattern = serializers.CharField()
    handlers = CallStatsSerializer(many=True)


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = SecurityAuditEvent
        fields = ["id", "created_at", "plugin", "kind", "detail"]
        read_only_fields = fields


class ActionResultSerializer(serializers.Serializer):
    """The answer to activate/deactivate/reload: what happened, and the plugin now."""

    detail = serializers.CharField()
    plugin = PluginDetailSerializer()
