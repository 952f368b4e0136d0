"""Generated hook runs: one snapshot's functions called in straight-line code, without a loop.

Like the generated advice layers (``_advice_chain``) and dataclasses' generated ``__init__``: for
the common run, one positional argument and no keywords (``run_sync("before-course-save",
course)``), a hook compiles a runner for its current snapshot. Each function is called by name,
with the counters, the run's budget guard and the isolation written out for that function's
mode, so a run costs little more than the calls themselves. What a run does is exactly what the
loops of ``_calls`` do (``run_normal``, ``run_abnormal``, ``run_filter``).
:func:`compile_recorded_run` makes the run recorder's twin (``core.runs``): the same calls, plus
one clock read per step and the FILTER changes, kept raw for the recorder to read later.

A runner belongs to one snapshot: the hook drops it on any change (:func:`retire`). A run in
progress when that happens finishes through the loop on its own snapshot, which looks at each
registration's mode, so a removal or replacement takes effect at once, as it does there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core._call_shapes import generate
from course_plugins.core._calls import (
    ASYNC,
    GUARDED,
    PLAIN,
    SKIPPED,
    VETO_EXCEPTIONS,
    Registration,
    call_guarded,
    guarded_failed,
    isolate,
    overran,
    run_abnormal,
    run_filter,
    run_normal,
)
from course_plugins.core.health import health
from course_plugins.core.watchdog import RUN_FILENAME, RunGuard
from course_plugins.core.watchdog import _disarm_closed as watchdog_disarm
from course_plugins.core.watchdog import _open as watchdog_open
from course_plugins.core.watchdog import _watchdog as watchdog_thread

__all__ = [
    "MAX_ARITY",
    "MAX_STEPS",
    "RUN_FILENAME",
    "compile_recorded_run",
    "compile_run",
    "retire",
]

MAX_STEPS = 64
"""Snapshots longer than this run through the loop (the generated code grows with each step)."""

_KINDS = ("NORMAL", "ABNORMAL", "FILTER")


MAX_ARITY = 3
"""Runs with more positional arguments than this (or with keywords) use the loop."""


# The rest of a run through the loop, from step ``i`` (``args``: the value so far for FILTER).
def _rest_normal(regs: Any, i: int, args: Any, results: list[Any], where: str) -> list[Any]:
    return results + run_normal(regs[i:], args, {}, where)


def _rest_abnormal(regs: Any, i: int, args: Any, _: Any, where: str) -> Any:
    return run_abnormal(regs[i:], args, {}, where)


def _rest_filter(regs: Any, i: int, args: Any, _: Any, where: str) -> Any:
    return run_filter(regs[i:], args, {}, where)


_REST = {"NORMAL": _rest_normal, "ABNORMAL": _rest_abnormal, "FILTER": _rest_filter}


_GUARD_NAMES: dict[str, Any] = {
    "__cp_new": object.__new__,
    "__cp_Guard": RunGuard,
    "__cp_ident": threading.get_ident,
    "__cp_open": watchdog_open,
    "__cp_disarm": watchdog_disarm,
    "__cp_dog": watchdog_thread,
}
"""What ``_guarded`` code refers to, for a generated run's namespace."""


def _guarded(body: list[str]) -> list[str]:
    """``body`` (lines of a run function) inside one ``RunGuard`` for the whole run, made and
    closed inline as ``RunGuard.__init__`` and ``close()`` do (``_GUARD_NAMES`` in scope)."""
    p = "__cp_"
    return [
        f"    g = {p}new({p}Guard)",
        f"    g.thread_id = {p}ident()",
        "    g.fired_reg = g.codes = None",  # own attributes: read fast on 3.11
        f"    {p}open[g] = None",
        f"    if {p}dog.sleeping:",
        f"        {p}dog.wake()",
        "    try:",
        *(f"        {line}" for line in body),
        "    finally:",
        "        g.done = True",
        f"        {p}open.pop(g, None)",
        "        if g.fired_reg is not None or g.codes:",
        f"            {p}disarm(g)",
    ]


def compile_run(
    kind: str, regs: tuple[Registration, ...], where: str, arity: int = 1
) -> Callable[[tuple[Any, ...], int], Any] | None:
    """Return ``run(args, untimed)``: the hook run of ``regs`` for ``arity`` positional
    arguments and no keywords.

    ``kind`` is the hook type's value (``"NORMAL"``, ``"ABNORMAL"`` or ``"FILTER"``); ``where``
    names the hook in reports. Every call is counted; with ``untimed`` false every call of the
    run is also timed into its stats (the hook passes ``runs & 15``: one run in 16 is timed, by
    a second copy of the code, so the other runs read no clock). Returns ``None`` when the snapshot
    is too long to be worth it (:data:`MAX_STEPS`), the arity is over :data:`MAX_ARITY`, or a
    FILTER run has no value. Results and errors are the loop's.
    """
    if kind not in _KINDS or len(regs) > MAX_STEPS or not 0 <= arity <= MAX_ARITY:
        return None
    if kind == "FILTER" and not arity:
        return None
    # ``a`` is the first argument (the value a FILTER threads through), ``x1``... the others.
    given = ", ".join(["a", *(f"x{k}" for k in range(1, arity))][:arity])
    now = f"({given},)" if arity else "()"  # the arguments as they stand, for the loop
    p = "__cp_"
    ns: dict[str, Any] = {
        f"{p}regs": regs,
        f"{p}where": where,
        f"{p}live": True,
        f"{p}rest": _REST[kind],
        f"{p}veto": VETO_EXCEPTIONS,
        f"{p}isolate": isolate,
        f"{p}guarded": call_guarded,
        f"{p}gfailed": guarded_failed,
        f"{p}overran": overran,
        f"{p}failing": health._consecutive,
        f"{p}skipped": SKIPPED,
        f"{p}pc": perf_counter,
        **_GUARD_NAMES,
    }
    if kind == "FILTER":
        took = ["if r is not None:", "    a = r"]
    elif kind == "NORMAL":
        took = ["res.append(r)"]
    else:
        took = ["if r is not None:", "    return r"]

    def step(i: int, reg: Registration, timed: bool) -> list[str]:
        # ``reg`` and ``where`` are locals on purpose: HookManager.current() reads them.
        mode = reg.mode
        head = [f"reg = {p}r{i}"]
        if i:
            # After a guarded call the guard still names it (one store per call saved): clear
            # it before anything but the next guarded call, which names itself.
            clear = ["g.reg = None"] if regs[i - 1].mode == GUARDED else []
            head[:0] = [
                *(clear if mode != GUARDED else []),
                f"if not {p}live:",
                *(f"    {line}" for line in clear),
                f"    return {p}rest({p}regs, {i}, {now}, res, where)",
            ]
        lines = [*head, f"{p}s{i}.calls += 1", *([f"t0 = {p}pc()"] if timed else [])]
        done = [f"{p}s{i}.sample({p}pc() - t0)"] if timed else []
        if mode == PLAIN:
            return [
                *lines,
                "try:",
                f"    r = {p}f{i}({given})",
                f"except {p}veto:",
                "    raise",
                "except Exception as e:",
                f"    {p}isolate(reg, e, where, counted=True)",
                "else:",
                *(f"    {line}" for line in done + took),
            ]
        if mode == GUARDED:
            # After a failure, the run goes on through the loop, which records the success of
            # an owner with failures in a row (the run starts here only without such owners).
            rest = f"return {p}rest({p}regs, {i + 1}, {now}, res, where)"
            return [
                *lines,
                "g.reg = reg",
                "try:",
                f"    r = {p}f{i}({given})",
                "except BaseException as e:",
                "    g.reg = None",
                f"    {p}gfailed(g, reg, e, where)",
                f"    {rest}",
                "if g.fired_reg and g.settle(reg):",
                "    g.reg = None",
                f"    {p}overran(reg, where)",
                f"    {rest}",
                *done,
                *took,
            ]
        if mode == ASYNC:
            return [  # call_guarded counts the call itself
                *head,
                f"r = {p}guarded(reg, {now}, {{}}, where)",
                f"if r is not {p}skipped:",
                *(f"    {line}" for line in took),
            ]
        return []  # REMOVED: nothing to call

    for i, reg in enumerate(regs):
        ns[f"{p}r{i}"], ns[f"{p}f{i}"], ns[f"{p}s{i}"] = reg, reg.fn, reg.stats
    finish = {"NORMAL": "return res", "ABNORMAL": "return None", "FILTER": "return a"}[kind]
    body = ["if untimed:"]
    for timed in (False, True):
        if timed:
            body.append("else:")
        body += [f"    {line}" for i, reg in enumerate(regs) for line in step(i, reg, timed)]
        body.append(f"    {finish}")
    lines = [f"def {p}run(args, untimed):", f"    {given}, = args" if arity else "    pass"]
    lines.append(f"    where = {p}where")
    lines.append("    res = []" if kind == "NORMAL" else "    res = None")
    owners = frozenset(reg.owner for reg in regs if reg.mode == GUARDED)
    if owners:
        ns[f"{p}owners"] = owners
        # One RunGuard for the run, made and closed inline (RunGuard.__init__ and close()).
        lines += [
            f"    if {p}failing and not {p}owners.isdisjoint({p}failing):",
            f"        return {p}rest({p}regs, 0, args, res, where)",
            *_guarded(body),
        ]
    else:
        lines += [f"    {line}" for line in body]
    return generate(f"{p}run", lines, ns, RUN_FILENAME)


def retire(run: Callable[..., Any]) -> None:
    """Tell ``run`` (a runner of an outdated snapshot) that a run in progress must finish
    through the loop, which looks at each registration's current mode."""
    run.__globals__["__cp_live"] = False


# --- recorded runs ------------------------------------------------------------------------------


def _changed_in_place(changes: list[Any], i: int, before: dict[Any, Any], value: Any) -> Any:
    """Step ``i`` changed the dict ``value`` in place: note ``(i, before, copy)``; returns the
    copy (what the next step's value is compared with)."""
    after = dict(value)
    changes.append((i, before, after))
    return after


def compile_recorded_run(
    kind: str, regs: tuple[Registration, ...], where: str, arity: int, helpers: dict[str, Any]
) -> Callable[[tuple[Any, ...], int, Any], Any] | None:
    """Return ``run(args, untimed, scope)``: the *recorded* hook run of ``regs`` (a run recorder
    hands it ``helpers``, see ``core.runs``), or ``None`` when the snapshot is not worth it or not
    plain enough (too long, an ``async`` or shadow registration, a removed one).

    The calls, counters, budget guard and isolation are those of :func:`compile_run`; on top of
    them each step reads the clock once after its call (its start is the previous step's end)
    and a FILTER step that changed a dict value (a new value, or the same one changed in place:
    compared with a shallow copy, taken at the start and again after each change) adds one
    ``(step, before, after)`` of private copies. Nothing else happens during the run: the record
    is one tuple, turned into plain data (diffs, masking, outcome names) only when it is read.
    Anything unusual (a failure, a veto, an overrun, a changed snapshot, a FILTER value that is
    not a dict, owners with failures in a row) hands the run over to the recorder's loop
    (``helpers["resume"]`` / ``helpers["slow"]``), which goes on from that step and records it.
    """
    if kind not in _KINDS or len(regs) > MAX_STEPS or not 0 <= arity <= MAX_ARITY:
        return None
    if kind == "FILTER" and not arity:
        return None
    if any(reg.mode not in (PLAIN, GUARDED) or reg.shadow for reg in regs):
        return None
    p = "__cp_"
    given = ", ".join(["a", *(f"x{k}" for k in range(1, arity))][:arity])
    ns: dict[str, Any] = {
        f"{p}where": where,
        f"{p}live": True,
        f"{p}failing": health._consecutive,
        f"{p}pc": perf_counter,
        **_GUARD_NAMES,
        f"{p}dict": dict,
        f"{p}inplace": _changed_in_place,
        **{f"{p}{name}": value for name, value in helpers.items()},
    }
    filter_ = kind == "FILTER"
    guarded = any(reg.mode == GUARDED for reg in regs)

    def ts(i: int) -> str:
        return "(" + "".join(f"t{k}, " for k in range(i + 1)) + ")"

    def resume(i: int, exc: str) -> str:
        # resume(step, exception, value, snapshot, changes, results, times, at, scope, guard, args)
        state = "a, c, ch, None" if filter_ else ("None, None, None, res" if kind == "NORMAL"
                                                   else "None, None, None, None")
        g = "g" if guarded else "None"
        return f"return {p}resume({i}, {exc}, {state}, {ts(i)}, at, scope, {g}, args)"

    def store(n: int) -> list[str]:
        # The run's record: the snapshot's meta, when, scope, FILTER changes, the clock reads.
        changes = "ch" if filter_ else "None"
        return [
            *(["g.reg = None"] if guarded else []),
            f"rec = ({p}meta, at, scope, {changes}, {ts(n)[1:]}",
            f"buf = {p}runs.get({p}name)",
            "if buf is None:",
            f"    buf = {p}buffer({p}name)",
            "buf.append(rec)",
            "if not untimed:",
            f"    {p}sample(rec)",
            f"if {p}recorder.on_record is not None:",
            f"    {p}notify({p}name)",
        ]

    body: list[str] = ["t0 = " + f"{p}pc()"]
    for i, reg in enumerate(regs):
        mode = reg.mode
        prev_guarded = i and regs[i - 1].mode == GUARDED
        if i:
            clear = ["g.reg = None"] if prev_guarded else []
            body += [
                *(clear if mode != GUARDED else []),
                f"if not {p}live:",
                *(f"    {line}" for line in (clear if mode == GUARDED else [])),
                f"    {resume(i, 'None')}",
            ]
        body += [f"reg = {p}r{i}", f"{p}s{i}.calls += 1"]
        if mode == GUARDED:
            body += [
                "g.reg = reg",
                "try:",
                f"    r = {p}f{i}({given})",
                "except BaseException as e:",
                "    g.reg = None",
                f"    {resume(i, 'e')}",
                f"t{i + 1} = {p}pc()",
                "if g.fired_reg and g.settle(reg):",
                "    g.reg = None",
                f"    {resume(i, f'{p}overran')}",
            ]
        else:
            body += [
                "try:",
                f"    r = {p}f{i}({given})",
                "except BaseException as e:",
                f"    {resume(i, 'e')}",
                f"t{i + 1} = {p}pc()",
            ]
        if filter_:
            body += [
                "if r is not None and r is not a:",
                "    a = r",
                f"    n = {p}dict(r) if type(r) is dict else r",
                f"    ch.append(({i}, c, n))",
                "    c = n",
                "elif c is not a:",  # the same dict: changed in place?
                "    try:",
                "        if a != c:",
                f"            c = {p}inplace(ch, {i}, c, a)",
                "    except Exception:",
                f"        c = {p}inplace(ch, {i}, c, a)",
            ]
        elif kind == "NORMAL":
            body.append("res.append(r)")
        else:
            body += ["if r is not None:", *(f"    {line}" for line in store(i + 1)), "    return r"]
    body += store(len(regs))
    body.append({"NORMAL": "return res", "ABNORMAL": "return None", "FILTER": "return a"}[kind])

    for i, reg in enumerate(regs):
        ns[f"{p}r{i}"], ns[f"{p}f{i}"], ns[f"{p}s{i}"] = reg, reg.fn, reg.stats
    lines = [f"def {p}run(args, untimed, scope):", f"    {given}, = args" if arity else "    pass"]
    lines.append(f"    where = {p}where")
    if filter_:
        lines += [
            "    if type(a) is not dict:",  # the recorder's loop records other values
            f"        return {p}slow(args, scope)",
        ]
    owners = frozenset(reg.owner for reg in regs if reg.mode == GUARDED)
    if owners:
        ns[f"{p}owners"] = owners
        lines += [
            f"    if {p}failing and not {p}owners.isdisjoint({p}failing):",
            f"        return {p}slow(args, scope)",
        ]
    if filter_:
        lines += [f"    c = {p}dict(a)", "    ch = []"]
    elif kind == "NORMAL":
        lines.append("    res = []")
    lines.append(f"    at = {p}recorder.epoch")  # + t0: when the run started
    if guarded:
        lines += _guarded(body)
    else:
        lines += [f"    {line}" for line in body]
    return generate(f"{p}run", lines, ns, RUN_FILENAME)
