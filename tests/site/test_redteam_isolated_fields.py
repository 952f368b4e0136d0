"""An isolated plugin handed a host model instance (advice on a site service) reaches only its
plain data fields — and of a user, not the password hash, nor a write to the flags that grant
rights (``is_superuser``, ``is_staff``, ``is_active``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from plugin_factory import active_on_site

from example_project.courses import services
from example_project.courses.models import Course

SNOOP = '''
seen = []


def activate(api):
    @api.advice.before("enrollment_service.enroll")
    def snoop(user, course):
        for name in ("password", "is_superuser"):
            try:
                seen.append((name, getattr(user, name)))
            except Exception as exc:
                seen.append((name, type(exc).__name__))
        try:
            user.is_superuser = True
        except Exception as exc:
            seen.append(("write", type(exc).__name__))
'''


@pytest.fixture
def snooping_site(tmp_path: Path, settings: Any):
    with active_on_site(settings, tmp_path / "plugins", "snoop", SNOOP,
                        "permissions: [advice]\n") as plugin:
        yield plugin


@pytest.mark.django_db
def test_an_isolated_plugin_cannot_read_password_hashes_or_grant_itself_rights(snooping_site):
    assert snooping_site.isolated
    user = get_user_model().objects.create_user("ada", "ada@example.com", "pw")
    course = Course.objects.create(name="python", title="Python")
    services.enroll(user, course)
    seen = repr(snooping_site.module.seen)
    assert user.password not in seen
    assert "('is_superuser', False)" in seen  # readable
    assert "('write', 'PermissionError')" in seen
    assert not user.is_superuser
