"""``from course_plugins.core.advice import before_advice, ...`` in a plugin's own code.

The seed writes advice as decorators at module level. Plugin code importing
``course_plugins.core.advice`` gets a module of its own (``PluginAdviceModule``) whose decorators
register through the plugin's ``api.advice``: the ``advice`` permission is checked, the plugin owns
the advice (inspector, overrides, removal on deactivation) and an isolated plugin's advice runs in
its worker. Decorators used while the module is imported (before ``activate``) are remembered and
registered every time the plugin activates; used from ``activate(api)`` on, they register at once.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from course_plugins.core._advice_calls import Advice
from course_plugins.core.advice import ADVICE_KINDS

#: The module name plugin code imports.
MODULE = "course_plugins.core.advice"


def plugin_advice_module(plugin_id: str) -> tuple[types.ModuleType, Callable[[Any], None]]:
    """Return one plugin's ``course_plugins.core.advice`` (``before_advice`` ...
    ``filter_return_advice``, ``remove_advice`` and ``Advice``, as in the seed) and its
    ``bind(api)``, which the loader calls when the plugin activates (within ``activate``'s
    budget)."""
    module = types.ModuleType(MODULE, f"course_plugins.core.advice as plugin {plugin_id} sees it")
    pending: list[tuple[str, Any, Callable[..., Any], int]] = []
    bound: list[Any] = []  # the plugin's api, once it activates

    def decorator(how: str) -> Callable[..., Any]:
        def x_advice(
            target: Any, fn: Callable[..., Any] | None = None, *, priority: int = 10
        ) -> Any:
            if fn is None:
                return lambda f: x_advice(target, f, priority=priority)
            if bound:
                bound[0].advice.add(how, target, fn, priority=priority)
            else:
                pending.append((how, target, fn, priority))
            return fn

        x_advice.__name__ = x_advice.__qualname__ = f"{how}_advice"
        return x_advice

    def remove_advice(target: Any, fn: Callable[..., Any]) -> None:
        pending[:] = [p for p in pending if not (p[1] == target and p[2] is fn)]
        if bound:
            bound[0].advice.remove(target, fn)

    def bind(api: Any) -> None:
        bound[:] = [api]
        for how, target, fn, priority in pending:
            api.advice.add(how, target, fn, priority=priority)

    for how in ADVICE_KINDS:
        setattr(module, f"{how}_advice", decorator(how))
    module.remove_advice = remove_advice  # type: ignore[attr-defined]
    module.Advice = Advice  # type: ignore[attr-defined]
    return module, bind
