"""A corpus of escape and abuse attempts from public Python-jail research, run for real.

Every attempt runs through ``SandboxedExecutor.exec_code`` with the path of a secret file, the
path of a file to create and the port of a listener on 127.0.0.1 as inputs. Whatever the attempt
returns or raises, the test then checks that the concrete harm did not happen: the file was not
written, the secret appears nowhere in what came back, the listener accepted no connection and
the host still gets answers from the sandbox. The expected outcome (which error) is asserted too,
so a layer that silently stops working is noticed.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from course_plugins.core.sandbox import (
    SandboxConfig,
    SandboxedExecutor,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxRuntimeError,
    SandboxTimeout,
    SecurityViolation,
)

SV = (SecurityViolation,)
RUNTIME = (SandboxRuntimeError,)
TIMEOUT = (SandboxTimeout,)
MEMORY = (SandboxMemoryError,)
OUTPUT = (SandboxOutputError,)


@dataclass(frozen=True)
class Attempt:
    id: str
    code: str
    expect: tuple[type[BaseException], ...] = SV
    may_run: bool = False  # harmless if it completes (the harm checks still apply)


ATTEMPTS = [
    # -- object-graph walks to reach os / builtins through subclasses ------------------------
    Attempt("subclasses-via-tuple", "result = ().__class__.__bases__[0].__subclasses__()"),
    Attempt("subclasses-via-str-mro", "result = ''.__class__.__mro__[1].__subclasses__()"),
    Attempt("base-via-list", "result = [].__class__.__base__"),
    Attempt("object-subclasses", "result = object.__subclasses__()"),
    Attempt("catch-warnings-builtins",
            "w = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
            "'catch_warnings'][0]\nresult = w()._module.__builtins__['__import__']('os')"),
    Attempt("getattr-string-concat", "result = getattr((), '__cl' + 'ass__')"),
    Attempt("getattr-chain", "c = getattr((), '__cla' + 'ss__')\n"
                             "result = getattr(c, '__bas' + 'es__')"),
    Attempt("type-builtin", "result = type(()).mro()"),
    Attempt("mro-method", "result = int.mro()"),
    Attempt("function-globals", "f = lambda: 0\nresult = f.__globals__"),
    Attempt("function-code", "f = lambda: 0\nresult = f.__code__.co_consts"),
    Attempt("builtin-self", "result = print.__self__"),
    Attempt("builtin-self-dynamic", "result = getattr(len, '__se' + 'lf__')"),
    Attempt("builtins-name", "result = __builtins__"),
    Attempt("builtins-subscript", "result = __builtins__['eval']('1')"),
    Attempt("dict-of-class", "class A:\n    pass\nresult = A.__dict__"),
    Attempt("init-globals", "class A:\n    def __init__(self):\n        pass\n"
                            "result = A().__init__.__globals__"),
    Attempt("hasattr-probe", "result = hasattr((), '__cl' + 'ass__')"),
    Attempt("private-of-own-class-ok", "class A:\n    def __init__(self):\n"
                                       "        self._x = 'own'\nresult = A()._x",
            expect=(), may_run=True),
    Attempt("super-dunder", "class A:\n    def f(self):\n        return super().__thisclass__\n"
                            "result = A().f()"),
    # -- frames from generators, coroutines and tracebacks -----------------------------------
    Attempt("generator-frame", "def g():\n    yield 1\nx = g()\nnext(x)\n"
                               "result = x.gi_frame.f_back.f_globals"),
    Attempt("generator-frame-dynamic", "def g():\n    yield 1\nx = g()\n"
                                       "result = getattr(x, 'gi_' + 'frame')"),
    Attempt("generator-code", "def g():\n    yield 1\nresult = g().gi_code.co_code"),
    Attempt("coroutine-frame", "async def c():\n    pass\nco = c()\nresult = co.cr_frame"),
    Attempt("async-generator-frame", "async def a():\n    yield 1\nresult = a().ag_frame"),
    Attempt("traceback-frame", "try:\n    1 / 0\nexcept Exception as e:\n"
                               "    result = e.__traceback__.tb_frame.f_globals"),
    Attempt("traceback-dynamic", "try:\n    1 / 0\nexcept Exception as e:\n"
                                 "    result = getattr(e, '__trace' + 'back__')"),
    Attempt("traceback-next", "try:\n    1 / 0\nexcept Exception as e:\n    t = e.with_traceback"
                              "(None)\n    result = getattr(t, 'tb' + '_next', None)"),
    # -- format-string attribute access -----------------------------------------------------
    Attempt("format-class", "result = '{0.__class__.__base__}'.format(1)"),
    Attempt("format-map", "result = '{x.__class__}'.format_map({'x': 1})"),
    Attempt("format-dynamic", "s = '{0.' + '__class__}'\nresult = s.format(1)"),
    Attempt("format-unbound", "s = '{0.' + '__class__}'\nresult = str.format(s, 1)"),
    Attempt("format-globals", "def f():\n    pass\nresult = '{0.__globals__}'.format(f)"),
    Attempt("format-nested-spec", "s = '{0:{1.' + '__class__}}'\nresult = s.format(1, 2)"),
    Attempt("format-getattr-method", "s = '{0.__class__}'\nresult = getattr(s, 'format')(1)"),
    Attempt("fstring-attribute", "result = f'{().__class__}'"),
    Attempt("format-private-dynamic", "import random\nresult = ('{0._' + 'os}').format(random)"),
    # -- exec/eval through decorators, builtins and pattern matching ------------------------
    Attempt("decorator-exec", "@exec\ndef f():\n    pass"),
    Attempt("decorator-lambda-eval", "@(lambda f: eval('1'))\ndef f():\n    pass"),
    Attempt("eval", "result = eval('1 + 1')"),
    Attempt("exec", "exec('import os')"),
    Attempt("compile", "result = compile('1', 'x', 'eval')"),
    Attempt("dunder-import", "result = __import__('os')"),
    Attempt("globals", "result = globals()"),
    Attempt("vars", "result = vars()"),
    Attempt("breakpoint", "breakpoint()"),
    Attempt("match-class-attribute", "match 1:\n    case int(__class__=c):\n        result = c"),
    Attempt("match-args-trick", "class P:\n    __match_args__ = ('__class__',)\nresult = 1"),
    # -- identifiers Python normalises (NFKC) -------------------------------------------------
    Attempt("fullwidth-eval", "result = ｅｖａｌ('1')"),
    Attempt("fullwidth-import", "result = _＿import__('os')"),
    Attempt("fullwidth-attribute", "result = ().__ｃｌａｓｓ__"),
    Attempt("fullwidth-exec", "ｅｘｅｃ('x = 1')"),
    Attempt("fullwidth-getattr-string", "result = getattr((), '__ｃｌａｓｓ__')"),
    Attempt("math-letters-open", "result = 𝐨𝐩𝐞𝐧(secret_path).read()"),
    # -- modules that are not allowed, and ways out through allowed ones ---------------------
    Attempt("import-os", "import os\nresult = os.listdir('/')"),
    Attempt("import-subprocess", "import subprocess\nsubprocess.run(['id'])"),
    Attempt("from-os-system", "from os import system\nsystem('id')"),
    Attempt("import-sys", "import sys\nresult = sys.modules"),
    Attempt("import-builtins", "import builtins\nresult = builtins.open"),
    Attempt("import-importlib", "import importlib\nresult = importlib.import_module('os')"),
    Attempt("import-ctypes", "import ctypes\nctypes.CDLL(None).system(b'id')"),
    Attempt("import-pickle", "import pickle\npickle.loads(b'cos\\nsystem\\n(S\\'id\\'\\ntR.')"),
    Attempt("import-marshal", "import marshal\nresult = marshal.loads(b'')"),
    Attempt("import-posix", "import posix\nresult = posix.getcwd()"),
    Attempt("import-io", "import io\nresult = io.open(secret_path).read()"),
    Attempt("import-signal", "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)"),
    Attempt("import-multiprocessing", "import multiprocessing\nmultiprocessing.Process()"),
    Attempt("import-asyncio", "import asyncio\nresult = asyncio.get_event_loop()"),
    Attempt("relative-import", "from . import secrets"),
    Attempt("random-os", "import random\nresult = random._os"),
    Attempt("random-os-getattr", "import random\nresult = getattr(random, '_' + 'os')"),
    Attempt("typing-sys", "import typing\nresult = typing.sys.modules"),
    Attempt("typing-sys-dynamic", "import typing\nresult = getattr(typing, 's' + 'ys', None)",
            expect=SV),
    Attempt("json-decoder-re", "import json\nresult = json.decoder.re", expect=RUNTIME),
    Attempt("collections-sys", "import collections\nresult = getattr(collections, '_sys')"),
    Attempt("uuid-os", "import uuid\nresult = uuid.os"),
    Attempt("uuid-getnode", "import uuid\nresult = uuid.getnode()", expect=RUNTIME),
    Attempt("string-formatter", "import string\n"
                                "result = string.Formatter().get_field('0.__class__', [1], {})",
            expect=RUNTIME),
    Attempt("operator-attrgetter", "import operator\n"
                                   "result = operator.attrgetter('__class__')(1)", expect=RUNTIME),
    Attempt("typing-get-type-hints", "import typing\ndef f(x: '__import__(\"os\")'):\n    pass\n"
                                     "result = typing.get_type_hints(f)", expect=RUNTIME),
    Attempt("json-loads-globals", "import json\nresult = json.loads.__globals__['sys']"),
    Attempt("datetime-private", "import datetime\nresult = datetime._time"),
    Attempt("facade-mutation", "import math\nmath.sqrt = print\nresult = 1", expect=RUNTIME),
    Attempt("dunder-future-loader", "import __future__\nresult = __future__.__loader__"),
    # -- library functions doing what the code may not: reading attributes it names, compiling
    #    its strings, handing out a class factory (the update_wrapper / dataclasses /
    #    typing.get_origin family) ------------------------------------------------------------
    Attempt("update-wrapper-globals-setattr",
            "import functools, json\nstash = []\nclass W:\n    def __setattr__(self, k, v):\n"
            "        stash.append(v)\n"
            "functools.update_wrapper(W(), json.dumps, assigned=('__globals__',), updated=())\n"
            "result = stash[0]['__builtins__']['open'](secret_path).read()"),
    Attempt("update-wrapper-globals-plain",
            "import functools, json\nclass W:\n    pass\nw = W()\n"
            "functools.update_wrapper(w, json.dumps, assigned=('__globals__',), updated=())\n"
            "result = getattr(w, '__glo' + 'bals__')['__builtins__']['open'](secret_path).read()"),
    Attempt("update-wrapper-globals-caught",
            "import functools, json\nclass W:\n    pass\nw = W()\ntry:\n"
            "    functools.update_wrapper(w, json.dumps, assigned=('__globals__',))\n"
            "except Exception:\n    pass\nresult = 'swallowed'"),
    Attempt("update-wrapper-str-subclass-name",
            "import functools, json\nclass S(str):\n    def __eq__(self, o):\n        return True\n"
            "    def __hash__(self):\n        return hash('__module__')\nclass W:\n    pass\n"
            "functools.update_wrapper(W(), json.dumps, assigned=(S('__globals__'),))"),
    Attempt("wraps-globals",
            "import functools, json\n@functools.wraps(json.dumps, assigned=('__globals__',))\n"
            "def f():\n    pass\nresult = 1"),
    Attempt("update-wrapper-copies-no-private",
            "import functools, typing\nclass W:\n    pass\nw = W()\n"
            "functools.update_wrapper(w, typing.List[int])\nresult = w._inst", expect=RUNTIME),
    Attempt("update-wrapper-host-function",
            "import functools, json\ndef f():\n    pass\nfunctools.update_wrapper(json.dumps, f)"),
    Attempt("total-ordering-host-class",
            "import functools, fractions\nfunctools.total_ordering(fractions.Fraction)"),
    Attempt("get-origin-type", "import typing\nT = typing.get_origin(typing.Type)\n"
                               "W = T('W', (), {'__setattr__': print})"),
    Attempt("get-origin-type-subscript",
            "import typing\nresult = typing.get_origin(typing.Type[int])"),
    Attempt("get-args-ordinary-class-ok",
            "import typing\nresult = [a.__name__ for a in typing.get_args(typing.Type[int])]",
            expect=(), may_run=True),
    Attempt("get-origin-type-dataclass",
            "import typing, dataclasses\nT = typing.get_origin(typing.Type)\n"
            "C = T('C', (), {'__module__': 'x', 'x': 0, '__annotations__': "
            "{\"x,open(target_path,'w').write('pwned'))or(1\": int}})\n"
            "C = dataclasses.dataclass(init=False, repr=False)(C)\nresult = C() == C()"),
    Attempt("dataclass-typeddict-annotation-code",
            "import typing, dataclasses\n"
            "T = typing.TypedDict('T', {\"x,[c for c in ().__class__.__base__.__subclasses__()]"
            ")or(1\": int})\nT = dataclasses.dataclass(init=False, repr=False)(T)\n"
            "result = T() == T()"),
    Attempt("dataclass-over-host-class", "import dataclasses, json\n"
                                         "dataclasses.dataclass(json.JSONEncoder)"),
    Attempt("make-dataclass-code-field",
            "import dataclasses\nC = dataclasses.make_dataclass('C', "
            "[\"x,open(target_path,'w').write('pwned'))or(1\"], init=False, repr=False)\n"
            "result = C() == C()"),
    Attempt("make-dataclass-dunder-field",
            "import dataclasses\nC = dataclasses.make_dataclass('C', ['__globals__'])"),
    Attempt("make-dataclass-namespace-interceptor",
            "import dataclasses\nC = dataclasses.make_dataclass('C', ['x'], "
            "namespace={'__setattr__': print})"),
    Attempt("make-dataclass-ok", "import dataclasses\n"
                                 "C = dataclasses.make_dataclass('C', ['x', ('y', int, 2)])\n"
                                 "result = dataclasses.astuple(C(1, 2))", expect=(), may_run=True),
    Attempt("enum-functional-interceptor",
            "import enum, functools, json\nstash = []\n"
            "E = enum.Enum('E', {'A': 1, '__setattr__': lambda s, k, v: stash.append(v)})\n"
            "functools.update_wrapper(E.A, json.dumps)\nresult = [str(v)[:40] for v in stash]",
            expect=SV + RUNTIME),
    Attempt("metaclass-function-rewrites-namespace",
            "def meta(name, bases, ns):\n    ns['__reduce_ex__'] = print\n    return ns\n"
            "class A(metaclass=meta):\n    pass"),
    Attempt("copy-reduce-functional-enum",
            "import copy, enum, json\nE = enum.Enum('E', {'A': 1, '__deepcopy__': None, "
            "'__reduce_ex__': lambda s, p: (lambda: json.JSONEncoder, (), "
            "(None, {'default': print}))})\nresult = str(copy.deepcopy([E.A]))"),
    Attempt("copy-reduce-functional-enum-partial",
            "import copy, enum, functools, json\n"
            "rv = (max, ([json.JSONEncoder],), (None, {'default': print}))\n"
            "E = enum.Enum('E', {'A': 1, '__copy__': None, '__reduce_ex__': "
            "staticmethod(functools.partial(dict.get, {4: rv}))})\ncopy.copy(E.A)"),
    # -- defining the double-underscore methods the policy refuses to read ------------------
    *(Attempt(f"define-{name.strip('_')}",
              f"class A:\n    def {name}(self, *args):\n        return None\nresult = 1")
      for name in ("__setattr__", "__getattr__", "__getattribute__", "__delattr__",
                   "__set_name__", "__init_subclass__", "__class_getitem__", "__get__",
                   "__set__", "__del__", "__reduce__", "__reduce_ex__", "__setstate__",
                   "__instancecheck__", "__mro_entries__", "__new__")),
    Attempt("define-async-dunder", "class A:\n    async def __getattr__(self, n):\n"
                                   "        return 1\nresult = 1"),
    # -- files and the network ----------------------------------------------------------------
    Attempt("open-secret", "result = open(secret_path).read()"),
    Attempt("open-write", "f = open(target_path, 'w')\nf.write('pwned')"),
    Attempt("print-to-file", "print('pwned', file=secret_path)"),
    Attempt("socket-connect", "import socket\ns = socket.create_connection(('127.0.0.1', port))"),
    Attempt("urllib", "import urllib.request\nurllib.request.urlopen(f'http://127.0.0.1:{port}')"),
    Attempt("http-client", "import http.client\n"
                           "http.client.HTTPConnection('127.0.0.1', port).request('GET', '/')"),
    # -- resource exhaustion ----------------------------------------------------------------
    Attempt("memory-bomb-list", "x = [0] * (10 ** 9)", expect=MEMORY),
    Attempt("memory-bomb-string", "x = 'a' * (10 ** 10)", expect=MEMORY),
    Attempt("memory-creep", "chunks = []\nwhile True:\n    chunks.append(' ' * 1_000_000)",
            expect=MEMORY),
    Attempt("fork-bomb", "import os\nwhile True:\n    os.fork()"),
    Attempt("huge-output", "while True:\n    print('x' * 10_000)", expect=TIMEOUT),
    Attempt("huge-result", "result = 'x' * (20 * 1024 * 1024)", expect=OUTPUT + MEMORY),
    Attempt("deep-recursion", "def f(n):\n    return f(n + 1)\nf(0)", expect=RUNTIME),
    Attempt("deep-source-nesting", "result = " + "-" * 600 + "1", expect=SV + RUNTIME,
            may_run=True),
    Attempt("huge-int", "result = 10 ** 100_000", expect=OUTPUT),
    Attempt("slow-int-power", "x = 10 ** 10 ** 10", expect=TIMEOUT + MEMORY),
    Attempt("catastrophic-regex", "import re\nre.match('(a+)+$', 'a' * 40 + 'b')", expect=TIMEOUT),
    # -- timeout evasion ---------------------------------------------------------------------
    Attempt("busy-loop", "while True:\n    pass", expect=TIMEOUT),
    Attempt("catch-everything", "while True:\n    try:\n        while True:\n            pass\n"
                                "    except BaseException:\n        pass", expect=TIMEOUT),
    Attempt("loop-in-finally", "try:\n    pass\nfinally:\n    while True:\n        pass",
            expect=TIMEOUT),
    Attempt("loop-in-del", "class A:\n    def __del__(self):\n        while True:\n"
                           "            pass\na = A()\ndel a", expect=SV),
    Attempt("loop-in-str-of-exception", "class E(Exception):\n    def __str__(self):\n"
                                        "        while True:\n            pass\nraise E()",
            expect=TIMEOUT),
    Attempt("sleep-forever", "import time\ntime.sleep(10 ** 6)", expect=TIMEOUT),
    # -- results that would attack the host when read back -----------------------------------
    Attempt("result-deep-nesting", "x = []\nfor _ in range(100_000):\n    x = [x]\nresult = x",
            expect=OUTPUT),
    Attempt("result-self-reference", "x = []\nx.append(x)\nresult = x", expect=OUTPUT),
    Attempt("result-custom-eq", "class E:\n    def __eq__(self, other):\n        return True\n"
                                "result = E()", expect=OUTPUT),
    Attempt("result-dict-subclass", "class D(dict):\n    def __getitem__(self, key):\n"
                                    "        return 'evil'\nresult = D(a=1)", expect=OUTPUT),
    Attempt("result-str-subclass", "class S(str):\n    def __hash__(self):\n"
                                   "        return 0\nresult = [S('x')]", expect=OUTPUT),
    Attempt("result-function", "result = {'f': lambda: 0}", expect=OUTPUT),
    Attempt("result-huge-dict", "result = {i: 'x' * 100 for i in range(100_000)}",
            expect=OUTPUT),
]


@pytest.fixture(scope="module")
def jail() -> SandboxedExecutor:
    return SandboxedExecutor(SandboxConfig(timeout_seconds=0.6, max_memory_mb=64,
                                           max_print_bytes=4096), owner="escape-corpus")


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("secret")
    secret = f"TOPSECRET-{secrets.token_hex(8)}"
    path = folder / "secret.txt"
    path.write_text(secret)
    path.chmod(0o600)
    return path, secret


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def test_corpus_is_large_and_ids_are_unique() -> None:
    assert len(ATTEMPTS) >= 60
    assert len({a.id for a in ATTEMPTS}) == len(ATTEMPTS)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda a: a.id)
def test_escape_attempt_does_no_harm(
    attempt: Attempt,
    jail: SandboxedExecutor,
    secret_file: tuple[Path, str],
    listener: socket.socket,
    tmp_path: Path,
) -> None:
    secret_path, secret = secret_file
    target = tmp_path / "written.txt"
    inputs = {"secret_path": str(secret_path), "target_path": str(target),
              "port": listener.getsockname()[1]}
    seen = ""
    try:
        outcome = jail.run(attempt.code, inputs)
    except SandboxError as exc:
        seen = f"{type(exc).__name__}: {exc}"
        assert isinstance(exc, attempt.expect), f"{attempt.id}: unexpected {seen}"
    else:
        seen = repr(outcome.result) + outcome.stdout
        assert attempt.may_run, f"{attempt.id} ran to completion: {seen[:300]}"

    assert secret not in seen
    assert not target.exists(), "a file was written"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected to the host's listener
    assert jail.exec_code("result = 41 + 1") == 42  # the host still gets answers
