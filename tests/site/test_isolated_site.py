"""The example site with isolated plugins (the default): the seed's advice examples, used from a
plugin, act on the site's services through proxies — the model instance create_course returns
crosses as a proxy of its plain fields, around advice calls the original back in the site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from plugin_factory import active_on_site

from example_project.courses import services
from example_project.courses.models import Course, Quiz

SEED_ADVICE = '''
import time

timings = []


def activate(api):
    # The seed's advice examples, as written, registered through the plugin's api.
    @api.advice.before("course_service.create_course")
    def validate_input(course_data):
        if len(course_data["name"]) < 5:
            raise ValueError("Name too short")

    @api.advice.after("course_service.create_course")
    def add_metadata(result, course_data):
        result.created_by = "plugin"
        return result

    @api.advice.around("quiz_service.submit_quiz")
    def with_timing(original_func, *args, **kwargs):
        start = time.time()
        result = original_func(*args, **kwargs)
        timings.append(time.time() - start)
        return result

    @api.advice.after("course_service.create_course")
    def snoop(result, course_data):
        for name in ("save", "delete", "_state", "organization", "quizzes"):
            try:
                getattr(result, name)
                api.log.warning("reached %s", name)
            except Exception:
                pass
'''


@pytest.fixture
def advised_site(tmp_path: Path, settings: Any):
    with active_on_site(settings, tmp_path / "plugins", "seed-advice", SEED_ADVICE,
                        "permissions: [advice]\n") as plugin:
        yield plugin


@pytest.mark.django_db
def test_the_seeds_advice_examples_run_isolated_on_the_site(advised_site, caplog):
    assert advised_site.isolated
    with pytest.raises(ValueError, match="Name too short"):
        services.create_course({"name": "py", "title": "Python"})
    course = services.create_course({"name": "python", "title": "Python basics"})
    assert isinstance(course, Course) and course.created_by == "plugin"
    assert "reached" not in caplog.text  # methods, managers, relations, internals: out of reach
    quiz = Quiz.objects.create(course=course, title="Quiz", questions=[
        {"question": "len('abc')?", "choices": ["2", "3"], "answer": "3"},
    ])
    user = get_user_model().objects.create_user("ada", "ada@example.com", "pw")
    submission = services.submit_quiz(services.start_quiz(quiz, user), ["3"])
    assert submission.score == 100.0
    timings = advised_site.module.timings  # read from the worker
    assert len(timings) == 1 and timings[0] >= 0


# The seed's advice examples exactly as the seed writes them: imported from
# course_plugins.core.advice and applied at module level, in a plugin's __init__.py.
SEED_ADVICE_AS_WRITTEN = '''
import time

from course_plugins.core.advice import (
    Advice, before_advice, after_advice, around_advice
)

# Before advice - runs before the function
@before_advice('course_service.create_course')
def validate_input(course_data):
    if len(course_data['name']) < 5:
        raise ValueError("Name too short")

# After advice - runs after, can modify return value
@after_advice('course_service.create_course')
def add_metadata(result, course_data):
    result.created_by = 'plugin'
    return result

# Around advice - wraps the function completely
@around_advice('quiz_service.submit_quiz')
def with_timing(original_func, *args, **kwargs):
    start = time.time()
    result = original_func(*args, **kwargs)
    print(f"Took {time.time() - start}s")
    return result


def activate(api):
    @after_advice('course_service.update_course')
    def touched(result, *args, **kwargs):
        return result
'''


@pytest.mark.django_db
@pytest.mark.parametrize("trusted", [False, True], ids=["isolated", "trusted"])
def test_the_seeds_advice_imports_work_in_a_plugin_as_written(tmp_path, settings, trusted):
    from course_plugins.core import advice
    from course_plugins.site import runtime

    if trusted:
        settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": ["seed-imports"]}
    with active_on_site(settings, tmp_path / "plugins", "seed-imports", SEED_ADVICE_AS_WRITTEN,
                        "permissions: [advice]\n") as plugin:
        assert plugin.isolated is not trusted
        with pytest.raises(ValueError, match="Name too short"):
            services.create_course({"name": "py", "title": "Python"})
        course = services.create_course({"name": "python", "title": "Python basics"})
        assert course.created_by == "plugin"
        owners = {
            (target, piece["plugin"]) for target, pieces in advice.describe_all().items()
            for piece in pieces
        }
        assert {t for t, owner in owners if owner == "seed-imports@1.0.0"} == {
            "course_service.create_course", "quiz_service.submit_quiz",
            "course_service.update_course",
        }
        runtime.deactivate("seed-imports")
        assert services.create_course({"name": "py", "title": "Short"}).created_by != "plugin"
        runtime.activate("seed-imports")  # the module-level advice comes back with it
        with pytest.raises(ValueError, match="Name too short"):
            services.create_course({"name": "py", "title": "Python"})


@pytest.mark.django_db
def test_the_seeds_advice_imports_need_the_advice_permission(tmp_path, settings):
    from course_plugins.exceptions import PluginError

    with (
        pytest.raises(PluginError, match="advice"),
        active_on_site(settings, tmp_path / "plugins", "seed-imports", SEED_ADVICE_AS_WRITTEN),
    ):
        pass
