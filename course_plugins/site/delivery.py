"""The receiving side of background events: a Celery worker runs each delivery once.

``deliver`` (run by ``course_plugins.tasks.deliver_background``) runs each subscription key of an
outbox row (``site/outbox.py``) for its event. Each key is run in a transaction that first
records ``EventDelivery(event_id, key)``; a message delivered again (a retry, a redelivery after
a worker died, a relay that sent a row twice) finds the record and skips the key, so a handler
runs once per event in effect. A key that is not registered in this process is *not*
acknowledged silently: if the database says the plugin is active (the worker has not loaded it
yet, or failed to), the key is retried and a warning says why; only when the plugin is inactive
is it skipped (a warning). ``prune`` deletes the records once no message can come again.

Subscription keys are the engine's stable ones (``"<plugin>:<qualname>"``): the same in every
process and after any number of reloads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from course_plugins.core import scope
from course_plugins.core.event_bus import Event
from course_plugins.models import EventDelivery, Plugin, PluginStatus
from course_plugins.site import organizations
from course_plugins.site.outbox import ORG_KEY

__all__ = ["DELIVERY_RETENTION", "DeliveryIncomplete", "deliver", "prune"]

logger = logging.getLogger("course_plugins.outbox")

DELIVERY_RETENTION = timedelta(days=7)
"""How long ``EventDelivery`` records are kept (a message is never redelivered after that)."""



class DeliveryIncomplete(Exception):
    """Some keys of a message could not be delivered yet: ``pending`` (key -> reason)."""

    def __init__(self, pending: dict[str, str]) -> None:
        self.pending = pending
        super().__init__("; ".join(f"{key}: {why}" for key, why in pending.items()))


def _meant_active(plugin: str) -> bool:
    """Whether the database says ``plugin`` should be running (enabled and active)."""
    if not plugin:
        return True  # platform code: always meant to be there
    return Plugin.objects.filter(
        name=plugin, enabled=True, status=PluginStatus.ACTIVE
    ).exists()


def _subscription(bus: Any, key: str) -> Any:
    return next((sub for sub in bus.subscriptions() if sub.key == key), None)


def _deliver_one(bus: Any, key: str, event: Any) -> str | None:
    """Run ``key`` for ``event`` unless it already ran; ``"ok"``, ``"duplicate"``, ``None`` (not
    registered here) or the reason it failed.

    A sync handler runs inside the transaction that records its ``EventDelivery``: its database
    work and the record commit together or not at all (a worker dying mid-handler leaves
    neither). An async handler runs on the engine's loop thread with connections of its own, so
    it cannot share that transaction (and on SQLite would wait on its write lock): it runs after
    a check for the record, which is written once it succeeded.
    """
    sub = _subscription(bus, key)
    if sub is None:
        return None
    here = scope.effective()
    if here is not None and here.excludes(sub.owner):
        logger.info(
            "Skipped background event %s (%s) for %s: plugin not active for organization %s",
            event.name, event.id, key, here.org,
        )
        return "skipped"
    try:
        if not getattr(sub, "is_async", False):
            with transaction.atomic():
                EventDelivery.objects.create(event_id=event.id, key=key)
                bus.deliver(key, event)
            return "ok"
        if EventDelivery.objects.filter(event_id=event.id, key=key).exists():
            raise IntegrityError("already delivered")
        bus.deliver(key, event)
        with transaction.atomic():
            EventDelivery.objects.create(event_id=event.id, key=key)
        return "ok"
    except IntegrityError:
        logger.info("Event %s (%s) already delivered to %s: skipped", event.name, event.id, key)
        return "duplicate"
    except KeyError:
        return None  # gone meanwhile (a reload), or its pattern does not match this event
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def deliver(
    plugin: str,
    keys: list[str],
    event_dict: dict[str, Any],
    *,
    bus: Any,
    refresh: Callable[[], Any],
) -> dict[str, str]:
    """Run each key of ``keys`` for the event once; return ``{key: outcome}``.

    Outcomes: ``"ok"``, ``"duplicate"`` (already delivered), ``"skipped"`` (the plugin is not
    active in the database). Raises ``DeliveryIncomplete`` naming the keys to retry (a handler
    failed, the database is down, or the plugin is meant to be active but the key is not
    registered here yet); the keys delivered so far stay delivered. ``refresh()`` makes this
    process follow the database state (called once before deciding a key is missing).
    """
    # The organization the event is about came along (ORG_KEY): deliver in its scope.
    with scope.entered(organizations.scope_for(event_dict.get(ORG_KEY))):
        event = Event.from_dict(event_dict)
        outcomes: dict[str, str] = {}
        pending: dict[str, str] = {}
        refreshed = False
        for key in keys:
            outcome = _deliver_one(bus, key, event)
            if outcome is None and not refreshed:
                refreshed = True  # not registered here: follow the database once, look again
                with contextlib.suppress(Exception):
                    refresh()
                outcome = _deliver_one(bus, key, event)
            if outcome is None:
                outcome, reason = _not_registered(plugin, key, event)
                if outcome != "skipped":
                    pending[key] = reason
                    continue
            elif outcome not in ("ok", "duplicate", "skipped"):
                pending[key] = outcome
                continue
            outcomes[key] = outcome
        if pending:
            raise DeliveryIncomplete(pending)
        return outcomes


def _not_registered(plugin: str, key: str, event: Any) -> tuple[str, str]:
    """What to do with ``key``, not registered in this process: ``("skipped", ...)`` when the
    plugin is not meant to be active, else ``("retry", reason)`` (a warning says why)."""
    try:
        active = _meant_active(plugin)
    except DatabaseError as exc:
        return "retry", f"database unavailable ({type(exc).__name__}: {exc})"
    if active:
        reason = (
            f"plugin {plugin or '(platform)'} is active in the database but {key!r} is not "
            "registered in this process (not loaded yet, failed to load, or the handler was "
            "renamed)"
        )
        logger.warning("Background event %s (%s): %s; retrying", event.name, event.id, reason)
        return "retry", reason
    logger.warning(
        "Skipped background event %s (%s) for %s: plugin %s is not active",
        event.name, event.id, key, plugin,
    )
    return "skipped", "skipped"


def prune(*, using: str | None = None) -> int:
    """Delete ``EventDelivery`` records older than ``DELIVERY_RETENTION``; return how many."""
    cutoff = timezone.now() - DELIVERY_RETENTION
    deleted, _ = EventDelivery.objects.using(using).filter(delivered_at__lt=cutoff).delete()
    return deleted
