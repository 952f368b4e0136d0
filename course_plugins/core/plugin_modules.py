"""Import a plugin's code through the sandbox's plugin policy, under a unique module name.

Every ``.py`` file a plugin loads (its ``__init__.py`` and each submodule it imports) is read from
the plugin folder, checked with ``check_source(..., mode="plugin")`` and executed with restricted
builtins (``plugin_builtins``) whose ``__import__`` is the policy's ``make_plugin_import``: the
plugin may import its own submodules (relative imports, resolved here) and read-only facades of
the ``PLUGIN_IMPORT_ALLOWLIST`` modules, nothing else.

Module names are ``course_plugins.loaded.<name>_<token>``, new on every load, so a reload runs the
code from disk again into new module objects while objects of the previous load stay intact.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from course_plugins.core.plugin_advice import MODULE as ADVICE_MODULE
from course_plugins.core.plugin_advice import plugin_advice_module
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.core.sandbox.policy import check_source, make_plugin_import, plugin_builtins

LOADED_PACKAGE = "course_plugins.loaded"
MAX_SOURCE_BYTES = 1024 * 1024
_counter = itertools.count(1)


def unique_module_name(plugin_name: str) -> str:
    """Return a fresh module name for a plugin's package (``course_plugins.loaded.x_3``)."""
    slug = re.sub(r"\W", "_", plugin_name)
    return f"{LOADED_PACKAGE}.{slug}_{next(_counter)}"


def _ensure_parent() -> None:
    if LOADED_PACKAGE not in sys.modules:
        parent = types.ModuleType(LOADED_PACKAGE, "Plugin packages loaded by the PluginLoader.")
        parent.__path__ = []  # a package with no files: its children exist only in sys.modules
        sys.modules[LOADED_PACKAGE] = parent


class PluginImporter:
    """Loads one plugin's package and submodules; ``unload()`` forgets them all.

    Raises from ``load()``: ``SecurityViolation`` (policy refused a file; carries filename and
    line), ``ImportError`` (a missing submodule), or whatever the plugin's module code raised.
    """

    def __init__(
        self, plugin_id: str, folder: Path, root: str, sources: Mapping[str, bytes] | None = None
    ) -> None:
        self.plugin_id = plugin_id
        # ``sources`` (relative POSIX path -> file content) replaces the folder on disk: an
        # isolated plugin's worker cannot open files, so the host sends it the plugin's code.
        self.sources = sources
        self.folder = Path(folder) if sources is not None else Path(folder).resolve()
        self.root = root
        self.files: list[str] = []
        # Its own ``course_plugins.core.advice``; ``bind_advice(api)`` when the plugin activates.
        self.advice_module, self.bind_advice = plugin_advice_module(plugin_id)

    def load(self) -> types.ModuleType:
        """Execute the plugin's ``__init__.py`` and return the package module."""
        _ensure_parent()
        return self._load("")

    def unload(self) -> None:
        """Remove every module of this load from ``sys.modules``."""
        prefix = self.root + "."
        for name in [n for n in sys.modules if n == self.root or n.startswith(prefix)]:
            sys.modules.pop(name, None)

    def local_import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        """Resolve a relative import of plugin code (``from . import x``, ``from .a import b``).

        Absolute imports never get here: the policy's ``make_plugin_import`` answers those with
        read-only facades of allow-listed modules.
        """
        package = (globals or {}).get("__package__") or ""
        try:
            absolute = importlib.util.resolve_name("." * level + name, package)
        except (ImportError, ValueError) as exc:
            raise ImportError(f"{self.plugin_id}: {exc}") from None
        if absolute != self.root and not absolute.startswith(self.root + "."):
            raise SecurityViolation(
                f"relative import {'.' * level}{name} leaves the plugin's package",
                filename=(globals or {}).get("__file__"),
                plugin=self.plugin_id,
            )
        return self._import_own(absolute, tuple(fromlist or ()))

    def _import_own(self, absolute: str, fromlist: tuple[str, ...]) -> types.ModuleType:
        relative = absolute[len(self.root) + 1 :] if absolute != self.root else ""
        module = self._load(relative)
        for item in fromlist:
            if item != "*" and not hasattr(module, item) and hasattr(module, "__path__"):
                sub = f"{relative}.{item}" if relative else item
                if self._source_of(sub) is not None:
                    self._load(sub)
        return module

    def _source_of(self, relative: str) -> tuple[Path, bool] | None:
        base = self.folder.joinpath(*relative.split(".")) if relative else self.folder
        for path, is_package in ((base / "__init__.py", True), (base.with_suffix(".py"), False)):
            if relative == "" and not is_package:
                continue
            if self.sources is not None:
                if path.relative_to(self.folder).as_posix() in self.sources:
                    return path, is_package
                continue
            if path.is_file():
                # A symlink must not smuggle in code from outside the plugin folder. The folder
                # itself is resolved already: only the parts below it can be links.
                below = path.relative_to(self.folder).parts
                links = any(
                    self.folder.joinpath(*below[: i + 1]).is_symlink() for i in range(len(below))
                )
                resolved = path.resolve() if links else path
                if not resolved.is_relative_to(self.folder):
                    raise ImportError(f"{self.plugin_id}: {path} points outside the plugin folder")
                return resolved, is_package
        return None

    def _load(self, relative: str) -> types.ModuleType:
        fullname = f"{self.root}.{relative}" if relative else self.root
        existing = sys.modules.get(fullname)
        if existing is not None:
            return existing
        parent = None
        if relative:
            parent = self._load(relative.rpartition(".")[0])
            existing = sys.modules.get(fullname)  # the parent's code may have imported it
            if existing is not None:
                return existing
        found = self._source_of(relative)
        if found is None:
            raise ModuleNotFoundError(
                f"plugin {self.plugin_id} has no module {relative or '__init__'!r} "
                f"(looked in {self.folder})",
                name=fullname,
            )
        path, is_package = found
        module = self._execute(fullname, path, is_package)
        if parent is not None:
            setattr(parent, relative.rpartition(".")[2], module)
        return module

    def _execute(self, fullname: str, path: Path, is_package: bool) -> types.ModuleType:
        if self.sources is not None:
            raw = self.sources[path.relative_to(self.folder).as_posix()]
        else:
            raw = path.read_bytes()
        if len(raw) > MAX_SOURCE_BYTES:
            raise ImportError(f"{path}: larger than {MAX_SOURCE_BYTES} bytes")
        source = raw.decode("utf-8")
        tree = check_source(source, str(path), mode="plugin")
        code = compile(tree, str(path), "exec")
        module = types.ModuleType(fullname)
        module.__file__ = str(path)
        module.__package__ = fullname if is_package else fullname.rpartition(".")[0]
        module.__spec__ = importlib.machinery.ModuleSpec(
            fullname, None, origin=str(path), is_package=is_package
        )
        if is_package:
            module.__path__ = [str(path.parent)]
        hook = make_plugin_import(
            self.local_import, plugin=self.plugin_id,
            platform={ADVICE_MODULE: self.advice_module},
        )
        module.__dict__["__builtins__"] = plugin_builtins(hook, plugin=self.plugin_id)
        self.files.append(str(path))
        sys.modules[fullname] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        return module


MAX_PLUGIN_BYTES = 8 * 1024 * 1024


def read_sources(folder: Path) -> dict[str, bytes]:
    """Return every ``.py`` file of the plugin folder as ``{relative posix path: content}``.

    What an isolated plugin's worker imports from (it cannot open files). ``tests`` folders,
    hidden folders and ``__pycache__`` are left out. Symbolic links are followed as the importer
    follows them, and a ``.py`` file found through one that leads outside the folder is an
    ``ImportError``, as is a plugin over ``MAX_PLUGIN_BYTES`` of code.
    """
    root = Path(folder).resolve()
    sources: dict[str, bytes] = {}
    total = 0
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath)
        real = os.path.realpath(base)
        if real in seen:  # a link back to a folder already read
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "tests")
        )
        for name in sorted(n for n in filenames if n.endswith(".py")):
            path = base / name
            if not path.resolve().is_relative_to(root):
                raise ImportError(f"{path} points outside the plugin folder")
            data = path.read_bytes()
            total += len(data)
            if total > MAX_PLUGIN_BYTES:
                raise ImportError(f"{root}: more than {MAX_PLUGIN_BYTES} bytes of Python code")
            sources[path.relative_to(root).as_posix()] = data
    return sources
