"""A plugin's ``settings_schema``: parse the declaration, validate and coerce values, mask secrets.

This is the one implementation behind ``api.config.set``, the admin settings form and the REST
``/settings/`` endpoint, so all three accept and refuse exactly the same values.

A schema maps a setting name to a field declaration::

    settings_schema:
      max_students: {type: integer, default: 30, min: 1, max: 500, description: Seats per course}
      mode: {type: choice, choices: [strict, lenient], default: lenient}
      api_key: {type: secret, required: true}

Types: ``string``, ``text`` (multi-line string), ``integer``, ``number``, ``boolean``, ``choice``
(needs ``choices``), ``list`` (of strings, numbers or booleans) and ``secret`` (a string that is
never shown back). Keys: ``type``, ``default``, ``description``, ``required``, ``min``, ``max``,
``choices``, ``max_length``, ``max_items``, ``format``, ``min_field``, ``max_field``.

- ``min``/``max`` bound the value of ``integer``/``number``, the length of ``string``/``text``/
  ``secret`` and the number of items of ``list``.
- Every value is bounded even when the schema says nothing, so that no setting an operator can save
  makes the site slow: ``max_length`` (characters of a string, or of each item of a list; default
  ``DEFAULT_MAX_LENGTH[type]``) and ``max_items`` (items of a list; default ``DEFAULT_MAX_ITEMS``).
- ``format: event_pattern`` (``string`` or ``list``): each value must be an event pattern such as
  ``course.*`` or ``quiz.**`` with at most ``MAX_PATTERN_SEGMENTS`` segments and two ``**``.
- ``min_field``/``max_field`` name another numeric field of the same schema whose value bounds this
  one: ``min_questions: {type: integer, max_field: max_questions}`` refuses
  ``min_questions > max_questions`` (the error is reported on both fields).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from course_plugins.exceptions import PluginManifestError, PluginSettingsError

FIELD_TYPES: tuple[str, ...] = (
    "string",
    "text",
    "integer",
    "number",
    "boolean",
    "choice",
    "list",
    "secret",
)
FIELD_KEYS: tuple[str, ...] = (
    "type",
    "default",
    "description",
    "required",
    "min",
    "max",
    "choices",
    "max_length",
    "max_items",
    "format",
    "min_field",
    "max_field",
)
FORMATS: tuple[str, ...] = ("event_pattern",)

# Bounds that apply when the schema does not declare its own (it may lower or raise them).
DEFAULT_MAX_LENGTH: dict[str, int] = {"string": 1_000, "secret": 1_000, "text": 20_000, "list": 200}
DEFAULT_MAX_ITEMS = 1_000
# The most a schema may allow: a value beyond these is never reasonable for a setting.
LIMIT_MAX_LENGTH = 1_000_000
LIMIT_MAX_ITEMS = 100_000
# Event patterns in settings: segments (dot-separated parts), '**' segments, characters.
MAX_PATTERN_SEGMENTS = 16
MAX_PATTERN_DSTARS = 2
MAX_PATTERN_LENGTH = 255

# What a secret looks like when shown; posting it back unchanged keeps the stored secret.
SECRET_MASK = "********"
REQUIRED_MESSAGE = "this setting is required"
"""The error of a required setting left empty (the admin form uses the same words)."""

_LENGTH_TYPES = frozenset({"string", "text", "secret"})
_NUMERIC_TYPES = frozenset({"integer", "number"})
_TRUE = frozenset({"true", "1", "yes", "on", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "f", ""})
_UNSET = object()


@dataclass(frozen=True)
class FieldSpec:
    """One declared setting. ``has_default`` tells an explicit ``default: null`` from none."""

    name: str
    type: str
    description: str = ""
    required: bool = False
    default: Any = None
    has_default: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = field(default_factory=tuple)
    max_length: int | None = None
    max_items: int | None = None
    format: str | None = None
    min_field: str | None = None
    max_field: str | None = None

    @property
    def secret(self) -> bool:
        return self.type == "secret"

    @property
    def length_limit(self) -> int | None:
        """Characters allowed in the value (string types) or in each item (list)."""
        if self.max_length is not None:
            return self.max_length
        return DEFAULT_MAX_LENGTH.get(self.type)

    @property
    def items_limit(self) -> int | None:
        """Items allowed in a list value."""
        if self.type != "list":
            return None
        return self.max_items if self.max_items is not None else DEFAULT_MAX_ITEMS

    def to_dict(self) -> dict[str, Any]:
        """The declaration as plain JSON data (what ``parse_schema`` accepts back)."""
        out: dict[str, Any] = {"type": self.type}
        if self.has_default:
            out["default"] = list(self.default) if self.type == "list" else self.default
        if self.description:
            out["description"] = self.description
        if self.required:
            out["required"] = True
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        for key in ("max_length", "max_items", "format", "min_field", "max_field"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def parse_schema(
    raw: Any, *, path: str = "plugin.yaml", field_prefix: str = "settings_schema"
) -> dict[str, FieldSpec]:
    """Check a ``settings_schema`` declaration and return ``{name: FieldSpec}`` in declared order.

    Raises ``PluginManifestError(path, "settings_schema.<name>.<key>", ...)`` naming every bad
    setting at once (its ``errors``; the first problem of each setting).
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PluginManifestError(
            path, field_prefix, f"must be a mapping of setting name -> field, got {_kind(raw)}"
        )
    specs: dict[str, FieldSpec] = {}
    problems: list[PluginManifestError] = []
    for name, decl in raw.items():
        where = f"{field_prefix}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(PluginManifestError(
                path, where, "setting names must be identifiers (letters, digits, underscores)"
            ))
            continue
        try:
            specs[name] = _parse_field(name, decl, path, where)
        except PluginManifestError as exc:
            problems.append(exc)
    for name, spec in specs.items():
        for key in ("min_field", "max_field"):
            other = getattr(spec, key)
            if other is None:
                continue
            where = f"{field_prefix}.{name}.{key}"
            if other not in specs or other == name:
                if other not in raw or other == name:  # else: that field's own problem is named
                    problems.append(PluginManifestError(
                        path, where, f"names {other!r}, which is not another field of this schema"
                    ))
            elif spec.type not in _NUMERIC_TYPES or specs[other].type not in _NUMERIC_TYPES:
                problems.append(PluginManifestError(
                    path, where, "both fields must be of type integer or number"
                ))
    if problems:
        raise PluginManifestError.every(problems)
    return specs


def _parse_field(name: str, decl: Any, path: str, where: str) -> FieldSpec:
    if not isinstance(decl, Mapping):
        raise PluginManifestError(
            path, where, f"must be a mapping with a 'type', got {_kind(decl)}"
        )
    unknown = sorted(set(map(str, decl)) - set(FIELD_KEYS))
    if unknown:
        raise PluginManifestError(
            path, f"{where}.{unknown[0]}", f"unknown key; a field may have: {', '.join(FIELD_KEYS)}"
        )
    ftype = decl.get("type")
    if ftype not in FIELD_TYPES:
        raise PluginManifestError(
            path, f"{where}.type", f"got {ftype!r}; expected one of: {', '.join(FIELD_TYPES)}"
        )
    description = decl.get("description", "") or ""
    if not isinstance(description, str):
        raise PluginManifestError(path, f"{where}.description", "must be a string")
    required = decl.get("required", False)
    if not isinstance(required, bool):
        raise PluginManifestError(path, f"{where}.required", "must be true or false")
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = decl.get(key)
        if value is None:
            bounds[key] = None
            continue
        if ftype in ("boolean", "choice"):
            raise PluginManifestError(path, f"{where}.{key}", f"does not apply to type {ftype}")
        if ftype in _NUMERIC_TYPES:
            if not _is_number(value) or (ftype == "integer" and not float(value).is_integer()):
                raise PluginManifestError(path, f"{where}.{key}", f"must be {_article(ftype)}")
        elif not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise PluginManifestError(
                path, f"{where}.{key}", f"must be a non-negative integer (a length for {ftype})"
            )
        bounds[key] = value
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise PluginManifestError(path, f"{where}.min", "is greater than max")
    choices: tuple[Any, ...] = ()
    if ftype == "choice":
        raw_choices = decl.get("choices")
        if not isinstance(raw_choices, list) or not raw_choices:
            raise PluginManifestError(
                path, f"{where}.choices", "a choice field needs a non-empty list"
            )
        if not all(isinstance(c, (str, int, float, bool)) for c in raw_choices):
            raise PluginManifestError(
                path, f"{where}.choices", "choices must be strings or numbers"
            )
        if len({repr(c) for c in raw_choices}) != len(raw_choices):
            raise PluginManifestError(path, f"{where}.choices", "choices must be unique")
        choices = tuple(raw_choices)
    elif "choices" in decl:
        raise PluginManifestError(
            path, f"{where}.choices", "only a field of type choice has choices"
        )
    extra = _parse_extra(ftype, decl, path, where)
    spec = FieldSpec(
        name=name,
        type=ftype,
        description=description,
        required=required,
        min=bounds["min"],
        max=bounds["max"],
        choices=choices,
        **extra,
    )
    if "default" in decl and decl["default"] is not None:
        try:
            default = _coerce(spec, decl["default"])
        except ValueError as exc:
            raise PluginManifestError(path, f"{where}.default", f"invalid default: {exc}") from None
        spec = FieldSpec(**{**spec.__dict__, "default": default, "has_default": True})
    return spec


def _parse_extra(ftype: str, decl: Mapping[str, Any], path: str, where: str) -> dict[str, Any]:
    """The bounding keys: max_length, max_items, format, min_field and max_field."""
    out: dict[str, Any] = {}
    for key, applies, limit in (
        ("max_length", (*_LENGTH_TYPES, "list"), LIMIT_MAX_LENGTH),
        ("max_items", ("list",), LIMIT_MAX_ITEMS),
    ):
        value = decl.get(key)
        if value is None:
            continue
        if ftype not in applies:
            raise PluginManifestError(path, f"{where}.{key}", f"does not apply to type {ftype}")
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit):
            raise PluginManifestError(
                path, f"{where}.{key}", f"must be an integer from 1 to {limit:,}"
            )
        out[key] = value
    fmt = decl.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise PluginManifestError(
                path, f"{where}.format", f"got {fmt!r}; expected one of: {', '.join(FORMATS)}"
            )
        if ftype not in ("string", "list"):
            raise PluginManifestError(
                path, f"{where}.format", "applies to a string or a list of strings only"
            )
        out["format"] = fmt
    for key in ("min_field", "max_field"):
        value = decl.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise PluginManifestError(path, f"{where}.{key}", "must be the name of another field")
        out[key] = value
    return out


def field_specs(schema: Mapping[str, Any]) -> list[FieldSpec]:
    """Return the fields of ``schema`` (raw declaration or parsed) in declared order.

    Raises ``PluginManifestError`` when a raw declaration is invalid.
    """
    return list(_specs(schema).values())


def defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``{name: default}`` for every field that declares a default."""
    return {s.name: _copy(s.default) for s in field_specs(schema) if s.has_default}


def validate_settings(
    schema: Mapping[str, Any],
    data: Mapping[str, Any],
    *,
    partial: bool = False,
    plugin: str | None = None,
    current: Mapping[str, Any] | None = None,
    typed: bool = False,
) -> dict[str, Any]:
    """Validate and coerce ``data`` against ``schema``.

    Strings are coerced the way a form posts them (``"5"`` -> 5, ``"on"`` -> True, a list as one
    item per line or comma-separated). With ``typed`` (JSON from the REST API) values must have
    their JSON type instead: ``true``/``false`` for a boolean, a number for ``integer`` and
    ``number``, an array for a list. A secret posted back as ``SECRET_MASK`` keeps its value in
    ``current``. ``None`` means "not set" (the default applies).

    Returns, with ``partial=False``, every field: the coerced value, else the default, else
    ``None`` (required fields must end up with a value); with ``partial=True``, only the keys in
    ``data``, coerced. Raises ``PluginSettingsError(plugin, {field: message})`` listing every
    problem at once (unknown keys included).
    """
    specs = _specs(schema)
    current = current or {}
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str):  # the name itself, never a subclass kept in the settings
            key = str.__str__(key)
        value = _builtin(value)
        spec = specs.get(key)
        if spec is None:
            known = ", ".join(specs) or "none"
            errors[str(key)] = f"unknown setting (declared in settings_schema: {known})"
            continue
        if spec.secret and value == SECRET_MASK:
            # The form showed the mask; posting it back means "keep the stored secret".
            if key not in current and partial:
                continue
            value = current.get(key)
        if value is None or (value == "" and spec.type not in _LENGTH_TYPES):
            out[key] = None
            continue
        try:
            if typed:
                _check_json_type(spec, value)
            out[key] = _coerce(spec, value)
        except ValueError as exc:
            errors[key] = str(exc)
    if not partial:
        for name, spec in specs.items():
            if out.get(name) is None:
                out[name] = _copy(spec.default) if spec.has_default else None
    for name, value in out.items():
        spec = specs[name]
        missing = value in (None, "", [])
        if missing and spec.required and not (partial and spec.has_default) and name not in errors:
            errors[name] = REQUIRED_MESSAGE
    if not errors:
        _check_cross_fields(specs, out, current, errors)
    if errors:
        raise PluginSettingsError(plugin, errors)
    return out


def _check_cross_fields(
    specs: Mapping[str, FieldSpec],
    out: Mapping[str, Any],
    current: Mapping[str, Any],
    errors: dict[str, str],
) -> None:
    """Check ``min_field``/``max_field`` rules on the values in effect after this change."""

    def effective(name: str) -> Any:
        if out.get(name) is not None:
            return out[name]
        if name not in out and current.get(name) is not None:
            return current[name]
        spec = specs[name]
        return spec.default if spec.has_default else None

    for name, spec in specs.items():
        for key, other in (("max_field", spec.max_field), ("min_field", spec.min_field)):
            if other is None:
                continue
            mine, theirs = effective(name), effective(other)
            if not (_is_number(mine) and _is_number(theirs)):
                continue
            if (key == "max_field" and mine > theirs) or (key == "min_field" and mine < theirs):
                relation = "at most" if key == "max_field" else "at least"
                errors.setdefault(name, f"must be {relation} {other} ({theirs:g}), got {mine:g}")
                opposite = "at least" if key == "max_field" else "at most"
                errors.setdefault(other, f"must be {opposite} {name} ({mine:g}), got {theirs:g}")


def check_event_pattern(pattern: Any) -> str:
    """Return ``pattern`` if it is a valid, bounded event pattern; raise ``ValueError`` otherwise.

    Same syntax as subscriptions (``*`` one segment, ``**`` any number), at most
    ``MAX_PATTERN_SEGMENTS`` segments, ``MAX_PATTERN_DSTARS`` ``**`` and ``MAX_PATTERN_LENGTH``
    characters, so that matching it stays cheap.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"expected an event pattern such as 'course.*', got {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"event pattern too long ({len(pattern):,} characters; at most {MAX_PATTERN_LENGTH})"
        )
    segs = pattern.split(".")
    if len(segs) > MAX_PATTERN_SEGMENTS:
        raise ValueError(
            f"event pattern has {len(segs)} segments; at most {MAX_PATTERN_SEGMENTS}"
        )
    for seg in segs:
        if not seg or ("*" in seg and seg not in ("*", "**")):
            raise ValueError(
                f"{_short(pattern)} is not an event pattern: use dot-separated words, '*' for "
                "exactly one segment and '**' for any number, e.g. 'course.*' or 'quiz.**'"
            )
    if segs.count("**") > MAX_PATTERN_DSTARS:
        raise ValueError(f"event pattern has more than {MAX_PATTERN_DSTARS} '**' segments")
    return pattern


def mask_settings(schema: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``values`` with every set secret replaced by ``SECRET_MASK`` (for display)."""
    specs = _specs(schema)
    return {
        key: SECRET_MASK
        if key in specs and specs[key].secret and value not in (None, "")
        else value
        for key, value in values.items()
    }


def _specs(schema: Mapping[str, Any]) -> dict[str, FieldSpec]:
    if all(isinstance(v, FieldSpec) for v in schema.values()):
        return dict(schema)
    return parse_schema(schema)


_JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "boolean": ((bool,), "true or false"),
    "integer": ((int, float), "an integer"),
    "number": ((int, float), "a number"),
    "list": ((list, tuple), "a list (a JSON array)"),
}


def _check_json_type(spec: FieldSpec, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` has the JSON type of ``spec`` (see ``typed``): no
    ``"yes"``, ``"1"`` or ``1`` for a boolean, no ``"5"`` for a number, no text for a list."""
    expected = _JSON_TYPES.get(spec.type)
    if expected is None:
        return
    types, words = expected
    wrong = not isinstance(value, types) or (spec.type != "boolean" and isinstance(value, bool))
    if wrong:
        raise ValueError(f"expected {words}, got {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    """``value`` as a JSON client reads it: ``the string 'yes'``, ``the number 1``, ..."""
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return "an object" if isinstance(value, dict) else f"a {_kind(value)}"


def _builtin(value: Any) -> Any:
    """``value`` as the builtin type itself when it is an instance of a subclass of ``str``,
    ``int`` or ``float`` (or a list or tuple of such), copied with the base type's own methods:
    settings are read later by the site (the admin's form, the REST API, caches), where a trusted
    plugin's subclass would run its methods outside any budget."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, list):
        return [_builtin(item) for item in list.copy(value)]
    if isinstance(value, tuple):
        return tuple(_builtin(item) for item in tuple.__add__((), value))
    return value


def _coerce(spec: FieldSpec, value: Any) -> Any:
    """Return ``value`` as ``spec``'s type; raise ``ValueError`` saying what is expected."""
    value = _builtin(value)
    ftype = spec.type
    if ftype in _LENGTH_TYPES:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)}")
        if ftype == "string" and ("\n" in value or "\r" in value):
            raise ValueError("must be a single line (use type text for several lines)")
        _check_text(spec, value)
        _check_bounds(spec, len(value), "characters")
        if spec.format == "event_pattern":
            check_event_pattern(value)
        return value
    if ftype == "integer":
        number = _to_number(value, integer=True)
        _check_bounds(spec, number, None)
        return number
    if ftype == "number":
        number = _to_number(value, integer=False)
        _check_bounds(spec, number, None)
        return number
    if ftype == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {value!r}")
    if ftype == "choice":
        for choice in spec.choices:
            if value == choice and type(value) is type(choice):
                return choice
        for choice in spec.choices:
            if isinstance(value, str) and value == str(choice):
                return choice
        raise ValueError(f"{value!r} is not one of: {', '.join(map(str, spec.choices))}")
    if ftype == "list":
        limit = spec.items_limit
        if isinstance(value, (list, tuple)) and limit is not None and len(value) > limit:
            raise ValueError(f"must have at most {limit:,} items (got {len(value):,})")
        if isinstance(value, str) and spec.length_limit is not None:
            # A list typed into a form: bound the text before splitting it.
            _check_text(spec, value, limit=(spec.length_limit + 2) * (limit or 1))
        items = _to_list(value)
        if limit is not None and len(items) > limit:
            raise ValueError(f"must have at most {limit:,} items (got {len(items):,})")
        _check_bounds(spec, len(items), "items")
        for i, item in enumerate(items):
            if isinstance(item, str):
                try:
                    _check_text(spec, item)
                    if spec.format == "event_pattern":
                        check_event_pattern(item)
                except ValueError as exc:
                    raise ValueError(f"item {i + 1}: {exc}") from None
            elif spec.format == "event_pattern":
                raise ValueError(f"item {i + 1}: expected an event pattern, got {_kind(item)}")
        return items
    raise ValueError(f"unknown type {ftype!r}")  # parse_schema makes this unreachable


def _to_number(value: Any, *, integer: bool) -> int | float:
    expected = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise ValueError(f"expected {expected}, got {text!r}") from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected {expected}, got {_kind(value)}")
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected {expected}, got {value!r}")
    return value


def _to_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        parts: Iterable[str] = value.splitlines() if "\n" in value else value.split(",")
        return [p.strip() for p in parts if p.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list, got {_kind(value)}")
    for item in value:
        if not isinstance(item, (str, int, float, bool)):
            raise ValueError(f"list items must be strings, numbers or booleans, got {_kind(item)}")
    return list(value)


def _check_text(spec: FieldSpec, value: str, *, limit: int | None = None) -> None:
    """Refuse text that is too long, or holds NUL characters or lone surrogates.

    NUL and lone surrogates cannot be stored by PostgreSQL (nor encoded as UTF-8), so they are
    refused here, with a message, rather than by the database with an error page.
    """
    limit = limit if limit is not None else spec.length_limit
    if limit is not None and len(value) > limit:
        raise ValueError(f"must have at most {limit:,} characters (got {len(value):,})")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain lone surrogate characters") from None


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_bounds(spec: FieldSpec, measure: float, unit: str | None) -> None:
    if unit:
        if spec.min is not None and measure < spec.min:
            raise ValueError(f"must have at least {spec.min:g} {unit} (got {measure:g})")
        if spec.max is not None and measure > spec.max:
            raise ValueError(f"must have at most {spec.max:g} {unit} (got {measure:g})")
        return
    if spec.min is not None and measure < spec.min:
        raise ValueError(f"must be at least {spec.min:g} (got {measure:g})")
    if spec.max is not None and measure > spec.max:
        raise ValueError(f"must be at most {spec.max:g} (got {measure:g})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _article(ftype: str) -> str:
    return "an integer" if ftype == "integer" else "a number"


def _kind(value: Any) -> str:
    return type(value).__name__
