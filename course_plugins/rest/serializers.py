"""Serializers of the REST API: plugin rows, settings, inspector entries and audit events."""

from __future__ import annotations

import datetime
import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from course_plugins.forms import masked_settings, schema_of
from course_plugins.models import Plugin, PluginMode, SecurityAuditEvent
from course_plugins.site import control


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


class JSONBooleanField(serializers.BooleanField):
    """A boolean sent as JSON ``true`` or ``false``, nothing else.

    DRF's ``BooleanField`` also takes ``"yes"``, ``"on"``, ``"1"``, ``1`` and their opposites; for
    a switch that decides where a plugin's code runs or whether a function runs at all, a value
    that only looks like a boolean is a client's mistake to report, not to guess.
    """

    default_error_messages = {"invalid": "Must be true or false (a JSON boolean), not {input}."}

    def to_internal_value(self, data: Any) -> bool:
        if data is True or data is False:
            return data
        self.fail("invalid", input=json.dumps(data))
        raise AssertionError("unreachable")  # pragma: no cover - fail() raises


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
            "trusted",
            "missing",
            "hooks",
            "events",
            "permissions",
            "last_error",
            "activated_at",
            "mode",
            "shadow_since",
        ]
        read_only_fields = fields


class ShadowExampleSerializer(serializers.Serializer):
    """One run a plugin in shadow mode would have refused or changed."""

    hook = serializers.CharField()
    at = serializers.DateTimeField()
    key = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["veto", "changed"])
    changed = serializers.DictField(allow_null=True)
    message = serializers.CharField(allow_blank=True)


class ShadowSummarySerializer(serializers.Serializer):
    """What a plugin in shadow mode would have done since it entered that mode."""

    since = serializers.DateTimeField(allow_null=True)
    refused = serializers.IntegerField(help_text="Runs it would have refused (vetoed).")
    changed = serializers.IntegerField(help_text="Runs whose value it would have changed.")
    examples = ShadowExampleSerializer(many=True, help_text="The last ones, newest first.")


class PluginModeSerializer(serializers.Serializer):
    """``PATCH /api/plugins/<name>/``: the operator's choice of mode."""

    trusted = JSONBooleanField(
        help_text="true: the plugin's code runs in the site's own processes, with access to "
        "everything they can reach; false (the default): it runs isolated in a confined worker "
        "process and reaches only what its permissions grant."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields) if isinstance(
            self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError(
                {key: ["Not a field that can be changed here."] for key in sorted(unknown)}
            )
        return attrs


class PluginDetailSerializer(PluginSerializer):
    """A plugin with its manifest, traceback, settings schema and (masked) settings."""

    settings = serializers.SerializerMethodField()
    settings_schema = serializers.SerializerMethodField()
    shadow = serializers.SerializerMethodField(
        help_text="In shadow mode: runs it would have refused / changed since shadow_since, "
        "with the last examples; null when live."
    )

    class Meta(PluginSerializer.Meta):
        fields = [
            *PluginSerializer.Meta.fields,
            "path",
            "manifest",
            "last_traceback",
            "settings",
            "settings_schema",
            "shadow",
            "discovered_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_settings(self, obj: Plugin) -> dict[str, Any]:
        return masked_settings(obj)

    def get_settings_schema(self, obj: Plugin) -> dict[str, Any]:
        return schema_of(obj)

    @extend_schema_field(ShadowSummarySerializer(allow_null=True))
    def get_shadow(self, obj: Plugin) -> dict[str, Any] | None:
        if obj.mode != PluginMode.SHADOW:
            return None
        summary = control.shadow_summary(obj)
        examples = [{**e, "at": _utc(e["at"])} for e in summary["examples"]]
        data = {**summary, "since": obj.shadow_since, "examples": examples}
        return dict(ShadowSummarySerializer(data).data)


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
    key = serializers.CharField(
        required=False, help_text="Stable key (plugin:qualname), the same in every process."
    )
    enabled = serializers.BooleanField(
        required=False, help_text="False: switched off by an operator's override."
    )
    overridden = serializers.BooleanField(
        required=False, help_text="An operator's override applies (see plugin_priority)."
    )
    plugin_priority = serializers.IntegerField(
        required=False, allow_null=True, help_text="The priority the plugin itself asked for."
    )
    shadow = serializers.BooleanField(
        required=False, help_text="Its plugin runs in shadow mode: nothing it does is applied."
    )
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


class FunctionOverrideSerializer(serializers.Serializer):
    """``PATCH /api/hooks/<hook>/functions/<key>/``: switch one function off or on, move it, or
    restore the plugin's own choice with ``{"enabled": true, "priority": null}``."""

    enabled = JSONBooleanField(required=False)
    priority = serializers.IntegerField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Send enabled (true/false) and/or priority.")
        return attrs


class RunStepSerializer(serializers.Serializer):
    """What one function did in a recorded run."""

    key = serializers.CharField()
    plugin = serializers.CharField(allow_null=True)
    function = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["ok", "changed", "veto", "error", "skipped"])
    changed = serializers.DictField(
        allow_null=True,
        help_text="{field: [before, after]} of what a FILTER function changed (secrets masked).",
    )
    message = serializers.CharField(allow_blank=True)
    applied = serializers.BooleanField(help_text="False for a shadow plugin's step.")
    ms = serializers.FloatField()


class RunSerializer(serializers.Serializer):
    """One recorded run of a hook."""

    hook = serializers.CharField()
    at = serializers.SerializerMethodField()
    outcome = serializers.ChoiceField(choices=["ok", "veto", "error"])
    message = serializers.CharField(allow_blank=True)
    org = serializers.CharField(allow_null=True, help_text="Organization; null: site-wide.")
    ms = serializers.FloatField()
    process = serializers.CharField()
    steps = RunStepSerializer(many=True)

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_at(self, obj: dict[str, Any]) -> str:
        return _utc(obj["at"]).isoformat()


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
