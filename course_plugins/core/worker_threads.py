"""Running blocking work away from event loops, on the engine's few worker threads.

Plugin state listeners, ``api.storage.get_sync`` and friends may do blocking I/O (database
writes), which must not happen on a thread that runs an event loop (Django refuses it there).
``call_off_loop`` runs such work in place when it can and on a small thread pool when it must.
Work done on a worker thread ends with ``release_thread_resources()``, so a pooled thread never
sits on a database connection between calls (one left open would outlive a database restart and
keep test databases from being dropped).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="course-plugins-io")


def loop_running() -> bool:
    """True when the calling thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def release_thread_resources() -> None:
    """Close the calling thread's database connections, if Django's database layer is in use.

    The engine never imports Django; it only tidies up after it when something else did.
    """
    db = sys.modules.get("django.db")
    if db is not None:
        db.connections.close_all()


def in_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` on a worker thread, then release the thread's resources; returns its result."""
    try:
        return fn(*args, **kwargs)
    finally:
        release_thread_resources()


def call_off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` here; if this thread runs an event loop, on a worker thread, and wait.

    Returns what ``fn`` returns and raises what it raises; context variables (the current user)
    go along.
    """
    if not loop_running():
        return fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    return _pool.submit(ctx.run, in_worker, fn, *args, **kwargs).result()


def run_awaitable(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion from sync code (on a fresh loop; on a fresh thread if this
    one already runs a loop). Returns its result; raises what it raises."""

    async def wrap() -> T:
        return await awaitable

    if not loop_running():
        return asyncio.run(wrap())
    box: list[T] = []
    errors: list[BaseException] = []
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            box.append(ctx.run(asyncio.run, wrap()))
        except BaseException as exc:  # handed back to the caller below
            errors.append(exc)
        finally:
            release_thread_resources()

    worker = threading.Thread(target=run, name="course-plugins-await")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return box[0]
