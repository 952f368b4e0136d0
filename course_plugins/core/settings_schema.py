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
``choices``. ``min``/``max`` bound the value of ``integer``/``number``, the length of ``string``/
``text``/``secret`` and the number of items of ``list``.
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
)

# What a secret looks like when shown; posting it back unchanged keeps the stored secret.
SECRET_MASK = "********"

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

    @property
    def secret(self) -> bool:
        return self.type == "secret"

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
        return out


def parse_schema(
    raw: Any, *, path: str = "plugin.yaml", field_prefix: str = "settings_schema"
) -> dict[str, FieldSpec]:
    """Check a ``settings_schema`` declaration and return ``{name: FieldSpec}`` in declared order.

    Raises ``PluginManifestError(path, "settings_schema.<name>.<key>", ...)`` for the first problem.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PluginManifestError(
            path, field_prefix, f"must be a mapping of setting name -> field, got {_kind(raw)}"
        )
    specs: dict[str, FieldSpec] = {}
    for name, decl in raw.items():
        where = f"{field_prefix}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginManifestError(
                path, where, "setting names must be identifiers (letters, digits, underscores)"
            )
        specs[name] = _parse_field(name, decl, path, where)
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
    spec = FieldSpec(
        name=name,
        type=ftype,
        description=description,
        required=required,
        min=bounds["min"],
        max=bounds["max"],
        choices=choices,
    )
    if "default" in decl and decl["default"] is not None:
        try:
            default = _coerce(spec, decl["default"])
        except ValueError as exc:
            raise PluginManifestError(path, f"{where}.default", f"invalid default: {exc}") from None
        spec = FieldSpec(**{**spec.__dict__, "default": default, "has_default": True})
    return spec


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
) -> dict[str, Any]:
    """Validate and coerce ``data`` against ``schema``.

    Strings are coerced the way a form posts them (``"5"`` -> 5, ``"on"`` -> True, a list as one
    item per line or comma-separated). A secret posted back as ``SECRET_MASK`` keeps its value in
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
            errors[name] = "this setting is required"
    if errors:
        raise PluginSettingsError(plugin, errors)
    return out


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


def _coerce(spec: FieldSpec, value: Any) -> Any:
    """Return ``value`` as ``spec``'s type; raise ``ValueError`` saying what is expected."""
    ftype = spec.type
    if ftype in _LENGTH_TYPES:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)}")
        if ftype == "string" and ("\n" in value or "\r" in value):
            raise ValueError("must be a single line (use type text for several lines)")
        _check_bounds(spec, len(value), "characters")
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
        items = _to_list(value)
        _check_bounds(spec, len(items), "items")
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
