"""Messages to the broker, sent with short timeouts and no retries (a broker outage must cost a
request or a relay pass about ``SEND_TIMEOUT`` seconds, once).

What goes: an outbox row's background delivery (``send_event``), several rows as one message
(``send_events``), and a scheduled one-shot with the countdown it has left (``send_scheduled``).
Tasks are sent through the registered task where there is one, so ``task_always_eager`` runs
them here (tests), and by name otherwise (``apply``). The outbox (``site/outbox.py``) decides
what to send and when.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import current_app
from django.core.cache import caches

__all__ = [
    "MANY_TASK_NAME",
    "ROW_KEY",
    "SEND_TIMEOUT",
    "TASK_NAME",
    "apply",
    "connect",
    "mark_prompt_relay",
    "producer",
    "send_event",
    "send_events",
    "send_scheduled",
    "store_entry",
]

logger = logging.getLogger("course_plugins.outbox")

TASK_NAME = "course_plugins.tasks.deliver_background"
"""The Celery task a row becomes: ``(plugin, keys, event_dict)``."""

MANY_TASK_NAME = "course_plugins.tasks.deliver_background_many"
"""The Celery task several rows relayed together become: ``([[plugin, keys, event], ...],)``."""

SEND_TIMEOUT = 1.0
"""Seconds a broker call may take (connect and each read/write), with no retries."""

ROW_KEY = "outbox_row"
"""Key of a sent event dict naming its ``OutboxMessage`` row (its id as a string): the worker that
delivered the event deletes the row; until then the relay sends it again (``site/outbox.py``).
Workers that do not know the key ignore it (``Event.from_dict``)."""



def connect(timeout: float) -> Any:
    """A new broker connection for sending with short timeouts and no connection retries."""
    base = current_app.connection_for_write()
    options = dict(base.transport_options or {})
    options.update(
        socket_timeout=timeout, socket_connect_timeout=timeout, max_retries=0,
        retry_on_timeout=False,
    )
    connection = base.clone(transport_options=options, connect_timeout=timeout)
    base.release()
    return connection


@contextlib.contextmanager
def producer(timeout: float = SEND_TIMEOUT) -> Iterator[Any]:
    """A broker connection for sending with short timeouts and no connection retries."""
    connection = connect(timeout)
    try:
        yield connection
    finally:
        connection.release()


_sending = threading.local()  # .by_prompt: this thread is a prompt relay (never eager)


def mark_prompt_relay() -> None:
    """Mark the calling thread as a prompt relay: it sends every task by name, never eagerly."""
    _sending.by_prompt = True


def apply(name: str, **options: Any) -> None:
    """Send task ``name`` with ``options`` (``args``/``kwargs``, ``connection``...): through the
    registered task, so ``task_always_eager`` is honoured (tests); by name in the prompt relay's
    thread, which must never run a task itself (Celery keeps a process-wide flag while it runs
    one eagerly), and for a task this process does not know."""
    task = None if getattr(_sending, "by_prompt", False) else current_app.tasks.get(name)
    if task is not None:
        task.apply_async(**options)
    else:
        current_app.send_task(name, **options)


def send_event(
    plugin: str, keys: list[str], event: dict[str, Any], row_id: Any, connection: Any
) -> None:
    """Send one outbox row's delivery (``TASK_NAME``); the row's id is the task id and, under
    ``ROW_KEY``, part of the event."""
    if row_id is not None:
        event = {**event, ROW_KEY: str(row_id)}
    apply(TASK_NAME, args=(plugin, list(keys), event), connection=connection, retry=False,
           task_id=str(row_id) if row_id is not None else None)


def send_events(rows: list[Any], connection: Any) -> None:
    """Send several outbox rows' deliveries as one message (``MANY_TASK_NAME``), each event with
    its row's id under ``ROW_KEY``."""
    items = [[row.plugin, list(row.keys), {**row.event, ROW_KEY: str(row.id)}] for row in rows]
    apply(MANY_TASK_NAME, args=(items,), connection=connection, retry=False)


def store_entry(entry: dict[str, Any]) -> bool:
    """Add ``entry``'s cache key; True if it now holds ``entry``'s value (added, or there already:
    a write that timed out may still have reached the cache, as a frozen Redis runs it when it
    wakes up); False if it holds another value."""
    cache = caches[entry["cache"]]
    if cache.add(entry["key"], entry["value"], entry["timeout"]):
        return True
    return bool(cache.get(entry["key"]) == entry["value"])


def send_scheduled(one_shot: dict[str, Any], row_id: Any, connection: Any) -> None:
    """Send a scheduled one-shot (``{"task", "kwargs", "due"}``) with the countdown still left."""
    claim = one_shot.get("cache_add")
    if claim is not None and not store_entry(claim):
        # Its token could not be stored when it was scheduled (the cache was down), and another
        # one is there now: it was scheduled again since (replaced). Nothing to send.
        logger.info("One-shot %s replaced while in the outbox: dropped", one_shot["kwargs"])
        return
    apply(one_shot["task"], kwargs=dict(one_shot["kwargs"]), connection=connection,
           retry=False, task_id=str(row_id) if row_id is not None else None,
           countdown=max(0.0, float(one_shot["due"]) - time.time()))
