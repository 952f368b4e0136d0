"""AppConfig of course_plugins; ``ready()`` only wires things up."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CoursePluginsConfig(AppConfig):
    name = "course_plugins"
    verbose_name = _("Course plugins")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from course_plugins.conf import apply_core_options

        apply_core_options()
        # Security audit events (sandbox, policy, permissions) also go to SecurityAuditEvent.
        try:
            from course_plugins import audit

            audit.install()
        except ImportError:
            logging.getLogger("course_plugins").exception("Audit sink not installed")
        from course_plugins import checks  # noqa: F401  (registers the system checks)
        # The signal bridge (model hooks/events, auth events) and the site's plugin runtime,
        # which touches no database here: plugins start at the first request or task.
        try:
            from course_plugins import signals

            signals.connect()
        except ImportError:  # an engine module missing must not keep the site from starting
            logging.getLogger("course_plugins").exception("Signal bridge not connected")
        from course_plugins import runtime

        runtime.start()
        # Scale-out: periodic tasks follow plugin rows; background subscribers go to Celery.
        try:
            from course_plugins import scheduling, tasks

            scheduling.connect()
            tasks.install()
        except ImportError:
            logging.getLogger("course_plugins").exception("Celery integration not installed")
