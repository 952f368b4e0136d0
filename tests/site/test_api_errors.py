"""Every error of the REST API is JSON with the right status: 400 for bodies that cannot be
stored or parsed, 413 over the size limit, 503 with Retry-After while the database is down."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from course_plugins.models import Plugin
from course_plugins.rest.parsers import MAX_DEPTH, body_limit

pytestmark = pytest.mark.django_db

SETTINGS_URL = "/api/plugins/greeter/settings/"


@pytest.fixture
def client(django_user_model) -> APIClient:
    Plugin.objects.create(
        name="greeter",
        version="1.0.0",
        manifest={"name": "greeter", "settings_schema": {"title": {"type": "string"}}},
    )
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(django_user_model.objects.create_superuser("root", "r@x.org", "pw"))
    return client


def _patch(client: APIClient, body: str | bytes):
    return client.generic("PATCH", SETTINGS_URL, body, content_type="application/json")


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"title": "a\\u0000b"}', "NUL"),
        ('{"a\\u0000": "x"}', "NUL"),
        ('{"title": "\\ud800"}', "surrogate"),
        ('{"title": ["\\udfff"]}', "surrogate"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nested"),
        ('{"title": NaN}', "NaN"),
        ('{"title": ', "parse error"),
        (b'{"title": "\xff"}', "parse error"),
    ],
)
def test_bodies_that_cannot_be_stored_or_parsed_are_a_json_400(client, body, message):
    response = _patch(client, body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert message in response.json()["detail"]
    assert Plugin.objects.get(name="greeter").settings == {}


def test_a_body_over_the_limit_is_a_json_413(client):
    response = _patch(client, json.dumps({"title": "x" * (body_limit() + 10)}))
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_the_database_down_is_a_json_503_with_retry_after(client):
    def down(execute, sql, params, many, context):
        raise OperationalError("could not connect to server: Connection refused")

    with connection.execute_wrapper(down):
        for method, url in [("get", "/api/plugins/"), ("get", "/api/plugins/greeter/"),
                            ("patch", SETTINGS_URL), ("get", "/api/audit/")]:
            response = getattr(client, method)(url, {"title": "x"}, format="json")
            assert response.status_code == 503, (url, response.content)
            assert response["Content-Type"] == "application/json"
            assert int(response["Retry-After"]) > 0
            assert "unavailable" in response.json()["detail"]


def test_unknown_api_urls_and_names_are_a_json_404(client):
    for url in ["/api/plugins/no.such.plugin/", "/api/plugins/nope/settings/", "/api/nothing/"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"] == "application/json"


def test_the_schema_types_the_settings_body_and_documents_the_errors(client):
    schema = client.get("/api/schema/?format=json").json()
    settings_op = schema["paths"]["/api/plugins/{name}/settings/"]["patch"]
    body = settings_op["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "object" and "additionalProperties" in body
    assert {"200", "400", "401", "403", "404", "409", "413", "415", "503"} <= set(
        settings_op["responses"]
    )
    assert "Retry-After" in settings_op["responses"]["503"]["headers"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "503" in operation["responses"], (method, path)
