"""Tests of the Django-free engine (``course_plugins.core``): they need no Django settings.

A test here may not use the database or Django's test fixtures; ``make test-core`` runs this
folder with the Django plugin switched off, which proves it.
"""

from __future__ import annotations

import pytest

DJANGO_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_setup", "settings", "client", "admin_client", "rf",
     "live_server", "django_user_model", "django_assert_num_queries"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/core/" not in item.nodeid:
            continue
        used = DJANGO_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used or item.get_closest_marker("django_db") is not None:
            raise pytest.UsageError(
                f"{item.nodeid} uses Django ({', '.join(sorted(used)) or 'django_db'}); "
                "tests/core/ needs no Django settings: move it to tests/site/"
            )
