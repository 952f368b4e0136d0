"""Escape attempts by plugin modules loaded in-process through the plugin policy.

Each attempt is a plugin package loaded with ``PluginImporter`` (the loader's own path: policy
check, the guarded tree, restricted builtins, facades). Whatever it does, the test checks the
harm itself: the secret file's content is nowhere in the plugin's module, no file was written,
nothing connected to the host's listener, and the standard library's classes the host shares
are unchanged.
"""

from __future__ import annotations

import dataclasses
import fractions
import json
import secrets
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_plugins.core.plugin_modules import PluginImporter, unique_module_name
from course_plugins.core.sandbox import SecurityViolation, facades

# (id, plugin source); the source sees SECRET_PATH, TARGET_PATH and PORT as globals.
ATTEMPTS = [
    ("update-wrapper-globals-setattr", """
        import functools, json
        stash = []
        class W:
            def __setattr__(self, name, value):
                stash.append(value)
        functools.update_wrapper(W(), json.dumps, assigned=('__globals__',), updated=())
        result = stash[0]['__builtins__']['open'](SECRET_PATH).read()
    """),
    ("update-wrapper-globals-type", """
        import functools, json
        stash = []
        W = type('W', (), {'__setattr__': lambda self, name, value: stash.append(value)})
        functools.update_wrapper(W(), json.dumps, assigned=('__globals__',), updated=())
        result = stash[0]['__builtins__']['open'](SECRET_PATH).read()
    """),
    ("update-wrapper-copies-no-private-attribute", """
        import functools, typing
        class W:
            def peek(self):
                return self._inst  # a private attribute of typing's object, if it were copied
        w = W()
        functools.update_wrapper(w, typing.List[int])
        result = w.peek()
    """),
    ("dataclass-annotation-code-type", """
        import dataclasses
        C = type('C', (), {'__module__': 'nowhere', 'x': 0, '__annotations__':
                           {"x,open(TARGET_PATH,'w').write('pwned'))or(1": int}})
        C = dataclasses.dataclass(init=False, repr=False)(C)
        result = C() == C()
    """),
    ("dataclass-typeddict-annotation-code", """
        import dataclasses, typing
        T = typing.TypedDict('T', {"x,open(TARGET_PATH,'w').write('pwned'))or(1": int})
        T = dataclasses.dataclass(init=False, repr=False)(T)
        result = T() == T()
    """),
    ("dataclass-derived-from-type-made-base", """
        import dataclasses
        Base = type('Base', (), {'__annotations__':
                                 {"x,open(TARGET_PATH,'w').write('pwned'))or(1": int}})
        Base = dataclasses.dataclass(init=False, repr=False)(Base)
    """),
    ("dataclass-forged-own-mark", """
        import dataclasses
        class Own:
            pass
        X = type('X', (Own,), {'__cp_untrusted__': True, '__annotations__':
                               {"x,open(TARGET_PATH,'w').write('pwned'))or(1": int}})
        X = dataclasses.dataclass(init=False, repr=False)(X)
        result = X() == X()
    """),
    ("deepcopy-memo-walks-private-attributes", """
        import copy, random
        memo = {}
        copy.deepcopy(random.Random(), memo)
        result = memo
    """),
    ("dataclass-over-host-class", """
        import dataclasses, json
        dataclasses.dataclass(json.JSONEncoder)
    """),
    ("make-dataclass-namespace-interceptor", """
        import dataclasses
        C = dataclasses.make_dataclass('C', ['x'], namespace={'__setattr__': print})
    """),
    ("get-origin-type", """
        import typing
        result = typing.get_origin(typing.Type)
    """),
    ("forward-ref-evaluate-through-self", """
        import typing
        ref = typing.get_args(typing.List["open(TARGET_PATH, 'w').write('pwned')"])[0]
        class A:
            def evaluate(self):
                return self._evaluate({'TARGET_PATH': TARGET_PATH}, {}, frozenset())
        result = A.evaluate(ref)
    """),
    ("private-attribute-through-self-parameter", """
        import random
        def peek(self):
            return self._randbelow
        result = peek(random.Random())
    """),
    ("format-template-built-at-run-time", """
        import json
        template = "{0.__init__.__glo" + "bals__}"
        result = template.format(json.JSONEncoder())
    """),
    ("format-through-getattr", """
        import json
        template = "{0.__init__.__glo" + "bals__}"
        result = getattr(template, 'format')(json.JSONEncoder())
    """),
    ("format-unbound", """
        import json
        result = str.format("{0._" + "_init__}", json.JSONEncoder())
    """),
    ("patch-host-class", """
        import json
        json.JSONEncoder.default = lambda self, o: 'spy'
    """),
    ("patch-host-class-through-self", """
        import fractions
        def patch(self):
            self.limit_denominator = print
        patch(fractions.Fraction)
    """),
    ("patch-host-class-setattr", """
        import fractions
        setattr(fractions.Fraction, 'limit_denominator', print)
    """),
    ("patch-host-class-through-metaclass", """
        import json
        class X(metaclass=lambda *args: json.JSONEncoder):
            pass
        X.default = print
    """),
    ("total-ordering-host-class", """
        import functools, fractions
        functools.total_ordering(fractions.Fraction)
    """),
    ("update-wrapper-host-function", """
        import functools, json
        def f():
            pass
        functools.update_wrapper(json.dumps, f)
    """),
    ("mark-host-protocol-runtime-checkable", """
        import typing
        typing.runtime_checkable(typing.SupportsInt)
    """),
    ("mark-host-function-final", """
        import typing, json
        typing.final(json.dumps)
    """),
    ("define-getattr", """
        class A:
            def __getattr__(self, name):
                return name
    """),
    ("define-del", """
        class A:
            def __del__(self):
                while True:
                    pass
    """),
    ("define-init-subclass", """
        class A:
            def __init_subclass__(cls, **kwargs):
                pass
    """),
    ("task-stack-frames", """
        import asyncio
        async def f():
            return asyncio.current_task().get_stack()
    """),
    # -- classes made without a class statement carry the hooks a class body may not define;
    #    copy's reduce protocol then sets any attribute on any object it is handed -----------
    ("copy-reduce-type-made-class-patches-host-class", """
        import copy, json
        def evil(self, o):
            return 'PATCHED'
        W = type('W', (), {'__reduce_ex__': lambda s, p: (
            lambda: json.JSONEncoder, (), (None, {'default': evil}))})
        copy.copy(W())
    """),
    ("copy-reduce-forges-own-mark-on-host-class", """
        import copy, fractions, functools
        rv = (max, ([fractions.Fraction],), (None, {'__cp_untrusted__': True}))
        W = type('W', (), {'__reduce_ex__': staticmethod(functools.partial(dict.get, {4: rv}))})
        copy.deepcopy([W()])
        fractions.Fraction.limit_denominator = print
    """),
    ("copy-reduce-state-into-shared-facade", """
        import copy, json
        W = type('W', (), {'__reduce_ex__': lambda s, p: (
            lambda: json, (), {'dumps': lambda *a, **k: 'PATCHED'})})
        copy.copy(W())
    """),
    ("type-namespace-hiding-its-keys", """
        import copy, json
        class Hiding(dict):
            def __iter__(self):
                return iter([])
        W = type('W', (), Hiding({'__reduce_ex__': lambda s, p: (
            lambda: json.JSONEncoder, (), (None, {'default': print}))}))
    """),
    ("copy-reduce-metaclass-function", """
        import copy, json
        def meta(name, bases, ns):
            ns['__reduce_ex__'] = lambda s, p: (
                lambda: json.JSONEncoder, (), (None, {'default': print}))
            return type(name, bases, ns)
        class W(metaclass=meta):
            pass
        copy.copy(W())
    """),
    ("copy-reduce-host-metaclass", """
        import collections.abc, copy, json
        Meta = type(collections.abc.Sized)
        W = Meta('W', (), {'__reduce_ex__': lambda s, p: (
            lambda: json.JSONEncoder, (), (None, {'default': print}))})
        copy.copy(W())
    """),
    ("copy-reduce-own-metaclass", """
        import copy, json
        class Meta(type):
            pass
        W = Meta('W', (), {'__reduce_ex__': lambda s, p: (
            lambda: json.JSONEncoder, (), (None, {'default': print}))})
        copy.copy(W())
    """),
    ("copy-reduce-functional-enum", """
        import copy, enum, json
        E = enum.Enum('E', {'A': 1, '__deepcopy__': None, '__reduce_ex__': lambda s, p: (
            lambda: json.JSONEncoder, (), (None, {'default': print}))})
        copy.deepcopy({'nested': [E.A]})
    """),
    ("copy-reduce-functional-enum-no-plugin-function", """
        import copy, enum, functools, json
        rv = (max, ([json.JSONEncoder],), (None, {'default': print}))
        E = enum.Enum('E', {'A': 1, '__copy__': None, '__reduce_ex__':
                            staticmethod(functools.partial(dict.get, {4: rv}))}, module='json')
        copy.copy(E.A)
    """),
    ("type-made-class-with-del", """
        Spin = type('Spin', (), {'__del__': lambda self: None})
    """),
    ("type-made-class-with-getattr", """
        W = type('W', (), {'__getattr__': lambda self, name: name})
    """),
]


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("secret")
    secret = f"TOPSECRET-{secrets.token_hex(8)}"
    path = folder / "secret.txt"
    path.write_text(secret)
    return path, secret


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def _load(tmp_path: Path, source: str, **globals_: object) -> object:
    folder = tmp_path / "plugin"
    folder.mkdir()
    header = "".join(f"{name} = {value!r}\n" for name, value in globals_.items())
    (folder / "__init__.py").write_text(header + textwrap.dedent(source))
    importer = PluginImporter("evil", folder, unique_module_name("evil"))
    try:
        return importer.load()
    finally:
        importer.unload()


def test_corpus_ids_are_unique() -> None:
    assert len({name for name, _ in ATTEMPTS}) == len(ATTEMPTS)


@pytest.mark.parametrize("name, source", ATTEMPTS, ids=[name for name, _ in ATTEMPTS])
def test_plugin_escape_attempt_is_refused_and_does_no_harm(
    name: str, source: str, tmp_path: Path, secret_file: tuple[Path, str],
    listener: socket.socket,
) -> None:
    secret_path, secret = secret_file
    target = tmp_path / "written.txt"
    encoder_default = json.JSONEncoder.default
    limit_denominator = fractions.Fraction.limit_denominator
    fraction_methods = set(vars(fractions.Fraction))
    expected = AttributeError if name.endswith("no-private-attribute") else SecurityViolation
    with pytest.raises(expected):
        _load(tmp_path, source, SECRET_PATH=str(secret_path), TARGET_PATH=str(target),
              PORT=listener.getsockname()[1])
    assert not target.exists(), "a file was written"
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert json.JSONEncoder.default is encoder_default
    assert fractions.Fraction.limit_denominator is limit_denominator
    assert set(vars(fractions.Fraction)) == fraction_methods
    assert not dataclasses.is_dataclass(json.JSONEncoder)
    assert "__cp_untrusted__" not in vars(fractions.Fraction)
    assert facades.facade("json").dumps is json.dumps
    assert secret not in json.dumps(name)  # (the secret never reached a loaded module)


def test_ordinary_plugin_code_still_runs(tmp_path: Path) -> None:
    module = _load(tmp_path, """
        import dataclasses, enum, functools, json, typing

        @dataclasses.dataclass(frozen=True)
        class Point:
            x: int = 0
            y: int = 0

            def __add__(self, other):
                return Point(self.x + other.x, self.y + other.y)

        Pair = dataclasses.make_dataclass('Pair', ['a', ('b', int, 2)])

        class Base:
            @typing.final
            def stay(self):
                return 1

            @typing.final
            @staticmethod
            def fixed():
                return 2

        @typing.runtime_checkable
        class Closable(typing.Protocol):
            def close(self): ...

        @dataclasses.dataclass(slots=True)
        class Slotted:
            a: int = 1

        @dataclasses.dataclass
        class Child(Slotted):
            b: int = 2

        class Colour(enum.Enum):
            RED = 1

        class Counter:
            total = 0

            def __init__(self):
                self._seen = []

            def add(self, item):
                self._seen.append(item)
                Counter.total += 1
                return len(self._seen)

        class Encoder(json.JSONEncoder):
            def default(self, o):
                return repr(o)

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return fn(*args)
            return wrapper

        @logged
        def greet(name):
            "Say hello."
            return "Hello, {}!".format(name)

        template = "{0} has {1[n]} items"
        counter = Counter()
        counter.add("a")
        result = [
            Point(1, 2) + Point(3, 4), dataclasses.astuple(Pair(1)), Colour.RED.name,
            counter.add("b"), Counter.total, greet("Ada"), greet.__name__, greet.__doc__,
            template.format("cart", {"n": 3}), json.dumps({1}, cls=Encoder),
            typing.get_origin(typing.List[int]) is list, "{:>4}".format(7),
            dataclasses.astuple(Child()), Base().stay() + Base.fixed(),
        ]
    """)
    point = module.Point  # type: ignore[attr-defined]
    assert module.result == [  # type: ignore[attr-defined]
        point(4, 6), (1, 2), "RED", 2, 2, "Hello, Ada!", "greet", "Say hello.",
        "cart has 3 items", '"{1}"', True, "   7", (1, 2), 3,
    ]


@dataclasses.dataclass
class _HostRecord:
    name: str
    _token: str = "host-private"


def test_dataclass_readers_do_not_walk_into_the_hosts_private_fields() -> None:
    from course_plugins.core.sandbox import facades, ownership

    guarded = facades.facade("dataclasses")

    @dataclasses.dataclass
    class Box:
        inside: object = None

    ownership.mark(Box)  # as if a plugin's class statement had made it
    assert guarded.asdict(Box([1, {"a": 2}])) == {"inside": [1, {"a": 2}]}
    for value in (_HostRecord("x"), Box([_HostRecord("x")]), Box({"k": (_HostRecord("x"),)})):
        for reader in (guarded.asdict, guarded.astuple):
            with pytest.raises(SecurityViolation, match="private fields"):
                reader(value)
    with pytest.raises(SecurityViolation, match="private fields"):
        guarded.replace(_HostRecord("x"))


def test_refusals_of_guarded_library_functions_are_audited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="course_plugins.security"), pytest.raises(
        SecurityViolation
    ):
        _load(tmp_path, """
            import functools, json
            class W:
                pass
            functools.update_wrapper(W(), json.dumps, assigned=('__globals__',))
        """)
    assert any(getattr(r, "audit_kind", None) == "blocked" and "__globals__" in r.getMessage()
               for r in caplog.records)


def test_plugin_type_behaves_like_type_for_ordinary_code(tmp_path: Path) -> None:
    module = _load(tmp_path, """
        import dataclasses, enum, typing

        def kind_of(x: type[int]) -> type:
            return type(x)

        @dataclasses.dataclass
        class C:
            kind: type = int
            other: typing.Optional[type] = None

        class Color(enum.Enum):
            RED = 1

        class Meta(type):
            pass

        class WithMeta(metaclass=Meta):
            pass

        made = type("Made", (C,), {"extra": 1, "__doc__": "made"})
        result = (str(type[int]), kind_of(int) is type, C().kind is int,
                  type(Color.RED) is Color, isinstance(Color, type), issubclass(Meta, type),
                  type(WithMeta) is Meta, isinstance(WithMeta, Meta), made().extra,
                  type(None) is type(None), type(C) is type)
    """)
    assert module.result == ("type[int]", True, True, True, True, True, True, True, 1, True,
                             True)

