"""Background event deliveries that survive broker outages, worker deaths and reloads.

Sending side (the transactional outbox)
    An event caused by a database change is *staged* while the change's transaction is still
    open (``stage``, called by the model-signal bridge): one ``OutboxMessage`` row per plugin
    with background subscriptions matching the event, carrying that plugin's subscription keys,
    written in the same transaction. So the rows exist exactly when the change was committed.
    After the commit the bus publishes the event; its background dispatcher (``dispatch``) sees
    the rows are already written and only the relay runs. Events not caused by a database change
    (``api.emit``) get their row when dispatched. ``relay`` hands rows to the broker; a row the
    broker refused stays, with a backoff. The relay runs right after the commit (from the
    request: short timeouts, no retries, so an outage costs a request about ``SEND_TIMEOUT``
    seconds at most, once), then periodically in every worker (``start_relay`` at worker start)
    and from the ``course_plugins.tasks.relay_outbox`` task.

    A row the broker took stays until the worker that delivered its event deletes it
    (``delivered``; the message names its row, ``broker.ROW_KEY``); it is due again after a lease
    (``_lease``) and then sent again. The broker taking a message is not enough: kombu's Redis
    transport pops a message off the queue (BRPOP) before it records it as unacknowledged, so a
    worker killed between the two loses it for good, and a broker without persistence loses
    what it held when it restarts. A row sent again whose first message was not lost after all
    costs a duplicate, which the worker skips (``EventDelivery``). One-shots are deleted once the
    broker took them (a one-shot's token makes it run once; see ``send_one_shot``).

The receiving side (a worker running each delivery once) is ``site/delivery.py``; the broker
calls (short timeouts, no retries) are ``site/broker.py``.

Subscription keys are the engine's stable ones (``"<plugin>:<qualname>"``): the same in every
process and after any number of reloads.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from celery import current_app
from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from course_plugins.core import scope
from course_plugins.core.event_bus import EventBus
from course_plugins.models import OutboxMessage
from course_plugins.site import broker
from course_plugins.site.broker import ROW_KEY, SEND_TIMEOUT

__all__ = [
    "EXIT_FLUSH_TIMEOUT",
    "background_keys",
    "delivered",
    "dispatch",
    "drop_one_shots",
    "flush_relay",
    "relay",
    "send_one_shot",
    "stage",
    "start_relay",
    "waiting_one_shots",
]

logger = logging.getLogger("course_plugins.outbox")

ORG_KEY = "org"
"""Key of a row's event dict naming the organization the event is about (its scope when it was
published); the worker delivers in that organization's scope."""

ONE_SHOT_KEY = "one_shot"
"""Key of a row's ``event`` dict holding a scheduled one-shot (``send_one_shot``) instead of an
event: ``{"task", "kwargs", "due"}`` (``due``: Unix time)."""

RELAY_BATCH = 200
"""Rows one relay pass sends at most."""

RELAY_INTERVAL = 2.0
"""Seconds between two relay passes of a worker's relay thread."""

PROMPT_INTERVAL = 0.25
"""Shortest time (seconds) between two passes of a process's prompt relay: a row written after a
quiet spell is sent at once, rows written in a stream wait at most this long and go together."""

CLAIM = timedelta(seconds=10)
"""A new row is due for the periodic relays only this long after it was written: until then it
is left to the prompt relay of the process that wrote it."""

BACKOFF_MAX = 30.0
"""Longest wait (seconds) before a row the broker refused is tried again."""

LEASE_DEFAULT = 300.0
"""Seconds a sent row waits for its delivery before it is sent again, when the broker has no
visibility timeout to go by (see ``_lease``)."""

LEASE_MAX = 3600.0
"""Longest lease (seconds) of a row sent again and again (unless the first one is longer)."""

BROKER_PAUSE = 5.0
"""After the broker failed, seconds during which requests leave their rows to the workers' relay
instead of each trying (and waiting up to ``SEND_TIMEOUT``) again."""

_broker_failed_at = 0.0  # monotonic time of the last broker failure seen by this process
_gone_reported = False  # the outbox table is gone (migrate course_plugins zero) and it was said
_STAGED_LIMIT = 10_000
_staged: OrderedDict[tuple[str, str], None] = OrderedDict()
_staged_lock = threading.Lock()


def _plugin_of(owner: str | None) -> str:
    return (owner or "").partition("@")[0]


def background_keys(bus: Any, event: Any) -> dict[str, list[str]]:
    """``{plugin name: [keys]}`` of the background subscriptions matching ``event`` on ``bus``.

    Platform-owned background subscriptions are grouped under ``""``.
    """
    groups: dict[str, list[str]] = {}
    for sub in bus.matching(event.name):
        if getattr(sub, "background", False):
            groups.setdefault(_plugin_of(sub.owner), []).append(sub.key)
    return groups


def _remember(event_id: str, plugin: str) -> bool:
    """Record that (event, plugin) has its row; return False if it already had one."""
    with _staged_lock:
        if (event_id, plugin) in _staged:
            return False
        _staged[(event_id, plugin)] = None
        while len(_staged) > _STAGED_LIMIT:
            _staged.popitem(last=False)
        return True


def _write(event: Any, groups: dict[str, list[str]], using: str | None) -> list[Any]:
    payload = event.to_dict()
    current = scope.current_scope.get()
    if current is not None and current.org is not None:
        payload[ORG_KEY] = current.org  # the worker runs the handlers for this organization
    # Due only after CLAIM: until then they are this process's to send (right after the commit,
    # by its prompt relay); the periodic relays take them if it has not by then.
    now = timezone.now()
    rows = [
        OutboxMessage(id=uuid.uuid4(), event_id=event.id, plugin=plugin, keys=keys,
                      event=payload, created_at=now, next_attempt_at=now + CLAIM)
        for plugin, keys in groups.items()
    ]
    _insert(rows, using or router.db_for_write(OutboxMessage))
    transaction.on_commit(lambda: _relay_now(rows, using), using=using, robust=True)
    return [row.id for row in rows]


_insert_sql: dict[str, str] = {}


def _insert(rows: list[Any], alias: str) -> None:
    """INSERT ``rows`` (complete ``OutboxMessage``s: id and dates set) with one statement each.

    Every save of a model with a background subscriber writes a row, so this skips what
    ``bulk_create`` checks and builds per call (a third of a plain course create on SQLite);
    each value is still prepared by its field for this database, as the ORM does."""
    connection = connections[alias]
    fields = OutboxMessage._meta.concrete_fields
    sql = _insert_sql.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        sql = _insert_sql[connection.vendor] = "INSERT INTO {} ({}) VALUES ({})".format(
            quote(OutboxMessage._meta.db_table),
            ", ".join(quote(f.column) for f in fields),
            ", ".join(["%s"] * len(fields)),
        )
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(
                sql, [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
            )
            row._state.adding, row._state.db = False, alias


def _relay_now(rows: list[Any], using: str | None) -> None:
    """Right after the commit: hand these rows to this process's prompt relay (a thread), so the
    request that made them never waits on the broker; unless the broker just failed here (then
    the workers' relay sends them, once they are due and the broker is back). With
    ``task_always_eager`` (tests) they are relayed here and now, so their handlers have run when
    the commit returns."""
    if time.monotonic() - _broker_failed_at < BROKER_PAUSE:
        return
    if current_app.conf.task_always_eager:
        relay(ids=[row.id for row in rows], using=using)
        return
    _prompt.hand_over(rows, using)


def stage(event: Any, *, bus: Any = None, using: str | None = None) -> list[Any]:
    """Write ``event``'s outbox rows now, in the current transaction; relay them after commit.

    For an event about to be published when the transaction commits (the signal bridge). Returns
    the row ids (none when no background subscription matches). Raises ``DatabaseError`` as the
    transaction's own writes would.
    """
    groups = background_keys(bus or EventBus.get_instance(), event)
    groups = {plugin: keys for plugin, keys in groups.items() if _remember(event.id, plugin)}
    if not groups:
        return []
    return _write(event, groups, using)


def make_dispatcher(bus: Any) -> Callable[[Any, Any], None]:
    """The background dispatcher of ``bus``: one outbox row per (event, plugin)."""

    def dispatcher(event: Any, subscription: Any) -> None:
        dispatch(event, subscription, bus=bus)

    dispatcher.uses_outbox = True  # type: ignore[attr-defined] # the signal bridge stages for it
    return dispatcher


def dispatch(event: Any, subscription: Any, *, bus: Any = None) -> None:
    """Hand ``subscription``'s delivery of ``event`` to the outbox (a row, unless staged).

    Inside a transaction the row is part of it (sent after the commit, never after a rollback).
    When the database cannot take the row, the message goes to the broker directly (logged); when
    neither can, the delivery is lost and an error says so.
    """
    plugin = _plugin_of(subscription.owner)
    if not _remember(event.id, plugin):
        return  # staged with the change, or another of this plugin's keys already wrote it
    keys = background_keys(bus or EventBus.get_instance(), event).get(plugin) or [subscription.key]
    try:
        _write(event, {plugin: keys}, None)
        return
    except DatabaseError as exc:
        logger.warning(
            "Outbox unavailable (%s: %s): sending event %s (%s) for %s to the broker directly",
            type(exc).__name__, exc, event.name, event.id, plugin or "the platform",
        )
    try:
        with broker.producer() as connection:
            broker.send_event(plugin, keys, event.to_dict(), None, connection)
    except Exception as exc:
        logger.error(
            "Background event %s (%s) for %s LOST: neither the database nor the broker is "
            "reachable (%s: %s)", event.name, event.id, plugin or "the platform",
            type(exc).__name__, exc,
        )


# -- relay -------------------------------------------------------------------------------------


def send_one_shot(
    plugin: str, task: str, kwargs: dict[str, Any], delay: float, *,
    timeout: float = SEND_TIMEOUT, cache_add: dict[str, Any] | None = None,
) -> bool:
    """Send task ``task`` by name with ``kwargs``, due in ``delay`` seconds, without waiting on a
    broker that is down; return True if the broker took it, False if it went to the outbox.

    For ``api.schedule`` one-shots made during a web request: the broker gets ``timeout``
    seconds per call and no retries (none at all for ``BROKER_PAUSE`` seconds after a broker
    failure in this process). A message the broker did not take becomes an ``OutboxMessage`` row
    (committed with the caller's transaction) that the relay sends once the broker is back, with
    the countdown then left (at once if it is past). The task must be idempotent: a send that
    timed out may have reached the broker before the row was written (``run_scheduled`` claims
    its token, so it runs once). Raises ``DatabaseError`` when neither the broker nor the
    database takes it.

    ``cache_add``: ``{"cache", "key", "value", "timeout"}``, a cache entry the caller could not
    write (the cache is down): the message goes to the outbox at once, and the relay adds the
    entry before sending it (and drops the message if the key holds another value by then).
    """
    global _broker_failed_at
    due = time.time() + max(0.0, delay)
    one_shot: dict[str, Any] = {"task": task, "kwargs": kwargs, "due": due}
    if cache_add is not None:
        one_shot["cache_add"] = cache_add
    error: BaseException | None = None
    if cache_add is None and time.monotonic() - _broker_failed_at >= BROKER_PAUSE:
        try:
            with broker.producer(timeout) as connection:
                broker.send_scheduled(one_shot, None, connection)
            return True
        except Exception as exc:
            error = exc
            _broker_failed_at = time.monotonic()
    OutboxMessage.objects.create(
        event_id=uuid.uuid4().hex,
        plugin=plugin,
        keys=[],
        event={ONE_SHOT_KEY: one_shot, "name": f"one-shot {kwargs.get('function', task)}"},
        last_error="" if error is None else f"{type(error).__name__}: {error}"[:2000],
        attempts=0 if error is None else 1,
    )
    logger.warning(
        "One-shot %s of %s left in the outbox (%s); the relay sends it when the broker is back",
        kwargs.get("function", task), plugin or "the platform",
        f"{type(error).__name__}: {error}" if error is not None
        else "the cache is down" if cache_add is not None else "the broker just failed here",
    )
    return False


def drop_one_shots(token_key: str) -> int:
    """Delete the one-shots waiting in the outbox whose token (``cache_add``) is ``token_key``
    (a cancelled schedule); returns how many."""
    deleted, _ = OutboxMessage.objects.filter(
        event__one_shot__cache_add__key=token_key
    ).delete()
    return int(deleted)


def waiting_one_shots(plugin: str | None = None) -> list[tuple[dict[str, Any], float]]:
    """``(task kwargs, due as Unix time)`` of the one-shots waiting in the outbox, oldest first
    (only ``plugin``'s, by name, if given)."""
    rows = OutboxMessage.objects.filter(event__has_key=ONE_SHOT_KEY).order_by("created_at")
    if plugin is not None:
        rows = rows.filter(plugin=plugin)
    found = []
    for row in rows:
        one_shot = row.event.get(ONE_SHOT_KEY) or {}
        found.append((dict(one_shot.get("kwargs") or {}), float(one_shot.get("due") or 0.0)))
    return found


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_MAX, 2.0 ** max(0, attempts - 1)))


def _lease(attempts: int) -> timedelta:
    """How long a row sent now waits for the worker that delivers it to delete it before it is
    due again; ``attempts``: its earlier sends and failed sends.

    Twice the broker's visibility timeout (a message held by a worker that died is back in the
    queue by then), else ``LEASE_DEFAULT``; doubled with every send, so that rows waiting behind
    a backlog in the queue are not sent again and again, up to ``LEASE_MAX``.
    """
    visibility = (current_app.conf.broker_transport_options or {}).get("visibility_timeout")
    base = 2.0 * float(visibility) if visibility else LEASE_DEFAULT
    return timedelta(seconds=min(base * 2.0 ** min(attempts, 16), max(base, LEASE_MAX)))


def delivered(event: dict[str, Any], *, using: str | None = None) -> None:
    """Delete the row of ``event``, a sent event dict (the one it names under ``ROW_KEY``, if
    any): a worker delivered it, or handed the keys still to do to a row of their own. Raises
    ``DatabaseError``."""
    row_id = event.get(ROW_KEY)
    if row_id:
        OutboxMessage.objects.using(using).filter(id=row_id).delete()


def relay(
    ids: Iterable[Any] | None = None,
    *,
    limit: int = RELAY_BATCH,
    using: str | None = None,
    timeout: float = SEND_TIMEOUT,
    connection: Any = None,
) -> int:
    """Send outbox rows to the broker; return how many the broker took.

    ``ids``: only these rows (right after their commit), else every row that is due (new ones
    past ``CLAIM``, refused ones past their backoff, sent ones past their lease). The events
    among them go as one ``deliver_background_many`` message (one ``deliver_background`` when
    there is one), each one-shot as its own message (it has its own countdown). Stops at the
    first broker failure (the broker is down: the rest would fail too), recording the attempt
    and the next one's time on the rows not sent. Never raises for a broker or database outage.
    ``connection``: a broker connection to send with (else one is made for this pass).
    """
    global _gone_reported
    now = timezone.now()
    query = OutboxMessage.objects.using(using)
    query = query.filter(id__in=list(ids)) if ids is not None else query.filter(
        next_attempt_at__lte=now
    )
    sent = 0
    try:
        with transaction.atomic(using=using):
            rows = list(query.select_for_update(skip_locked=True).order_by("created_at")[:limit])
            sent = _hand_over(rows, now, using, timeout, connection)
    except DatabaseError as exc:
        if _outbox_table_exists(using):
            logger.warning("Outbox relay: database unavailable (%s: %s)", type(exc).__name__, exc)
        elif not _gone_reported:
            # `migrate course_plugins zero` ran while this process was up: say so once, not at
            # every pass of the relay.
            _gone_reported = True
            logger.warning(
                "Outbox relay: the course_plugins tables are gone (migrate course_plugins "
                "zero?); nothing to relay in this process"
            )
    else:
        _gone_reported = False
    return sent


def _hand_over(
    rows: list[Any], now: Any, using: str | None, timeout: float, connection: Any
) -> int:
    """Send ``rows`` (see ``relay``), record the send (``_sent``) on those the broker took and
    the attempt on the others; return how many were sent."""
    global _broker_failed_at
    if not rows:
        return 0
    sent: list[Any] = []
    failed: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(broker.producer(timeout))
            events = [row for row in rows if ONE_SHOT_KEY not in row.event]
            if len(events) > 1:
                # One message for all of them: what a pass costs the broker (and this process)
                # does not grow with the number of events.
                broker.send_events(events, connection)
                sent.extend(row.id for row in events)
            elif events:
                row = events[0]
                broker.send_event(row.plugin, row.keys, row.event, row.id, connection)
                sent.append(row.id)
            for row in rows:
                one_shot = row.event.get(ONE_SHOT_KEY)
                if one_shot is not None:
                    broker.send_scheduled(one_shot, row.id, connection)
                    sent.append(row.id)
    except Exception as exc:
        failed = exc
        _broker_failed_at = time.monotonic()
    if sent:
        taken = set(sent)
        _sent([row for row in rows if row.id in taken], now, using)
    if failed is not None:
        for row in rows:
            if row.id in sent:
                continue
            row.attempts += 1
            # An update, not a save: a row sent before may have been delivered (and deleted)
            # meanwhile.
            OutboxMessage.objects.using(using).filter(id=row.id).update(
                attempts=row.attempts, next_attempt_at=now + _backoff(row.attempts),
                last_error=f"{type(failed).__name__}: {failed}"[:2000],
            )
        logger.warning(
            "Outbox: the broker did not take %d message(s) (%s: %s); they stay in the outbox "
            "and are sent again when it is back",
            len(rows) - len(sent), type(failed).__name__, failed,
        )
    return len(sent)


def _sent(rows: list[Any], now: Any, using: str | None) -> None:
    """Rows the broker took at ``now``: one-shots are deleted; events are kept until the worker
    that delivers one deletes it (``delivered``), due again once their lease is over."""
    query = OutboxMessage.objects.using(using)
    one_shots = [row.id for row in rows if ONE_SHOT_KEY in row.event]
    if one_shots:
        query.filter(id__in=one_shots).delete()
    by_attempts: dict[int, list[Any]] = {}
    for row in rows:
        if ONE_SHOT_KEY not in row.event:
            by_attempts.setdefault(row.attempts, []).append(row.id)
    for attempts, ids in by_attempts.items():
        query.filter(id__in=ids).update(
            attempts=attempts + 1, next_attempt_at=now + _lease(attempts)
        )


def _outbox_table_exists(using: str | None) -> bool:
    """False when the outbox table was dropped (``migrate course_plugins zero``), else True."""
    try:
        connection = connections[using or router.db_for_write(OutboxMessage)]
        with connection.cursor() as cursor:
            return OutboxMessage._meta.db_table in connection.introspection.table_names(cursor)
    except Exception:
        return True


class _PromptRelay:
    """This process's prompt relay: a daemon thread, started on first use, that sends the rows
    handed over right after their commit (``hand_over``). Requests return without waiting on the
    broker; rows handed over while a pass runs go together in the next one (one message), so the
    cost of relaying does not grow with the rate of events. It keeps one broker connection open
    between passes (dropped after a failure). A row it could not send stays in the database and
    the workers' relay sends it: nothing handed over is lost if this process ends first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending: dict[str | None, list[Any]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._url: Any = None

    def hand_over(self, rows: list[Any], using: str | None) -> None:
        """Queue ``rows`` (``OutboxMessage``s of database ``using``, committed) for the next
        pass; they are sent as they are, without reading them again."""
        with self._lock:
            self._pending.setdefault(using, []).extend(rows)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="course-plugins-outbox-prompt", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row handed over so far was relayed (or tried); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    def _take(self) -> dict[str | None, list[Any]]:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._busy = True
            return pending

    def _run(self) -> None:
        broker.mark_prompt_relay()
        last = 0.0
        while True:
            self._wake.wait()
            # At most one pass per PROMPT_INTERVAL: after a quiet spell the rows go at once;
            # under a stream of commits those of the last interval go together (one message,
            # one statement), and this thread takes the interpreter from request threads once
            # per interval rather than once per commit.
            wait = last + PROMPT_INTERVAL - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._wake.clear()
            try:
                for using, rows in self._take().items():
                    for start in range(0, len(rows), RELAY_BATCH):
                        self._pass(rows[start : start + RELAY_BATCH], using)
            finally:
                last = time.monotonic()
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()

    def _pass(self, rows: list[Any], using: str | None) -> None:
        if current_app.conf.task_always_eager:
            # Turned on since the commit (tests): never run tasks eagerly in this thread (Celery
            # keeps a process-wide flag while it does); the rows wait for the other relays.
            return
        failures = _broker_failed_at
        try:
            url = current_app.conf.broker_url
            if self._connection is not None and self._url != url:  # the settings changed (tests)
                self._drop()
            if self._connection is None:
                self._connection, self._url = broker.connect(SEND_TIMEOUT), url
            _hand_over(rows, timezone.now(), using, SEND_TIMEOUT, self._connection)
        except DatabaseError as exc:
            logger.warning("Outbox prompt relay: database unavailable (%s: %s); the rows are "
                           "sent by the workers' relay", type(exc).__name__, exc)
        except Exception:
            logger.exception("Outbox prompt relay pass failed; the workers' relay sends the rows")
        finally:
            if _broker_failed_at != failures:
                self._drop()
            # No database connection is held between passes (a pass is at most every
            # PROMPT_INTERVAL): nothing of this thread's keeps a session open on the server,
            # which would stop a database from being dropped or migrated.
            connections.close_all()


_prompt = _PromptRelay()


def _new_prompt_relay_after_fork() -> None:
    global _prompt
    _prompt = _PromptRelay()  # the parent's thread and its queue stay the parent's


os.register_at_fork(after_in_child=_new_prompt_relay_after_fork)


def flush_relay(timeout: float = 10.0) -> bool:
    """Wait until this process's prompt relay has sent (or tried) every row handed to it after a
    commit; False if it took longer than ``timeout`` seconds (tests, benchmarks, shutdown)."""
    return _prompt.flush(timeout)


EXIT_FLUSH_TIMEOUT = 3 * SEND_TIMEOUT
"""Seconds a process ending waits at most for its prompt relay (a pass with a broker that does not
answer takes about ``SEND_TIMEOUT``)."""


def _flush_at_exit() -> None:
    # A short-lived process (`manage.py shell -c`, a command, a script) often ends right after its
    # last commit: the relay thread, a daemon, would die with its rows unsent, and they would
    # reach the broker only through the workers' relay, CLAIM (10 s) later. Nothing handed over:
    # no wait.
    flush_relay(EXIT_FLUSH_TIMEOUT)


atexit.register(_flush_at_exit)


_relay_thread: threading.Thread | None = None
_relay_stop = threading.Event()


def _relay_loop(interval: float, stop: threading.Event) -> None:


    while not stop.wait(interval):
        try:
            while relay() == RELAY_BATCH:  # a backlog: keep going until it is sent
                pass
        except Exception:
            logger.exception("Outbox relay pass failed")
        finally:
            connections.close_all()


def start_relay(interval: float = RELAY_INTERVAL) -> threading.Thread:
    """Start (once per process) a daemon thread that relays due outbox rows every ``interval``."""
    global _relay_thread
    if _relay_thread is not None and _relay_thread.is_alive():
        return _relay_thread
    _relay_stop.clear()
    _relay_thread = threading.Thread(
        target=_relay_loop, args=(interval, _relay_stop), name="course-plugins-outbox", daemon=True
    )
    _relay_thread.start()
    return _relay_thread


def stop_relay(timeout: float = 5.0) -> None:
    """Stop the relay thread (tests)."""
    global _relay_thread
    _relay_stop.set()
    if _relay_thread is not None:
        _relay_thread.join(timeout)
    _relay_thread = None


