"""Celery tasks: run a plugin's scheduled function, deliver an event to a background subscriber.

Both run in a worker that loads the plugins itself (the runtime starts in every process) and
follows the database state before each task (``task_prerun`` -> ``runtime.check``), so a plugin
deactivated in the admin a second ago is skipped, not run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from typing import Any

from celery import shared_task
from celery.signals import task_prerun, worker_process_init, worker_ready
from django.db import transaction

from course_plugins.core import scope
from course_plugins.core.event_bus import Event, EventBus, Subscription
from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState
from course_plugins.core.scheduler import resolve_function_ref
from course_plugins.core.scope import entered
from course_plugins.core.watchdog import TimeBudgetExceeded, time_limit
from course_plugins.exceptions import ScheduleError
from course_plugins.site import organizations, runtime, scheduling

__all__ = [
    "DELIVERY_MAX_RETRIES",
    "deliver_event",
    "dispatch_background",
    "install",
    "run_scheduled",
]

logger = logging.getLogger("course_plugins.tasks")

ORG_KEY = "org"
"""Key of an event's dict (``Event.to_dict()`` sent to a worker) naming its organization."""

DELIVERY_MAX_RETRIES = 5
"""Attempts after the first before a background event is given up (and logged)."""


def _active_plugin(name: str) -> LoadedPlugin | None:
    """The plugin named ``name`` if it is active in this process, else None."""
    runtime.ensure_started()  # a no-op once started (task_prerun normally did it)
    plugin = runtime.local_plugin(name)
    return plugin if plugin is not None and plugin.state == PluginState.ACTIVE else None


def _budget(plugin: LoadedPlugin) -> float | None:
    """The plugin's time budget (its ``hook_timeout``, else ``HOOK_TIMEOUT``)."""
    own = getattr(plugin, "hook_timeout", None)
    return own if own is not None else options.hook_timeout


@shared_task(name="course_plugins.tasks.run_scheduled", ignore_result=True)
def run_scheduled(
    plugin: str,
    function: str,
    token: str | None = None,
    scheduled_at: float | None = None,
    org: Any = None,
) -> str:
    """Run ``function`` of ``plugin`` (a name) with no arguments under the plugin's time budget.

    ``org``: the organization it was scheduled for (``None``: site-wide); it runs in that
    organization's scope, and only if the plugin is active there. Returns ``"ok"``,
    ``"failed"``, ``"timeout"`` or ``"skipped"`` (plugin not active here or for ``org``, or a
    one-shot replaced/cancelled since). Failures are counted like hook failures, so a function
    that keeps failing gets its plugin quarantined; with ``STRICT`` they are re-raised.
    """
    with entered(organizations.scope_for(org)):
        return _run_scheduled(plugin, function, token, scheduled_at, org)


def _run_scheduled(
    plugin: str, function: str, token: str | None, scheduled_at: float | None, org: Any
) -> str:
    active = _active_plugin(plugin)
    if active is None:
        logger.info("Skipped scheduled %s:%s: the plugin is not active", plugin, function)
        return "skipped"
    here = scope.effective()
    if here is not None and here.excludes(active.id):
        logger.info(
            "Skipped scheduled %s:%s: the plugin is not active for organization %s",
            plugin, function, here.org,
        )
        return "skipped"
    if token is not None and not scheduling.claim_one_shot(
        plugin, function, token, scheduled_at if scheduled_at is not None else time.time(), org
    ):
        logger.info(
            "Skipped scheduled %s:%s: replaced, cancelled or already run", plugin, function
        )
        return "skipped"
    where = f"schedule {function}"
    try:
        fn = resolve_function_ref(active, function)
    except ScheduleError as exc:
        health.record_failure(active.id, exc, where=where)
        if options.strict:
            raise
        return "failed"
    try:
        with time_limit(_budget(active)):
            result = fn()
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
    except TimeBudgetExceeded as exc:
        health.record_failure(active.id, exc, where=where, kind="timeout")
        if options.strict:
            raise
        return "timeout"
    except Exception as exc:
        health.record_failure(active.id, exc, where=where)
        if options.strict:
            raise
        return "failed"
    health.record_success(active.id)
    return "ok"


async def _await(awaitable: Any) -> Any:
    return await awaitable


@shared_task(
    name="course_plugins.tasks.deliver_event",
    ignore_result=True,
    # At least once: the message is acknowledged only after the handler ran, and a worker that
    # dies mid-task (SIGKILL, OOM) leaves it for the next one.
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=DELIVERY_MAX_RETRIES,
)
def deliver_event(subscription_key: str, event: dict[str, Any]) -> str:
    """Run one background subscription (by key) for ``event`` (an ``Event.to_dict()``).

    Returns ``"ok"``, or ``"skipped"`` when the subscription no longer exists here (its plugin
    was deactivated). Raises whatever delivery raises, which makes Celery retry with backoff.
    """
    runtime.ensure_started()  # a no-op once started (task_prerun normally did it)
    bus = EventBus.get_instance()
    evt = Event.from_dict(event)
    if not _subscribed(bus, subscription_key):
        # Maybe this worker has not followed an activation yet: look at the stamp now.
        runtime.check(force=True)
        if not _subscribed(bus, subscription_key):
            logger.info(
                "Skipped background event %s (%s): no subscription %r here (plugin inactive)",
                evt.name, evt.id, subscription_key,
            )
            return "skipped"
    # The organization the event is about came along (ORG_KEY); its handler runs in that scope
    # and only if its plugin is active there.
    with entered(organizations.scope_for(event.get(ORG_KEY))):
        here = scope.effective()
        if here is not None and here.excludes(_owner(bus, subscription_key)):
            logger.info(
                "Skipped background event %s (%s) for %r: plugin not active for organization %s",
                evt.name, evt.id, subscription_key, here.org,
            )
            return "skipped"
        bus.deliver(subscription_key, evt)
    return "ok"


def _subscribed(bus: EventBus, key: str) -> bool:
    return any(sub.key == key for sub in bus.subscriptions())


def _owner(bus: EventBus, key: str) -> str | None:
    return next((sub.owner for sub in bus.subscriptions() if sub.key == key), None)


def _send(subscription_key: str, payload: dict[str, Any]) -> None:
    deliver_event.apply_async(args=(subscription_key, payload))


def dispatch_background(event: Event, subscription: Subscription) -> None:
    """The bus's background dispatcher: send ``deliver_event`` once the transaction commits.

    An event published inside a transaction that rolls back is never delivered. Returns nothing;
    a failure to reach the broker is logged (``robust``), never raised into the publisher.
    """
    payload = event.to_dict()
    current = scope.current_scope.get()
    if current is not None and current.org is not None:
        payload[ORG_KEY] = current.org  # the worker runs the handler for this organization
    send = functools.partial(_send, subscription.key, payload)
    transaction.on_commit(send, robust=True)


def install(bus: EventBus | None = None) -> None:
    """Make ``bus`` (default: the process-wide bus) hand background subscriptions to Celery."""
    (bus or EventBus.get_instance()).set_background_dispatcher(dispatch_background)


@task_prerun.connect
def _follow_state(**kwargs: Any) -> None:
    runtime.check()


@worker_process_init.connect
@worker_ready.connect
def _start_follower(**kwargs: Any) -> None:
    # An idle worker follows too, and a prefork parent keeps a fresh state for the children it
    # forks later (max-tasks-per-child, autoscale).
    runtime.start_follower()
