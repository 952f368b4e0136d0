"""Organizations: which plugins are active for which organization, with which settings.

A site names its tenant model (``COURSE_PLUGINS["ORGANIZATION_MODEL"]``). Each
``OrganizationPlugin`` row changes one plugin for one organization: ``enabled`` ``True`` opts the
organization in (also when the site has not activated the plugin), ``False`` opts it out, ``None``
follows the site; ``settings`` override the site's key by key.

Every process keeps the rows in memory as one immutable :class:`OrgState` (rebuilt by
:func:`load` when the runtime follows the database, i.e. when the cross-process stamp changed), and
answers :func:`scope_for` from it: the ``core.scope.Scope`` of an organization, made once per
organization and cached. Organizations without rows share the site's exclusions and cost one
cached ``Scope``; dispatch asks no query.

A plugin some organization opted into runs in every process (it is loaded like a site-wide one);
the site-wide scope (``core.scope.set_site_excluded``) and the scope of every other organization
exclude it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.utils.module_loading import import_string

from course_plugins.conf import plugin_settings
from course_plugins.core import scope as scope_mod
from course_plugins.core.scope import Scope, intern
from course_plugins.exceptions import PluginNotFound
from course_plugins.models import OrganizationPlugin, Plugin

__all__ = [
    "OrgState",
    "OrganizationNotFound",
    "administered",
    "can_manage",
    "get_organization",
    "load",
    "org_key",
    "org_of",
    "organization_model",
    "scope_for",
    "state",
    "use",
]

logger = logging.getLogger("course_plugins.organizations")


class OrganizationNotFound(LookupError):
    """No organization with that primary key (or the site has no ``ORGANIZATION_MODEL``)."""

    def __init__(self, pk: Any, message: str = "") -> None:
        super().__init__(message or f"no organization {pk!r}")
        self.pk = pk


def org_key(pk: Any) -> str:
    """The text form of an organization's primary key, as stored in the rows; returns it."""
    return str(pk)


def organization_model() -> type[models.Model] | None:
    """The ``ORGANIZATION_MODEL`` class, or ``None`` when the site has none."""
    label = plugin_settings.ORGANIZATION_MODEL
    return apps.get_model(label) if label else None


def get_organization(pk: Any) -> models.Model:
    """The organization with primary key ``pk``; raises :class:`OrganizationNotFound`."""
    model = organization_model()
    if model is None:
        raise OrganizationNotFound(pk, "COURSE_PLUGINS['ORGANIZATION_MODEL'] is not set")
    try:
        return model._default_manager.get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError):
        raise OrganizationNotFound(pk) from None
    except Exception as exc:  # e.g. a malformed UUID
        if exc.__class__.__name__ == "ValidationError":
            raise OrganizationNotFound(pk) from None
        raise


# --- the in-memory state ---------------------------------------------------------------------


@dataclass
class OrgState:
    """What every process knows about organizations, built from the rows by :func:`load`.

    ``site_active``: plugins enabled site-wide; ``org_only``: plugins not enabled site-wide but
    opted into by some organization (loaded everywhere, excluded site-wide); ``rows``: per
    organization key, plugin name -> ``(enabled, settings)``. ``scopes`` caches one ``Scope``
    per organization met.
    """

    site_active: frozenset[str] = frozenset()
    org_only: frozenset[str] = frozenset()
    rows: dict[str, dict[str, tuple[bool | None, dict[str, Any]]]] = field(default_factory=dict)
    scopes: dict[Any, Scope] = field(default_factory=dict)
    opted_in: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.opted_in = frozenset(
            name for row in self.rows.values() for name, (on, _) in row.items() if on is True
        )

    def build(self, org: Any) -> Scope:
        """The scope of organization ``org`` (not cached here); returns it."""
        mine = self.rows.get(org_key(org))
        if not mine:
            return Scope(org, intern(self.org_only))
        opted_in = {name for name, (on, _) in mine.items() if on is True}
        opted_out = {name for name, (on, _) in mine.items() if on is False}
        settings = {name: values for name, (_, values) in mine.items() if values}
        return Scope.of(org, (self.org_only - opted_in) | opted_out, settings)

    def active_for(self, name: str, org: Any) -> bool:
        """Whether plugin ``name`` is active for organization ``org`` (``None``: site-wide)."""
        if org is None:
            return name in self.site_active
        on = self.rows.get(org_key(org), {}).get(name, (None, {}))[0]
        return name in self.site_active if on is None else on

    def where(self, name: str) -> str:
        """Where plugin ``name`` runs, in words, when organizations change it ('' otherwise):
        ``"only in 2 organizations"``, ``"site-wide, off in 1 organization"``."""
        choices = list(self.organizations_of(name).values())
        on, off = choices.count(True), choices.count(False)
        if name in self.site_active:
            return f"site-wide, off in {_count(off)}" if off else ""
        return f"only in {_count(on)}" if on else ""

    def organizations_of(self, name: str) -> dict[str, bool | None]:
        """Organization key -> its own choice for plugin ``name`` (only organizations with one)."""
        return {
            org: row[name][0]
            for org, row in self.rows.items()
            if name in row and row[name][0] is not None
        }


_state = OrgState()
_scopes: dict[Any, Scope] = _state.scopes  # the current state's scopes (read on every call)
_lock = threading.Lock()


def state() -> OrgState:
    """This process's current :class:`OrgState`."""
    return _state


def scope_for(org: Any) -> Scope | None:
    """The scope of work about organization ``org`` (a primary key); ``None`` for no organization.

    Answers from memory: the first call per organization builds its ``Scope``, later ones return
    the same object.
    """
    # Keyed by the value as given (an int from an instance, a str from a URL): no conversion on
    # the hot path; both forms share the rows. One dict lookup when the scope is known.
    scope = _scopes.get(org)
    if scope is None and org is not None:
        st = _state
        scope = st.scopes[org] = st.build(org)
    return scope


def load(site_rows: Iterable[Any] | None = None) -> OrgState:
    """Read the organization rows (one query) and make them this process's state; returns it.

    ``site_rows`` are the ``Plugin`` rows the caller already read (else they are read too). Also
    tells the engine which plugins to exclude from work with no organization.
    """
    global _state
    if site_rows is None:
        site_rows = Plugin.objects.only("name", "enabled", "status", "missing")
    site_active = frozenset(r.name for r in site_rows if _wanted(r))
    rows: dict[str, dict[str, tuple[bool | None, dict[str, Any]]]] = {}
    opted_in: set[str] = set()
    for org, name, enabled, values in OrganizationPlugin.objects.values_list(
        "organization", "plugin__name", "enabled", "settings"
    ):
        rows.setdefault(org, {})[name] = (enabled, dict(values or {}))
        if enabled:
            opted_in.add(name)
    return use(OrgState(frozenset(site_active), intern(opted_in - site_active), rows))


def use(new: OrgState) -> OrgState:
    """Make ``new`` this process's state (what :func:`load` does with the rows); returns it.

    For benchmarks and tests that build a state without a database.
    """
    global _state, _scopes
    with _lock:
        _state, _scopes = new, new.scopes
        scope_mod.set_site_excluded(new.org_only)
    return new


def reset() -> None:
    """Forget the state (tests, a new database): every organization follows the site."""
    global _state, _scopes
    with _lock:
        _state = OrgState()
        _scopes = _state.scopes
        scope_mod.set_site_excluded(())


def _wanted(row: Any) -> bool:
    return bool(row.enabled) and row.status != "faulted" and not row.missing


def wanted_by_organizations(name: str) -> bool:
    """Whether some organization opted into plugin ``name`` (so it must run in this process)."""
    return name in _state.opted_in


def _count(n: int) -> str:
    return f"{n} organization" if n == 1 else f"{n} organizations"


# --- from an instance to its organization ----------------------------------------------------


def org_of(instance: models.Model, path: tuple[str, ...]) -> Any:
    """The organization primary key of ``instance`` along the field ``path``, or ``None``.

    The last step reads the foreign key's id (no query); earlier steps follow the relations (a
    query only when the related object is not cached yet).
    """
    obj: Any = instance
    for part in path[:-1]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    last = path[-1]
    key = (type(obj), last)
    attname = _attnames.get(key, _UNKNOWN)
    if attname is _UNKNOWN:
        attname = _attnames[key] = _fk_attname(type(obj), last)
    if attname is not None:
        return getattr(obj, attname)
    value = getattr(obj, last, None)
    return getattr(value, "pk", value)


_UNKNOWN: Any = object()
_attnames: dict[tuple[type, str], str | None] = {}


def _fk_attname(model: Any, name: str) -> str | None:
    # The column holding the foreign key's id (``organization_id``), read without a query.
    try:
        field = model._meta.get_field(name)
    except Exception:
        return None
    return field.attname if getattr(field, "many_to_one", False) else None


# --- who manages which organization ----------------------------------------------------------

PERMISSION = "course_plugins.manage_organization_plugins"
SITE_PERMISSIONS = ("course_plugins.activate_plugin", "course_plugins.change_plugin_settings")


def is_site_operator(user: Any) -> bool:
    """Whether ``user`` manages plugins of every organization (superuser or site permissions)."""
    return bool(user and user.is_active and (user.is_superuser or user.has_perms(SITE_PERMISSIONS)))


def administered(user: Any) -> set[str] | None:
    """Organization keys whose plugins ``user`` manages; ``None`` means all of them.

    Site operators manage all; a user with ``course_plugins.manage_organization_plugins``
    manages those ``COURSE_PLUGINS["ORGANIZATION_ADMINS"]`` gives them; anyone else none.
    """
    if is_site_operator(user):
        return None
    if not (user and user.is_active and user.has_perm(PERMISSION)):
        return set()
    how = plugin_settings.ORGANIZATION_ADMINS
    if not how:
        return set()
    if callable(how) or "." in str(how):
        fn = how if callable(how) else import_string(str(how))
        return {org_key(pk) for pk in fn(user) or ()}
    model = organization_model()
    if model is None:
        return set()
    pks = model._default_manager.filter(**{str(how): user}).values_list("pk", flat=True)
    return {org_key(pk) for pk in pks}


def can_manage(user: Any, org: Any) -> bool:
    """Whether ``user`` may activate and configure plugins of organization ``org``."""
    mine = administered(user)
    return mine is None or org_key(org) in mine


# --- the operations --------------------------------------------------------------------------


def _plugin_row(name: str) -> Any:
    row = Plugin.objects.filter(name=str(name).partition("@")[0]).first()
    if row is None:
        raise PluginNotFound(name, f"no plugin named {name!r}")
    return row


def settings_of(org: Any, name: str) -> dict[str, Any]:
    """The organization's own settings of plugin ``name`` (only what it overrides)."""
    row = OrganizationPlugin.objects.filter(organization=org_key(org), plugin__name=name).first()
    return dict(row.settings) if row is not None else {}


def set_enabled(org: Any, name: str, enabled: bool | None) -> Any:
    """Store organization ``org``'s choice for plugin ``name`` and bump the stamp.

    Returns the ``OrganizationPlugin`` row. Raises ``PluginNotFound`` /
    :class:`OrganizationNotFound`. The caller (the runtime) makes this process follow.
    """
    get_organization(org)
    plugin = _plugin_row(name)
    with transaction.atomic():
        row, _ = OrganizationPlugin.objects.select_for_update().get_or_create(
            organization=org_key(org), plugin=plugin
        )
        row.enabled = enabled
        row.save(update_fields=["enabled", "updated_at"])
    return row


def store_settings(org: Any, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge already validated ``values`` (``None`` removes a key) into the organization's own
    settings of plugin ``name``; returns them."""
    plugin = _plugin_row(name)
    with transaction.atomic():
        row, _ = OrganizationPlugin.objects.select_for_update().get_or_create(
            organization=org_key(org), plugin=plugin
        )
        merged = dict(row.settings or {})
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        row.settings = merged
        row.save(update_fields=["settings", "updated_at"])
    return merged
