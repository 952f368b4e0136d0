"""AppConfig of course_plugins; ``ready()`` only wires things up, and real import errors surface."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from course_plugins.conf import apply_core_options


class CoursePluginsConfig(AppConfig):
    name = "course_plugins"
    verbose_name = _("Course plugins")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: these modules import the models, which Django's app
        # loading allows only once the registry is ready.
        from course_plugins import audit, checks, model_hooks, tasks  # noqa: F401 (checks)
        from course_plugins.site import control, runtime, scheduling

        apply_core_options()
        # Security audit events (sandbox, policy, permissions) also go to SecurityAuditEvent.
        audit.install()
        # The model hooks (model hooks/events, auth events) and the site's plugin runtime, which
        # touches no database here: plugins start at the first request, task, hook run or event.
        model_hooks.connect()
        runtime.start()
        # Scale-out: periodic tasks follow plugin rows; background subscribers go to Celery.
        scheduling.connect(runtime.local_plugin)
        # `migrate course_plugins zero` leaves no django-celery-beat rows and no cache stamp.
        post_migrate.connect(
            scheduling.after_migrate, sender=self, dispatch_uid="course_plugins.after_migrate"
        )
        tasks.install()
        # An uninstalled plugin's function overrides, recorded steps and schedule markers go
        # with it.
        runtime.plugin_uninstalled.connect(
            control.forget_plugin, dispatch_uid="course_plugins.control.uninstalled"
        )
        runtime.plugin_uninstalled.connect(
            control.forget_plugin_runs, dispatch_uid="course_plugins.control.runs_uninstalled"
        )
        runtime.plugin_uninstalled.connect(
            scheduling.forget_plugin, dispatch_uid="course_plugins.scheduling.uninstalled"
        )
