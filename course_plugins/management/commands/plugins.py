"""``manage.py plugins list|activate|deactivate|reload|uninstall|validate PATH|new NAME``.

``validate`` needs no database and exits with status 1 when it finds a problem, so CI can run it on
a plugin folder; ``new`` writes a plugin skeleton whose own test passes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template import Context, Engine

from course_plugins.conf import model_hook_entry, plugin_settings
from course_plugins.core.manifest import load_manifest
from course_plugins.core.sandbox import SandboxError, SecurityViolation
from course_plugins.core.sandbox.policy import check_source
from course_plugins.exceptions import CoursePluginsError, PluginManifestError
from course_plugins.models import Plugin, PluginMode, PluginStatus
from course_plugins.site import runtime, sandbox_layers
from course_plugins.site.follower import plugin_table_exists

PLUGIN_TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "course_plugins" / (
    "plugin_template"
)
"""The files ``plugins new`` renders (``*-tpl``), as ``startapp`` renders its app template."""
DONE = {"activate": "activated", "deactivate": "deactivated", "reload": "reloaded"}
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
# Plugin tests are run by pytest, never loaded into the site, so the code policy does not apply.
NOT_PLUGIN_CODE = {"tests", "__pycache__"}


def validate_plugin_folder(folder: Path) -> tuple[str | None, list[str]]:
    """Check a plugin folder's manifest and code the way the loader will.

    Returns ``(plugin id or None, problems)``; each problem is one readable line naming the file
    (and line or field). Never raises for a problem in the plugin.
    """
    problems: list[str] = []
    plugin_id = None
    if not folder.is_dir():
        return None, [f"{folder}: not a folder"]
    try:
        manifest = load_manifest(folder)
        plugin_id = manifest.id
    except PluginManifestError as exc:
        problems.extend(str(each) for each in exc.errors)  # every bad field, a line each
    if not (folder / "__init__.py").is_file():
        problems.append(
            f"{folder / '__init__.py'}: missing; it is the plugin's entry point "
            "(defines activate(api))"
        )
    for source_file in sorted(folder.rglob("*.py")):
        if NOT_PLUGIN_CODE & set(source_file.relative_to(folder).parts[:-1]):
            continue
        try:
            source = source_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{source_file}: cannot be read: {exc}")
            continue
        try:
            check_source(source, str(source_file), mode="plugin")
        except SecurityViolation as exc:
            problems.append(_violation_line(source_file, exc))
        except SyntaxError as exc:
            problems.append(f"{source_file}:{exc.lineno}: syntax error: {exc.msg}")
    return plugin_id, problems


def _violation_line(path: Path, exc: Any) -> str:
    lineno = getattr(exc, "lineno", None)
    reason = getattr(exc, "reason", None) or str(exc)
    return f"{path}:{lineno}: {reason}" if lineno else f"{path}: {reason}"


class Command(BaseCommand):
    help = "Manage course plugins: list, activate, deactivate, reload, validate, scaffold (new)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        sub.add_parser(
            "list", help="Discover plugin folders, then print every plugin and its state."
        )
        for verb, text in (
            ("activate", "Activate plugins (by name) and enable them in every process."),
            ("deactivate", "Deactivate plugins (by name) in every process."),
            ("reload", "Re-read plugins' code from disk, keeping settings and storage."),
        ):
            verb_parser = sub.add_parser(verb, help=text)
            verb_parser.add_argument("names", nargs="+", metavar="NAME")
            if verb == "activate":
                verb_parser.add_argument(
                    "--shadow",
                    action="store_true",
                    help="Shadow mode: its hook functions run on copies and what they would "
                    "change or refuse is only recorded; activate again without it to go live.",
                )
        sub.add_parser(
            "uninstall",
            help="Remove plugins for good: deactivate, call their uninstall(api), delete their "
            "schedules, storage, settings and row.",
        ).add_argument("names", nargs="+", metavar="NAME")
        validate = sub.add_parser(
            "validate",
            help="Check plugin folders' plugin.yaml and code policy (a folder, or a plugin's name "
            "in PLUGIN_DIRS); exit 1 on problems.",
        )
        validate.add_argument("paths", nargs="+", metavar="PATH")
        new = sub.add_parser(
            "new", help="Create a plugin skeleton (plugin.yaml, __init__.py, tests)."
        )
        new.add_argument("name", metavar="NAME")
        new.add_argument(
            "--model",
            default=None,
            help="The MODEL_HOOKS model (app_label.Model) whose hooks it uses (default: first).",
        )
        new.add_argument(
            "--dir",
            dest="directory",
            default=None,
            help="Folder to create it in (default: the first COURSE_PLUGINS['PLUGIN_DIRS'] entry).",
        )

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        if subcommand not in ("validate", "new") and not plugin_table_exists():
            raise CommandError(
                "The course_plugins tables are not in the database: run `python manage.py "
                "migrate` (after `migrate course_plugins zero`, remove the app from "
                "INSTALLED_APPS instead)."
            )
        if subcommand == "list":
            self.list_plugins()
        elif subcommand in ("activate", "deactivate", "reload"):
            self.operate(subcommand, options["names"], shadow=options.get("shadow", False))
        elif subcommand == "uninstall":
            self.uninstall(options["names"])
        elif subcommand == "validate":
            self.validate(options["paths"])
        else:
            self.scaffold(options["name"], options["directory"], options["model"])

    # --- list / activate / deactivate / reload -----------------------------------------------

    def list_plugins(self) -> None:
        rows = [("NAME", "VERSION", "STATUS", "ENABLED", "HOOKS", "EVENTS")]
        # Discover first, as the site does: a folder dropped in since shows up (inactive), a
        # vanished one is marked missing. Nothing is activated or deactivated by listing.
        for plugin in sorted(runtime.discover(), key=lambda row: row.name):
            status = plugin.status + (" (missing)" if plugin.missing else "")
            status += " (shadow)" if plugin.mode == PluginMode.SHADOW else ""
            rows.append(
                (
                    plugin.name,
                    plugin.version,
                    status,
                    "yes" if plugin.enabled else "no",
                    str(len(plugin.hooks or [])),
                    str(len(plugin.events or [])),
                )
            )
        if len(rows) == 1:
            dirs = ", ".join(map(str, plugin_settings.PLUGIN_DIRS)) or "(none configured)"
            self.stdout.write(f"No plugins found. PLUGIN_DIRS: {dirs}")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        self.list_layers()

    def list_layers(self) -> None:
        """Say how confined isolated plugins are on this machine (starts the sandbox)."""
        if plugin_settings.TRUSTED_PLUGINS is True:
            return
        try:
            found = sandbox_layers.current()
        except SandboxError as exc:
            self.stderr.write(f"The sandbox could not start: {exc}")
            return
        line = f"\nIsolated plugins: {sandbox_layers.summary(found)}"
        self.stdout.write(self.style.WARNING(line) if sandbox_layers.weakened(found) else line)

    def operate(self, verb: str, names: Sequence[str], *, shadow: bool = False) -> None:
        failed = []
        for name in names:
            try:
                if verb == "activate":
                    runtime.activate(name, mode=PluginMode.SHADOW if shadow else PluginMode.LIVE)
                else:
                    getattr(runtime, verb)(name)
            except CoursePluginsError as exc:
                self.stderr.write(f"{name}: could not {verb}: {exc}")
                failed.append(name)
                continue
            plugin = Plugin.objects.filter(name=name).first()
            if verb != "deactivate" and plugin is not None and plugin.status != PluginStatus.ACTIVE:
                self.stderr.write(f"{name}: could not {verb}: {plugin.last_error or plugin.status}")
                failed.append(name)
                continue
            version = f" {plugin.version}" if plugin else ""
            mode = " in shadow mode" if plugin and plugin.mode == PluginMode.SHADOW else ""
            self.stdout.write(self.style.SUCCESS(f"{name}{version}: {DONE[verb]}{mode}"))
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(names)} plugin(s) failed: {', '.join(failed)}"
            )

    def uninstall(self, names: Sequence[str]) -> None:
        failed = []
        for name in names:
            try:
                done = runtime.uninstall(name)
            except CoursePluginsError as exc:
                self.stderr.write(f"{name}: could not uninstall (nothing was deleted): {exc}")
                failed.append(name)
                continue
            called = "uninstall(api) ran; " if done["uninstall_called"] else ""
            self.stdout.write(
                self.style.SUCCESS(f"{done['name']}: uninstalled")
                + f" ({called}{done['schedules']} schedule(s), {done['storage_keys']} storage "
                "key(s), its settings and row deleted; the audit log keeps its entries)"
            )
            if done["folder"]:
                self.stdout.write(
                    f"  Delete {done['folder']} too, or the next discovery lists it again."
                )
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(names)} plugin(s) not uninstalled: {', '.join(failed)}"
            )

    # --- validate --------------------------------------------------------------------------------

    @staticmethod
    def _folder_of(raw: str) -> Path:
        """``raw`` as a path, or, when no such folder exists, the folder of that plugin name in
        ``PLUGIN_DIRS`` (``plugins validate lesson-guard``)."""
        path = Path(raw)
        if not path.is_dir() and len(path.parts) == 1:
            for directory in runtime.default.dirs():
                if (Path(directory) / raw).is_dir():
                    return Path(directory) / raw
        return path

    def validate(self, paths: Sequence[str]) -> None:
        total = 0
        for raw in paths:
            plugin_id, problems = validate_plugin_folder(self._folder_of(raw))
            total += len(problems)
            label = plugin_id or raw
            if problems:
                self.stderr.write(self.style.ERROR(f"{label}: {len(problems)} problem(s)"))
                for problem in problems:
                    self.stderr.write(f"  {problem}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{label}: OK"))
        if total:
            raise CommandError(f"{total} problem(s) found", returncode=1)

    # --- new -------------------------------------------------------------------------------------

    def scaffold(self, name: str, directory: str | None, model: str | None = None) -> None:
        if not NAME_RE.fullmatch(name):
            raise CommandError(
                f"'{name}' is not a valid plugin name: use lowercase letters, digits and hyphens, "
                "starting with a letter (e.g. my-plugin)."
            )
        if directory is None:
            dirs = list(plugin_settings.PLUGIN_DIRS)
            if not dirs:
                raise CommandError(
                    "No PLUGIN_DIRS configured: pass --dir to say where to create it."
                )
            directory = str(dirs[0])
        folder = Path(directory) / name
        if folder.exists():
            raise CommandError(f"{folder} already exists; choose another name or --dir.")
        label, stem = scaffold_stem(plugin_settings.MODEL_HOOKS, model)
        files = scaffold_files(name, stem)
        for relative, content in files.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        uses = f"the hooks of {label} (before-{stem}-save, {stem}.created)" if label else (
            "the standard course hooks (COURSE_PLUGINS['MODEL_HOOKS'] maps no model)"
        )
        self.stdout.write(self.style.SUCCESS(f"Created {folder}, using {uses}"))
        for relative in files:
            self.stdout.write(f"  {relative}")
        self.stdout.write(
            f"Next: edit {folder / '__init__.py'}, run `manage.py plugins validate {folder}` and "
            f"`pytest {folder / 'tests'}`, then activate it in the admin."
        )


def scaffold_stem(model_hooks: Any, model: str | None = None) -> tuple[str, str]:
    """Pick the ``MODEL_HOOKS`` entry a new plugin is written for; returns ``(label, stem)``.

    ``model`` (``"school.Lesson"``) names the entry; otherwise the first one. A project without
    ``MODEL_HOOKS`` gets the standard course hooks. Raises ``CommandError`` for an unknown model.
    """
    entries: dict[str, str] = {}
    if isinstance(model_hooks, dict):
        for label, value in model_hooks.items():
            stem, _path = model_hook_entry(value)
            if isinstance(stem, str) and stem:
                entries[str(label)] = stem
    if model is not None:
        for label, stem in entries.items():
            if label.lower() == model.lower():
                return label, stem
        known = ", ".join(entries) or "none"
        raise CommandError(
            f"{model!r} is not in COURSE_PLUGINS['MODEL_HOOKS'] (mapped models: {known})."
        )
    if entries:
        return next(iter(entries.items()))
    return "", "course"


def scaffold_files(name: str, stem: str = "course") -> dict[str, str]:
    """Return ``{relative path: content}`` of a new plugin named ``name`` (a valid slug).

    Rendered, as ``startapp`` does, from the template files in ``PLUGIN_TEMPLATE`` (``*-tpl``,
    Django template syntax, no autoescaping). The plugin uses the hooks and events of the
    ``MODEL_HOOKS`` entry ``stem`` (``before-<stem>-save``, ``<stem>.created``): it refuses a save
    whose text contains a configurable word, and logs each new row. Its test passes as written.
    """
    module = name.replace("-", "_")
    context = Context(
        {
            "name": name,
            "title": name.replace("-", " ").capitalize(),
            "stem": stem,
            "param": stem.replace("-", "_"),
        },
        autoescape=False,
    )
    engine = Engine()
    files: dict[str, str] = {}
    for source in sorted(PLUGIN_TEMPLATE.rglob("*-tpl")):
        relative = source.relative_to(PLUGIN_TEMPLATE).as_posix().removesuffix("-tpl")
        if relative == "tests/test_plugin.py":
            relative = f"tests/test_{module}.py"
        files[relative] = engine.from_string(source.read_text(encoding="utf-8")).render(context)
    return files
