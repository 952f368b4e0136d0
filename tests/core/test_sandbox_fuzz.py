"""Property tests: random programs never hurt the host; the codec and the checker never crash."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_plugins.core.sandbox import SandboxConfig, SandboxedExecutor, SandboxError, codec
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.core.sandbox.policy import check_source

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

NAMES = ["x", "y", "data", "result", "len", "print", "getattr", "str", "range", "list", "dict",
         "object", "super", "type", "eval", "open", "__builtins__", "__import__", "math", "json",
         "random", "Exception"]
ATTRIBUTES = ["upper", "append", "keys", "format", "format_map", "__class__", "__globals__",
              "__init__", "__name__", "_os", "_x", "gi_frame", "f_back", "tb_frame", "mro",
              "sqrt", "dumps", "loads", "random", "real", "__subclasses__", "co_code"]
STRINGS = ["", "a", "{0}", "{0.__class__}", "{0._x}", "__class__", "_os", "\u0000", "ｅｖａｌ"]

atoms = st.one_of(
    st.sampled_from(NAMES),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(STRINGS).map(repr),
    st.sampled_from(["None", "True", "[]", "{}", "()", "b'xy'", "1.5"]),
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(ATTRIBUTES)).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(inner, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from(["+", "*", "-", "%", "==", "and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"[{e} for _ in range(3)]"),
        inner.map(lambda e: f"(lambda v: {e})"),
    )


expressions = st.recursive(atoms, _extend, max_leaves=8)

statements = st.one_of(
    expressions.map(lambda e: f"result = {e}"),
    expressions.map(lambda e: f"x = {e}"),
    expressions.map(lambda e: f"print({e})"),
    st.sampled_from(sorted({"math", "json", "random", "os", "sys", "typing", "re"})).map(
        lambda m: f"import {m}"),
    expressions.map(lambda e: f"try:\n    result = {e}\nexcept Exception as exc:\n"
                              "    result = str(exc)"),
    expressions.map(lambda e: f"def f(v):\n    return {e}\nresult = f(1)"),
    expressions.map(lambda e: f"class C:\n    def m(self):\n        return {e}\nresult = C().m()"),
    expressions.map(lambda e: f"for i in range(3):\n    x = {e}"),
)

programs = st.lists(statements, min_size=1, max_size=5).map("\n".join)


@pytest.fixture(scope="module")
def sandbox() -> SandboxedExecutor:
    return SandboxedExecutor(SandboxConfig(timeout_seconds=0.3, max_memory_mb=64))


def _assert_plain(value: object, depth: int = 0) -> None:
    assert depth < 200
    if isinstance(value, (list, tuple)):
        for item in value:
            _assert_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_plain(key, depth + 1)
            _assert_plain(item, depth + 1)
    else:
        assert type(value) in (type(None), bool, int, float, str, bytes)


def test_random_programs_never_crash_the_host(sandbox: SandboxedExecutor) -> None:
    @FUZZ
    @given(st.one_of(programs, programs, st.text(max_size=200)))
    def check(source: str) -> None:
        try:
            value = sandbox.exec_code(source, {"data": [1, "a", None]})
        except SandboxError:
            return
        _assert_plain(value)

    check()
    assert sandbox.exec_code("result = 41 + 1") == 42


plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
              st.binary(), st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(), st.integers(), st.binary()), inner, max_size=4),
    ),
    max_leaves=20,
)


@FUZZ
@given(plain)
def test_codec_round_trips_plain_data(value: object) -> None:
    back = codec.from_wire(codec.to_wire(value, limit=1 << 20), limit=1 << 20)
    assert back == value
    assert type(back) is type(value)


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=5)),
                              lambda i: st.one_of(st.lists(i, max_size=3),
                                                  st.dictionaries(st.sampled_from("tbdx"), i,
                                                                  max_size=2)),
                              max_leaves=10).map(lambda v: codec.json.dumps(v).encode())))
def test_codec_decodes_hostile_bytes_only_into_plain_data_or_codec_error(data: bytes) -> None:
    try:
        value = codec.from_wire(data, limit=1 << 20)
    except codec.CodecError:
        return
    _assert_plain(value)


def test_codec_refuses_deep_or_huge_answers_cleanly() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(codec.CodecError):
        codec.from_wire(deep, limit=1 << 20)
    with pytest.raises(codec.CodecError):
        codec.from_wire(b"1" * 5000, limit=1 << 20)  # over Python's int digit limit
    with pytest.raises(codec.CodecError, match="limit"):
        codec.from_wire(b"[" + b"1," * 10 + b"1]", limit=5)
    assert math.isnan(codec.from_wire(b"NaN", limit=10))


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.text(max_size=300), programs))
def test_checker_only_accepts_or_raises_syntax_or_security_errors(source: str) -> None:
    for mode in ("sandbox", "plugin"):
        with contextlib.suppress(SyntaxError, SecurityViolation):
            check_source(source, mode=mode)  # type: ignore[arg-type]
