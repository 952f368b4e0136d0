"""Hook specs: each standard hook declared once with a signature, checked at registration, and the
source of docs/reference/hooks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from course_plugins.core import standard
from course_plugins.core.standard import STANDARD_HOOKS, check_signature, spec_for
from course_plugins.exceptions import HookSignatureError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference" / "hooks.md"


def test_every_standard_hook_has_a_signature_and_a_description():
    for spec in STANDARD_HOOKS:
        assert spec.signature is not None, spec.name
        assert spec.description.startswith(f"fn{spec.signature}. ")
        assert spec.text and not spec.text.startswith("fn(")
    assert spec_for("before-course-save").call == "fn(course: dict) -> dict | None"
    assert spec_for("after-course-save").call == "fn(course: dict, created: bool) -> None"
    assert spec_for("no-such-hook") is None


@pytest.mark.parametrize(
    "fn",
    [
        lambda course, created: None,
        lambda course, created, extra=1: None,
        lambda *args: None,
        lambda course, *rest, **options: None,
        lambda course, created=False: None,
    ],
)
def test_functions_that_fit_the_hook_are_accepted(fn):
    check_signature(spec_for("after-course-save"), fn, plugin="p@1")


def test_a_function_with_too_few_parameters_is_refused_naming_plugin_hook_and_parameter():
    def on_save(course):
        pass

    with pytest.raises(HookSignatureError) as info:
        check_signature(spec_for("after-course-save"), on_save, plugin="greeter@1.0")
    message = str(info.value)
    assert "greeter@1.0" in message and "after-course-save" in message
    assert "on_save" in message and "'created'" in message
    assert isinstance(info.value, TypeError)
    assert (info.value.plugin, info.value.hook, info.value.function) == (
        "greeter@1.0", "after-course-save", "test_a_function_with_too_few_parameters_is_refused_"
        "naming_plugin_hook_and_parameter.<locals>.on_save",
    )


def test_a_required_parameter_the_hook_does_not_pass_is_refused():
    def grade(submission, user):
        pass

    with pytest.raises(HookSignatureError, match=r"'user' is required .* default"):
        check_signature(spec_for("quiz-grade"), grade, plugin="p@1")

    def keyword_only(submission, *, strict):
        pass

    with pytest.raises(HookSignatureError, match="'strict'"):
        check_signature(spec_for("quiz-grade"), keyword_only, plugin="p@1")


def test_hooks_without_a_declaration_and_uninspectable_callables_are_not_checked():
    check_signature(None, lambda: None, plugin="p@1")
    check_signature(spec_for("quiz-grade"), print, plugin="p@1")


def test_model_hooks_are_declared_with_the_stem_as_parameter():
    save, after, delete = standard.model_hook_specs("lesson-plan", "school.LessonPlan")
    assert save.call == "fn(lesson_plan: dict) -> dict | None"
    assert after.call == "fn(lesson_plan: dict, created: bool) -> None"
    assert delete.call == "fn(lesson_plan: dict) -> None"
    assert spec_for("after-lesson-plan-save") is after
    assert save.description.startswith("school.LessonPlan: fn(lesson_plan: dict)")
    with pytest.raises(HookSignatureError):
        check_signature(after, lambda lesson: None, plugin="p@1")


def test_the_reference_page_is_current():
    assert REFERENCE.read_text(encoding="utf-8") == standard.render_reference(), (
        "docs/reference/hooks.md is out of date: run "
        "python -m course_plugins.core.standard docs/reference/hooks.md"
    )


def test_the_generator_writes_the_page(tmp_path):
    target = tmp_path / "hooks.md"
    subprocess.run(
        [sys.executable, "-m", "course_plugins.core.standard", str(target)], check=True, cwd=ROOT
    )
    assert target.read_text(encoding="utf-8") == standard.render_reference()


def test_a_plugin_registering_a_function_that_does_not_fit_fails_to_activate(make_plugin):
    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.event_bus import EventBus
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.core.plugin import PluginState
    from course_plugins.core.plugin_loader import PluginLoader

    code = """
        def activate(api):
            @api.hooks['after-course-save'].add
            def on_save(course):
                pass
    """
    make_plugin("misfit", code, "hooks: [after-course-save]\n")
    hooks = HookManager()
    loader = PluginLoader(
        [make_plugin.root], hooks=hooks, bus=EventBus(),
        api_factory=default_api_factory(Services.in_memory()),
    )
    try:
        plugin = loader.discover_all()[0]
        with pytest.raises(Exception, match=r"on_save\(\) cannot be registered on hook 'after-"):
            loader.activate("misfit")
        assert plugin.state == PluginState.ERROR
        assert "add a parameter for 'created'" in plugin.error
        assert hooks["after-course-save"].functions == []
    finally:
        loader.close()


def test_a_stem_that_is_no_python_name_still_gets_a_signature():
    assert standard.model_hook_specs("class")[0].call == "fn(class_: dict) -> dict | None"
    after = standard.model_hook_specs("Course Save")[1]
    assert after.call == "fn(data: dict, created: bool) -> None"
