"""The engine's private event loop: coroutines run from sync code (hook runs, publishes, budgets).

One private event loop in one helper thread serves every sync caller, whether or not the calling
thread runs a loop itself (Django async views), so no loop is created per call and none is left
unclosed. A forked process starts its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from course_plugins.core.worker_threads import release_thread_resources

__all__ = ["in_engine_loop_thread", "run_coroutine_sync", "submit_coroutine"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(ready,), name="course-plugins-async", daemon=True
                )
                self._thread.start()
                ready.wait()
            assert self._loop is not None
            return self._loop

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        ready.set()
        loop.run_forever()

    def in_helper_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_loop_thread = _LoopThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_loop_thread.after_fork)


def in_engine_loop_thread() -> bool:
    """Whether the caller runs on the engine's private loop thread (it must not block on it)."""
    return _loop_thread.in_helper_thread()


async def _in_context(ctx: contextvars.Context, coro: Coroutine[Any, Any, T]) -> T:
    # The caller's context variables (organization scope, current user) follow the coroutine to
    # the loop thread; the task's own context copy keeps them from leaking back.
    for var, value in ctx.items():
        var.set(value)
    return await coro


def submit_coroutine(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Start ``coro`` on the engine's loop thread now, in the caller's context variables;
    return a future of its result.

    Must not be waited on from the loop thread itself (see :func:`in_engine_loop_thread`).
    """
    wrapped = _in_context(contextvars.copy_context(), coro)
    return asyncio.run_coroutine_threadsafe(wrapped, _loop_thread.loop())


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code and return its result (or raise its error).

    Works whether or not an event loop runs in the calling thread. The coroutine runs on the
    engine's private loop thread; called from that thread itself (a sync hook run inside an async
    plugin function), it runs on a fresh loop in a short-lived thread instead of deadlocking.
    """
    if _loop_thread.in_helper_thread():
        box: Future[T] = Future()
        coro = _in_context(contextvars.copy_context(), coro)

        def _own_loop() -> None:
            try:
                box.set_result(asyncio.run(coro))
            except BaseException as exc:  # handed to the waiting caller below
                box.set_exception(exc)
            finally:
                release_thread_resources()  # a dying thread must not leave a DB connection open

        worker = threading.Thread(target=_own_loop, name="course-plugins-async-nested")
        worker.start()
        worker.join()
        return box.result()
    return submit_coroutine(coro).result()
