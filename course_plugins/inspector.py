"""The hook inspector in the admin: every registration in call order, the operator's switches
(switch one function off, move it, restore it; each confirmed first) and the recorded runs.

``InspectorViews`` is mixed into ``PluginAdmin``; its URLs live under the plugin changelist
(``inspector/``, ``inspector/function/``). Switching needs
``course_plugins.change_functionoverride``.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from course_plugins.conf import model_hook_entry, plugin_settings
from course_plugins.core.standard import STANDARD_HOOK_NAMES
from course_plugins.rest.permissions import CHANGE_OVERRIDES
from course_plugins.site import control, organizations

__all__ = ["RUNS_SHOWN", "InspectorViews", "changes_text", "when"]

RUNS_SHOWN = 10
"""Recorded runs per hook shown in the inspector (the REST API gives all that are kept)."""


def when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def changes_text(changed: dict[str, Any] | None) -> str:
    if not changed:
        return ""
    return "; ".join(f"{field}: {before!r} → {after!r}" for field, (before, after) in
                     changed.items())


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A recorded run as the inspector shows it (time as text, changes as rows)."""
    return {
        **run,
        "when": when(run["at"]),
        "steps": [
            {
                **step,
                "short_name": str(step["function"]).rsplit(".", 1)[-1],
                "changes": [
                    (field, before, after)
                    for field, (before, after) in (step["changed"] or {}).items()
                ],
            }
            for step in run["steps"]
        ],
    }


def _short_names(entry: dict[str, Any], key: str) -> dict[str, Any]:
    """Give each function of an inspector entry a ``short_name`` (the last part of its
    qualified name; the full one stays in ``name``)."""
    where = organizations.state().where
    return {
        **entry,
        key: [
            {
                **f,
                "short_name": str(f["name"]).rsplit(".", 1)[-1],
                # Organizations that switched the plugin on or off (nothing when none did).
                "where": where(str(f.get("plugin") or "").partition("@")[0]),
            }
            for f in entry[key]
        ],
    }


def site_has_hook(name: str) -> bool:
    """Whether this project has hook ``name`` even though no function is on it yet.

    The standard course/quiz/content hooks are declared for every site; a project has those of
    the stems its ``MODEL_HOOKS`` maps (``before-quiz-save``, ``quiz-grade`` once ``quiz`` is
    mapped). Hooks the site's own code defined, and the ``MODEL_HOOKS`` hooks, are always its own.
    """
    if name not in STANDARD_HOOK_NAMES:
        return True
    stems = set()
    for value in dict(plugin_settings.MODEL_HOOKS).values():
        stem, _path = model_hook_entry(value)
        if isinstance(stem, str):
            stems.add(stem)
    return bool(stems & set(name.split("-")))


class InspectorViews:
    """The inspector's views, mixed into ``PluginAdmin`` (which provides ``admin_site``, ``opts``,
    ``media``, ``log_change`` and ``has_view_or_change_permission``)."""

    admin_site: Any
    opts: Any
    media: Any

    def inspector_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = "course_plugins_plugin_"
        return [
            path("inspector/", wrap(self.inspector_view), name=name + "inspector"),
            path(
                "inspector/function/",
                wrap(require_POST(self.override_view)),
                name=name + "override",
            ),
        ]

    def inspector_view(self, request: HttpRequest) -> HttpResponse:
        """Every hook, event pattern and advised target: functions in call order, owner, stats;
        on hooks, the operator's switches and the last recorded runs."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        hooks = [_short_names(h, "functions") for h in control.described_hooks()]
        for entry in hooks:
            if entry["functions"]:
                entry["runs"] = [run_view(r) for r in control.runs(entry["name"], RUNS_SHOWN)]
        targets = {
            t: _short_names({"advice": rows}, "advice")["advice"]
            for t, rows in control.described_advice().items()
        }
        context = {
            **self.admin_site.each_context(request),
            "title": _("Hook inspector"),
            "opts": self.opts,
            "hooks": [h for h in hooks if h["functions"]],
            "idle_hooks": [h for h in hooks if not h["functions"] and site_has_hook(h["name"])],
            "events": [_short_names(e, "handlers") for e in control.described_events()],
            "advice": [(t, rows) for t, rows in targets.items() if rows],
            "unadvised": [t for t, rows in targets.items() if not rows],
            "can_override": request.user.has_perm(CHANGE_OVERRIDES),
            "runs_shown": RUNS_SHOWN,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/course_plugins/plugin/inspector.html", context)

    def override_view(self, request: HttpRequest) -> HttpResponse:
        """Switch one hook function, event handler or piece of advice off or on, move it (not a
        handler), or restore it: a confirmation page first; posting it with ``post=yes`` stores
        the override and applies it everywhere."""
        if not request.user.has_perm(CHANGE_OVERRIDES):
            raise PermissionDenied
        hook, key, do = (request.POST.get(k, "") for k in ("hook", "key", "do"))
        kind = request.POST.get("kind") or "hook"
        inspector = reverse("admin:course_plugins_plugin_inspector")
        row = control.find_function(kind, hook, key)
        if row is None:
            messages.error(request, _("%(where)s has no function %(key)s (any more).")
                           % {"where": hook, "key": key})
            return HttpResponseRedirect(inspector)
        if do == "move" and kind == "event":
            messages.error(request, _("Event handlers have no priority; switch it off or on."))
            return HttpResponseRedirect(inspector)
        changes: dict[str, Any]
        if do == "off":
            changes, question = {"enabled": False}, _("Switch off %(fn)s on %(hook)s?")
        elif do == "on":
            changes, question = {"enabled": True}, _("Switch %(fn)s on again on %(hook)s?")
        elif do == "restore":
            changes = {"enabled": True, "priority": None}
            question = _("Restore what %(plugin)s asked for (%(fn)s on %(hook)s)?")
        elif do == "move":
            try:
                changes = {"priority": int(request.POST.get("priority", ""))}
            except ValueError:
                messages.error(request, _("The priority must be a whole number."))
                return HttpResponseRedirect(inspector)
            question = _("Move %(fn)s on %(hook)s to priority %(priority)s?")
        else:
            return HttpResponseRedirect(inspector)
        names = {
            "fn": row["short_name"] if "short_name" in row else row["name"],
            "hook": hook,
            "plugin": row.get("plugin") or _("the platform"),
            "priority": changes.get("priority"),
        }
        if request.POST.get("post") == "yes":
            override = control.save_override(
                key,
                enabled=changes.get("enabled"),
                priority=changes.get("priority", ...),
                hook=hook,
                user=request.user,
            )
            what = control.describe(override)
            messages.success(
                request,
                _("Switch saved for %(key)s: %(what)s, in every process within %(window)s s.")
                % {"key": key, "what": what, "window": plugin_settings.SYNC_INTERVAL},
            )
            anchor = f"hook-{hook}" if kind == "hook" else {"event": "events"}.get(kind, kind)
            return HttpResponseRedirect(f"{inspector}#{anchor}")
        context = {
            **self.admin_site.each_context(request),
            "title": question % {**names, "fn": names["fn"]},
            "opts": self.opts,
            "hook": hook,
            "kind": kind,
            "key": key,
            "do": do,
            "row": row,
            "priority": changes.get("priority"),
            "window": plugin_settings.SYNC_INTERVAL,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/course_plugins/plugin/override_confirmation.html", context
        )
