"""REST API views: plugins (list, detail, activate/deactivate/reload, settings), hooks, events,
advice and the security audit log. Every state change goes through the site runtime
(``course_plugins.site.runtime``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import Http404, QueryDict
from django.urls import NoReverseMatch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from course_plugins.core import advice
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.settings_schema import mask_settings
from course_plugins.exceptions import CoursePluginsError, PluginSettingsError, reason
from course_plugins.forms import masked_settings, schema_of
from course_plugins.models import Plugin, PluginMode, PluginStatus, SecurityAuditEvent
from course_plugins.rest.parsers import JSONParser
from course_plugins.rest.permissions import (
    ACTIVATE_PLUGINS,
    CHANGE_OVERRIDES,
    CHANGE_SETTINGS,
    VIEW_AUDIT,
    IsPluginStaff,
)
from course_plugins.rest.schema import SETTINGS_BODY_SCHEMA, AutoSchema, documented
from course_plugins.rest.serializers import (
    ActionResultSerializer,
    AuditEventSerializer,
    CallStatsSerializer,
    FunctionOverrideSerializer,
    HookSerializer,
    PluginDetailSerializer,
    PluginModeSerializer,
    PluginSerializer,
    RunSerializer,
    SubscriptionSerializer,
)
from course_plugins.site import control, runtime

_DONE = {"activate": "activated", "deactivate": "deactivated", "reload": "reloaded"}


class APIDefaults:
    """What every view of this API uses whatever the project's REST_FRAMEWORK says: the bounded
    JSON parser (400/413 for bodies that would fail later) and the schema that documents it."""

    parser_classes = [JSONParser]
    schema = AutoSchema()


class PluginViewSet(APIDefaults, viewsets.ReadOnlyModelViewSet):
    """Plugins by name. Acting on one needs ``activate_plugin``; settings need
    ``change_plugin_settings``."""

    queryset = Plugin.objects.all()
    lookup_field = "name"
    # Any name reaches the view, which answers a JSON 404 for one that does not exist.
    lookup_value_regex = "[^/]+"
    permission_classes = [IsPluginStaff]
    schema = AutoSchema()  # whatever the project's DEFAULT_SCHEMA_CLASS (rest/schema.py)

    def write_permissions(self, request: Request) -> Sequence[str]:
        if self.action in _DONE or self.action == "partial_update":
            return (ACTIVATE_PLUGINS,)
        if self.action == "plugin_settings":
            return (CHANGE_SETTINGS,)
        return ()

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return PluginSerializer if self.action == "list" else PluginDetailSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        runtime.discover_if_new()  # a folder added while the server runs is listed at once
        return super().list(request, *args, **kwargs)

    def get_object(self) -> Any:
        try:
            return super().get_object()
        except Http404:
            if not runtime.discover_if_new():  # a folder added while the server runs
                raise
            return super().get_object()

    @extend_schema(
        request=PluginModeSerializer,
        responses={200: PluginDetailSerializer, 409: ActionResultSerializer},
        description="Mark the plugin trusted (its code runs in the site's own processes, with "
        "access to everything they can reach) or not (isolated in a confined worker, the "
        "default). An active plugin is reloaded in the new mode, in every process.",
    )
    def partial_update(self, request: Request, name: str | None = None) -> Response:
        """Change the plugin's mode: ``{"trusted": true}`` or ``{"trusted": false}``."""
        plugin = self.get_object()
        body = PluginModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            runtime.set_trusted(plugin.name, body.validated_data["trusted"], user=request.user)
        except CoursePluginsError as exc:
            plugin.refresh_from_db()
            return self._result(
                plugin,
                f"{plugin.name} could not be reloaded in its new mode: {reason(exc, plugin.name)}",
                status.HTTP_409_CONFLICT,
            )
        plugin.refresh_from_db()
        return Response(PluginDetailSerializer(plugin, context=self.get_serializer_context()).data)

    def _operate(self, request: Request, verb: str) -> Response:
        plugin = self.get_object()
        mode = PluginMode.LIVE
        if verb == "activate":
            data = request.data if isinstance(request.data, dict) else {}
            mode = data.get("mode", PluginMode.LIVE)
            if mode not in PluginMode.values:
                choices = " or ".join(repr(str(m)) for m in PluginMode.values)
                return Response(
                    {"mode": [f"{mode!r} is not a mode: send {choices}."]},
                    status=status.HTTP_400_BAD_REQUEST,
                )
        try:
            if verb == "activate":
                runtime.activate(plugin.name, user=request.user, mode=mode)
            else:
                getattr(runtime, verb)(plugin.name)
        except CoursePluginsError as exc:  # PluginNotFound here = its folder vanished: a conflict
            plugin.refresh_from_db()
            return self._result(
                plugin,
                f"{plugin.name} could not be {_DONE[verb]}: {reason(exc, plugin.name)}",
                status.HTTP_409_CONFLICT,
            )
        plugin.refresh_from_db()
        if verb != "deactivate" and plugin.status != PluginStatus.ACTIVE:
            why = plugin.last_error or plugin.get_status_display()
            return self._result(
                plugin,
                f"{plugin.name} could not be {_DONE[verb]}: {why}",
                status.HTTP_409_CONFLICT,
            )
        done = _DONE[verb] + (" in shadow mode" if plugin.mode == PluginMode.SHADOW else "")
        return self._result(plugin, f"{plugin.name} {plugin.version} {done}.", status.HTTP_200_OK)

    def _result(self, plugin: Plugin, detail: str, code: int) -> Response:
        body = {
            "detail": detail,
            "plugin": PluginDetailSerializer(plugin, context=self.get_serializer_context()).data,
        }
        return Response(body, status=code)

    @extend_schema(
        request=inline_serializer(
            "ActivateRequest",
            fields={"mode": serializers.ChoiceField(choices=PluginMode.choices, required=False)},
        ),
        responses={200: ActionResultSerializer, 409: ActionResultSerializer},
    )
    @action(detail=True, methods=["post"], schema=AutoSchema())
    def activate(self, request: Request, name: str | None = None) -> Response:
        """Activate the plugin, ``{"mode": "shadow"}`` to watch it without letting it act
        (default ``"live"``, which also takes a shadow plugin live). The admin's confirmation of
        permissions is the caller's job."""
        return self._operate(request, "activate")

    @extend_schema(
        request=None, responses={200: ActionResultSerializer, 409: ActionResultSerializer}
    )
    @action(detail=True, methods=["post"], schema=AutoSchema())
    def deactivate(self, request: Request, name: str | None = None) -> Response:
        """Deactivate the plugin; everything it registered is removed."""
        return self._operate(request, "deactivate")

    @extend_schema(
        request=None, responses={200: ActionResultSerializer, 409: ActionResultSerializer}
    )
    @action(detail=True, methods=["post"], schema=AutoSchema())
    def reload(self, request: Request, name: str | None = None) -> Response:
        """Re-read the plugin's code from disk, keeping its settings and storage."""
        return self._operate(request, "reload")

    @extend_schema(
        methods=["GET"],
        responses={200: SETTINGS_BODY_SCHEMA},
        description="The plugin's settings (defaults filled in); secrets are masked.",
    )
    @extend_schema(
        methods=["PATCH"],
        request={"application/json": SETTINGS_BODY_SCHEMA},
        responses={200: SETTINGS_BODY_SCHEMA, 409: {
            "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]
        }},
        description="Change some settings; each is validated against the plugin's settings_schema "
        "(400 with an error per field). A secret sent back masked is kept unchanged.",
    )
    # Not named ``settings``: APIView keeps DRF's api_settings under that attribute.
    @action(
        detail=True,
        methods=["get", "patch"],
        url_path="settings",
        url_name="settings",
        schema=AutoSchema(),
    )
    def plugin_settings(self, request: Request, name: str | None = None) -> Response:
        """Read or change the plugin's settings; changes take effect at once."""
        plugin = self.get_object()
        if request.method == "GET":
            return Response(masked_settings(plugin))
        if not isinstance(request.data, dict):
            return Response(
                {"non_field_errors": ["Send a JSON object of setting: value."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            # Partial: other keys keep their values, None reverts to the default, a secret sent
            # back as SECRET_MASK is kept; validated by core.settings_schema like the admin form,
            # a JSON body with JSON types (true, not "yes"), a form body as the admin's form.
            values = runtime.update_settings(
                plugin.name, dict(request.data), typed=not isinstance(request.data, QueryDict)
            )
        except PluginSettingsError as exc:
            return Response(
                {k: [v] for k, v in exc.errors.items()}, status=status.HTTP_400_BAD_REQUEST
            )
        except CoursePluginsError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(mask_settings(schema_of(plugin), values))


class HookListView(APIDefaults, APIView):
    """Every hook with its functions in call order (key, owner plugin, priority, enabled, call
    stats; an operator's override is marked, with the priority the plugin asked for)."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()

    @extend_schema(responses={200: HookSerializer(many=True)})
    @documented
    def get(self, request: Request) -> Response:
        return Response(HookSerializer(control.described_hooks(), many=True).data)


def _hook_or_404(name: str) -> Any:
    hook = HookManager.get_instance().get(name)
    if hook is None:
        raise NotFound(f"No hook named {name!r}.")
    return hook


class HookFunctionView(APIDefaults, APIView):
    """One function of a hook, by its key: switch it off or on, move it, or restore it."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()

    def write_permissions(self, request: Request) -> Sequence[str]:
        return (CHANGE_OVERRIDES,)

    def _row(self, hook: str, key: str) -> dict[str, Any]:
        for entry in control.described_hooks():
            if entry["name"] == hook:
                for row in entry["functions"]:
                    if row.get("key") == key:
                        return dict(row)
        raise NotFound(f"Hook {hook!r} has no function with key {key!r}.")

    @extend_schema(responses={200: CallStatsSerializer})
    @documented
    def get(self, request: Request, hook: str, key: str) -> Response:
        _hook_or_404(hook)
        return Response(CallStatsSerializer(self._row(hook, key)).data)

    @extend_schema(request=FunctionOverrideSerializer, responses={200: CallStatsSerializer})
    @documented
    def patch(self, request: Request, hook: str, key: str) -> Response:
        """``{"enabled": false}`` switches the function off in every process (within the sync
        window); ``{"priority": 5}`` moves it; ``{"enabled": true, "priority": null}`` restores
        the plugin's own choice. Stored in the database: kept across reloads and restarts."""
        _hook_or_404(hook)
        self._row(hook, key)
        body = FunctionOverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        changes: dict[str, Any] = dict(body.validated_data)
        control.save_override(
            key,
            enabled=changes.get("enabled"),
            priority=changes.get("priority", ...),
            hook=hook,
            user=request.user,
        )
        return Response(CallStatsSerializer(self._row(hook, key)).data)


class HookRunsView(APIDefaults, APIView):
    """The most recent runs of one hook in every process of the site, newest first: what each
    function did (outcome, fields changed with before/after values, veto message, applied)."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()

    @extend_schema(
        parameters=[OpenApiParameter("limit", int, description="At most this many (50).")],
        responses={200: RunSerializer(many=True)},
    )
    @documented
    def get(self, request: Request, hook: str) -> Response:
        _hook_or_404(hook)
        try:
            limit = min(max(int(request.query_params.get("limit", 50)), 1), 500)
        except ValueError:
            return Response(
                {"limit": ["Send a whole number."]}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response(RunSerializer(control.runs(hook, limit), many=True).data)


class EventListView(APIDefaults, APIView):
    """Every event pattern subscribed to, with its handlers (owner plugin, call stats)."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()

    @extend_schema(responses={200: SubscriptionSerializer(many=True)})
    @documented
    def get(self, request: Request) -> Response:
        return Response(SubscriptionSerializer(control.described_events(), many=True).data)


class AdviceListView(APIDefaults, APIView):
    """Every advised target with its pieces of advice, outermost first."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()

    @extend_schema(
        responses={
            200: inline_serializer(
                "AdvisedTarget",
                fields={
                    "target": serializers.CharField(),
                    "advice": CallStatsSerializer(many=True),
                },
                many=True,
            )
        }
    )
    @documented
    def get(self, request: Request) -> Response:
        data: list[dict[str, Any]] = [
            {"target": target, "advice": CallStatsSerializer(rows, many=True).data}
            for target, rows in sorted(advice.describe_all().items())
        ]
        return Response(data)


class AuditPagination(PageNumberPagination):
    """Pages of 50 (``?page_size=`` up to 500); a ``page_size`` that is not a number from 1 to
    500 is a 400, not silently the default."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise serializers.ValidationError(
                {"page_size": [f"must be a whole number from 1 to {self.max_page_size}"]}
            )
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer", "minimum": 1, "maximum": self.max_page_size
                }
            elif parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters


@extend_schema(
    parameters=[
        OpenApiParameter("plugin", str, description="Only events of this plugin (id or name)."),
        OpenApiParameter("kind", str, description="Only events of this kind."),
    ]
)
class AuditEventListView(APIDefaults, generics.ListAPIView):
    """The security audit log, newest first, paginated; filter with ``?plugin=`` and ``?kind=``."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()
    read_permissions = VIEW_AUDIT
    serializer_class = AuditEventSerializer
    pagination_class = AuditPagination

    def get_queryset(self) -> Any:
        queryset = SecurityAuditEvent.objects.all()
        plugin = self.request.query_params.get("plugin")
        if plugin:
            # A bare name matches every version's id ("name@1.0.0") as well as the name itself.
            queryset = queryset.filter(plugin=plugin) | queryset.filter(
                plugin__startswith=f"{plugin}@"
            )
        kind = self.request.query_params.get("kind")
        if kind:
            queryset = queryset.filter(kind=kind)
        return queryset


class ApiRootView(APIDefaults, APIView):
    """``GET /api/``: links to every part of the plugin API (what DRF's browsable API starts at)."""

    permission_classes = [IsPluginStaff]
    schema = AutoSchema()
    _LINKS = (
        ("plugins", "plugin-list"),
        ("hooks", "hooks"),
        ("events", "events"),
        ("advice", "advice"),
        ("audit", "audit"),
        ("schema", "schema"),
        ("docs", "docs"),
    )

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @documented
    def get(self, request: Request) -> Response:
        namespace = request.resolver_match.namespace if request.resolver_match else ""
        prefix = f"{namespace}:" if namespace else ""
        links: dict[str, str] = {}
        for key, name in self._LINKS:
            try:
                links[key] = reverse(prefix + name, request=request)
            except NoReverseMatch:  # a project that mounted only part of the API
                continue
        return Response(links)


def not_found(request: Any, exception: Exception | None = None) -> Any:
    """A JSON 404 like the API's own answers."""
    from django.http import JsonResponse

    return JsonResponse({"detail": "Not found."}, status=404)


def handler404(request: Any, exception: Exception | None = None) -> Any:
    """The project's 404 page, except under an API path (``/api/`` or ``.../api/...``): JSON.

    In a project's root URLconf: ``handler404 = "course_plugins.rest.views.handler404"``.
    """
    from django.views.defaults import page_not_found

    if "/api/" in request.path:
        return not_found(request, exception)
    return page_not_found(request, exception)
