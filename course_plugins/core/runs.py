"""Recorded hook runs: the observer a hook hands its runs to, and a ring buffer of runs per hook.

A hook whose ``observer`` is a :class:`RunRecorder` delegates each run to it. The recorder calls
the functions itself, through the engine's own guarded calls (budgets, health, isolation and
fail-closed are those of an unobserved run), and keeps what each function did as one *step*.
A hook that has run a few times runs its snapshot through a generated recorded run instead
(:meth:`RunRecorder.compile_run`, ``core._hook_runs.compile_recorded_run``): the same calls in
straight-line code, one clock read per step, the record kept raw and read into steps only when
the runs are read; anything unusual there goes on through the recorder's loop. A step is:

- ``key``, ``plugin`` (owner id, ``None`` for platform code), ``function`` (qualified name);
- ``outcome``: ``ok``, ``changed`` (a FILTER function changed the value), ``veto``, ``error`` or
  ``skipped`` (not reached: a veto or an ABNORMAL answer came first, or removed meanwhile);
- ``changed``: ``{field: [before, after]}`` for the fields of a dict value a FILTER function
  changed (``{"value": [before, after]}`` when the value is not a dict), else ``None``;
- ``message`` (the veto's or error's text), ``applied`` (whether what it did took effect; always
  false for a shadow registration), ``ms``.

A run is ``{hook, at (epoch seconds), outcome (ok/veto/error), message, org, ms, process,
steps}``; the last ``keep`` runs of each hook are kept (a ``deque`` per hook). The hot path stores
tuples and copies only what changed: a FILTER dict is compared with a shallow copy (one per run,
another after each change; a change keeps the two copies). The fields that differ are turned
into plain data (strings cut at ``MAX_TEXT``) by the loop when the change happens, and for a
generated run when its record is first read. Keys that look like secrets (``password``,
``token``, ``secret``...) and the registered secret values (plugins' ``secret`` settings, the
replaced ones too) are masked, in values and messages alike (``core.run_data``: comparing and
showing values without running any of their code).

Shadow registrations (``reg.shadow``) run on a copy of the value: their changes and vetoes are
recorded with ``applied: false``, never applied nor raised, and each run counts once per plugin
as refused or (failing that) changed (:class:`ShadowTally`). Runs with a shadow registration are
always recorded; others one in ``sample``. The recorder is Django-free; the site publishes the
buffers (``on_record``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple

from course_plugins.core import scope as _scope
from course_plugins.core._calls import (
    REMOVED,
    SKIPPED,
    VETO_EXCEPTIONS,
    Registration,
    call_guarded_async,
)
from course_plugins.core._hook_runs import compile_recorded_run
from course_plugins.core._recorded_calls import OVERRAN, RunBudget, failure, shadow_copy
from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.core.run_data import MASK, MAX_TEXT, Masker, looks_secret, same_data, veto_text
from course_plugins.core.watchdog import RunGuard

__all__ = [
    "MASK",
    "MAX_TEXT",
    "RunRecorder",
    "ShadowTally",
    "looks_secret",
    "owned_by",
]

logger = logging.getLogger("course_plugins.runs")

_MISSING: Any = object()
_FILTER, _ABNORMAL = "FILTER", "ABNORMAL"
_EXAMPLES = 5

# A step while recording: (registration, outcome, changed, message, applied, seconds).
Step = tuple[Registration, str, "dict[str, Any] | None", str, bool, float]


class _Meta(NamedTuple):
    """What a recorded run of one snapshot shares: the hook's name, type, ``where`` and the
    registrations in call order (the first item of a generated run's raw record)."""

    name: str
    kind: str
    where: str
    regs: tuple[Registration, ...]


class ShadowTally:
    """What one plugin in shadow mode would have done since ``since``: the runs it would have
    refused or changed, and the last few examples (newest last)."""

    __slots__ = ("since", "refused", "changed", "examples")

    def __init__(self, since: Any = None) -> None:
        self.since = since
        self.refused = 0
        self.changed = 0
        self.examples: deque[dict[str, Any]] = deque(maxlen=_EXAMPLES)

    def as_dict(self) -> dict[str, Any]:
        """``{since, refused, changed, examples}`` as plain data."""
        return {
            "since": self.since,
            "refused": self.refused,
            "changed": self.changed,
            "examples": list(self.examples),
        }


def owned_by(owner: str | None, name: str) -> bool:
    """Whether the owner id ``owner`` (``"name@version"``, ``None`` for platform code) is a
    version of plugin ``name``."""
    return owner is not None and owner.partition("@")[0] == name


class RunRecorder(Masker):
    """Runs hooks on behalf of the engine (``hook.observer = recorder``) and records them.

    ``keep``: runs kept per hook (at least 1). ``sample``: record one run in ``sample`` of a hook
    without shadow registrations (the others take the engine's plain loops). ``enabled`` False
    records only runs with a shadow registration. ``on_record(hook_name)`` is called after each
    recorded run (the site publishes the buffers from there; it must be quick and not raise).
    """

    def __init__(
        self,
        *,
        keep: int = 50,
        sample: int = 1,
        enabled: bool = True,
        on_record: Callable[[str], Any] | None = None,
    ) -> None:
        self.keep = max(1, int(keep))
        self.sample = max(1, int(sample))
        self.enabled = enabled
        self.on_record = on_record
        self.process = uuid.uuid4().hex[:12]  # names this process's runs in a shared store
        # Epoch seconds minus perf_counter(): a generated run keeps only its clock reads (one
        # run in 16 measures it again, so a change of the system clock is followed).
        self.epoch = time.time() - perf_counter()
        self.shadow: dict[str, ShadowTally] = {}
        self._runs: dict[str, deque[tuple[Any, ...]]] = {}
        self._read_cache: dict[str, dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]]] = {}
        self._shadowed: dict[str, tuple[tuple[Registration, ...], bool]] = {}
        self._lock = threading.Lock()

    # --- configuration -----------------------------------------------------------------------

    def start_shadow(self, plugin: str, since: Any) -> ShadowTally:
        """Start (or keep, when ``since`` is unchanged) the tally of ``plugin`` (a name) in
        shadow mode; returns it."""
        with self._lock:
            tally = self.shadow.get(plugin)
            if tally is None or tally.since != since:
                tally = self.shadow[plugin] = ShadowTally(since)
            return tally

    def stop_shadow(self, plugin: str) -> None:
        """Forget the tally of ``plugin`` (it went live or was deactivated)."""
        with self._lock:
            self.shadow.pop(plugin, None)

    # --- reading -----------------------------------------------------------------------------

    def runs(self, hook_name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The recorded runs of ``hook_name`` in this process as plain data, newest first."""
        buffer = self._runs.get(hook_name)
        if not buffer:
            return []
        records = list(buffer)
        records.reverse()
        if limit is not None:
            records = records[:limit]
        # A generated run's raw record is read once (its diffs made, masked) and kept read
        # while it is in the buffer: publishing reads the whole buffer again and again.
        known = self._read_cache.get(hook_name, {})
        read: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
        for record in records:
            if type(record[0]) is _Meta:
                hit = known.get(id(record))
                read[id(record)] = (
                    hit if hit is not None and hit[0] is record else (record, self._read(record))
                )
        self._read_cache[hook_name] = read
        return [
            self._as_dict(read[id(record)][1] if id(record) in read else record)
            for record in records
        ]

    def hooks(self) -> list[str]:
        """Names of the hooks with recorded runs."""
        return [name for name, buffer in list(self._runs.items()) if buffer]

    def forget_runs(self) -> None:
        """Forget the recorded runs and zero the shadow tallies (a forked child starts afresh)."""
        with self._lock:
            self._runs.clear()
            self._read_cache.clear()
            for name, tally in list(self.shadow.items()):
                self.shadow[name] = ShadowTally(tally.since)

    def forget_plugin(self, name: str) -> list[str]:
        """Forget what plugin ``name`` (any version) did: it was uninstalled. Returns the names
        of the hooks whose runs changed.

        Its steps leave the runs; a run whose outcome was its own (it refused or failed it) goes
        whole, and so does a run left with no step. Its shadow tally goes too.
        """
        changed: list[str] = []
        with self._lock:
            self.shadow.pop(name, None)
            for hook, buffer in list(self._runs.items()):
                records = list(buffer)
                kept = [self._without(name, record) for record in records]
                if all(a is b for a, b in zip(kept, records, strict=True)):
                    continue
                # In place: generated runs append to this very deque.
                buffer.clear()
                buffer.extend(record for record in kept if record is not None)
                self._read_cache.pop(hook, None)
                changed.append(hook)
        return changed

    def _without(self, name: str, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """``record`` without plugin ``name``'s steps (itself if it has none; ``None`` when
        nothing is left of it, see :meth:`forget_plugin`)."""
        if type(record[0]) is _Meta:
            if not any(owned_by(reg.owner, name) for reg in record[0].regs):
                return record
            record = self._read(record)
        hook, at, outcome, message, org, seconds, steps = record
        mine = [step for step in steps if owned_by(step[0].owner, name)]
        if not mine:
            return record
        if outcome != "ok" and any(step[1] == outcome for step in mine):
            return None
        others = [step for step in steps if not owned_by(step[0].owner, name)]
        return (hook, at, outcome, message, org, seconds, others) if others else None

    def clear(self) -> None:
        """Forget every recorded run and shadow tally."""
        with self._lock:
            self._runs.clear()
            self._read_cache.clear()
            self.shadow.clear()

    def _as_dict(self, record: tuple[Any, ...]) -> dict[str, Any]:
        if type(record[0]) is _Meta:  # a generated run's raw record: read it now
            record = self._read(record)
        name, at, outcome, message, org, seconds, steps = record
        return {
            "hook": name,
            "at": at,
            "outcome": outcome,
            "message": message,
            "org": org,
            "ms": round(seconds * 1000.0, 3),
            "process": self.process,
            "steps": [
                {
                    "key": reg.key,
                    "plugin": reg.owner,
                    "function": reg.name,
                    "outcome": step_outcome,
                    "changed": changed,
                    "message": text,
                    "applied": applied,
                    "ms": round(step_seconds * 1000.0, 3),
                }
                for reg, step_outcome, changed, text, applied, step_seconds in steps
            ],
        }

    # --- running -----------------------------------------------------------------------------

    def _wanted(self, hook: Any, regs: tuple[Registration, ...]) -> bool:
        # Snapshots are immutable and reused by the engine until the hook changes: remember
        # whether the last one of this hook had a shadow registration.
        name = hook.name
        last = self._shadowed.get(name)
        if last is not None and last[0] is regs:
            shadowed = last[1]
        else:
            shadowed = any(reg.shadow for reg in regs)
            self._shadowed[name] = (regs, shadowed)
        if shadowed:
            return True
        # One run in ``sample`` of each hook, counted by the hook's own run counter (as the
        # hook does itself before a generated recorded run: see ``compile_run``).
        return bool(self.enabled) and (hook.runs - 1) % self.sample == 0

    def run(
        self,
        hook: Any,
        regs: tuple[Registration, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run ``hook`` over ``regs`` from sync code, as the engine would, and record the run.

        Returns and raises what an unobserved run returns and raises; a shadow registration's
        result is not used and its veto not raised.
        """
        if not self._wanted(hook, regs):
            return hook.run_unobserved(args, kwargs)  # no shadow registration in ``regs``
        meta = _Meta(hook.name, hook.type.value, hook._where, regs)
        return self._loop(meta, args, kwargs, time.time(), perf_counter(), [], 0, None)

    def _loop(
        self,
        meta: _Meta,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        at: float,
        t0: float,
        steps: list[Step],
        start: int,
        pending: tuple[BaseException | None, float] | None,
        budget: RunBudget | None = None,
        snapshot: Any = _MISSING,
        results: list[Any] | None = None,
    ) -> Any:
        """The recorded run through the loop, from step ``start`` (``steps`` holds the ones
        before); ``pending``: step ``start`` was already called, raised this exception (or ran
        over its budget: ``OVERRAN``) after starting at that time."""
        name, kind, where, regs = meta
        state = ["ok", ""]  # the run's outcome and message
        own = budget is None
        if budget is None:
            budget = RunBudget()
        try:
            if kind == _FILTER:
                return self._filter(
                    name, regs, args, kwargs, where, steps, state, budget, start, pending, snapshot
                )
            return self._call_all(
                name, kind, regs, args, kwargs, where, steps, state, budget, start, pending,
                results,
            )
        except BaseException as exc:
            if state[0] == "ok":
                state[0], state[1] = "error", self.mask_text(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if own:
                budget.close()  # else the generated run closes its guard itself
            self._finish(name, regs, steps, state, at, t0)

    def _filter(
        self,
        name: str,
        regs: tuple[Registration, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        where: str,
        steps: list[Step],
        state: list[str],
        budget: RunBudget,
        start: int = 0,
        pending: tuple[BaseException | None, float] | None = None,
        snapshot: Any = _MISSING,
    ) -> Any:
        value, rest = args[0], args[1:]
        # What the value was before the current function: a function may change a dict in
        # place, so a shallow copy, taken again only after a change.
        if snapshot is _MISSING:
            snapshot = dict(value) if type(value) is dict else value
        append = steps.append
        for i in range(start, len(regs)):
            reg = regs[i]
            if reg.mode == REMOVED:
                append((reg, "skipped", None, "", False, 0.0))
                continue
            shadow = reg.shadow
            given = shadow_copy(value) if shadow else value
            t = perf_counter()
            try:
                if pending is not None:  # the generated run called it already
                    (raised, t), pending = pending, None
                    budget.raised(reg, raised, where, t)
                else:
                    result = budget.call(reg, (given, *rest), kwargs, where)
            except VETO_EXCEPTIONS as exc:
                if self._vetoed(name, reg, exc, perf_counter() - t, steps, state):
                    raise
                continue
            except Exception as exc:
                failed = failure(exc)
                if self._failed(reg, failed, perf_counter() - t, steps):
                    raise failed from None
                continue
            seconds = perf_counter() - t
            after = given if result is None else result
            try:
                same = same_data(after, snapshot)
            except Exception:
                same = False
            if same:
                append((reg, "ok", None, "", not shadow, seconds))
            else:
                changed = self.diff(snapshot, after)
                append((reg, "changed", changed, "", not shadow, seconds))
                if not shadow:
                    snapshot = dict(after) if type(after) is dict else after
            if result is not None and not shadow:
                value = result
        return value

    def _call_all(
        self,
        name: str,
        kind: str,
        regs: tuple[Registration, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        where: str,
        steps: list[Step],
        state: list[str],
        budget: RunBudget,
        start: int = 0,
        pending: tuple[BaseException | None, float] | None = None,
        results: list[Any] | None = None,
    ) -> Any:
        results = [] if results is None else results
        append = steps.append
        for i in range(start, len(regs)):
            reg = regs[i]
            if reg.mode == REMOVED:
                append((reg, "skipped", None, "", False, 0.0))
                continue
            shadow = reg.shadow
            call_args = tuple(shadow_copy(a) for a in args) if shadow else args
            t = perf_counter()
            try:
                if pending is not None:  # the generated run called it already
                    (raised, t), pending = pending, None
                    budget.raised(reg, raised, where, t)
                else:
                    result = budget.call(reg, call_args, kwargs, where)
            except VETO_EXCEPTIONS as exc:
                if self._vetoed(name, reg, exc, perf_counter() - t, steps, state):
                    raise
                continue
            except Exception as exc:
                failed = failure(exc)
                if self._failed(reg, failed, perf_counter() - t, steps):
                    raise failed from None
                continue
            append((reg, "ok", None, "", not shadow, perf_counter() - t))
            if shadow:
                continue
            if kind == _ABNORMAL:
                if result is not None:
                    return result
            else:
                results.append(result)
        return None if kind == _ABNORMAL else results

    async def arun(
        self,
        hook: Any,
        regs: tuple[Registration, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Async twin of :meth:`run` (``async def`` functions are awaited in call order)."""
        kind = hook.type.value
        where = hook._where
        name = hook.name
        recorded = self._wanted(hook, regs)
        at, t0 = time.time(), perf_counter()
        steps: list[Step] = []
        state = ["ok", ""]
        value, rest = (args[0], args[1:]) if kind == _FILTER else (None, args)
        snapshot = dict(value) if type(value) is dict else value
        results: list[Any] = []
        try:
            for reg in regs:
                if reg.mode == REMOVED:
                    steps.append((reg, "skipped", None, "", False, 0.0))
                    continue
                shadow = reg.shadow
                if kind == _FILTER:
                    call_args = ((shadow_copy(value) if shadow else value), *rest)
                else:
                    call_args = tuple(shadow_copy(a) for a in args) if shadow else args
                t = perf_counter()
                try:
                    result = await call_guarded_async(reg, call_args, kwargs, where)
                except VETO_EXCEPTIONS as exc:
                    if self._vetoed(name, reg, exc, perf_counter() - t, steps, state):
                        raise
                    continue
                seconds = perf_counter() - t
                if result is SKIPPED:
                    last = health.last_failure(reg.owner) if reg.owner else None
                    text = last.message if last is not None else "failed (see the log)"
                    steps.append((reg, "error", None, self.mask_text(text), False, seconds))
                    continue
                if kind == _FILTER:
                    after = call_args[0] if result is None else result
                    try:
                        same = same_data(after, snapshot)
                    except Exception:
                        same = False
                    changed = None if same else self.diff(snapshot, after)
                    steps.append((reg, "changed" if changed else "ok", changed, "", not shadow,
                                  seconds))
                    if changed and not shadow:
                        snapshot = dict(after) if type(after) is dict else after
                    if result is not None and not shadow:
                        value = result
                    continue
                steps.append((reg, "ok", None, "", not shadow, seconds))
                if shadow:
                    continue
                if kind == _ABNORMAL:
                    if result is not None:
                        return result
                else:
                    results.append(result)
        except BaseException as exc:
            if state[0] == "ok":
                state[0], state[1] = "error", self.mask_text(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if recorded:
                self._finish(name, regs, steps, state, at, t0)
        if kind == _FILTER:
            return value
        return None if kind == _ABNORMAL else results

    # --- generated recorded runs ----------------------------------------------------------------

    def compile_run(
        self, hook: Any, regs: tuple[Registration, ...], arity: int
    ) -> Callable[[tuple[Any, ...], int, Any], Any] | None:
        """The generated recorded run of ``hook`` over ``regs`` (what :meth:`observed` gives)
        for ``arity`` positional arguments and no keywords, or ``None`` (the hook then hands its
        runs to :meth:`run`). ``run(args, untimed, scope)`` records every run it makes: the hook
        itself leaves out the runs the recorder would not record (``enabled``, ``sample``).
        """
        meta = _Meta(hook.name, hook.type.value, hook._where, regs)

        def slow(args: tuple[Any, ...], scope: Any) -> Any:
            return self._loop(meta, args, {}, time.time(), perf_counter(), [], 0, None)

        def resume(
            i: int,
            exc: BaseException | None,
            value: Any,
            snapshot: Any,
            changes: list[tuple[int, Any, Any]] | None,
            results: list[Any] | None,
            times: tuple[float, ...],
            at: float,
            scope: Any,
            guard: RunGuard | None,
            args: tuple[Any, ...],
        ) -> Any:
            steps = self._steps(regs, changes, times, eager=True)
            budget = RunBudget()
            budget.guard = guard
            if meta.kind == _FILTER:
                args = (value, *args[1:])
            return self._loop(
                meta, args, {}, at + times[0], times[0], steps, i,
                None if exc is None else (exc, times[i]), budget, snapshot, results,
            )

        def notify(name: str) -> None:
            callback = self.on_record
            if callback is not None:
                try:
                    callback(name)
                except Exception:  # publishing is best effort; the run itself must go on
                    logger.warning("Could not hand over the recorded run of %s", name,
                                   exc_info=True)

        def sample(record: tuple[Any, ...]) -> None:  # one run in 16: the calls' durations
            self.epoch = time.time() - perf_counter()
            times = record[4:]
            for i in range(len(times) - 1):
                regs[i].stats.sample(times[i + 1] - times[i])

        helpers = {
            "meta": meta,
            "name": meta.name,
            "runs": self._runs,
            "buffer": self._buffer,
            "recorder": self,
            "notify": notify,
            "sample": sample,
            "slow": slow,
            "resume": resume,
            "overran": OVERRAN,
        }
        return compile_recorded_run(meta.kind, regs, meta.where, arity, helpers)

    def _buffer(self, name: str) -> deque[tuple[Any, ...]]:
        with self._lock:
            return self._runs.setdefault(name, deque(maxlen=self.keep))

    def _read(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """A generated run's raw record ``(meta, at, scope, changes, *times)`` in the loop's
        form ``(name, at, outcome, message, org, seconds, steps)``."""
        meta, epoch, scope, changes, *times = record
        steps = self._steps(meta.regs, changes, tuple(times), eager=False)
        org = None if scope is None else scope.org
        return (meta.name, epoch + times[0], "ok", "", org, times[-1] - times[0], steps)

    def _steps(
        self,
        regs: tuple[Registration, ...],
        changes: list[tuple[int, Any, Any]] | None,
        times: tuple[float, ...],
        eager: bool,
    ) -> list[Step]:
        """The steps a generated run made (``len(times) - 1`` of them), in the loop's form; the
        rest of ``regs`` is skipped (an ABNORMAL answer came first) unless ``eager`` (the loop
        goes on from there)."""
        done = len(times) - 1
        changed = {i: (before, after) for i, before, after in changes or ()}
        steps: list[Step] = []
        for i, reg in enumerate(regs[:done]):
            seconds = times[i + 1] - times[i]
            change = changed.get(i)
            diff = None if change is None else self.diff(*change)
            if diff:
                steps.append((reg, "changed", diff, "", True, seconds))
            else:  # a new value equal to the old one is no change (as in the loop)
                steps.append((reg, "ok", None, "", True, seconds))
        if not eager:
            steps.extend((reg, "skipped", None, "", False, 0.0) for reg in regs[done:])
        return steps

    # --- steps and runs ------------------------------------------------------------------------

    def _vetoed(
        self,
        name: str,
        reg: Registration,
        exc: BaseException,
        seconds: float,
        steps: list[Step],
        state: list[str],
    ) -> bool:
        """Record a veto; returns True when it must be raised (not a shadow registration's)."""
        text = self.mask_text(veto_text(exc))
        if reg.shadow:
            steps.append((reg, "veto", None, text, False, seconds))
            return False
        steps.append((reg, "veto", None, text, True, seconds))
        state[0], state[1] = "veto", text
        return True

    def _failed(
        self, reg: Registration, exc: BaseException, seconds: float, steps: list[Step]
    ) -> bool:
        """Record an isolated failure; returns True when it must be raised (strict mode)."""
        steps.append(
            (reg, "error", None, self.mask_text(f"{type(exc).__name__}: {exc}"), False, seconds)
        )
        return options.strict

    def _finish(
        self,
        name: str,
        regs: tuple[Registration, ...],
        steps: list[Step],
        state: list[str],
        at: float,
        t0: float,
    ) -> None:
        seconds = perf_counter() - t0
        if len(steps) < len(regs):  # a veto or an answer came first: the rest did not run
            reached = {id(step[0]) for step in steps}
            steps.extend(
                (reg, "skipped", None, "", False, 0.0) for reg in regs if id(reg) not in reached
            )
        if self.shadow:
            self._tally(name, at, steps)
        scope = _scope.current_scope.get()
        record = (name, at, state[0], state[1], None if scope is None else scope.org, seconds,
                  steps)
        buffer = self._runs.get(name)
        if buffer is None:
            buffer = self._buffer(name)
        buffer.append(record)
        callback = self.on_record
        if callback is not None:
            try:
                callback(name)
            except Exception:  # publishing is best effort; the run itself must go on
                logger.warning("Could not hand over the recorded run of %s", name, exc_info=True)

    def _tally(self, name: str, at: float, steps: list[Step]) -> None:
        """Count the run for each plugin in shadow mode that would have refused it or, failing
        that, changed it (one count per run and plugin; a refusal outweighs a change)."""
        would: dict[str, Step] = {}
        for step in steps:
            reg, outcome = step[0], step[1]
            if reg.shadow and outcome in ("veto", "changed") and reg.owner:
                plugin = reg.owner.partition("@")[0]
                if plugin not in would or outcome == "veto":
                    would[plugin] = step
        for plugin, (reg, outcome, changed, message, _applied, _seconds) in would.items():
            tally = self.shadow.get(plugin)
            if tally is None:
                continue
            if outcome == "veto":
                tally.refused += 1
            else:
                tally.changed += 1
            tally.examples.append(
                {"hook": name, "at": at, "key": reg.key, "outcome": outcome,
                 "changed": changed, "message": message}
            )


