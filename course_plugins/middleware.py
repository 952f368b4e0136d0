"""The two middlewares of the plugin system; both work in sync and async stacks.

``CurrentUserMiddleware``
    makes the request's user what ``api.users.get_current()`` returns (place it after
    ``AuthenticationMiddleware``).
``SyncMiddleware``
    before each request, follows plugin changes made in other processes (``runtime.check``).

``get_current_user`` and ``acting_as`` (from ``api.current_user``) are importable from here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse

from course_plugins.api.current_user import acting_as, current_user, get_current_user
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
