"""Tests for core.watchdog: one shared thread that really interrupts pure-Python code."""

from __future__ import annotations

import os
import threading
import time

import pytest

from course_plugins.core import watchdog
from course_plugins.core.watchdog import REPEAT_INTERVAL, TimeBudgetExceeded, time_limit


def spin() -> None:
    while True:
        pass


def swallow() -> str:
    try:
        spin()
    except BaseException:
        return "swallowed"
    return "unreachable"


def busy_for(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_interrupts_while_true_pass() -> None:
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded) as info, time_limit(0.1):
        spin()
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 1.0
    assert "0.1s" in str(info.value)


def test_interrupts_inline_loop_in_the_with_block() -> None:
    with pytest.raises(TimeBudgetExceeded), time_limit(0.05):
        while True:
            pass


def test_is_a_base_exception_so_except_exception_cannot_swallow_it() -> None:
    assert not issubclass(TimeBudgetExceeded, Exception)

    def careless() -> None:
        try:
            spin()
        except Exception:  # what a plugin typically writes
            return

    with pytest.raises(TimeBudgetExceeded), time_limit(0.05):
        careless()


def test_swallowed_interruption_still_raises_when_the_block_exits() -> None:
    with pytest.raises(TimeBudgetExceeded) as info, time_limit(0.05) as limit:
        assert swallow() == "swallowed"
    assert info.value.time_limit is limit
    assert limit.fired


def test_exception_turned_into_another_error_is_reported_as_the_budget() -> None:
    def convert() -> None:
        try:
            spin()
        except BaseException as exc:
            raise RuntimeError("plugin wrapped it") from exc

    with pytest.raises(TimeBudgetExceeded) as info, time_limit(0.05):
        convert()
    assert isinstance(info.value.__cause__, RuntimeError)


def test_redelivers_until_the_block_exits() -> None:
    caught = []

    def stubborn_for_a_while() -> None:
        # Swallows the first deliveries, then keeps spinning: a later delivery ends the block.
        while True:
            try:
                spin()
            except BaseException:
                caught.append(time.monotonic())
                if len(caught) >= 3:
                    spin()

    with pytest.raises(TimeBudgetExceeded), time_limit(0.05):
        stubborn_for_a_while()
    assert len(caught) == 3


def test_no_exception_leaks_after_the_block() -> None:
    with pytest.raises(TimeBudgetExceeded), time_limit(0.02):
        swallow()
    busy_for(4 * REPEAT_INTERVAL)  # a late delivery would raise here


def test_finishing_in_time_raises_nothing_and_later_code_is_untouched() -> None:
    with time_limit(0.2) as limit:
        busy_for(0.01)
    assert not limit.fired
    busy_for(0.3)


@pytest.mark.parametrize("seconds", [None, 0])
def test_none_or_zero_means_no_limit(seconds: float | None) -> None:
    with time_limit(seconds) as limit:
        busy_for(0.05)
    assert not limit.fired


def test_custom_exception_type() -> None:
    class Slow(Exception):
        pass

    with pytest.raises(Slow), time_limit(0.05, Slow):
        spin()


def test_nested_inner_earlier_deadline_wins() -> None:
    with (
        pytest.raises(TimeBudgetExceeded) as info,
        time_limit(5.0) as outer,
        time_limit(0.05) as inner,
    ):
        spin()
    assert info.value.time_limit is inner
    assert not outer.fired


def test_nested_outer_deadline_passes_through_inner_block() -> None:
    with (
        pytest.raises(TimeBudgetExceeded) as info,
        time_limit(0.05) as outer,
        time_limit(5.0) as inner,
    ):
        spin()
    assert info.value.time_limit is outer
    assert not inner.fired


def test_other_exceptions_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), time_limit(1.0):
        raise KeyError("x")


def test_limits_in_many_threads_use_one_watchdog_thread() -> None:
    results: list[str] = []
    lock = threading.Lock()

    def worker(seconds: float) -> None:
        try:
            with time_limit(seconds):
                spin()
        except TimeBudgetExceeded:
            with lock:
                results.append(threading.current_thread().name)

    threads = [threading.Thread(target=worker, args=(0.05 + i * 0.01,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4
    watchdogs = [t for t in threading.enumerate() if t.name == "course-plugins-watchdog"]
    assert len(watchdogs) == 1


def test_many_short_limits_leave_nothing_open() -> None:
    for _ in range(20000):
        with time_limit(30.0):
            pass
    assert watchdog._stats()["open"] == 0


def test_sleeping_watchdog_wakes_for_a_new_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog, "IDLE_AFTER", 0.01)
    with time_limit(1.0):  # make sure the thread runs, then let it go idle
        pass
    deadline = time.monotonic() + 5
    while not watchdog._stats()["sleeping"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert watchdog._stats()["sleeping"]
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded), time_limit(0.05):
        spin()
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_works_in_a_forked_child() -> None:
    with time_limit(1.0):  # make sure the parent's thread exists before forking
        pass
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the limit fires there too
        code = 1
        try:
            with time_limit(0.05):
                spin()
        except TimeBudgetExceeded:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_every_delivered_exception_names_its_limit_even_caught_late() -> None:
    caught: list[BaseException] = []

    def swallow_and_keep_it() -> None:
        try:
            spin()
        except TimeBudgetExceeded as exc:
            caught.append(exc)

    with pytest.raises(TimeBudgetExceeded) as info, time_limit(0.05) as limit:
        swallow_and_keep_it()
    assert caught[0].time_limit is limit  # the delivered instance itself, not only the re-raise
    assert info.value.time_limit is limit
    assert type(caught[0]).__name__ == "TimeBudgetExceeded"
    assert isinstance(caught[0], TimeBudgetExceeded)


def test_close_is_idempotent_and_stops_the_watching() -> None:
    limit = time_limit(0.05)
    with pytest.raises(TimeBudgetExceeded), limit:
        spin()
    limit.close()
    limit.close()
    assert watchdog._stats()["open"] == 0
    busy_for(3 * REPEAT_INTERVAL)


def test_the_watchdog_pauses_the_collector_while_it_reads_the_threads_stacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # sys._current_frames() holds the runtime's thread-list lock while it allocates; a collection
    # started there can need the same lock and hang the process (cpython#106883, Python < 3.12).
    import gc
    import sys

    seen: list[bool] = []

    def frames() -> dict[int, object]:
        seen.append(gc.isenabled())
        return {}

    monkeypatch.setattr(sys, "_current_frames", frames)
    assert gc.isenabled()
    assert watchdog._current_frames() == {}
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a site that turned the collector off keeps it off
    try:
        watchdog._current_frames()
        assert seen == [False, False] and not gc.isenabled()
    finally:
        gc.enable()
