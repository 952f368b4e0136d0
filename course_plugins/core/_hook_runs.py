"""Generated hook runs: one snapshot's functions called in straight-line code, without a loop.

Like the generated advice layers (``_advice_chain``) and dataclasses' generated ``__init__``: for
the common run, one positional argument and no keywords (``run_sync("before-course-save",
course)``), a hook compiles a runner for its current snapshot. Each function is called by name,
with the counters, the run's budget guard and the isolation written out for that function's
mode, so a run costs little more than the calls themselves. What a run does is exactly what the
loops of ``_calls`` do (``run_normal``, ``run_abnormal``, ``run_filter``).

A runner belongs to one snapshot: the hook drops it on any change (:func:`retire`). A run in
progress when that happens finishes through the loop on its own snapshot, which looks at each
registration's mode, so a removal or replacement takes effect at once, as it does there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core._calls import (
    ASYNC,
    GUARDED,
    PLAIN,
    SKIPPED,
    VETO_EXCEPTIONS,
    Registration,
    call_guarded,
    generate,
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

__all__ = ["MAX_ARITY", "MAX_STEPS", "RUN_FILENAME", "compile_run", "retire"]

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
        f"{p}new": object.__new__,
        f"{p}Guard": RunGuard,
        f"{p}ident": threading.get_ident,
        f"{p}open": watchdog_open,
        f"{p}disarm": watchdog_disarm,
        f"{p}dog": watchdog_thread,
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
    else:
        lines += [f"    {line}" for line in body]
    return generate(f"{p}run", lines, ns, RUN_FILENAME)


def retire(run: Callable[..., Any]) -> None:
    """Tell ``run`` (a runner of an outdated snapshot) that a run in progress must finish
    through the loop, which looks at each registration's current mode."""
    run.__globals__["__cp_live"] = False
