"""``plugin.yaml``: read it safely, validate every field, and return a ``PluginManifest``.

Fields: ``name`` (lowercase slug), ``version`` (semantic version), ``description``,
``author``, ``hooks`` (hook names, standard or the plugin's own), ``events`` (event patterns:
dot-separated segments, ``*`` = one segment, ``**`` = any number), ``settings_schema`` (see
``core.settings_schema``), and optionally ``requires`` (other plugins with version specifiers, as
a mapping ``{name: ">=1.0"}`` or a list ``["name>=1.0", ...]``), ``platform`` (a specifier
course_plugins' version must satisfy), ``permissions`` (Platform API parts, from
``core.standard.PERMISSIONS``), ``timeout_seconds`` (lowers ``HOOK_TIMEOUT`` for this plugin),
``fail_closed`` (``true``: an error or overrun of any of its hook functions refuses the change
where the hook can refuse one, ``before-*`` hooks; ``false``: such a failure is skipped, the change
goes through; absent: the hook's own default, closed for ``before-*`` hooks), ``license`` and
``homepage`` (free text).

Unknown top-level keys are an error naming the key (a typo such as ``permision`` would otherwise
silently grant nothing); keys starting with ``x-`` are free for tools and are kept in ``extra``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from course_plugins.core.settings_schema import FieldSpec, parse_schema
from course_plugins.core.standard import PERMISSION_NAMES
from course_plugins.exceptions import PluginManifestError

MANIFEST_FILENAME = "plugin.yaml"
MAX_MANIFEST_BYTES = 64 * 1024

# libyaml's C loader when PyYAML was built with it (about 10x faster; the same safe subset of
# YAML as ``yaml.safe_load``), else the pure-Python one.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
# Semantic versioning 2.0.0 (MAJOR.MINOR.PATCH[-pre][+build]); packaging must also parse it so
# that ``requires`` specifiers can compare it.
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
HOOK_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_.:][a-z0-9]+)*$")
EVENT_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_REQUIREMENT_RE = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*(.*?)\s*$")

KNOWN_KEYS: tuple[str, ...] = (
    "name",
    "version",
    "description",
    "author",
    "hooks",
    "events",
    "settings_schema",
    "requires",
    "platform",
    "permissions",
    "timeout_seconds",
    "fail_closed",
    "license",
    "homepage",
)


@dataclass(frozen=True)
class PluginManifest:
    """A validated ``plugin.yaml``. ``path`` is the file; ``folder`` the plugin's directory."""

    path: Path
    name: str
    version: str
    description: str = ""
    author: str = ""
    hooks: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    settings_schema: dict[str, FieldSpec] = field(default_factory=dict)
    requires: dict[str, SpecifierSet] = field(default_factory=dict)
    platform: SpecifierSet | None = None
    permissions: frozenset[str] = frozenset()
    timeout_seconds: float | None = None
    fail_closed: bool | None = None
    license: str = ""
    homepage: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    def covers_event(self, pattern: str) -> bool:
        """True when every event ``pattern`` can match is matched by one of ``events``."""
        return any(pattern_covers(granted, pattern) for granted in self.events)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (stored on the ``Plugin`` row, shown by the admin and REST API)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "author": self.author,
            "hooks": list(self.hooks),
            "events": list(self.events),
            "settings_schema": {k: s.to_dict() for k, s in self.settings_schema.items()},
            "requires": {k: str(v) for k, v in self.requires.items()},
            "platform": str(self.platform) if self.platform is not None else None,
            "permissions": sorted(self.permissions),
            "timeout_seconds": self.timeout_seconds,
            "fail_closed": self.fail_closed,
            "license": self.license,
            "homepage": self.homepage,
            **self.extra,
        }


def manifest_path(folder_or_file: str | Path) -> Path:
    """Return the ``plugin.yaml`` path for a plugin folder (or the file itself)."""
    path = Path(folder_or_file)
    return path if path.name == MANIFEST_FILENAME else path / MANIFEST_FILENAME


def load_manifest(folder_or_file: str | Path) -> PluginManifest:
    """Read and validate the ``plugin.yaml`` of a plugin folder.

    Returns the ``PluginManifest``. Raises ``PluginManifestError`` naming the file and field.
    """
    path = manifest_path(folder_or_file)
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise PluginManifestError(
                str(path),
                None,
                f"is {size} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes",
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PluginManifestError(
            str(path), None, "not found: a plugin folder needs a plugin.yaml"
        ) from None
    except UnicodeDecodeError:
        raise PluginManifestError(str(path), None, "is not UTF-8 text") from None
    except OSError as exc:
        raise PluginManifestError(
            str(path), None, f"cannot be read: {exc.strerror or exc}"
        ) from None
    return parse_manifest(text, path)


def parse_manifest(text: str, path: str | Path = MANIFEST_FILENAME) -> PluginManifest:
    """Parse manifest ``text`` (YAML, safe loader only) and validate it.

    Returns the ``PluginManifest``. Raises ``PluginManifestError``.
    """
    path = Path(path)
    if len(text.encode("utf-8")) > MAX_MANIFEST_BYTES:
        raise PluginManifestError(
            str(path), None, f"a manifest may be at most {MAX_MANIFEST_BYTES} bytes"
        )
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PluginManifestError(str(path), None, f"is not valid YAML{where}: {problem}") from None
    return validate_manifest(data, path)


def validate_manifest(data: Any, path: str | Path = MANIFEST_FILENAME) -> PluginManifest:
    """Validate parsed manifest data. Returns ``PluginManifest``.

    Raises ``PluginManifestError`` for every bad field at once (``errors`` lists them, each
    naming the file and the field), so that one run shows everything there is to fix.
    """
    path = Path(path)
    if not isinstance(data, Mapping):
        raise PluginManifestError(
            str(path), None, f"must be a YAML mapping of fields, got {_kind(data)}"
        )
    problems: list[PluginManifestError] = []

    def checked(parse: Any, *args: Any, default: Any = None) -> Any:
        """``parse(*args)``, or ``default`` with its problems noted."""
        try:
            return parse(*args)
        except PluginManifestError as exc:
            problems.extend(exc.errors)
            return default

    extra = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("x-")}
    for key in data:
        if key not in KNOWN_KEYS and key not in extra:
            problems.append(
                PluginManifestError(
                    str(path),
                    str(key),
                    f"unknown field; known fields are {', '.join(KNOWN_KEYS)} "
                    "(prefix your own keys with 'x-')",
                )
            )
    name = checked(_name, data, path)

    def error(fieldname: str, message: str) -> PluginManifestError:
        return PluginManifestError(str(path), fieldname, message, plugin=name)

    version = checked(_version, data.get("version"), error)
    text_fields = {
        key: checked(_text, data.get(key), key, error, default="")
        for key in ("description", "author", "license", "homepage")
    }
    hooks = checked(_names_list, data.get("hooks"), "hooks", error, _check_hook_name, default=())
    events = checked(
        _names_list, data.get("events"), "events", error, _check_event_pattern, default=()
    )
    schema = checked(
        lambda raw: parse_schema(raw, path=str(path)), data.get("settings_schema"), default={}
    )
    requires = checked(_requires, data.get("requires"), name, error, default={})
    platform = checked(_platform, data.get("platform"), error)
    permissions = checked(_permissions, data.get("permissions"), error, default=frozenset())
    timeout_seconds = checked(_timeout, data.get("timeout_seconds"), error)
    fail_closed = checked(_fail_closed, data.get("fail_closed"), error)
    if problems:
        raise PluginManifestError.every(problems, plugin=name)
    return PluginManifest(
        path=path,
        name=name,
        version=version,
        hooks=hooks,
        events=events,
        settings_schema=schema,
        requires=requires,
        platform=platform,
        permissions=permissions,
        timeout_seconds=timeout_seconds,
        fail_closed=fail_closed,
        extra=extra,
        **text_fields,
    )


def _text(value: Any, key: str, error: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise error(key, f"must be a string, got {_kind(value)}")
    return value.strip()


def _fail_closed(value: Any, error: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise error(
        "fail_closed",
        f"must be true (a failing hook function refuses the change) or false (it is skipped), "
        f"got {value!r}",
    )


def _name(data: Mapping[str, Any], path: Path) -> str:
    name = data.get("name")
    if name is None:
        raise PluginManifestError(
            str(path), "name", "is required (a lowercase slug such as my-plugin)"
        )
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 100:
        raise PluginManifestError(
            str(path),
            "name",
            f"got {name!r}; expected a lowercase slug of at most 100 characters: letters, digits "
            "and single '-' or '_' between them, starting with a letter (e.g. my-plugin)",
        )
    return name


def _version(value: Any, error: Any) -> str:
    if value is None:
        raise error("version", "is required (a semantic version such as 1.0.0)")
    if not isinstance(value, str):
        # YAML reads `version: 1.0` as the float 1.0.
        raise error("version", f'got {value!r}; write a semantic version as a string, e.g. "1.0.0"')
    if not SEMVER_RE.fullmatch(value):
        raise error(
            "version",
            f"{value!r} is not a semantic version; expected MAJOR.MINOR.PATCH such as 1.0.0 "
            "(pre-releases like 1.0.0-rc.1 are fine)",
        )
    try:
        Version(value)
    except InvalidVersion:
        raise error(
            "version",
            f"{value!r}: the pre-release part must be one of a/alpha, b/beta, rc, dev, post "
            "with a number (e.g. 1.0.0-rc.1) so that requirements can compare it",
        ) from None
    return value


def _names_list(value: Any, fieldname: str, error: Any, check: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise error(fieldname, f"must be a list, got {_kind(value)}")
    seen: list[str] = []
    problems: list[PluginManifestError] = []
    for index, item in enumerate(value):
        where = f"{fieldname}[{index}]"
        if not isinstance(item, str):
            problems.append(error(where, f"must be a string, got {_kind(item)}"))
        elif problem := check(item):
            problems.append(error(where, problem))
        elif item in seen:
            problems.append(error(where, f"{item!r} is listed twice"))
        else:
            seen.append(item)
    if problems:
        raise PluginManifestError.every(problems)
    return tuple(seen)


def _check_hook_name(name: str) -> str | None:
    if HOOK_NAME_RE.fullmatch(name) and len(name) <= 100:
        return None
    return (
        f"{name!r} is not a valid hook name: lowercase letters and digits separated by single "
        "'-', '_', '.' or ':' (e.g. before-course-save or my-plugin:ready)"
    )


def _check_event_pattern(pattern: str) -> str | None:
    problem = event_pattern_problem(pattern)
    return f"{pattern!r} is not a valid event pattern: {problem}" if problem else None


def event_pattern_problem(pattern: str) -> str | None:
    """Return why ``pattern`` is not a valid event pattern, or ``None`` when it is valid."""
    if not pattern or len(pattern) > 200:
        return "must be 1 to 200 characters"
    for segment in pattern.split("."):
        if segment in ("*", "**"):
            continue
        if not segment:
            return "has an empty segment (two dots in a row, or a leading/trailing dot)"
        if not EVENT_SEGMENT_RE.fullmatch(segment):
            return (
                f"segment {segment!r} may only use letters, digits, '-' and '_', "
                "or be exactly * (one segment) or ** (any number of segments)"
            )
    return None


def event_name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid (concrete) event name, or ``None``."""
    problem = event_pattern_problem(name)
    if problem is None and any(s in ("*", "**") for s in name.split(".")):
        return "an event name cannot contain wildcards"
    return problem


def _requires(value: Any, own_name: str | None, error: Any) -> dict[str, SpecifierSet]:
    if value is None:
        return {}
    problems: list[PluginManifestError] = []
    items: list[tuple[str, Any, str]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v, f"requires.{k}") for k, v in value.items()]
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            where = f"requires[{index}]"
            match = _REQUIREMENT_RE.fullmatch(entry) if isinstance(entry, str) else None
            if match is None:
                problems.append(error(
                    where, f"got {entry!r}; expected 'plugin-name' or 'plugin-name>=1.0,<2'"
                ))
            else:
                items.append((match.group(1), match.group(2), where))
    else:
        raise error(
            "requires", f"must be a mapping {{name: specifier}} or a list, got {_kind(value)}"
        )
    out: dict[str, SpecifierSet] = {}
    for req_name, spec, where in items:
        if not NAME_RE.fullmatch(req_name):
            problems.append(error(where, f"{req_name!r} is not a plugin name (a lowercase slug)"))
        elif req_name == own_name:
            problems.append(error(where, "a plugin cannot require itself"))
        elif req_name in out:
            problems.append(error(where, f"{req_name!r} is required twice"))
        else:
            try:
                out[req_name] = _specifier(spec, where, error)
            except PluginManifestError as exc:
                problems.append(exc)
    if problems:
        raise PluginManifestError.every(problems)
    return out


def _platform(value: Any, error: Any) -> SpecifierSet | None:
    if value is None:
        return None
    return _specifier(value, "platform", error)


def _specifier(value: Any, where: str, error: Any) -> SpecifierSet:
    if value is None or value == "" or value == "*":
        return SpecifierSet("")
    if not isinstance(value, str):
        raise error(where, f'got {value!r}; write a version specifier as a string, e.g. ">=1.0,<2"')
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        raise error(
            where,
            f"{value!r} is not a version specifier; expected e.g. '>=1.0', '>=1.2,<2' or '~=1.4'",
        ) from None


def _permissions(value: Any, error: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise error("permissions", f"must be a list, got {_kind(value)}")
    problems = [
        error(
            f"permissions[{index}]",
            f"unknown permission {item!r}; choose from: {', '.join(sorted(PERMISSION_NAMES))}",
        )
        for index, item in enumerate(value)
        if not isinstance(item, str) or item not in PERMISSION_NAMES
    ]
    if problems:
        raise PluginManifestError.every(problems)
    return frozenset(value)


def _timeout(value: Any, error: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error("timeout_seconds", f"must be a number of seconds, got {value!r}")
    if value <= 0:
        raise error("timeout_seconds", "must be greater than 0 (it can only lower HOOK_TIMEOUT)")
    return float(value)


def pattern_covers(granted: str, requested: str) -> bool:
    """True when every event name ``requested`` matches is also matched by ``granted``.

    Both are event patterns (``*`` = exactly one segment, ``**`` = any number, zero included), so
    ``course.*`` covers ``course.created`` and ``course.*``, not ``course.**`` nor ``*.created``.
    """
    return _covers(tuple(granted.split(".")), tuple(requested.split(".")))


@cache
def _covers(granted: tuple[str, ...], requested: tuple[str, ...]) -> bool:
    # Language inclusion of two segment globs: walk both patterns' automata side by side over
    # every literal they mention plus one segment neither mentions, looking for a name that
    # ``requested`` accepts and ``granted`` does not.
    other = object()
    alphabet: list[object] = [t for t in {*granted, *requested} if t not in ("*", "**")]
    alphabet.append(other)
    start = (_closure(requested, {0}), _closure(granted, {0}))
    seen = {start}
    todo = [start]
    while todo:
        req, gra = todo.pop()
        if len(requested) in req and len(granted) not in gra:
            return False
        for segment in alphabet:
            pair = (_step(requested, req, segment), _step(granted, gra, segment))
            if pair[0] and pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return True


def _closure(tokens: tuple[str, ...], states: set[int]) -> frozenset[int]:
    """States reachable without consuming a segment (``**`` may match none)."""
    out = set(states)
    for state in sorted(states):
        while state < len(tokens) and tokens[state] == "**":
            state += 1
            out.add(state)
    return frozenset(out)


def _step(tokens: tuple[str, ...], states: frozenset[int], segment: object) -> frozenset[int]:
    """States after consuming one ``segment``."""
    nxt: set[int] = set()
    for state in states:
        if state == len(tokens):
            continue
        token = tokens[state]
        if token == "**":
            nxt.add(state)
        elif token == "*" or token == segment:
            nxt.add(state + 1)
    return _closure(tokens, nxt)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
