"""Django admin of course_plugins: plugins (actions, settings form, hook inspector) and the logs.

Who may do what: viewing needs ``view_plugin`` (or ``change_plugin``); activating, deactivating
and reloading need ``course_plugins.activate_plugin``; editing settings needs
``course_plugins.change_plugin_settings``. Everything discovery writes is read-only here; the
plugin system itself (``course_plugins.site.runtime``) is the only writer of plugin rows.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from course_plugins.admin_messages import error_message
from course_plugins.conf import trusted_by_setting
from course_plugins.core.standard import PERMISSIONS
from course_plugins.exceptions import CoursePluginsError, PluginSettingsError, reason
from course_plugins.forms import PluginSettingsForm, masked_settings, schema_of
from course_plugins.inspector import InspectorViews, changes_text, when
from course_plugins.models import (
    FunctionOverride,
    OrganizationPlugin,
    Plugin,
    PluginMode,
    PluginStatus,
)
from course_plugins.organization_admin import OrganizationPluginAdmin
from course_plugins.record_admin import register_records
from course_plugins.site import control, runtime

_PERMISSION_TEXT = {p.name: p.description for p in PERMISSIONS}
_DONE = {
    "activate": gettext_lazy("activated"),
    "deactivate": gettext_lazy("deactivated"),
    "reload": gettext_lazy("reloaded"),
}


def permission_rows(plugin: Plugin) -> list[tuple[str, str]]:
    """Return ``(permission, what it allows)`` for each Platform API permission asked for."""
    asked = plugin.permissions or (plugin.manifest or {}).get("permissions") or []
    return [(name, _PERMISSION_TEXT.get(name, _("Unknown permission."))) for name in asked]


def run_operation(
    request: HttpRequest, plugin: Plugin, verb: str, mode: str = PluginMode.LIVE
) -> bool:
    """Call ``runtime.<verb>`` for one plugin and tell the operator what happened.

    ``mode`` (activation only): ``live`` or ``shadow``. Returns True when the plugin ended up in
    the wanted state. Errors of the plugin system become error messages naming the plugin and
    the reason; they are never raised to the admin.
    """
    try:
        if verb == "activate":
            runtime.activate(plugin.name, user=request.user, mode=mode)
        else:
            getattr(runtime, verb)(plugin.name)
    except CoursePluginsError as exc:
        messages.error(request, _failed(plugin.name, verb, exc))
        return False
    plugin.refresh_from_db()
    if verb != "deactivate" and plugin.status != PluginStatus.ACTIVE:
        reason = plugin.last_error or plugin.get_status_display()
        messages.error(request, _failed(plugin.name, verb, reason))
        return False
    if verb == "activate" and plugin.mode == PluginMode.SHADOW:
        done = _(
            "Plugin %(name)s %(version)s activated in shadow mode: its hook functions run on "
            "copies and what they would change or refuse is only recorded."
        )
    else:
        done = _("Plugin %(name)s %(version)s %(done)s.")
    messages.success(
        request, done % {"name": plugin.name, "version": plugin.version, "done": _DONE[verb]}
    )
    return True


def _failed(name: str, verb: str, error: object) -> str:
    head = _("Plugin %(name)s could not be %(done)s") % {"name": name, "done": _DONE[verb]}
    return error_message(head, reason(error, name))  # the head names the plugin


def _shown(value: Any) -> str:
    """A setting's value as an operator reads it (not Python's repr)."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def _breakable(name: str) -> str:
    """``name`` escaped, with a line-break opportunity after each ``-``, ``.`` and ``_``.

    Hook names and event patterns are long; a narrow column (1280 px with the admin's sidebar
    open) wraps them between their parts instead of cutting the row's buttons off.
    """
    parts = re.split(r"(?<=[-._])", name)
    return format_html_join(mark_safe("<wbr>"), "{}", ((part,) for part in parts))


def _names(names: list[str] | None) -> str:
    """Hook names or event patterns, one per line."""
    if not names:
        return "—"
    return format_html_join(
        mark_safe("<br>"), '<code class="cp-name">{}</code>', ((_breakable(n),) for n in names)
    )


def _log(modeladmin: PluginAdmin, request: HttpRequest, plugin: Plugin, text: str) -> None:
    modeladmin.log_change(request, plugin, [{"changed": {"fields": [text]}}])


@admin.action(description=gettext_lazy("Activate selected plugins"), permissions=["activate"])
def activate(
    modeladmin: PluginAdmin, request: HttpRequest, queryset: QuerySet[Plugin]
) -> HttpResponse | None:
    """Show the permissions the plugins ask for; activate them once confirmed (``post=yes``)."""
    if request.POST.get("post") != "yes":
        return modeladmin.confirm_activation(request, list(queryset), bulk=True)
    for plugin in queryset:
        if run_operation(request, plugin, "activate"):
            _log(modeladmin, request, plugin, "activated")
    return None


@admin.action(
    description=gettext_lazy("Activate selected plugins in shadow mode (watch, do not act)"),
    permissions=["activate"],
)
def activate_shadow(
    modeladmin: PluginAdmin, request: HttpRequest, queryset: QuerySet[Plugin]
) -> HttpResponse | None:
    """Like ``activate``, in shadow mode: the plugin's decisions are recorded, never applied."""
    if request.POST.get("post") != "yes":
        return modeladmin.confirm_activation(
            request, list(queryset), bulk=True, mode=PluginMode.SHADOW
        )
    for plugin in queryset:
        if run_operation(request, plugin, "activate", PluginMode.SHADOW):
            _log(modeladmin, request, plugin, "activated in shadow mode")
    return None


@admin.action(description=gettext_lazy("Switch selected plugins to live"), permissions=["activate"])
def go_live(modeladmin: PluginAdmin, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
    """Let plugins in shadow mode act: their changes and vetoes are applied from now on."""
    for plugin in queryset:
        if run_operation(request, plugin, "activate", PluginMode.LIVE):
            _log(modeladmin, request, plugin, "switched to live")


@admin.action(description=gettext_lazy("Deactivate selected plugins"), permissions=["activate"])
def deactivate(modeladmin: PluginAdmin, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
    """Deactivate the selected plugins (everything they registered is removed)."""
    for plugin in queryset:
        if run_operation(request, plugin, "deactivate"):
            _log(modeladmin, request, plugin, "deactivated")


@admin.action(description=gettext_lazy("Reload selected plugins"), permissions=["activate"])
def reload(modeladmin: PluginAdmin, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
    """Re-read the selected plugins' code from disk, keeping their settings and storage."""
    for plugin in queryset:
        if run_operation(request, plugin, "reload"):
            _log(modeladmin, request, plugin, "reloaded")


@admin.register(Plugin)
class PluginAdmin(InspectorViews, admin.ModelAdmin):
    list_display = ("name", "version", "author", "status_badge", "hook_list", "event_list")
    list_filter = ("status", "enabled", "mode", "missing")
    search_fields = ("name", "description", "author")
    actions = [activate, deactivate, reload, activate_shadow, go_live]
    change_list_template = "admin/course_plugins/plugin/change_list.html"
    change_form_template = "admin/course_plugins/plugin/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "version",
                    "status_badge",
                    "wanted",
                    "mode",
                    "isolation",
                    "description",
                    "author",
                )
            },
        ),
        (gettext_lazy("Shadow mode"), {"fields": ("shadow_report",), "classes": ("cp-shadow",)}),
        (
            gettext_lazy("Last error"),
            {"fields": ("last_error", "traceback"), "classes": ("cp-error",)},
        ),
        (
            gettext_lazy("What it uses"),
            {"fields": ("hook_list", "failure_policy", "event_list", "permission_list")},
        ),
        (gettext_lazy("Settings"), {"fields": ("settings_display",)}),
        (
            gettext_lazy("Discovery"),
            {
                "fields": (
                    "path",
                    "missing",
                    "manifest",
                    "discovered_at",
                    "updated_at",
                    "activated_at",
                ),
                "classes": ("collapse",),
            },
        ),
    )

    class Media:
        css = {"all": ("course_plugins/admin.css",)}

    # --- permissions -------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from discovery

    def has_delete_permission(self, request: HttpRequest, obj: Plugin | None = None) -> bool:
        # Only a plugin whose folder is gone may be forgotten; discovery would bring others back.
        return obj is not None and obj.missing and super().has_delete_permission(request, obj)

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("course_plugins.activate_plugin")

    def has_change_settings_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("course_plugins.change_plugin_settings")

    def save_model(self, request: HttpRequest, obj: Plugin, form: Any, change: bool) -> None:
        """Never write the row from the change form: only the runtime writes plugin rows (a stale
        copy saved here would overwrite a status the runtime just recorded)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Plugin | None = None) -> list[str]:
        names = [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]
        return names

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "GET":
            runtime.discover_if_new()  # a folder added while the server runs is listed at once
        return super().changelist_view(request, extra_context)

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        columns: list[Any] = list(super().get_list_display(request))
        can_toggle = self.has_activate_permission(request)
        can_configure = self.has_change_settings_permission(request)
        if can_toggle or can_configure:
            columns.append(self._row_buttons(can_toggle, can_configure))
        return columns

    # --- columns and read-only fields --------------------------------------------------------

    @admin.display(description=gettext_lazy("Status"), ordering="status")
    def status_badge(self, obj: Plugin) -> str:
        label = obj.get_status_display()
        note = _(" (folder missing)") if obj.missing else ""
        shadow = ""
        if obj.mode == PluginMode.SHADOW:
            shadow = format_html(' <span class="cp-badge cp-badge--shadow">{}</span>', _("shadow"))
        return format_html(
            '<span class="cp-badge cp-badge--{}">{}</span>{}{}',
            obj.status,
            label,
            shadow,
            note,
        )

    @admin.display(description=gettext_lazy("Enabled"))
    def wanted(self, obj: Plugin) -> str:
        # Words, not Django's green/red boolean icon: "no" is a choice here, not an error.
        if obj.enabled:
            return _("Yes: an admin activated it, so every process runs it.")
        return _("No: it runs nowhere until an admin activates it.")

    @admin.display(description=gettext_lazy("What it would have done"))
    def shadow_report(self, obj: Plugin) -> str:
        if obj.mode != PluginMode.SHADOW:
            return _("Live: what its hook functions decide is applied.")
        summary = control.shadow_summary(obj)
        since = obj.shadow_since
        head = format_html(
            '<p class="cp-shadow-counts">{}</p>',
            _(
                "Since it entered shadow mode (%(since)s) it would have refused %(refused)s and "
                "changed %(changed)s saves (hook runs); nothing of it was applied."
            )
            % {
                "since": since.strftime("%Y-%m-%d %H:%M:%S UTC") if since else "—",
                "refused": summary["refused"],
                "changed": summary["changed"],
            },
        )
        if not summary["examples"]:
            return head
        rows = format_html_join(
            "",
            "<li><code>{}</code> {}: <strong>{}</strong> {}</li>",
            (
                (
                    e["hook"],
                    when(e["at"]),
                    _("would refuse") if e["outcome"] == "veto" else _("would change"),
                    e["message"] or changes_text(e["changed"]),
                )
                for e in summary["examples"]
            ),
        )
        return format_html('{}<ul class="cp-shadow-examples">{}</ul>', head, rows)

    @admin.display(description=gettext_lazy("Runs"))
    def isolation(self, obj: Plugin) -> str:
        if trusted_by_setting(obj.name):
            return _(
                "Trusted by COURSE_PLUGINS['TRUSTED_PLUGINS']: its code runs in the site's own "
                "processes, with access to everything they can reach."
            )
        if obj.trusted:
            text = _(
                "Trusted: its code runs in the site's own processes, with access to everything "
                "they can reach (settings, secrets, files, database, network)."
            )
            label = _("Isolate it")
        else:
            text = _(
                "Isolated: its code runs in a confined worker process and reaches only what its "
                "permissions grant."
            )
            label = _("Trust it…")
        return format_html(
            '{} <a class="button cp-button" href="{}">{}</a>',
            text,
            reverse("admin:course_plugins_plugin_trust", args=(obj.pk,)),
            label,
        )

    @admin.display(description=gettext_lazy("Hooks"))
    def hook_list(self, obj: Plugin) -> str:
        return _names(obj.hooks)

    @admin.display(description=gettext_lazy("When a hook function fails"))
    def failure_policy(self, obj: Plugin) -> str:
        # The manifest's fail_closed: what an error or a timeout of its before-* functions does.
        choice = (obj.manifest or {}).get("fail_closed")
        if choice is True:
            text, kind = _("Refuses the change (fail_closed: true): an error or a timeout of "
                           "any of its before-* hook functions stops the save."), "closed"
        elif choice is False:
            text, kind = _("Lets the change through (fail_closed: false): an error or a timeout "
                           "of its before-* hook functions is logged and skipped; the save goes "
                           "on unchecked."), "open"
        else:
            text, kind = _("Refuses the change (the default for before-* hooks): an error or a "
                           "timeout of a before-* hook function stops the save."), "closed"
        return format_html('<span class="cp-failure cp-failure--{}">{}</span>', kind, text)

    @admin.display(description=gettext_lazy("Events"))
    def event_list(self, obj: Plugin) -> str:
        return _names(obj.events)

    @admin.display(description=gettext_lazy("Permissions asked for"))
    def permission_list(self, obj: Plugin) -> str:
        rows = permission_rows(obj)
        if not rows:
            return _("None beyond logging, settings, its hooks and events.")
        return format_html(
            "<ul class='cp-permissions'>{}</ul>",
            format_html_join("", "<li><strong>{}</strong>: {}</li>", rows),
        )

    @admin.display(description=gettext_lazy("Traceback"))
    def traceback(self, obj: Plugin) -> str:
        if not obj.last_traceback:
            return "—"
        return format_html('<pre class="cp-traceback">{}</pre>', obj.last_traceback)

    @admin.display(description=gettext_lazy("Current settings"))
    def settings_display(self, obj: Plugin) -> str:
        values = masked_settings(obj)
        if not values:
            return _("Defaults") if schema_of(obj) else _("This plugin has no settings.")
        return format_html(
            "<dl class='cp-settings'>{}</dl>",
            format_html_join(
                "", "<dt>{}</dt><dd>{}</dd>", ((k, _shown(v)) for k, v in sorted(values.items()))
            ),
        )

    def _row_buttons(self, can_toggle: bool, can_configure: bool) -> Any:
        def actions_column(obj: Plugin) -> str:
            buttons = []
            info = (obj.pk,)
            if can_toggle and obj.status != PluginStatus.ACTIVE and not obj.missing:
                buttons.append(
                    format_html(
                        '<a class="button cp-button" href="{}">{}</a>',
                        reverse("admin:course_plugins_plugin_activate", args=info),
                        _("Activate"),
                    )
                )
            if can_toggle and (obj.enabled or obj.status == PluginStatus.ACTIVE):
                for verb, label in (("deactivate", _("Deactivate")), ("reload", _("Reload"))):
                    buttons.append(
                        format_html(
                            '<button type="submit" class="button cp-button" form="cp-row-action" '
                            'formaction="{}">{}</button>',
                            reverse(f"admin:course_plugins_plugin_{verb}", args=info),
                            label,
                        )
                    )
            if can_configure and schema_of(obj):
                buttons.append(
                    format_html(
                        '<a class="button cp-button" href="{}">{}</a>',
                        reverse("admin:course_plugins_plugin_settings", args=info),
                        _("Settings"),
                    )
                )
            if not buttons:
                return ""
            return format_html(
                '<div class="cp-actions">{}</div>',
                format_html_join("", "{}", ((b,) for b in buttons)),
            )

        actions_column.short_description = _("Actions")  # type: ignore[attr-defined]
        return actions_column

    # --- views ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = "course_plugins_plugin_"
        return [
            *self.inspector_urls(),
            path(
                "<path:object_id>/go-live/",
                wrap(require_POST(self.go_live_view)),
                name=name + "go_live",
            ),
            path("<path:object_id>/activate/", wrap(self.activate_view), name=name + "activate"),
            path(
                "<path:object_id>/deactivate/",
                wrap(require_POST(self.deactivate_view)),
                name=name + "deactivate",
            ),
            path(
                "<path:object_id>/reload/",
                wrap(require_POST(self.reload_view)),
                name=name + "reload",
            ),
            path("<path:object_id>/settings/", wrap(self.settings_view), name=name + "settings"),
            path("<path:object_id>/trust/", wrap(self.trust_view), name=name + "trust"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        plugin = self._plugin_or_404(request, object_id)
        context = {
            # Nothing on this page is edited through the model form: no save buttons.
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "can_toggle": self.has_activate_permission(request),
            "shadow": plugin.mode == PluginMode.SHADOW,
            "can_configure": self.has_change_settings_permission(request)
            and bool(schema_of(plugin)),
            "plugin": plugin,
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def confirm_activation(
        self,
        request: HttpRequest,
        plugins: list[Plugin],
        *,
        bulk: bool,
        mode: str = PluginMode.LIVE,
    ) -> TemplateResponse:
        """The page listing what each plugin asks for; posting it with ``post=yes`` activates
        (in ``mode``)."""
        shadow = mode == PluginMode.SHADOW
        if bulk:
            title = _("Activate plugins in shadow mode?") if shadow else _("Activate plugins?")
        else:
            title = (_("Activate %s in shadow mode?") if shadow else _("Activate %s?")) % (
                plugins[0].name
            )
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "plugins": [(p, permission_rows(p)) for p in plugins],
            "bulk": bulk,
            "mode": mode,
            "shadow": shadow,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/course_plugins/plugin/activate_confirmation.html", context
        )

    def _plugin_or_403(self, request: HttpRequest, object_id: str, allowed: bool) -> Plugin:
        if not allowed:
            raise PermissionDenied
        return self._plugin_or_404(request, object_id)

    def _plugin_or_404(self, request: HttpRequest, object_id: str) -> Plugin:
        # get_object: an id that is no number (a mistyped URL) is a 404 too, not a 500.
        plugin = self.get_object(request, unquote(object_id))
        if plugin is None:
            raise Http404(_("No plugin with id %s.") % object_id)
        return plugin

    def _back(self, request: HttpRequest, plugin: Plugin) -> HttpResponseRedirect:
        referer = request.META.get("HTTP_REFERER", "")
        if referer and url_has_allowed_host_and_scheme(
            referer, {request.get_host()}, request.is_secure()
        ):
            return HttpResponseRedirect(referer)
        return HttpResponseRedirect(reverse("admin:course_plugins_plugin_changelist"))

    def activate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plugin = self._plugin_or_403(request, object_id, self.has_activate_permission(request))
        mode = request.POST.get("mode") or request.GET.get("mode") or PluginMode.LIVE
        if mode not in PluginMode.values:
            mode = PluginMode.LIVE
        if request.method == "POST" and request.POST.get("post") == "yes":
            if run_operation(request, plugin, "activate", mode):
                _log(self, request, plugin, f"activated ({mode})")
            return HttpResponseRedirect(
                reverse("admin:course_plugins_plugin_change", args=(plugin.pk,))
            )
        return self.confirm_activation(request, [plugin], bulk=False, mode=mode)

    def go_live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One action: a plugin in shadow mode starts acting (its permissions were confirmed
        when it was activated in shadow mode)."""
        plugin = self._plugin_or_403(request, object_id, self.has_activate_permission(request))
        if run_operation(request, plugin, "activate", PluginMode.LIVE):
            _log(self, request, plugin, "switched to live")
        return HttpResponseRedirect(
            reverse("admin:course_plugins_plugin_change", args=(plugin.pk,))
        )

    def deactivate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plugin = self._plugin_or_403(request, object_id, self.has_activate_permission(request))
        if run_operation(request, plugin, "deactivate"):
            _log(self, request, plugin, "deactivated")
        return self._back(request, plugin)

    def reload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plugin = self._plugin_or_403(request, object_id, self.has_activate_permission(request))
        if run_operation(request, plugin, "reload"):
            _log(self, request, plugin, "reloaded")
        return self._back(request, plugin)

    def trust_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Trust a plugin (after a page saying what that gives away) or isolate it again."""
        plugin = self._plugin_or_403(request, object_id, self.has_activate_permission(request))
        if request.method == "POST" and request.POST.get("post") == "yes":
            trusted = request.POST.get("trusted") == "1"
            try:
                runtime.set_trusted(plugin.name, trusted, user=request.user)
            except CoursePluginsError as exc:
                head = _("%(name)s could not be reloaded in its new mode") % {"name": plugin.name}
                messages.error(request, error_message(head, exc))
            else:
                _log(self, request, plugin, "trusted" if trusted else "isolated")
                messages.success(request, (
                    _("%(name)s is trusted: its code runs in the site's processes.") if trusted
                    else _("%(name)s is isolated: its code runs in a confined worker.")
                ) % {"name": plugin.name})
            return HttpResponseRedirect(
                reverse("admin:course_plugins_plugin_change", args=(plugin.pk,))
            )
        trust = not plugin.trusted
        context = {
            **self.admin_site.each_context(request),
            "title": (_("Trust %s?") if trust else _("Isolate %s?")) % plugin.name,
            "opts": self.opts,
            "plugin": plugin,
            "trust": trust,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/course_plugins/plugin/trust_confirmation.html",
                                context)

    def settings_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Edit the plugin's settings; saving applies them at once through the runtime."""
        plugin = self._plugin_or_403(
            request, object_id, self.has_change_settings_permission(request)
        )
        form = PluginSettingsForm(plugin, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                runtime.update_settings(plugin.name, form.changes)
            except PluginSettingsError as exc:
                form.add_schema_errors(exc)
            except CoursePluginsError as exc:
                messages.error(
                    request,
                    _("Settings of %(name)s not saved: %(error)s")
                    % {"name": plugin.name, "error": exc},
                )
            else:
                _log(self, request, plugin, "settings")
                messages.success(
                    request, _("Settings of %(name)s saved and applied.") % {"name": plugin.name}
                )
                return HttpResponseRedirect(
                    reverse("admin:course_plugins_plugin_change", args=(plugin.pk,))
                )
        fieldsets = [(None, {"fields": list(form.fields)})]
        context = {
            **self.admin_site.each_context(request),
            "title": _("Settings of %s") % plugin.name,
            "opts": self.opts,
            "original": plugin,
            "adminform": helpers.AdminForm(form, fieldsets, {}),
            "form": form,
            "errors": helpers.AdminErrorList(form, []),
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/course_plugins/plugin/settings_form.html", context)


@admin.register(FunctionOverride)
class FunctionOverrideAdmin(admin.ModelAdmin):
    """Operators' overrides of single functions, with their history. Saving one applies it in
    every process; the hook inspector is the usual way to make one."""

    list_display = ("key", "enabled", "priority", "hook", "updated_by", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("key", "hook")
    readonly_fields = ("hook", "updated_by", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: FunctionOverride, form: Any, change: bool
    ) -> None:
        obj.updated_by = request.user.get_username()
        super().save_model(request, obj, form, change)
        control.apply_overrides()

    def delete_model(self, request: HttpRequest, obj: FunctionOverride) -> None:
        super().delete_model(request, obj)
        control.apply_overrides()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FunctionOverride]) -> None:
        super().delete_queryset(request, queryset)
        control.apply_overrides()


admin.site.register(OrganizationPlugin, OrganizationPluginAdmin)
register_records(admin.site)
