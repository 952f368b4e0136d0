"""The OpenAPI schema at /api/schema/ describes what the API really does (schemathesis).

Every operation is called with generated requests (valid and invalid, bounded in number) through
the site's WSGI application, as a superuser; every response must be documented (status, content
type, headers, body) and no request may get a server error.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from course_plugins.models import Plugin
from course_plugins.site import runtime

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

PASSWORD = "schemathesis-pw"
MAX_EXAMPLES = 6


@pytest.fixture
def wsgi_app(settings) -> Iterator[WSGIHandler]:  # noqa: F811 - pytest-django's fixture
    # Fast password checks for HTTP Basic on every call; the test's transaction stays open
    # across requests (as Django's own test client arranges).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def auth(django_user_model) -> dict[str, str]:
    django_user_model.objects.create_superuser("schema-root", "root@example.com", PASSWORD)
    token = base64.b64encode(f"schema-root:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def api_schema(wsgi_app, auth, engine_state):
    runtime.ensure_started()  # the example plugins have rows: some names exist
    assert Plugin.objects.exists()
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers=auth)


# A plugin that exists (an example plugin), so that generated requests reach a real one too.
PLUGIN_NAME = "course-validator"


def _run(operation, mode, auth, path_parameters=None):
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        # ignored_auth: the schema offers two ways in (session cookie or HTTP Basic); the harness
        # always sends a valid Basic header, so a generated bad cookie is rightly ignored. Access
        # without valid credentials is tested in test_rest.
        # positive_data_acceptance: a body can fit the schema and still be refused with a
        # documented 400: a setting name the plugin does not declare (the path is one template
        # for every plugin), a course name already taken. Everything else is checked: no 5xx,
        # every status/content type/header/body documented, schema-invalid data refused.
        case.call_and_validate(
            headers=auth, excluded_checks=[ignored_auth, positive_data_acceptance]
        )

    check()


def test_api_matches_its_schema(api_schema, auth):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Plugin paths: valid requests to a real plugin, invalid ones to any name.
            real = "{name}" in operation.path and mode == GenerationMode.POSITIVE
            _run(operation, mode, auth, {"name": PLUGIN_NAME} if real else None)
