"""``CurrentUserMiddleware``: makes the request's user what ``api.users.get_current()`` returns.

The user is kept in a ``contextvars.ContextVar``, so it follows the request into
``sync_to_async``/``async_to_sync`` threads and never leaks into another request. Outside a
request (Celery tasks, management commands, tests) use ``acting_as(user)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

_current_user: ContextVar[Any] = ContextVar("course_plugins_current_user", default=None)


def get_current_user() -> Any:
    """Return the user of the current request (or ``acting_as`` block); ``None`` outside one.

    It may be ``AnonymousUser`` or a lazy object; ``is_authenticated`` tells.
    """
    return _current_user.get()


@contextmanager
def acting_as(user: Any) -> Iterator[None]:
    """Make ``user`` the current user inside the ``with`` block (tasks, commands, tests)."""
    token = _current_user.set(user)
    try:
        yield
    finally:
        _current_user.reset(token)


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
        token = _current_user.set(getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            _current_user.reset(token)

    async def __acall__(self, request: Any) -> Any:
        token = _current_user.set(getattr(request, "user", None))
        try:
            response: Awaitable[Any] = self.get_response(request)
            return await response
        finally:
            _current_user.reset(token)
