"""The site's own outages (database, broker, cache) are not counted against plugins."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.health import health
from course_plugins.core.options import options

OWNER = "flaky@1.0.0"


@pytest.fixture(autouse=True)
def _clean_health():
    health.reset(OWNER)
    yield
    health.reset(OWNER)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        InterfaceError("connection already closed"),
        BrokerError("Error 111 connecting to redis:6379. Connection refused."),
        RedisConnectionError("Connection refused"),
        RedisTimeoutError("Timeout reading from socket"),
    ],
)
def test_outages_are_infrastructure_errors_and_never_quarantine(error, caplog):
    assert isinstance(error, options.infrastructure_errors)
    quarantined: list[str] = []

    def listener(owner: str, reason: str, tb: str) -> None:
        quarantined.append(owner)

    health.add_quarantine_listener(listener)
    try:
        for _ in range(options.max_failures * 3):
            health.record_failure(OWNER, error, where="event course.created")
    finally:
        health.remove_quarantine_listener(listener)
    assert health.failures(OWNER) == 0
    assert quarantined == []
    assert "not counted" in caplog.text.lower() or "infrastructure" in caplog.text.lower()


@pytest.mark.parametrize("error", [IntegrityError("dup"), DatabaseError("x"), ValueError("bug")])
def test_a_plugins_own_errors_still_count(error):
    assert not isinstance(error, options.infrastructure_errors)
    health.record_failure(OWNER, error, where="event course.created")
    assert health.failures(OWNER) == 1


def test_a_handler_hit_by_a_database_outage_is_not_faulted():
    bus = EventBus()
    calls: list[int] = []

    def handler(event: Event) -> None:
        calls.append(1)
        raise OperationalError("could not connect to server")

    bus.subscribe("course.*", handler, owner=OWNER)
    for _ in range(options.max_failures * 2):
        bus.publish_sync(Event("course.created", {}))
    assert len(calls) == options.max_failures * 2
    assert health.failures(OWNER) == 0
