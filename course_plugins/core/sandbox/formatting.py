"""``str.format`` and ``format_map`` whose ``{x.attr}`` fields go through an attribute guard.

A format template is a tiny program that reads attributes (``"{0.__init__.__globals__}"``).
Untrusted code's templates built at run time are formatted by ``GuardedFormatter``, which
resolves every attribute of a field with the guard it is given (the sandbox's or the plugin
policy's); templates without a ``.`` read no attribute and take the interpreter's fast path.
"""

from __future__ import annotations

import _string
import string
from collections.abc import Callable
from typing import Any

Getter = Callable[[Any, str], Any]


class GuardedFormatter(string.Formatter):
    """``str.format`` semantics, with every ``{x.attr}`` read through ``getter(obj, name)``."""

    def __init__(self, getter: Getter) -> None:
        self.getter = getter

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self.getter(obj, key) if is_attr else obj[key]
        return obj, first

    def format_method(self, obj: Any, name: str) -> Callable[..., str]:
        """What ``obj.format`` / ``obj.format_map`` (``name``) gives, for a ``str`` or the
        ``str`` type (unbound), formatting through this formatter."""
        vformat = self.vformat
        native_format, native_map = str.format, str.format_map
        if isinstance(obj, str):
            template = str(obj)
            if "." not in template:
                if name == "format":
                    return lambda *args, **kwargs: native_format(template, *args, **kwargs)
                return lambda mapping: native_map(template, mapping)
            if name == "format":
                return lambda *args, **kwargs: vformat(template, args, kwargs)
            return lambda mapping: vformat(template, (), mapping)
        if name == "format":
            return lambda template, *args, **kwargs: vformat(template, args, kwargs)
        return lambda template, mapping: vformat(template, (), mapping)


def is_str_like(obj: Any) -> bool:
    """Whether ``obj.format`` would be ``str.format``: a ``str`` or the ``str`` type itself."""
    return isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
