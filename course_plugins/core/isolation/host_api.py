"""What an isolated plugin may ask of the site: the Platform API calls a worker may request
(``API``, each done on the plugin's real ``PlatformAPI``, which checks its permissions), which of
them take the plugin's functions, and which fields of the site's objects lent to it it may read
and write (``plain_fields``; ``SECRET_FIELDS`` never, ``PRIVILEGE_FIELDS`` read-only).

Everything here reads the site's objects without running their code: class names and ``_meta``
from the classes' own dictionaries, instance fields from the instance's own dictionary.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import re
from collections.abc import Callable
from typing import Any

from course_plugins.core.isolation.channel import REGISTERING
from course_plugins.core.isolation.wire import is_data
from course_plugins.core.run_data import type_name
from course_plugins.core.sandbox import ownership

__all__ = [
    "API",
    "PRIVILEGE_FIELDS",
    "SECRET_FIELDS",
    "TAKES_FUNCTIONS",
    "first_not_data",
    "instance_dict",
    "model_meta",
    "plain_fields",
    "same_json",
    "type_name",
]


def _none(_: Any) -> None:
    return None


def _part(part: str, method: str) -> Callable[..., Any]:
    def call(api: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(api, part), method)(*args, **kwargs)

    return call


class _Stale(Exception):
    """The stored value is not the one the worker computed from (carries the current one)."""

    def __init__(self, current: Any) -> None:
        super().__init__("stale")
        self.current = current


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same value (``1``, ``1.0`` and ``True`` are not)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same_json(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _swap(api: Any, key: str, expected: Any, new: Any, default: Any = None) -> dict[str, Any]:
    """``api.storage.update`` computed in the worker: under the key's lock, store ``new`` if the
    value is still ``expected`` (what the worker's function got), else store nothing and return
    the current value for the worker to call its function again."""

    def apply(current: Any) -> Any:
        if not same_json(current, expected):
            raise _Stale(current)
        return new

    try:
        return {"v": api.storage.update_sync(key, apply, default)}
    except _Stale as stale:
        return {"stale": stale.current}


#: Fields of the host's objects an isolated plugin may neither read nor write (a user's password
#: hash), and those it may read but not change (what would grant it rights).
SECRET_FIELDS = frozenset({"password"})
PRIVILEGE_FIELDS = frozenset({"is_superuser", "is_staff", "is_active"})

#: Names that look like they hold a credential: never readable on a host object that is not a
#: model instance (a model's fields are the site's data, ``SECRET_FIELDS`` aside).
_SECRET_NAME = re.compile(r"passw|secret|token|api_?key|credential", re.I)
_SCALARS = (str, int, float, bool, type(None), datetime.datetime, datetime.date, datetime.time,
            datetime.timedelta, decimal.Decimal)


_class_dict = type.__dict__["__dict__"].__get__
_class_mro = type.__dict__["__mro__"].__get__


def model_meta(obj: Any) -> Any:
    """The ``_meta`` of a model instance, ``None`` for any other object: found in the classes'
    own dictionaries, and taken only when its class is the site's (Django's ``Options``), not a
    plugin's: what a class calls ``_meta`` may be anyone's, a trusted plugin's object whose
    ``concrete_fields`` is code of its own."""
    for klass in _class_mro(type(obj)):
        meta = _class_dict(klass).get("_meta")
        if meta is not None:
            return meta if ownership.host_class(type(meta)) else None
    return None


def instance_dict(obj: Any) -> dict[str, Any] | None:
    try:
        own = vars(obj)
    except TypeError:
        return None
    return own if type(own) is dict else None


def plain_fields(obj: Any) -> set[str]:
    """The fields of a host object an isolated plugin may read and write: a model instance's
    concrete fields (not relations' objects), a dataclass's declared fields, and of any other
    object only its instance attributes holding a single value (a string, a number...): never a
    container (so a request's ``META``, a settings dict or a cache of another object does not
    cross), never a method, never a class attribute."""
    meta = model_meta(obj)
    if meta is not None:
        fields = meta.concrete_fields
        return {f.attname for f in fields} | {f.name for f in fields if not f.is_relation}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = {f.name for f in dataclasses.fields(obj)}
    else:
        own = instance_dict(obj)
        if own is None:
            return set()
        names = {k for k, v in own.items() if type(k) is str and type(v) in _SCALARS}
    return {name for name in names if not _SECRET_NAME.search(name)}


#: Every Platform API call a worker may ask for, each done on the plugin's real ``PlatformAPI``
#: (which checks the plugin's permissions, hooks and event patterns itself).
API: dict[str, Callable[..., Any]] = {
    # ("log" is IsolatedPlugin._log: what one call may log is bounded)
    "hooks.check": lambda api, name: _none(api.hooks[name]),
    "hooks.contains": lambda api, name: name in api.hooks,
    "hooks.functions": lambda api, name: api.hooks[name].functions,
    "hooks.define": lambda api, name, hook_type, description="": _none(
        api.hooks.define(name, hook_type, description=description)
    ),
    "hooks.run_sync": lambda api, name, *a, **k: api.hooks.run_sync(name, *a, **k),
    "hooks.add": lambda api, name, fn, priority=10: _none(
        api.hooks[name].add(fn, priority=priority)
    ),
    "hooks.remove": lambda api, name, fn: api.hooks[name].remove(fn),
    "events.check": lambda api, pattern: _none(api.events.subscribe(pattern)),
    "events.subscribe": lambda api, pattern, fn, background=False: _none(
        api.events.subscribe(pattern, fn, background=background)
    ),
    "events.unsubscribe": lambda api, pattern, fn: api.events.unsubscribe(pattern, fn),
    "advice.check": lambda api, how: _none(api.advice.add(how, "")),
    "advice.add": lambda api, how, target, fn, priority=10: _none(
        api.advice.add(how, target, fn, priority=priority)
    ),
    "advice.remove": lambda api, target, fn: _none(api.advice.remove(target, fn)),
    "config.all": lambda api: api.config.all(),
    "config.update": lambda api, values: api.config.update(values),
    "config.reload": lambda api: _none(api.config.reload()),
    "emit": lambda api, name, data=None: _none(api.emit(name, data)),
    "schedule": lambda api, fn, delay_seconds, repeat=False: api.schedule(
        fn, delay_seconds, repeat
    ),
    "cancel_schedule": lambda api, schedule_id: api.cancel_schedule(schedule_id),
    "storage.swap_sync": _swap,
}
for _p, _names in {
    # (no ``update``: the worker runs its function itself, then ``swap_sync``; the site never
    # calls a worker's function back while it holds the key's lock, see ``_swap``)
    "storage": ("get", "set", "delete", "keys", "increment"),
    "users": ("get_current", "get", "has_permission"),
    "courses": ("get", "list_by_organization"),
    "notify": ("send_to_user", "send_email"),
    "analytics": ("track_event",),
}.items():
    for _n in _names:
        API[f"{_p}.{_n}_sync"] = _part(_p, f"{_n}_sync")


#: Platform API calls that take functions of the plugin (registered, scheduled, removed or called
#: back); every other call takes plain data only (``IsolatedPlugin._check_arguments``).
TAKES_FUNCTIONS = REGISTERING | {"hooks.remove", "events.unsubscribe", "advice.remove"}


def first_not_data(value: Any, depth: int = 0) -> Any:
    """The first value inside ``value`` that is not plain data (``value`` itself when it is not
    a container, or when containers nest too deep)."""
    kind = type(value)
    if depth <= 50 and kind is dict:
        for key, item in value.items():
            for part in (key, item):
                if not is_data(part, depth + 1):
                    return first_not_data(part, depth + 1)
    elif depth <= 50 and kind in (list, tuple, set, frozenset):
        for item in value:
            if not is_data(item, depth + 1):
                return first_not_data(item, depth + 1)
    return value
