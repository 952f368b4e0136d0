"""Show a plugin's veto on Django forms and in the admin, instead of a server error.

The signal bridge raises :class:`course_plugins.signals.PluginVeto` from ``pre_save`` when a
``before-x-save`` hook refuses. A form validated through :class:`PluginHookModelForm` runs that
hook during ``is_valid()`` so the refusal is a form error next to the user's input; the save that
follows does not run the hook again. :class:`PluginVetoAdminMixin` uses that form and turns a veto
raised later (delete, bulk actions, ``save_model`` changing values) into an error message.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from course_plugins.signals import PluginVeto, run_before_save


def add_veto_to_form(form: forms.BaseForm, veto: ValidationError) -> None:
    """Add ``veto`` to ``form``: per field when it names form fields, else as a form error."""
    if hasattr(veto, "error_dict") and set(veto.error_dict) <= set(form.fields):
        form.add_error(None, veto)
    else:
        form.add_error(None, veto.messages)


class PluginHookModelForm(forms.ModelForm):
    """A ``ModelForm`` whose validation includes the model's ``before-x-save`` plugin hook."""

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors:
            return
        try:
            changed = run_before_save(self.instance)
        except PluginVeto as veto:
            add_veto_to_form(self, veto)
            return
        # Show the values a plugin changed if the form is rendered again.
        for attname in changed:
            if attname in self.cleaned_data:
                self.cleaned_data[attname] = getattr(self.instance, attname)


class PluginVetoAdminMixin:
    """ModelAdmin mixin: plugin vetoes appear on the form or as an error message, never a 500.

    Put it before ``admin.ModelAdmin``. A custom ``form`` should subclass
    :class:`PluginHookModelForm`.
    """

    form = PluginHookModelForm

    def _refused(self, request: HttpRequest, veto: PluginVeto) -> HttpResponse:
        text = " ".join(veto.messages)
        self.message_user(request, f"Refused by a plugin ({veto.hook}): {text}", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().delete_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Bulk actions (delete selected) run inside the changelist view; a veto half-way must
        # undo the whole action, also when the caller's transaction goes on (ATOMIC_REQUESTS).
        try:
            if request.method != "POST":
                return super().changelist_view(request, *args, **kwargs)
            with transaction.atomic(using=router.db_for_write(self.model)):
                return super().changelist_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)
