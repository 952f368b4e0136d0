"""Admin pages of organizations' plugins: which plugins run for an organization, its settings.

Registered by ``admin.py`` on ``OrganizationPlugin``. The list page shows the organizations the
user manages; an organization's page lists every plugin with the site's choice and the
organization's own (follow the site, on, off), and links to the organization's settings form.

Site operators (superusers, or holders of both site-wide plugin permissions) manage every
organization. A user granted ``course_plugins.manage_organization_plugins`` manages only the
organizations ``COURSE_PLUGINS["ORGANIZATION_ADMINS"]`` gives them, and sees no other.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from course_plugins.admin_messages import error_message
from course_plugins.core.settings_schema import defaults, mask_settings
from course_plugins.exceptions import CoursePluginsError, PluginSettingsError
from course_plugins.forms import PluginSettingsForm, schema_of
from course_plugins.models import Plugin
from course_plugins.record_admin import ReadOnlyAdmin
from course_plugins.site import organizations as orgs
from course_plugins.site import runtime

_CHOICES = {None: "site", True: "on", False: "off"}


class OrganizationSettingsForm(PluginSettingsForm):
    """One plugin's settings for one organization; a value equal to the site's follows the site.

    After ``is_valid()``, ``changes`` maps each setting to the organization's own value, or to
    ``None`` where it is the site's (the override is removed, so a later site change applies).
    """

    def __init__(self, plugin: Plugin, own: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        schema = schema_of(plugin)
        self.site_values = {**defaults(schema), **(plugin.settings or {})}
        super().__init__(plugin, *args, initial=dict(own), **kwargs)
        self.stored = {**(plugin.settings or {}), **own}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            self.changes = {
                name: None if self.settings.get(name) == self.site_values.get(name) else value
                for name, value in (
                    (name, self.settings.get(name)) for name in self.changes
                )
            }
        return cleaned


class OrganizationPluginAdmin(ReadOnlyAdmin):
    """Organizations' plugins, per organization (no add/change/delete of rows by hand)."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        # A site without organizations (no ORGANIZATION_MODEL) has nothing to show here: no
        # entry in the admin index leading to a 403.
        if orgs.organization_model() is None:
            return False
        return orgs.administered(request.user) != set()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = "course_plugins_organizationplugin_"
        return [
            path("", wrap(self.organizations_view), name=name + "changelist"),
            path("<str:org>/", wrap(self.organization_view), name=name + "organization"),
            path(
                "<str:org>/<slug:plugin>/settings/",
                wrap(self.settings_view),
                name=name + "settings",
            ),
            path(
                "<str:org>/<slug:plugin>/<str:verb>/",
                wrap(require_POST(self.choice_view)),
                name=name + "choice",
            ),
        ]

    # --- helpers -------------------------------------------------------------------------------

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "title": title, "opts": self.opts, **extra}

    def _organization(self, request: HttpRequest, pk: str) -> Any:
        try:
            org = orgs.get_organization(pk)
        except orgs.OrganizationNotFound as exc:
            raise Http404(str(exc)) from exc
        if not orgs.can_manage(request.user, org.pk):
            raise PermissionDenied
        return org

    def _plugin(self, name: str) -> Plugin:
        row = Plugin.objects.filter(name=name).first()
        if row is None:
            raise Http404(f"no plugin named {name!r}")
        return row

    def _page(self, org: Any) -> str:
        return reverse("admin:course_plugins_organizationplugin_organization", args=(org.pk,))

    # --- views ---------------------------------------------------------------------------------

    def organizations_view(self, request: HttpRequest) -> HttpResponse:
        """The organizations whose plugins this user manages."""
        mine = orgs.administered(request.user)
        if mine == set() or orgs.organization_model() is None:
            raise PermissionDenied
        model = orgs.organization_model()
        assert model is not None
        queryset = model._default_manager.all()
        if mine is not None:
            queryset = queryset.filter(pk__in=list(mine))
        state = orgs.state()
        rows = [
            (org, self._page(org), len(state.rows.get(orgs.org_key(org.pk), {})))
            for org in queryset
        ]
        context = self._context(request, _("Plugins per organization"), organizations=rows)
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/course_plugins/organizationplugin/organizations.html", context
        )

    def organization_view(self, request: HttpRequest, org: str) -> HttpResponse:
        """One organization's plugin page: every plugin, the site's and the organization's
        choice, whether it runs there, and the settings it overrides."""
        organization = self._organization(request, org)
        runtime.ensure_started()
        state = orgs.state()
        own = state.rows.get(orgs.org_key(organization.pk), {})
        plugins = []
        for row in Plugin.objects.all():
            choice, values = own.get(row.name, (None, {}))
            plugins.append(
                {
                    "row": row,
                    "choice": _CHOICES[choice],
                    "active": state.active_for(row.name, organization.pk),
                    "overridden": mask_settings(schema_of(row), values),
                    "configurable": bool(schema_of(row)),
                }
            )
        context = self._context(
            request,
            _("Plugins of %s") % organization,
            organization=organization,
            plugins=plugins,
        )
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/course_plugins/organizationplugin/organization.html", context
        )

    def choice_view(self, request: HttpRequest, org: str, plugin: str, verb: str) -> HttpResponse:
        """POST: ``activate``, ``deactivate`` or ``inherit`` (follow the site) for the org."""
        organization = self._organization(request, org)
        row = self._plugin(plugin)
        try:
            if verb == "activate":
                runtime.activate_for(organization.pk, row.name, user=request.user)
            elif verb == "deactivate":
                runtime.deactivate_for(organization.pk, row.name)
            elif verb == "inherit":
                runtime.follow_site_for(organization.pk, row.name)
            else:
                raise Http404(f"unknown operation {verb!r}")
        except CoursePluginsError as exc:
            messages.error(request, error_message(row.name, exc))
        else:
            messages.success(
                request,
                _("%(name)s for %(org)s: %(what)s.")
                % {
                    "name": row.name,
                    "org": organization,
                    "what": {
                        "activate": _("activated"),
                        "deactivate": _("deactivated"),
                        "inherit": _("follows the site"),
                    }[verb],
                },
            )
        return HttpResponseRedirect(self._page(organization))

    def settings_view(self, request: HttpRequest, org: str, plugin: str) -> HttpResponse:
        """The plugin's settings for the organization, validated like the site's."""
        organization = self._organization(request, org)
        row = self._plugin(plugin)
        own = orgs.settings_of(organization.pk, row.name)
        form = OrganizationSettingsForm(
            row, own, request.POST if request.method == "POST" else None
        )
        if request.method == "POST" and form.is_valid():
            try:
                runtime.update_organization_settings(organization.pk, row.name, form.changes)
            except PluginSettingsError as exc:
                form.add_schema_errors(exc)
            except CoursePluginsError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    _("Settings of %(name)s for %(org)s saved and applied.")
                    % {"name": row.name, "org": organization},
                )
                return HttpResponseRedirect(self._page(organization))
        context = self._context(
            request,
            _("Settings of %(name)s for %(org)s") % {"name": row.name, "org": organization},
            organization=organization,
            plugin=row,
            page=self._page(organization),
            adminform=helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),
            form=form,
            errors=helpers.AdminErrorList(form, []),
            media=self.media + form.media,
        )
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/course_plugins/organizationplugin/settings_form.html", context
        )
