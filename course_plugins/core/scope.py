"""Scope: which organization the work in progress is about, and which plugins are not active there.

A site with organizations runs a hook, an event or a scheduled call *for* one organization: only
the plugins active for that organization take part. The site layer decides that (from the instance
a model hook is about, from the organization a background event carries) and enters a ``Scope``;
the engine (hooks, the event bus, advice) reads it and skips every registration whose owner is in
``scope.excluded``.

``current_scope`` is ``None`` outside any organization. Work with no organization still has a
scope when some plugins are active only in some organizations: ``effective()`` then answers with
the site-wide scope, which excludes those plugins. With no organizations configured both are
``None`` and the engine pays nothing.

Excluded sets are interned (``Scope.of`` returns the same ``frozenset`` object for equal sets), so
an engine cache keyed by ``scope.excluded`` hits on identity for the few distinct sets a site has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "Scope",
    "current_scope",
    "effective",
    "entered",
    "owner_name",
    "set_site_excluded",
    "site_scope",
]


_NO_SETTINGS: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Scope:
    """The organization ``org`` (its primary key; ``None`` site-wide), the plugin names not
    active there (``excluded``) and its settings overrides (``settings``: plugin name -> values
    that replace the site's, key by key)."""

    org: Any
    excluded: frozenset[str] = frozenset()
    settings: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: _NO_SETTINGS, compare=False, hash=False, repr=False
    )

    @classmethod
    def of(
        cls,
        org: Any,
        excluded: Iterable[str] = (),
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Scope:
        """A scope for ``org`` whose ``excluded`` set is interned; returns the new ``Scope``."""
        return cls(
            org, intern(excluded), MappingProxyType(dict(settings)) if settings else _NO_SETTINGS
        )

    def excludes(self, owner: str | None) -> bool:
        """Whether a registration owned by ``owner`` (``"name@version"``, ``None`` for platform
        code) is skipped in this scope; platform code never is."""
        return owner is not None and owner.partition("@")[0] in self.excluded


current_scope: ContextVar[Scope | None] = ContextVar("course_plugins_scope", default=None)

_interned: dict[frozenset[str], frozenset[str]] = {}
_EMPTY: frozenset[str] = frozenset()
_interned[_EMPTY] = _EMPTY
_site: Scope | None = None


def intern(names: Iterable[str]) -> frozenset[str]:
    """The one shared ``frozenset`` equal to ``names``; returns it."""
    key = frozenset(names)
    return _interned.setdefault(key, key)


def owner_name(owner: str) -> str:
    """The plugin name of a registration owner ``"name@version"``; returns it."""
    return owner.partition("@")[0]


def effective() -> Scope | None:
    """The scope the engine honours now: the entered one, else the site-wide one (``None`` when
    nothing is excluded site-wide); returns it."""
    scope = current_scope.get()
    return _site if scope is None else scope


def site_scope() -> Scope | None:
    """The site-wide scope (work with no organization), ``None`` when it excludes nothing."""
    return _site


def set_site_excluded(names: Iterable[str]) -> None:
    """Exclude ``names`` (plugins active only in some organizations) from work with no
    organization; an empty ``names`` restores the no-cost ``None``."""
    global _site
    excluded = intern(names)
    _site = Scope(None, excluded) if excluded else None


class entered:  # noqa: N801 - used as a function: ``with entered(scope):``
    """Run the ``with`` body in ``scope`` (``None``: site-wide); the previous scope comes back
    afterwards, also on error. ``__enter__`` returns ``scope``.

    A small class rather than a generator-based context manager: it is entered on every model
    hook run of a site with organizations, so it is kept to one ``set`` and one ``reset``.
    """

    __slots__ = ("_scope", "_token")

    def __init__(self, scope: Scope | None) -> None:
        self._scope = scope

    def __enter__(self) -> Scope | None:
        self._token = current_scope.set(self._scope)
        return self._scope

    def __exit__(self, *exc_info: object) -> None:
        current_scope.reset(self._token)
