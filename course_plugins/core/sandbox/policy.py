"""The code policy: AST analysis of sandboxed snippets and plugin modules, and plugin builtins.

``check_source(source, filename, mode=...)`` parses code and walks its tree *iteratively* (deep
nesting cannot crash the checker), failing closed: anything it cannot analyse is refused. Every
identifier is checked in its NFKC-normalised form, which is the form Python itself binds
(``ｅｖａｌ`` *is* ``eval``).

Both modes refuse: dynamic code (``eval``, ``exec``, ``compile``, ``__import__``), namespace
introspection (``globals``, ``locals``, ``vars``), ``open``/``input``/``breakpoint``,
double-underscore attributes other than a few harmless ones (``__name__``, ``__doc__``,
``__init__``...), frame/code/generator/traceback internals (``gi_frame``, ``f_globals``,
``tb_frame``, ``co_code``, ``mro``...), event-loop escape hatches (``run_in_executor``,
``subprocess_exec``...), ``getattr``-family calls and ``case C(attr=...)`` patterns naming such
attributes, format strings that read attributes (``"{0.__class__}"``), and imports outside the
mode's allow-list.

``mode="sandbox"`` (snippets run by ``SandboxedExecutor``) also refuses every double-underscore
name and relative imports. ``mode="plugin"`` (plugin modules loaded in-process) allows relative
imports of the plugin's own modules and the ``PLUGIN_IMPORT_ALLOWLIST``; private attributes only
on ``self``/``cls``/``super()``; and refuses what would swallow the time budget of a hook (an
exception derived from ``BaseException``): bare ``except:``, any mention of ``BaseException``,
``SystemExit`` or ``KeyboardInterrupt``, ``GeneratorExit`` outside an ``except`` clause,
``return``/``break``/``continue`` inside ``finally``, and ``__exit__`` returning a true value.
``threading`` is offered as a facade of locks only: a thread started by a plugin would escape
its time budget and outlive its deactivation.

The plugin policy is a lint-grade line of defence for code that runs in the host process; the
hard boundary for untrusted code is ``SandboxedExecutor.exec_code`` (docs/security.md).
"""

from __future__ import annotations

import ast
import builtins
import functools
import string
import sys
import types
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, NoReturn

from course_plugins.core.sandbox import facades, ownership
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.core.sandbox.formatting import GuardedFormatter, is_str_like

Mode = Literal["sandbox", "plugin"]

#: Modules plugin code may import (each as a read-only facade, see ``facades``).
PLUGIN_IMPORT_ALLOWLIST: frozenset[str] = frozenset({
    "math", "json", "re", "datetime", "time", "random", "statistics", "collections",
    "collections.abc", "itertools", "functools", "string", "textwrap", "decimal", "fractions",
    "typing", "dataclasses", "enum", "uuid", "hashlib", "hmac", "base64", "operator", "copy",
    "html", "unicodedata", "asyncio", "threading", "__future__",
})

#: Platform modules plugin code may import with ``from ... import``: the loader gives each plugin
#: its own version of them (``core.plugin_advice``), never the real module.
PLUGIN_PLATFORM_MODULES: frozenset[str] = frozenset({"course_plugins.core.advice"})

#: Modules sandboxed snippets may import by default (no event loop and no threads there).
SANDBOX_MODULES: frozenset[str] = PLUGIN_IMPORT_ALLOWLIST - {"asyncio", "threading"}

#: Deeper trees are refused: the compiler itself overflows a little past 800 levels.
MAX_NESTING = 400

_BLOCKED_NAMES: dict[str, str] = {
    "eval": "eval() runs code that cannot be checked",
    "exec": "exec() runs code that cannot be checked",
    "compile": "compile() makes code that cannot be checked",
    "__import__": "dynamic imports are not allowed: write an import statement",
    "globals": "namespace introspection (globals) is not allowed",
    "locals": "namespace introspection (locals) is not allowed",
    "vars": "namespace introspection (vars) is not allowed",
    "open": "open() is not available: files are out of reach (plugins: use api.storage)",
    "input": "input() is not available",
    "breakpoint": "breakpoint() is not available",
    "help": "help() is not available",
    "exit": "exit() is not available: return or raise an exception instead",
    "quit": "quit() is not available: return or raise an exception instead",
    "copyright": "not available",
    "credits": "not available",
    "license": "not available",
    "memoryview": "memoryview is not available",
    "__builtins__": "the builtins namespace is out of reach",
    "__build_class__": "the class builder is out of reach: write a class statement",
    "__loader__": "the module loader is out of reach",
    "__spec__": "the module spec is out of reach",
}

_PLUGIN_BLOCKED_NAMES: dict[str, str] = {
    name: (
        f"plugins may not use {name}: catching it would swallow the hook time budget and "
        "raising it would escape error isolation; use Exception and its subclasses"
    )
    for name in ("BaseException", "BaseExceptionGroup", "SystemExit", "KeyboardInterrupt")
}

#: Double-underscore names plugin modules may use (module metadata).
_PLUGIN_DUNDER_NAMES = frozenset(
    {"__name__", "__doc__", "__file__", "__all__", "__version__", "__author__", "__slots__"}
)

#: Double-underscore attributes that only give strings or ordinary bound methods: the only ones
#: code may read, write or define as methods (``ownership`` says why).
SAFE_DUNDER_ATTRS = ownership.SAFE_DUNDER_ATTRS

#: Frame, code, traceback and generator internals (the classic ways out of a jail).
INTERNAL_ATTRS = frozenset({
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "f_trace_lines",
    "f_trace_opcodes", "f_lasti", "mro", "func_globals", "func_code", "func_closure",
    "im_func", "im_self", "im_class",
})
_INTERNAL_PREFIXES = ("gi_", "cr_", "ag_", "co_", "tb_")

#: Event-loop methods that open sockets, run processes or threads.
ESCAPE_METHOD_ATTRS = frozenset({
    "get_loop", "run_in_executor", "set_default_executor", "subprocess_exec",
    "subprocess_shell", "create_connection", "create_server", "create_unix_connection",
    "create_unix_server", "create_datagram_endpoint", "connect_accepted_socket",
    "connect_read_pipe", "connect_write_pipe", "sock_connect", "sock_accept", "sock_recv",
    "sock_recv_into", "sock_sendall", "sock_sendfile", "sock_sendto", "sock_recvfrom",
    "sendfile", "start_tls", "add_reader", "add_writer", "add_signal_handler", "getaddrinfo",
    "getnameinfo",
    # a task's frames, coroutine and context variables are the host's when it runs the task
    "get_stack", "print_stack", "get_coro", "get_context",
})

#: Attribute names that are only ever a module imported by another module (``typing.sys``):
#: refused even if an import hook hands out a real module by mistake.
MODULE_ATTRS = frozenset({
    "os", "sys", "subprocess", "builtins", "importlib", "ctypes", "posix", "nt", "marshal",
    "pickle", "shutil", "socket",
})

_MODULE_NAMES_NEVER_ALLOWED = frozenset({
    "os", "sys", "subprocess", "socket", "shutil", "ctypes", "importlib", "pickle", "marshal",
    "builtins", "io", "multiprocessing", "signal", "urllib", "requests", "http",
    "pathlib", "inspect", "gc", "types", "code", "codeop", "pty", "posix", "nt", "_thread",
    "selectors", "select", "ssl", "tempfile", "glob", "fcntl", "resource", "mmap",
})

_PRIVATE_RECEIVERS = frozenset({"self", "cls", "mcs"})

# CPython 3.11.0-3.13.1 has a type confusion with ``except*`` that let code out of
# RestrictedPython (CVE-2025-22153); refused here as well on those interpreters.
_EXCEPT_STAR_UNSAFE = (3, 11) <= sys.version_info[:3] < (3, 13, 2)


def normalise(name: str) -> str:
    """Return ``name`` as Python binds it (NFKC, PEP 3131)."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def is_dunder(name: str) -> bool:
    """True for ``__x__`` names."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_problem(name: str) -> str | None:
    """Why reading attribute ``name`` is refused in both modes, or ``None`` if it is not."""
    name = normalise(name)
    if is_dunder(name):
        if name in SAFE_DUNDER_ATTRS:
            return None
        return (
            f"attribute {name!r} is not allowed: double-underscore attributes reach interpreter "
            "internals; use the object's public API"
        )
    if name in INTERNAL_ATTRS or name.startswith(_INTERNAL_PREFIXES):
        return f"attribute {name!r} reaches frames, code or class internals and is not allowed"
    if name in MODULE_ATTRS:
        return f"attribute {name!r} names a module that is out of reach"
    if name in ESCAPE_METHOD_ATTRS:
        return (
            f"attribute {name!r} reaches the event loop's sockets, threads or processes and is "
            "not allowed"
        )
    return None


def format_string_problem(text: str) -> str | None:
    """Why ``text``, used as a ``str.format`` template, would read a forbidden attribute."""
    if "{" not in text or ("." not in text and "[" not in text):
        return None
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f]
    except (ValueError, TypeError):
        return None  # not a valid format string, so not one str.format would accept
    for field in fields:
        for part in field.replace("[", ".").replace("]", "").split(".")[1:]:
            part = part.strip()
            if part.startswith("_") or attribute_problem(part):
                return (
                    f"format string {text[:60]!r} reads attribute {part!r}: format the value "
                    "itself instead"
                )
    return None


class _Ctx(NamedTuple):
    in_finally: bool = False
    loop_in_finally: bool = False
    exit_method: bool = False
    except_type: bool = False


_ROOT = _Ctx()
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_TRY = (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)


class _Checker:
    def __init__(self, filename: str, mode: Mode, allowed: frozenset[str]) -> None:
        self.filename = filename
        self.mode = mode
        self.plugin = mode == "plugin"
        self.allowed = allowed

    def fail(self, node: ast.AST, reason: str) -> NoReturn:
        raise SecurityViolation(reason, self.filename, getattr(node, "lineno", None))

    def run(self, tree: ast.AST) -> None:
        stack: list[tuple[ast.AST, int, _Ctx]] = [(tree, 0, _ROOT)]
        while stack:
            node, depth, ctx = stack.pop()
            if depth > MAX_NESTING:
                self.fail(
                    node,
                    f"the code is nested more than {MAX_NESTING} levels deep: split long "
                    "expressions into several statements",
                )
            visit = getattr(self, "visit_" + type(node).__name__, None)
            if visit is not None:
                visit(node, ctx)
            stack.extend((child, depth + 1, c) for child, c in self._children(node, ctx))

    def _children(self, node: ast.AST, ctx: _Ctx) -> Iterator[tuple[ast.AST, _Ctx]]:
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            exit_method = isinstance(node, _FUNCTIONS[:2]) and node.name in (
                "__exit__", "__aexit__"
            )
            inner = _Ctx(exit_method=exit_method)
            for child in ast.iter_child_nodes(node):
                yield child, inner
            return
        if isinstance(node, _TRY):
            for field, value in ast.iter_fields(node):
                sub = _Ctx(True, False, ctx.exit_method) if field == "finalbody" else ctx
                for child in value:
                    yield child, sub
            return
        if isinstance(node, _LOOPS) and ctx.in_finally:
            ctx = ctx._replace(loop_in_finally=True)
        if isinstance(node, ast.ExceptHandler):
            for field, value in ast.iter_fields(node):
                if field == "type" and value is not None:
                    yield value, ctx._replace(except_type=True)
                elif isinstance(value, list):
                    for child in value:
                        yield child, ctx._replace(except_type=False)
            return
        for child in ast.iter_child_nodes(node):
            yield child, ctx

    # -- names -------------------------------------------------------------------------------

    def _check_binding_name(self, node: ast.AST, name: str) -> None:
        name = normalise(name)
        if is_dunder(name) and not (self.plugin and name in _PLUGIN_DUNDER_NAMES):
            self.fail(node, f"the name {name!r} is not allowed here: use an ordinary name")

    def visit_Name(self, node: ast.Name, ctx: _Ctx) -> None:
        name = normalise(node.id)
        if name in _BLOCKED_NAMES:
            self.fail(node, f"{name!r} is not allowed: {_BLOCKED_NAMES[name]}")
        if self.plugin:
            if name in _PLUGIN_BLOCKED_NAMES:
                self.fail(node, _PLUGIN_BLOCKED_NAMES[name])
            if name == "GeneratorExit" and not ctx.except_type:
                self.fail(node, "plugins may only name GeneratorExit in an except clause")
        self._check_binding_name(node, name)

    def visit_arg(self, node: ast.arg, ctx: _Ctx) -> None:
        self._check_binding_name(node, node.arg)

    def visit_Global(self, node: ast.Global, ctx: _Ctx) -> None:
        for name in node.names:
            self._check_binding_name(node, name)

    visit_Nonlocal = visit_Global

    def visit_ClassDef(self, node: ast.ClassDef, ctx: _Ctx) -> None:
        self._check_binding_name(node, node.name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef, ctx: _Ctx) -> None:
        name = normalise(node.name)
        if is_dunder(name) and name not in SAFE_DUNDER_ATTRS:
            self.fail(
                node,
                f"defining {name!r} is not allowed: it would change what the interpreter or "
                "library code does with this object (attribute access, class creation, "
                "copying, finalisation); allowed are the operator and container methods, "
                "__init__, __post_init__, __repr__, __str__, __hash__, __eq__, __call__...",
            )

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- attributes --------------------------------------------------------------------------

    def _check_attribute(self, node: ast.AST, name: str, receiver: ast.AST | None) -> None:
        problem = attribute_problem(name)
        if problem:
            self.fail(node, problem)
        name = normalise(name)
        if self.plugin and name.startswith("_") and not is_dunder(name):
            private_ok = (
                isinstance(receiver, ast.Name) and receiver.id in _PRIVATE_RECEIVERS
            ) or (
                isinstance(receiver, ast.Call)
                and isinstance(receiver.func, ast.Name)
                and receiver.func.id == "super"
            )
            if not private_ok:
                self.fail(
                    node,
                    f"private attribute {name!r} may only be used on self, cls or super(): "
                    "other objects' private parts are not part of their API",
                )

    def visit_Attribute(self, node: ast.Attribute, ctx: _Ctx) -> None:
        self._check_attribute(node, node.attr, node.value)

    def visit_MatchClass(self, node: ast.MatchClass, ctx: _Ctx) -> None:
        for name in node.kwd_attrs:
            self._check_attribute(node, name, None)

    def visit_Call(self, node: ast.Call, ctx: _Ctx) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and normalise(func.id) in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name = node.args[1].value
            for form in {name, normalise(name)}:
                problem = attribute_problem(form)
                if problem:
                    self.fail(node, problem)
                if form.startswith("__") or (self.plugin and form.startswith("_")):
                    self.fail(
                        node,
                        f"{func.id}() with the private name {form!r} is not allowed: use "
                        "public attributes",
                    )

    def visit_Constant(self, node: ast.Constant, ctx: _Ctx) -> None:
        if isinstance(node.value, str):
            problem = format_string_problem(node.value)
            if problem:
                self.fail(node, problem)

    # -- imports -----------------------------------------------------------------------------

    def _refuse_import(self, node: ast.AST, name: str) -> NoReturn:
        advice = (
            "plugins reach files, the network and other services only through the Platform "
            "API (api.storage, api.notify, api.courses, ...)"
            if self.plugin
            else "sandboxed code has no files, network or processes"
        )
        allowed = ", ".join(sorted(m for m in self.allowed if m != "__future__"))
        self.fail(node, f"import of {name!r} is not allowed: {advice}; allowed modules: {allowed}")

    def _module_allowed(self, name: str) -> bool:
        return name == "__future__" or name in self.allowed

    def visit_Import(self, node: ast.Import, ctx: _Ctx) -> None:
        for alias in node.names:
            name = normalise(alias.name)
            if not self._module_allowed(name) or not self._module_allowed(name.split(".")[0]):
                self._refuse_import(node, name)
            if alias.asname:
                self._check_binding_name(node, alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom, ctx: _Ctx) -> None:
        module = normalise(node.module or "")
        if node.level:
            if not self.plugin:
                self.fail(node, "relative imports are not allowed in sandboxed code")
        elif not self._module_allowed(module):
            self._refuse_import(node, module)
        for alias in node.names:
            name = normalise(alias.name)
            if name in _MODULE_NAMES_NEVER_ALLOWED and not node.level:
                self._refuse_import(node, f"{module}.{name}")
            if not node.level and name.startswith("_") and module != "__future__":
                self.fail(node, f"importing the private name {name!r} is not allowed")
            if alias.asname:
                self._check_binding_name(node, alias.asname)

    # -- exceptions that must not be swallowed (plugin mode) ---------------------------------

    def visit_TryStar(self, node: ast.AST, ctx: _Ctx) -> None:
        if _EXCEPT_STAR_UNSAFE:
            self.fail(
                node,
                "'try/except*' is refused on this Python version (CVE-2025-22153, a type "
                "confusion in CPython before 3.13.2): catch ExceptionGroup with 'except'",
            )

    def visit_ExceptHandler(self, node: ast.ExceptHandler, ctx: _Ctx) -> None:
        if self.plugin and node.type is None:
            self.fail(
                node,
                "bare 'except:' also catches the hook time budget: write 'except Exception:'",
            )
        if node.name:
            self._check_binding_name(node, node.name)

    def visit_Return(self, node: ast.Return, ctx: _Ctx) -> None:
        if not self.plugin:
            return
        if ctx.in_finally:
            self.fail(
                node,
                "'return' inside 'finally' swallows any exception, the hook time budget "
                "included: move it after the try statement",
            )
        if ctx.exit_method and not (
            node.value is None
            or (isinstance(node.value, ast.Constant) and node.value.value in (None, False))
        ):
            self.fail(
                node,
                "__exit__ may only return None or False: a true value would swallow the hook "
                "time budget; handle exceptions inside the with block instead",
            )

    def visit_Break(self, node: ast.AST, ctx: _Ctx) -> None:
        if self.plugin and ctx.in_finally and not ctx.loop_in_finally:
            self.fail(
                node,
                "'break'/'continue' out of a 'finally' block swallows any exception, the hook "
                "time budget included: restructure the loop",
            )

    visit_Continue = visit_Break


def check_source(
    source: str,
    filename: str = "<string>",
    *,
    mode: Mode = "sandbox",
    allowed_modules: frozenset[str] | None = None,
) -> ast.Module:
    """Parse ``source`` and return its tree if the policy of ``mode`` accepts it.

    ``allowed_modules`` defaults to ``SANDBOX_MODULES`` or ``PLUGIN_IMPORT_ALLOWLIST``.
    Raises ``SecurityViolation(reason, filename=..., lineno=...)`` for refused code (also for
    code too deep or too strange to analyse: the checker fails closed) and ``SyntaxError``
    for code that does not parse.
    """
    if mode not in ("sandbox", "plugin"):
        raise ValueError(f"mode must be 'sandbox' or 'plugin', not {mode!r}")
    if allowed_modules is None:
        allowed_modules = (
            PLUGIN_IMPORT_ALLOWLIST | PLUGIN_PLATFORM_MODULES if mode == "plugin"
            else SANDBOX_MODULES
        )
    if not isinstance(source, str):
        raise TypeError(f"source must be str, not {type(source).__name__}")
    if "\x00" in source:
        raise SecurityViolation("source contains NUL characters", filename, None)
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError:
        raise
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise SecurityViolation(
            f"the code could not be analysed ({type(exc).__name__}): it is nested too deeply "
            "or too large; split it into simpler statements",
            filename,
            None,
        ) from None
    try:
        _Checker(filename, mode, frozenset(allowed_modules)).run(tree)
    except SecurityViolation:
        raise
    except Exception as exc:  # fail closed: what cannot be analysed does not run
        raise SecurityViolation(
            f"the code could not be analysed ({type(exc).__name__}: {exc}); it was refused",
            filename,
            None,
        ) from exc
    if mode == "plugin":
        _guard_plugin_tree(tree)
    return tree


# -- the run-time guards of plugin code --------------------------------------------------------

FORMAT_NAME = "__cp_format__"
OWN_NAME = "__cp_own__"
STORE_NAME = "__cp_store__"


def _call(name: str, args: list[ast.expr], node: ast.AST) -> ast.Call:
    func = ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
    return ast.copy_location(ast.Call(func=func, args=args, keywords=[]), node)


def _guard_plugin_tree(tree: ast.Module) -> None:
    """Route, in place, what static analysis of plugin code cannot decide to run-time guards
    (``plugin_builtins`` supplies them):

    - ``x.format`` / ``x.format_map`` on anything but a string constant (a template built at
      run time may read any attribute) -> ``__cp_format__(x).format``: the policy's formatter
      when ``x`` is a string (or ``str``), ``x`` itself otherwise;
    - ``self._x`` / ``cls._x`` (any parameter may be called ``self``) -> allowed only on the
      plugin's own objects;
    - ``x.attr = ...`` / ``del x.attr`` -> refused on classes the plugin did not make (the
      standard library's, which facades hand out, are shared with the host).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            value, attr = node.value, normalise(node.attr)
            if isinstance(node.ctx, ast.Load) and attr in ("format", "format_map"):
                if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    node.value = _call(FORMAT_NAME, [value], node)
            elif (attr.startswith("_") and not is_dunder(attr) and isinstance(value, ast.Name)
                  and value.id in _PRIVATE_RECEIVERS):
                node.value = _call(OWN_NAME, [value], node)
            elif not isinstance(node.ctx, ast.Load):
                node.value = _call(STORE_NAME, [value], node)


# -- plugin builtins ---------------------------------------------------------------------------

_PLUGIN_SAFE_BUILTINS = (
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes",
    "callable", "chr", "classmethod", "complex", "dict", "dir", "divmod", "enumerate", "filter",
    "float", "format", "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass",
    "iter", "len", "list", "map", "max", "min", "next", "object", "oct", "ord", "pow", "print",
    "property", "range", "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod",
    "str", "sum", "super", "tuple", "type", "zip", "None", "True", "False", "Ellipsis",
    "NotImplemented", "GeneratorExit", "__build_class__",
)


@functools.cache
def _exception_builtins() -> dict[str, Any]:
    # Read-only to callers (merged into each plugin's namespace): built once, not per plugin.
    return {
        name: value
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
    }


def _audit_blocked(detail: str, plugin: str | None) -> None:
    # Imported here: the sandbox zygote imports this module and has no use for logging.
    from course_plugins.core.sandbox.audit import BLOCKED, audit

    audit(BLOCKED, detail, plugin=plugin)


def _facade_refusal(reason: str) -> SecurityViolation:
    # What a guarded standard-library function raises for plugin code (the facades are shared
    # by every plugin, so the event names no plugin); exec_code's children record it instead.
    _audit_blocked(reason, None)
    return SecurityViolation(reason)


facades.set_refusal(_facade_refusal)


class _TypeMeta(type):
    """The metaclass of the plugin builtin ``type``: ``isinstance(x, type)`` and
    ``issubclass(c, type)`` answer for the real ``type``."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, type) if cls is PluginType else type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, type) if cls is PluginType else type.__subclasscheck__(cls, sub)


class PluginType(type, metaclass=_TypeMeta):
    """``type`` as plugin code gets it.

    ``type(x)`` is the real answer, except that the real ``type`` and other metaclasses (which
    make classes from any namespace) are not handed out: ``type(int)`` is this class, and
    ``type(SomeABC)`` is refused. ``type(name, bases, namespace)`` (and a plugin's own
    metaclass derived from it) refuses what a class statement of plugin code may not define
    (``ownership.namespace_problem``): ``__reduce_ex__`` would let ``copy`` set any attribute of
    any object, ``__getattr__``/``__setattr__`` intercept library code, ``__del__`` run in a
    finaliser of a host thread.
    """

    def __new__(mcs, *args: Any, **kwargs: Any) -> Any:  # noqa: N804 (a metaclass)
        if len(args) == 1 and not kwargs and mcs is PluginType:
            result = type(args[0])
            if result is type:
                return PluginType
            if issubclass(result, type) and not ownership.made_by_untrusted(result):
                raise _facade_refusal(
                    f"type() of a class whose metaclass is {result.__qualname__!r} is not "
                    "offered: a metaclass makes classes from any namespace"
                )
            return result
        if len(args) != 3:
            raise TypeError("type() takes 1 or 3 arguments")
        problem = ownership.namespace_problem(args[2]) or ownership.metaclass_problem(kwargs)
        if problem:
            raise _facade_refusal(problem)
        if mcs is PluginType:
            return type(*args, **kwargs)
        return type.__new__(mcs, *args, **kwargs)


    def __class_getitem__(cls, item: Any) -> Any:
        return types.GenericAlias(type, item)  # ``type[int]``, as with the real one


PluginType.__name__ = PluginType.__qualname__ = "type"
PluginType.__module__ = "builtins"  # (repr: <class 'type'>)


def _guard_attribute_name(name: object, func: str, plugin: str | None) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{func}(): attribute name must be a string")
    problem = attribute_problem(name)
    if problem is None and name.startswith("_"):
        problem = f"{func}() with the private name {name!r} is not allowed: use public attributes"
    if problem:
        _audit_blocked(f"{func}(obj, {name!r}): {problem}", plugin)
        raise SecurityViolation(problem, plugin=plugin)
    return name


def plugin_builtins(
    import_hook: Callable[..., Any], *, plugin: str | None = None
) -> dict[str, Any]:
    """Return a fresh restricted builtins dict for a plugin module whose ``__import__`` is
    ``import_hook``.

    No ``eval``/``exec``/``compile``/``open``/``globals``/``vars``/``input``/``breakpoint``;
    no ``BaseException``/``SystemExit``/``KeyboardInterrupt``; ``getattr``, ``hasattr``,
    ``setattr`` and ``delattr`` refuse private and internal names at run time, and setting or
    deleting attributes of classes the plugin did not make (raising ``SecurityViolation``,
    audited as ``blocked`` for ``plugin``). Also the run-time guards the plugin policy's rewrite
    calls (``__cp_format__``, ``__cp_own__``, ``__cp_store__``) and a ``__build_class__`` that
    marks the plugin's classes as its own.
    """

    def refuse(reason: str) -> SecurityViolation:
        _audit_blocked(reason, plugin)
        return SecurityViolation(reason, plugin=plugin)

    def format_field(obj: Any, name: str) -> Any:
        problem = attribute_problem(name) or (
            f"private attribute {name!r}" if name.startswith("_") else None
        )
        if problem:
            raise refuse(f"a format template read {name!r}: {problem}")
        return getattr(obj, name)

    formatter = GuardedFormatter(format_field)

    def guard_format(obj: Any) -> Any:
        return _Template(obj, formatter) if is_str_like(obj) else obj

    def guard_own(obj: Any) -> Any:
        if ownership.made_by_untrusted(obj):
            return obj
        raise refuse(
            f"private attributes of a {type(obj).__name__} are not the plugin's: only objects "
            "of its own classes may be used through self/cls private attributes"
        )

    def guard_store(obj: Any) -> Any:
        if isinstance(obj, type) and not ownership.made_by_untrusted(obj):
            raise refuse(
                f"class {obj.__qualname__!r} is shared with the host: plugins may change only "
                "their own classes (subclass it instead)"
            )
        return obj

    def safe_getattr(obj: Any, name: str, *default: Any) -> Any:
        name = _guard_attribute_name(name, "getattr", plugin)
        if name in ("format", "format_map") and is_str_like(obj):
            return formatter.format_method(obj, name)
        return getattr(obj, name, *default)

    def safe_hasattr(obj: Any, name: str) -> bool:
        return hasattr(obj, _guard_attribute_name(name, "hasattr", plugin))

    def safe_setattr(obj: Any, name: str, value: Any) -> None:
        setattr(guard_store(obj), _guard_attribute_name(name, "setattr", plugin), value)

    def safe_delattr(obj: Any, name: str) -> None:
        delattr(guard_store(obj), _guard_attribute_name(name, "delattr", plugin))

    def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
        problem = ownership.metaclass_problem(kwargs)
        if problem:
            raise refuse(f"class {name!r}: {problem}")
        return ownership.mark_new(builtins.__build_class__(func, name, *bases, **kwargs), func)

    namespace = {name: getattr(builtins, name) for name in _PLUGIN_SAFE_BUILTINS}
    namespace.update(_exception_builtins())
    namespace.update({
        "type": PluginType,
        "getattr": safe_getattr,
        "hasattr": safe_hasattr,
        "setattr": safe_setattr,
        "delattr": safe_delattr,
        "__import__": import_hook,
        "__build_class__": build_class,
        "__name__": "builtins",
        FORMAT_NAME: guard_format,
        OWN_NAME: guard_own,
        STORE_NAME: guard_store,
        ownership.RESTRICTED_BUILTINS_KEY: True,
    })
    return namespace


class _Template:
    """What ``__cp_format__(text)`` gives: ``.format`` / ``.format_map`` of ``text`` (or of the
    ``str`` type) through the plugin's guarded formatter."""

    __slots__ = ("_text", "_formatter")

    def __init__(self, text: Any, formatter: GuardedFormatter) -> None:
        self._text = text
        self._formatter = formatter

    @property
    def format(self) -> Any:
        return self._formatter.format_method(self._text, "format")

    @property
    def format_map(self) -> Any:
        return self._formatter.format_method(self._text, "format_map")


ImportHook = Callable[..., Any]


def make_plugin_import(
    local_import: ImportHook | None = None,
    *,
    allowlist: frozenset[str] = PLUGIN_IMPORT_ALLOWLIST,
    plugin: str | None = None,
    platform: Mapping[str, Any] | None = None,
) -> ImportHook:
    """Return an ``__import__`` for plugin code.

    Relative imports (``from . import rules``) go to ``local_import(name, globals, locals,
    fromlist, level)``, which the loader supplies to resolve the plugin's own modules. Absolute
    imports of ``allowlist`` modules return read-only facades (``facades.facade``), so
    ``random._os`` or ``typing.sys`` lead nowhere. The standard library's own lazy imports from C
    (``PyImport_Import``, recognisable by its ``fromlist``) get the real module, which goes back
    to that C function only. ``from m import x`` of a module in ``platform`` (the plugin's own
    ``course_plugins.core.advice``) returns that module. Anything else raises
    ``SecurityViolation`` (audited ``blocked``).
    """

    def refuse(reason: str) -> SecurityViolation:
        _audit_blocked(reason, plugin)
        return SecurityViolation(reason, plugin=plugin)

    def plugin_import(
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        if level:
            if local_import is None:
                raise refuse(f"relative import of {name!r} with no plugin package to resolve it")
            return local_import(name, globals, locals, fromlist, level)
        if platform and fromlist and name in platform:
            return platform[name]
        if facades.is_internal_import(fromlist):  # datetime.strptime and the like
            module = facades.internal_import(name)
            if module is not None:
                return module
        return facades.import_facade(name, tuple(fromlist or ()), allowlist, refuse)

    return plugin_import
