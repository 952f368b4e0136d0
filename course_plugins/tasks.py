"""Celery tasks: run a plugin's scheduled function, deliver an event to background subscribers,
relay the outbox (``site/outbox.py``: how background events survive outages).

Both run in a worker that loads the plugins itself (the runtime starts in every process) and
follows the database state before each task (``task_prerun`` -> ``runtime.check``), so a plugin
deactivated in the admin a second ago is skipped, not run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import task_prerun, worker_process_init, worker_ready
from django.db import DatabaseError, transaction
from django.utils import timezone

from course_plugins.core import scope
from course_plugins.core.event_bus import Event, EventBus, Subscription
from course_plugins.core.health import health
from course_plugins.core.isolation import WorkerTimeout
from course_plugins.core.options import options
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState
from course_plugins.core.scheduler import resolve_function_ref
from course_plugins.core.scope import entered
from course_plugins.core.watchdog import TimeBudgetExceeded, time_limit
from course_plugins.exceptions import ScheduleError
from course_plugins.models import OutboxMessage
from course_plugins.site import delivery, kombu_compat, organizations, outbox, runtime, scheduling

__all__ = [
    "DELIVERY_MAX_RETRIES",
    "deliver_event",
    "deliver_background",
    "deliver_background_many",
    "dispatch_background",
    "install",
    "relay_outbox",
    "run_scheduled",
]

logger = logging.getLogger("course_plugins.tasks")

ORG_KEY = outbox.ORG_KEY
"""Key of an event's dict (``Event.to_dict()`` sent to a worker) naming its organization."""

# A worker on Redis survives a Redis restart (kombu 5.7.0 crashed in restore_unacked).
kombu_compat.install()

DELIVERY_MAX_RETRIES = 8
"""Attempts after the first before a background delivery is given up (logged as an error);
with the outbox's backoff (1, 2, 4 ... 30 s) that is about two minutes."""


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
    except (TimeBudgetExceeded, WorkerTimeout) as exc:
        # An isolated plugin's overrun ends at its worker's deadline or at this limit,
        # whichever comes first: a timeout either way.
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


def _retry_later(plugin: str, pending: dict[str, str], event: dict[str, Any], attempt: int) -> str:
    """Put the keys still to deliver back in the outbox, due after a backoff; ``"retry"``.

    The outbox (the database) rather than the broker holds the retry, so a broker outage at this
    moment loses nothing; the retry's row replaces this message's row in one transaction. Past
    ``DELIVERY_MAX_RETRIES`` the keys are given up, with an error. Raises ``DatabaseError``.
    """
    name, event_id = event.get("name"), event.get("id")
    if attempt >= DELIVERY_MAX_RETRIES:
        logger.error(
            "Gave up background event %s (%s) for %s after %d attempts: %s",
            name, event_id, ", ".join(pending), attempt + 1,
            "; ".join(f"{k}: {why}" for k, why in pending.items()),
        )
        outbox.delivered(event)
        return "failed"
    retry = {k: v for k, v in event.items() if k != outbox.ROW_KEY}
    with transaction.atomic():
        outbox.delivered(event)
        OutboxMessage.objects.create(
            event_id=str(event_id),
            plugin=plugin,
            keys=list(pending),
            event={**retry, "attempt": attempt + 1},
            attempts=attempt + 1,
            next_attempt_at=timezone.now() + outbox._backoff(attempt + 2),
            last_error="; ".join(f"{k}: {why}" for k, why in pending.items())[:2000],
        )
    logger.warning(
        "Background event %s (%s) for %s not delivered yet (attempt %d): %s; retried later",
        name, event_id, ", ".join(pending), attempt + 1,
        "; ".join(f"{k}: {why}" for k, why in pending.items()),
    )
    return "retry"


@shared_task(
    name="course_plugins.tasks.deliver_background",
    ignore_result=True,
    # At least once: acknowledged only after the handlers ran; a worker that dies mid-task leaves
    # the message to the next one (Redis: after the visibility timeout), and a message lost on
    # the way is sent again from its outbox row, deleted only here. Running a key twice is
    # prevented by its EventDelivery record, written in the handler's transaction.
    acks_late=True,
    reject_on_worker_lost=True,
)
def deliver_background(plugin: str, keys: list[str], event: dict[str, Any]) -> dict[str, str] | str:
    """Deliver ``event`` (an ``Event.to_dict()``) to ``plugin``'s background subscriptions ``keys``.

    Returns ``{key: "ok"|"duplicate"|"skipped"}``, or ``"retry"`` when some keys must be tried
    again (a handler failed, the database is down, or the plugin is active in the database but
    not loaded here yet: never acknowledged silently), or ``"failed"`` after the last attempt.
    """
    runtime.ensure_started()  # a no-op once started (task_prerun normally did it)
    attempt = int(event.get("attempt", 0) or 0)
    try:
        outcomes = delivery.deliver(
            plugin, list(keys), event, bus=EventBus.get_instance(),
            refresh=lambda: runtime.check(force=True),
        )
    except delivery.DeliveryIncomplete as exc:
        try:
            return _retry_later(plugin, exc.pending, event, attempt)
        except DatabaseError as db_exc:
            # Neither the handler nor the outbox can use the database: give the message back to
            # the broker instead of acknowledging it.
            logger.warning(
                "Background event %s (%s): database unavailable (%s); message requeued",
                event.get("name"), event.get("id"), db_exc,
            )
            raise Reject(db_exc, requeue=True) from db_exc
    try:
        outbox.delivered(event)
    except DatabaseError as exc:
        # Delivered, but its row stays: sent again once its lease is over, and skipped then.
        logger.warning(
            "Background event %s (%s) delivered; its outbox row could not be deleted (%s)",
            event.get("name"), event.get("id"), exc,
        )
    return outcomes


@shared_task(
    name="course_plugins.tasks.deliver_background_many",
    ignore_result=True,
    acks_late=True,  # as deliver_background: a redelivered batch skips what already ran
    reject_on_worker_lost=True,
)
def deliver_background_many(items: list[list[Any]]) -> list[dict[str, str] | str]:
    """Deliver several outbox rows relayed together: ``[[plugin, keys, event_dict], ...]``, each
    as ``deliver_background`` does (its own retries through the outbox). A database outage gives
    the whole message back to the broker; the rows delivered before it are not run again (their
    ``EventDelivery`` records)."""
    return [
        deliver_background(str(plugin), list(keys), dict(event)) for plugin, keys, event in items
    ]


@shared_task(
    name="course_plugins.tasks.deliver_event",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def deliver_event(subscription_key: str, event: dict[str, Any]) -> dict[str, str] | str:
    """One key of an older message format (before ``deliver_background``): same delivery."""
    plugin = subscription_key.partition(":")[0]
    result: dict[str, str] | str = deliver_background(plugin, [subscription_key], event)
    return result


@shared_task(name="course_plugins.tasks.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Send the due outbox rows to the broker and prune old delivery records; returns how many
    were sent. Every worker also relays on its own (``outbox.start_relay``); schedule this with
    beat where no worker runs for long."""
    sent = 0
    while True:
        batch = outbox.relay()
        sent += batch
        if batch < outbox.RELAY_BATCH:
            break
    delivery.prune()
    return sent


def dispatch_background(event: Event, subscription: Subscription) -> None:
    """The bus's background dispatcher (the process-wide bus): see ``site/outbox.py``."""
    outbox.dispatch(event, subscription)


def install(bus: EventBus | None = None) -> None:
    """Make ``bus`` (default: the process-wide bus) hand background subscriptions to the outbox."""
    target = bus or EventBus.get_instance()
    target.set_background_dispatcher(outbox.make_dispatcher(target))


@task_prerun.connect
def _follow_state(**kwargs: Any) -> None:
    runtime.check()


@worker_process_init.connect
@worker_ready.connect
def _start_follower(**kwargs: Any) -> None:
    # An idle worker follows too, and a prefork parent keeps a fresh state for the children it
    # forks later (max-tasks-per-child, autoscale).
    runtime.start_follower()


@worker_ready.connect
def _start_relay(**kwargs: Any) -> None:
    # Every worker relays the outbox (rows the broker refused while it was down, retries).
    outbox.start_relay()
