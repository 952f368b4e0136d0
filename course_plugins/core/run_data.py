"""Recorded runs as plain data: what may be shown of a value, a change or an error.

A recorded run keeps what plugins' functions did to the values they were given; an operator
reads it in the admin and the REST API. Nothing of it may run a plugin's code when it is compared
or shown (a plugin's ``__eq__`` or ``__repr__`` would run outside its budget, in whichever thread
reads the runs), nor show a secret: :func:`same_data` compares builtin data by value and anything
else by identity, and a :class:`Masker` turns values into plain data with secrets masked (keys
that look like secrets, and the registered secret values) and long text cut.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Iterable
from typing import Any

from course_plugins.core.health import renders_safely

__all__ = [
    "MASK",
    "MAX_TEXT",
    "Masker",
    "known",
    "known_keys",
    "looks_secret",
    "same_data",
    "type_name",
    "veto_text",
]

MASK = "********"
"""What a secret value reads as in a recorded run."""

MAX_TEXT = 200
"""Recorded strings (values, reprs, messages) are cut to this many characters."""

_SECRET_WORDS = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|credential|private[-_]?key|auth",
    re.IGNORECASE,
)
_MISSING: Any = object()
_OLD_SECRETS = 256


def known(value: Any) -> bool:
    """Whether ``value`` is of a builtin scalar type whose comparison and text run no code but
    the interpreter's (an aware datetime asks its ``tzinfo``, which may be anyone's)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is datetime.datetime or kind is datetime.time:
        zone = value.tzinfo
        return zone is None or type(zone) is datetime.timezone
    return False


_SCALARS = frozenset({type(None), bool, int, float, str, bytes, datetime.date, decimal.Decimal,
                      uuid.UUID})


def known_keys(mapping: dict[Any, Any]) -> bool:
    """Whether every key of ``mapping`` is a :func:`known` scalar."""
    return all(known(key) for key in mapping)


def same_data(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether ``a`` and ``b`` are the same value, found without running any code of theirs.

    Builtin scalars and (exact) dicts, lists and tuples of them compare by value; anything else
    (a plugin's object, whose ``__eq__`` is the plugin's code, run here outside its budget) is
    the same only as itself.
    """
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if known(a):
        return known(b) and bool(a == b)
    if depth >= 8:
        return False
    if kind is dict:
        return (
            len(a) == len(b)
            and known_keys(a)
            and known_keys(b)
            and all(key in b and same_data(item, b[key], depth + 1) for key, item in a.items())
        )
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(
            same_data(x, y, depth + 1) for x, y in zip(a, b, strict=True)
        )
    return False


def type_name(value: Any) -> str:
    """The name of ``value``'s class, read from the class itself (a metaclass's ``__name__``
    would be code of whoever made it)."""
    name = type.__dict__["__name__"].__get__(type(value))
    return name if type(name) is str else "object"


def looks_secret(name: object) -> bool:
    """Whether a field called ``name`` holds a secret (password, token, secret, api key...)."""
    return isinstance(name, str) and _SECRET_WORDS.search(name) is not None


class Masker:
    """Turns values, changes and messages into plain data to record: registered secret values
    (plugins' ``secret`` settings, the replaced ones too) and fields that look like secrets are
    masked, strings cut at ``MAX_TEXT``."""

    _secrets: tuple[str, ...] = ()

    def set_secret_values(self, values: Iterable[object]) -> None:
        """Mask these values (plugins' ``secret`` settings) wherever they appear in a run."""
        found = {str(v) for v in values if v is not None and len(str(v)) >= 3}
        # Runs are read (and masked) after they ran: a value that was a secret then stays
        # masked (up to _OLD_SECRETS of the replaced ones).
        old = [s for s in self._secrets if s not in found][: max(0, _OLD_SECRETS - len(found))]
        self._secrets = tuple(sorted(found.union(old), key=len, reverse=True))

    def diff(self, before: Any, after: Any) -> dict[str, Any]:
        """``{field: [before, after]}`` of what changed, as plain data (nothing else copied).

        Never raises: values that cannot be compared or shown are recorded as such.
        """
        try:
            return self._changes(before, after)
        except Exception:
            return {"value": ["<not recordable>", "<not recordable>"]}

    def _changes(self, before: Any, after: Any) -> dict[str, Any]:
        plain = self.plain
        if (type(before) is dict and type(after) is dict and known_keys(before)
                and known_keys(after)):
            changed: dict[str, Any] = {}
            for field in before.keys() | after.keys():
                old, new = before.get(field, _MISSING), after.get(field, _MISSING)
                if not same_data(old, new):
                    changed[str(field)] = [
                        None if old is _MISSING else plain(old, field),
                        None if new is _MISSING else plain(new, field),
                    ]
            return changed
        return {"value": [plain(before), plain(after)]}

    def mask_text(self, text: str) -> str:
        """``text`` cut to ``MAX_TEXT`` characters, every registered secret value masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"

    def plain(self, value: Any, field: object = None, depth: int = 0) -> Any:
        """``value`` as plain data safe to show and store (secrets masked, long text cut)."""
        if field is not None and looks_secret(field):
            return MASK
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is float:
            return value
        if kind is str:
            return self.mask_text(value)
        if known(value) and kind in (datetime.date, datetime.datetime, datetime.time):
            return value.isoformat()
        if kind is decimal.Decimal or kind is uuid.UUID:
            return str(value)
        if kind is dict and depth < 2 and len(value) <= 50 and known_keys(value):
            return {str(k): self.plain(v, k, depth + 1) for k, v in value.items()}
        if kind in (list, tuple, set, frozenset) and depth < 2 and len(value) <= 50:
            return [self.plain(v, None, depth + 1) for v in value]
        if kind in (dict, list, tuple, set, frozenset):
            return f"<{kind.__name__} of {len(value)} items>"
        # Not the object's repr: a plugin's object runs its own code there (here: outside its
        # budget, in whichever thread reads the runs).
        return self.mask_text(f"<{kind.__qualname__}>")


try:  # importing django.core.exceptions needs no configured settings
    from django.core.exceptions import ValidationError as _VALIDATION_ERROR
except ImportError:  # pragma: no cover - Django is a dependency, but the core runs without
    _VALIDATION_ERROR = None


def veto_text(exc: BaseException) -> str:
    if _VALIDATION_ERROR is not None and type(exc) is _VALIDATION_ERROR:
        messages = exc.messages  # type: ignore[attr-defined]
        if isinstance(messages, list) and messages:
            return "; ".join(str(m) for m in messages)
    if not renders_safely(exc):  # a plugin's exception: its text would be its own code
        return type(exc).__name__
    return str(exc) or type(exc).__name__
