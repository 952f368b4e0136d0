"""The outbox in one process: rows written with the change, kept while the broker is down,
sent once it is back; database outages simulated (a real one is impractical here)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import Reject
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from course_plugins.core.event_bus import Event, EventBus
from course_plugins.model_hooks import publish_on_commit
from course_plugins.models import EventDelivery, OutboxMessage
from course_plugins.site import broker, outbox
from course_plugins.tasks import deliver_background
from example_project import celery_app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


@pytest.fixture
def bus() -> Iterator[EventBus]:
    """The process bus with the outbox dispatcher and two plugins' background subscribers."""
    bus = EventBus.get_instance()
    seen: list[tuple[str, int]] = []

    def first(event: Event) -> None:
        seen.append(("a", event.data["n"]))

    def second(event: Event) -> None:
        seen.append(("a2", event.data["n"]))

    def other(event: Event) -> None:
        seen.append(("b", event.data["n"]))

    before = bus.background_dispatcher
    outbox._broker_failed_at = 0.0  # no broker failure seen yet in this process
    bus.set_background_dispatcher(outbox.make_dispatcher(bus))
    bus.subscribe("ob.*", first, owner="alpha@1.0.0", background=True)
    bus.subscribe("ob.*", second, owner="alpha@1.0.0", background=True)
    bus.subscribe("ob.*", other, owner="beta@1.0.0", background=True)
    bus.seen = seen  # type: ignore[attr-defined]
    try:
        yield bus
    finally:
        bus.remove_owner("alpha@1.0.0")
        bus.remove_owner("beta@1.0.0")
        bus.set_background_dispatcher(before)


@pytest.fixture
def broker_down() -> Iterator[None]:
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{_closed_port()}/0"
    try:
        yield
    finally:
        celery_app.conf.broker_url = old


@pytest.mark.django_db(transaction=True)
def test_a_change_writes_one_row_per_plugin_in_its_transaction_and_never_on_rollback(
    bus: Any, broker_down: None
) -> None:
    with transaction.atomic():
        publish_on_commit("ob.changed", {"n": 1})
        rows = {row.plugin: row.keys for row in OutboxMessage.objects.all()}
        assert set(rows) == {"alpha", "beta"} and len(rows["alpha"]) == 2  # before the commit
    # Committed (and handed to this process's prompt relay); the broker is down: both rows stay,
    # marked for a later attempt.
    assert outbox.flush_relay()
    assert OutboxMessage.objects.count() == 2
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    with pytest.raises(RuntimeError), transaction.atomic():
        publish_on_commit("ob.changed", {"n": 2})
        raise RuntimeError("rolled back")
    assert OutboxMessage.objects.count() == 2  # nothing for the rolled-back change
    assert bus.seen == []


@pytest.mark.django_db(transaction=True)
def test_rows_kept_while_the_broker_is_down_are_delivered_once_when_it_is_back(
    bus: Any, broker_down: None
) -> None:
    for n in range(5):
        bus.publish_sync(Event("ob.emitted", {"n": n}))  # not in a transaction: api.emit
    assert OutboxMessage.objects.count() == 10
    assert outbox.flush_relay()  # the prompt relay tried (the broker is down) before eager is on
    assert outbox.relay() == 0  # still down
    celery_app.conf.task_always_eager = True
    try:
        OutboxMessage.objects.update(next_attempt_at=OutboxMessage.objects.first().created_at)
        assert outbox.relay() == 10  # the broker took them all (eager: run here)
        assert outbox.relay() == 0
    finally:
        celery_app.conf.task_always_eager = False
    assert OutboxMessage.objects.count() == 0
    assert sorted(bus.seen) == sorted(
        [(who, n) for n in range(5) for who in ("a", "a2", "b")]
    )
    assert EventDelivery.objects.count() == 15


@pytest.mark.django_db(transaction=True)
def test_the_prompt_relay_sends_after_the_commit_off_the_request_thread_in_one_message(
    bus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    messages: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(broker, "send_event", lambda plugin, keys, event, row_id, connection: (
        messages.append((threading.current_thread().name, [(plugin, event["data"]["n"])]))
    ))
    monkeypatch.setattr(broker, "send_events", lambda rows, connection: messages.append(
        (threading.current_thread().name, [(row.plugin, row.event["data"]["n"]) for row in rows])
    ))
    for n in range(3):
        with transaction.atomic():
            publish_on_commit("ob.changed", {"n": n})
        # Committed: the request is back before anything was sent; the rows wait in the
        # outbox, due for the other relays only later (they are this process's to send).
        assert outbox.relay() == 0
    assert outbox.flush_relay()
    # The broker took them and no worker has delivered them: kept, due again only once their
    # lease is over (the worker that delivers one deletes it).
    rows = list(OutboxMessage.objects.all())
    assert len(rows) == 6 and {row.attempts for row in rows} == {1}
    assert min(row.next_attempt_at for row in rows) > timezone.now() + outbox._lease(0) / 2
    assert outbox.relay() == 0
    threads = {thread for thread, _ in messages}
    assert threads == {"course-plugins-outbox-prompt"}
    sent = sorted(item for _, items in messages for item in items)
    assert sent == sorted((who, n) for n in range(3) for who in ("alpha", "beta"))
    assert len(messages) < 6  # rows of commits close together share a message


@pytest.mark.django_db(transaction=True)
def test_rows_the_prompt_relay_did_not_send_are_sent_by_the_other_relays_later(
    bus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox._prompt, "hand_over", lambda rows, using: None)  # it died
    with transaction.atomic():
        publish_on_commit("ob.changed", {"n": 7})
    assert outbox.relay() == 0  # not due yet
    OutboxMessage.objects.update(next_attempt_at=timezone.now())  # CLAIM later
    celery_app.conf.task_always_eager = True
    try:
        assert outbox.relay() == 2  # one deliver_background_many message, run here
    finally:
        celery_app.conf.task_always_eager = False
    assert sorted(bus.seen) == [("a", 7), ("a2", 7), ("b", 7)]


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_message_the_broker_lost_is_sent_again_after_its_lease(
    bus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker takes the message and loses it, as kombu's Redis transport does when a worker
    # dies between popping it off the queue and recording it as unacknowledged.
    lost: list[Any] = []
    monkeypatch.setattr(broker, "send_events", lambda rows, connection: lost.extend(rows))
    with transaction.atomic():
        publish_on_commit("ob.changed", {"n": 5})
    assert outbox.flush_relay()
    assert len(lost) == 2 and OutboxMessage.objects.count() == 2  # sent, kept until delivered
    assert outbox.relay() == 0  # within the lease
    monkeypatch.undo()
    OutboxMessage.objects.update(next_attempt_at=timezone.now())  # the lease is over
    celery_app.conf.task_always_eager = True
    try:
        assert outbox.relay() == 2  # sent again (eager: delivered here)
    finally:
        celery_app.conf.task_always_eager = False
    assert OutboxMessage.objects.count() == 0  # each deleted by its delivery
    assert sorted(bus.seen) == [("a", 5), ("a2", 5), ("b", 5)]


@pytest.mark.django_db(transaction=True)
def test_a_batch_message_delivers_each_row_once_even_when_delivered_again(bus: Any) -> None:
    from course_plugins.tasks import deliver_background_many

    items = []
    for n in (1, 2):
        event = Event("ob.x", {"n": n}).to_dict()
        for plugin, keys in outbox.background_keys(bus, Event("ob.x")).items():
            items.append([plugin, keys, event])
    results = deliver_background_many.run(items)
    assert all(set(r.values()) == {"ok"} for r in results)
    again = deliver_background_many.run(items)  # a redelivery (the worker died before the ack)
    assert all(set(r.values()) == {"duplicate"} for r in again)
    assert sorted(bus.seen) == sorted(
        [(who, n) for n in (1, 2) for who in ("a", "a2", "b")]
    )


@pytest.mark.django_db(transaction=True)
def test_the_relay_survives_a_database_outage(bus: Any) -> None:
    def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raise OperationalError("could not connect to server: Connection refused")

    with connection.execute_wrapper(down):
        assert outbox.relay() == 0  # logged, not raised


@pytest.mark.django_db(transaction=True)
def test_a_delivery_with_the_database_down_goes_back_to_the_broker(bus: Any) -> None:
    event = Event("ob.x", {"n": 1}).to_dict()
    key = next(s.key for s in bus.matching("ob.x") if s.owner == "beta@1.0.0")

    def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(down), pytest.raises(Reject):
        deliver_background.run("beta", [key], event)  # requeued, not acknowledged
    assert bus.seen == []
    assert deliver_background.run("beta", [key], event) == {key: "ok"}  # the database is back
    assert deliver_background.run("beta", [key], event) == {key: "duplicate"}
    assert bus.seen == [("b", 1)]


# --- a quarantine the database could not take -------------------------------------------------

FLAKY = """\
def activate(api):
    @api.events.subscribe("flaky.*")
    def fail(event):
        raise RuntimeError("plugin bug")
"""


@pytest.mark.django_db(transaction=True)
def test_a_quarantine_during_a_database_outage_is_recorded_once_it_is_back(
    tmp_path: Any, settings: Any
) -> None:
    from plugin_factory import write_plugin

    from course_plugins.core.options import options
    from course_plugins.models import Plugin, PluginStatus
    from course_plugins.site import runtime

    write_plugin(tmp_path / "plugins", "flaky", FLAKY, 'events: ["flaky.*"]\n')
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path / "plugins")], "MAX_FAILURES": 3,
    }
    runtime.reset()
    try:
        runtime.activate("flaky")
        bus = EventBus.get_instance()

        def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            raise OperationalError("could not connect to server")

        with connection.execute_wrapper(down):
            for _ in range(options.max_failures):  # the plugin's own bug, not the outage
                bus.publish_sync(Event("flaky.x", {}))
        # Quarantined here; the database could not take it and still says active.
        assert str(runtime.local_plugin("flaky").state) == "faulted"
        assert Plugin.objects.get(name="flaky").status == PluginStatus.ACTIVE
        assert "flaky" in runtime.default._unrecorded
        runtime.check(force=True)  # the next sync look, the database back
        row = Plugin.objects.get(name="flaky")
        assert row.status == PluginStatus.FAULTED
        assert "plugin bug" in row.last_error
        assert runtime.default._unrecorded == {}
    finally:
        runtime.reset()


@pytest.mark.django_db(transaction=True)
def test_an_async_handler_is_delivered_once_outside_the_record_transaction() -> None:
    bus = EventBus.get_instance()
    seen: list[int] = []

    async def handler(event: Event) -> None:
        # Its database work would run on another connection: not inside the record's
        # transaction (on SQLite it would wait for that transaction's write lock).
        assert not connection.in_atomic_block
        seen.append(event.data["n"])

    bus.subscribe("ob.async", handler, owner="gamma@1.0.0", background=True)
    try:
        key = next(s.key for s in bus.matching("ob.async") if s.owner == "gamma@1.0.0")
        event = Event("ob.async", {"n": 3}).to_dict()
        assert deliver_background.run("gamma", [key], event) == {key: "ok"}
        assert deliver_background.run("gamma", [key], event) == {key: "duplicate"}
        assert seen == [3]
        assert EventDelivery.objects.filter(key=key).count() == 1
    finally:
        bus.remove_owner("gamma@1.0.0")
