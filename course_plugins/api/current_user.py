"""The current user (a ``ContextVar``): what ``api.users.get_current()`` returns.

Set per request by ``middleware.CurrentUserMiddleware``; outside a request (Celery tasks,
management commands, tests) use :func:`acting_as`. A ``ContextVar`` follows the request into
``sync_to_async``/``async_to_sync`` threads and never leaks into another request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["acting_as", "current_user", "get_current_user"]

current_user: ContextVar[Any] = ContextVar("course_plugins_current_user", default=None)


def get_current_user() -> Any:
    """Return the user of the current request (or ``acting_as`` block); ``None`` outside one.

    It may be ``AnonymousUser`` or a lazy object; ``is_authenticated`` tells.
    """
    return current_user.get()


@contextmanager
def acting_as(user: Any) -> Iterator[None]:
    """Make ``user`` the current user inside the ``with`` block (tasks, commands, tests)."""
    token = current_user.set(user)
    try:
        yield
    finally:
        current_user.reset(token)
