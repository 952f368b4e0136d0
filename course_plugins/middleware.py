"""The two middlewares of the plugin system; both work in sync and async stacks.

``CurrentUserMiddleware``
    makes the request's user what ``api.users.get_current()`` returns (place it after
    ``AuthenticationMiddleware``), and answers a plugin's refusal that no form could show (a
    delete in the admin, a bulk action, a view of the project's own) with the plugin's message
    instead of a server error.
``SyncMiddleware``
    before each request, follows plugin changes made in other processes (``runtime.check``).

``get_current_user`` and ``acting_as`` (from ``api.current_user``) are importable from here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.apps import apps
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.utils.translation import gettext as _

from course_plugins.api.current_user import acting_as, current_user, get_current_user
from course_plugins.model_hooks import PluginVeto
from course_plugins.site import runtime

__all__ = ["CurrentUserMiddleware", "SyncMiddleware", "acting_as", "get_current_user"]


class CurrentUserMiddleware:
    """Put ``request.user`` in the context for the Platform API; sync and async capable.

    Place it after ``AuthenticationMiddleware``. ``request.user`` stays lazy: the user is only
    loaded when a plugin asks for it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = current_user.set(getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            current_user.reset(token)

    async def __acall__(self, request: Any) -> Any:
        token = current_user.set(getattr(request, "user", None))
        try:
            response: Awaitable[Any] = self.get_response(request)
            return await response
        finally:
            current_user.reset(token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        """A ``PluginVeto`` the view let through: the message on the page the user came from.

        A form already shows a refusal as a form error and DRF answers 400 itself; this covers
        the rest. After a POST (a delete in the admin), the browser goes back to the same page
        with the plugin's message; otherwise the answer is a 400 with the message.
        """
        if not isinstance(exception, PluginVeto):
            return None
        text = " ".join(exception.messages)
        if request.method != "GET" and apps.is_installed("django.contrib.messages"):
            messages.error(request, _("Refused by a plugin: %(reason)s") % {"reason": text})
            return HttpResponseRedirect(request.get_full_path())
        return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")


class SyncMiddleware:
    """Run ``runtime.check()`` before each request: the site follows changes made in other
    processes.

    Add ``"course_plugins.middleware.SyncMiddleware"`` to ``MIDDLEWARE``. Works in sync and async
    stacks; in an async stack the rare look at the stamp runs in a thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self._async:
            return self.__acall__(request)
        runtime.check()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if runtime.due():
            await sync_to_async(runtime.check)()
        return await self.get_response(request)
