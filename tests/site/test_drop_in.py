"""Drop-in behaviour in-process: vetoes without a mixin or a setting, deactivate without
activate(), uninstall, a vanished folder, migrate zero (the new-project test does it end to end)."""

from __future__ import annotations

import pytest
from django import forms
from django.db import transaction
from django.test import override_settings
from plugin_factory import write_plugin
from rest_framework import serializers
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from course_plugins.model_hooks import PluginVeto
from course_plugins.models import Plugin, PluginStatus, PluginStorage
from course_plugins.site import runtime
from course_plugins.testing import temporary_hook
from example_project.courses.models import Course
from tests.site.test_runtime import greeter, plugin_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


class CourseForm(forms.ModelForm):  # a plain ModelForm: no mixin, no base class of ours
    class Meta:
        model = Course
        fields = ["name", "title", "description"]


def refuse_short(course):
    if len(course["title"]) < 5:
        raise ValueError("Titles need five letters.")
    return course


def test_a_plain_modelform_shows_a_veto_as_a_form_error():
    with temporary_hook("before-course-save", refuse_short):
        form = CourseForm({"name": "c1", "title": "Hi", "description": ""})
        assert not form.is_valid()
        assert form.non_field_errors() == ["Titles need five letters."]
    assert not Course.objects.exists()


def test_the_hook_runs_once_for_a_validated_form_and_its_save():
    calls = []

    def shout(course):
        calls.append(course["title"])
        return {**course, "title": course["title"].upper()}

    with temporary_hook("before-course-save", shout):
        form = CourseForm({"name": "c2", "title": "Algebra", "description": ""})
        assert form.is_valid(), form.errors
        course = form.save()
    assert calls == ["Algebra"]
    assert Course.objects.get(pk=course.pk).title == "ALGEBRA"


def test_a_veto_naming_a_field_the_form_hides_is_a_form_wide_error():
    from django.core.exceptions import ValidationError

    def refuse(course):
        raise ValidationError({"organization_id": "Not in this organization."})

    class TitleOnly(forms.ModelForm):
        class Meta:
            model = Course
            fields = ["name", "title"]

    with temporary_hook("before-course-save", refuse):
        form = TitleOnly({"name": "c3", "title": "Geometry"})
        assert not form.is_valid()
        assert form.non_field_errors() == ["Not in this organization."]


class CourseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Course
        fields = ["id", "name", "title"]


class CourseCreate(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request):
        serializer = CourseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return __import__("rest_framework.response").response.Response(serializer.data, 201)


@override_settings(REST_FRAMEWORK={})  # DRF's own exception handler, no setting of ours
def test_any_drf_view_answers_a_veto_with_400():
    request = APIRequestFactory().post("/courses/", {"name": "c4", "title": "Hi"}, format="json")
    with temporary_hook("before-course-save", refuse_short):
        response = CourseCreate.as_view()(request)
    assert response.status_code == 400
    assert response.data == {"non_field_errors": ["Titles need five letters."]}
    assert not Course.objects.exists()


def test_a_save_costs_no_query_of_the_plugin_system_once_started(
    plugin_dir, django_assert_num_queries  # noqa: F811
):
    greeter(plugin_dir)
    runtime.activate("greeter")
    Course.objects.create(name="warm", title="Warm up")
    with django_assert_num_queries(1):  # the INSERT itself; hooks and the look cost none
        Course.objects.create(name="c7", title="Intro")


def test_the_shell_gets_plugin_veto_with_the_message():
    with temporary_hook("before-course-save", refuse_short), pytest.raises(PluginVeto) as veto:
        Course.objects.create(name="c5", title="Hi")
    assert veto.value.messages == ["Titles need five letters."]
    assert veto.value.hook == "before-course-save"


# --- deactivate, uninstall, vanished folders ----------------------------------------------------

COUNTER = """
def refresh():
    pass


def activate(api):
    api.storage.increment_sync("activations")


def uninstall(api):
    api.storage.set_sync("uninstalled", True)
"""


def test_deactivate_in_a_process_that_never_started_runs_no_activate(plugin_dir):  # noqa: F811
    write_plugin(plugin_dir, "counter", COUNTER, "permissions: [storage]\n")
    runtime.activate("counter")
    assert PluginStorage.objects.get(plugin="counter", key="activations").value == 1
    runtime.reset()  # a fresh process: manage.py plugins deactivate
    runtime.deactivate("counter")
    assert not runtime.is_started()
    assert PluginStorage.objects.get(plugin="counter", key="activations").value == 1
    row = Plugin.objects.get(name="counter")
    assert (row.enabled, row.status) == (False, PluginStatus.INACTIVE)


def test_uninstall_calls_uninstall_then_deletes_row_storage_and_settings(plugin_dir):  # noqa: F811
    write_plugin(plugin_dir, "counter", COUNTER, "permissions: [storage]\n")
    runtime.activate("counter")
    seen = []
    with transaction.atomic():
        PluginStorage.objects.create(plugin="other", key="k", value=1)

    def receiver(sender, name, **kwargs):
        seen.append((name, PluginStorage.objects.filter(plugin=name).count()))

    runtime.plugin_uninstalled.connect(receiver)
    try:
        done = runtime.uninstall("counter")
    finally:
        runtime.plugin_uninstalled.disconnect(receiver)
    assert done["uninstall_called"] is True and done["storage_keys"] == 2  # + "uninstalled"
    assert not Plugin.objects.filter(name="counter").exists()
    assert not PluginStorage.objects.filter(plugin="counter").exists()
    assert PluginStorage.objects.filter(plugin="other").exists()
    assert seen == [("counter", 0)]
    assert runtime.get_loader().plugins == [] or all(
        p.name != "counter" or p.module is None for p in runtime.get_loader().plugins
    )


def test_another_process_stops_a_plugin_whose_row_was_uninstalled(plugin_dir):  # noqa: F811
    greeter(plugin_dir)
    runtime.activate("greeter")
    Plugin.objects.filter(name="greeter").delete()  # what uninstall did elsewhere
    assert runtime.apply_db_state() == {"greeter": "uninstalled"}
    assert Course.objects.create(name="c6", title="Intro").description == ""


def test_every_look_stops_a_plugin_whose_folder_vanished(plugin_dir):  # noqa: F811
    path = greeter(plugin_dir)
    runtime.activate("greeter")
    assert runtime.default.stop_vanished() == []
    path.rename(plugin_dir.parent / "elsewhere")
    # No other process bumped anything: the look itself notices the folder is gone.
    runtime.default.follower.look_now()
    runtime.check()
    assert str(runtime.get_loader().get("greeter").state) != "active"
    row = Plugin.objects.get(name="greeter")
    assert row.missing and row.status == PluginStatus.ERROR


def test_a_veto_no_form_could_show_is_the_plugins_message_not_a_500():
    from django.contrib.messages import get_messages
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.test import RequestFactory

    from course_plugins.middleware import CurrentUserMiddleware

    middleware = CurrentUserMiddleware(lambda request: None)
    veto = PluginVeto("Lessons with grades cannot be deleted.", hook="before-x-delete", model="m")
    post = RequestFactory().post("/admin/school/lesson/1/delete/")
    post.session = {}
    post._messages = FallbackStorage(post)
    response = middleware.process_exception(post, veto)
    assert (response.status_code, response.url) == (302, "/admin/school/lesson/1/delete/")
    assert [str(m) for m in get_messages(post)] == [
        "Refused by a plugin: Lessons with grades cannot be deleted."
    ]
    get = RequestFactory().get("/lessons/new/")
    response = middleware.process_exception(get, veto)
    assert response.status_code == 400
    assert response.content.decode() == "Lessons with grades cannot be deleted."
    assert middleware.process_exception(get, ValueError("other")) is None


def test_a_vanished_folder_stops_the_plugin_in_a_running_process(tmp_path):
    # Another process (watching as requests would) runs the plugin; its folder is deleted here
    # and nobody bumps the stamp: that process stops it on its own at its next look.
    from django_proc import Proc, migrate, site_env

    plugins = tmp_path / "plugins"
    folder = write_plugin(plugins, "leaving", "def activate(api):\n    pass\n")
    env = site_env(tmp_path, plugins)
    migrate(env)
    admin = Proc(env, "serve")
    watcher: Proc | None = None
    try:
        admin.read(60)
        assert admin.request(op="activate", name="leaving")["state"] == "active"
        watcher = Proc(env, "watch", "leaving")
        assert watcher.read(60)["state"] == "active"
        folder.rename(tmp_path / "elsewhere")
        assert watcher.read(timeout=30)["state"] != "active"
    finally:
        admin.close()
        if watcher is not None:
            watcher.close()


class Stubborn(ValueError):
    """A veto whose text never ends (a trusted plugin's own exception class)."""

    def __str__(self) -> str:
        while True:
            pass


def test_a_veto_whose_text_never_ends_refuses_with_what_could_be_read() -> None:
    # The site turned a plugin's veto into a PluginVeto with str(exc): a plugin's __str__ that
    # never returned held the request's thread for ever, outside the plugin's budget.
    import threading

    from course_plugins.core.options import options
    from course_plugins.model_hooks import _veto

    saved, options.hook_timeout = options.hook_timeout, 0.2
    vetoes: list[PluginVeto] = []
    worker = threading.Thread(
        target=lambda: vetoes.append(_veto(Stubborn(), "before-course-save", "courses.Course")),
        daemon=True,
    )
    try:
        worker.start()
        worker.join(5)
    finally:
        options.hook_timeout = saved
    assert not worker.is_alive()
    assert "(reading its text ran over the time budget)" in str(vetoes[0])
    assert type(vetoes[0].__cause__).__name__ == "PluginRaised"
