"""What crosses the sandbox boundary: plain data as tagged JSON, in length-prefixed frames.

Only ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple`` and ``dict``
cross, by exact type (a subclass could carry behaviour). JSON objects are used only as tags,
so nothing is ambiguous: ``{"t": [...]}`` is a tuple, ``{"b": "<base64>"}`` bytes and
``{"d": [[key, value], ...]}`` a dict (keys keep their types). Nothing is ever unpickled.
Every decode is capped in size and depth, because the other side may be hostile; and in time
and in the number of dict keys that are not strings: an attacker can make such keys hash alike
(every integer ``k * (2**61 - 1) + c`` has the same hash), which turns building a dict quadratic —
56,000 of them take half a minute. String hashes are salted per process, so the other side
cannot aim at ours.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import time
from typing import Any

MAX_DEPTH = 100
#: Dict keys that are not strings, per value (their hashes can be made to collide).
MAX_NONSTR_KEYS = 1000
_CLOCK_EVERY = 512  # items decoded between two looks at the deadline
_HEADER = struct.Struct(">I")
_SCALARS = (type(None), bool, int, float, str)
_HASHABLE_KEYS = (type(None), bool, int, float, str, bytes, tuple)


def _short(path: str) -> str:
    return path if len(path) <= 80 else path[:60] + "..." + path[-17:]


class CodecError(ValueError):
    """A value cannot cross the boundary (wrong type, too deep, too large, malformed)."""


def to_wire(value: Any, *, limit: int, what: str = "value") -> bytes:
    """Encode plain data as tagged JSON bytes of at most ``limit`` bytes.

    Raises ``CodecError`` naming the path of the first offending part (``result['a'][2]``).
    """
    budget = [limit]  # rough running size, to stop early on a huge value
    other_keys = [MAX_NONSTR_KEYS]

    def convert(item: Any, depth: int, path: str) -> Any:
        if depth > MAX_DEPTH:
            raise CodecError(f"{what} is nested more than {MAX_DEPTH} levels deep")
        kind = type(item)
        budget[0] -= 2
        if kind in _SCALARS:
            if kind is str:
                budget[0] -= len(item)
            elif kind is int and item.bit_length() > 13000:
                raise CodecError(f"{_short(path)} is an integer too large to cross")
            if budget[0] < 0:
                raise CodecError(f"{what} is larger than the limit of {limit} bytes")
            return item
        if kind is bytes:
            budget[0] -= len(item) * 4 // 3
            if budget[0] < 0:
                raise CodecError(f"{what} is larger than the limit of {limit} bytes")
            return {"b": base64.b64encode(item).decode("ascii")}
        if kind is list:
            return [convert(x, depth + 1, f"{path}[{i}]") for i, x in enumerate(item)]
        if kind is tuple:
            return {"t": [convert(x, depth + 1, f"{path}[{i}]") for i, x in enumerate(item)]}
        if kind is dict:
            pairs = []
            for key, val in item.items():
                if type(key) is not str:
                    if type(key) not in _HASHABLE_KEYS:
                        raise CodecError(
                            f"{_short(path)} has a key of type {type(key).__name__}: dict keys "
                            "must be None, bool, int, float, str, bytes or tuple"
                        )
                    other_keys[0] -= 1
                    if other_keys[0] < 0:
                        raise CodecError(
                            f"{what} has more than {MAX_NONSTR_KEYS} dict keys that are not "
                            "strings: use string keys"
                        )
                pairs.append([convert(key, depth + 1, f"{path}.keys()"),
                              convert(val, depth + 1, f"{path}[{key!r:.40}]")])
            return {"d": pairs}
        raise CodecError(
            f"{_short(path)} is a {kind.__name__}: only None, bool, int, float, str, bytes, list, "
            "tuple and dict cross the sandbox boundary"
        )

    try:
        data = json.dumps(
            convert(value, 0, what), separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8", "surrogatepass")
    except CodecError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise CodecError(f"{what} cannot be encoded: {exc}") from None
    if len(data) > limit:
        raise CodecError(f"{what} is {len(data)} bytes encoded, over the limit of {limit} bytes")
    return data


def from_wire(data: bytes, *, limit: int, what: str = "value",
              deadline: float | None = None) -> Any:
    """Decode tagged JSON made by ``to_wire``; raises ``CodecError`` on anything else (and
    past ``deadline``, a ``time.monotonic()`` value; see ``from_tagged``)."""
    if len(data) > limit:
        raise CodecError(f"{what} is {len(data)} bytes, over the limit of {limit} bytes")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError, MemoryError) as exc:
        raise CodecError(f"{what} is not valid JSON: {type(exc).__name__}") from None
    return from_tagged(raw, what=what, deadline=deadline)


def from_tagged(raw: Any, *, what: str = "value", deadline: float | None = None) -> Any:
    """Turn the JSON structure of a tagged value back into plain data.

    Bounded whatever ``raw`` holds: depth (``MAX_DEPTH``), dict keys that are not strings
    (``MAX_NONSTR_KEYS``) and, with ``deadline`` (a ``time.monotonic()`` value), time.
    Raises ``CodecError``.
    """
    other_keys = [MAX_NONSTR_KEYS]
    clock = [_CLOCK_EVERY]

    def tick() -> None:
        clock[0] = _CLOCK_EVERY
        if deadline is not None and time.monotonic() > deadline:
            raise CodecError(f"{what} took too long to decode")

    def convert(item: Any, depth: int) -> Any:
        clock[0] -= 1
        if not clock[0]:
            tick()
        if depth > MAX_DEPTH + 1:
            raise CodecError(f"{what} is nested more than {MAX_DEPTH} levels deep")
        if type(item) in _SCALARS:
            return item
        if type(item) is list:
            return [convert(x, depth + 1) for x in item]
        if type(item) is dict and len(item) == 1:
            (tag, body), = item.items()
            if tag == "t" and type(body) is list:
                return tuple(convert(x, depth + 1) for x in body)
            if tag == "b" and type(body) is str:
                try:
                    return base64.b64decode(body.encode("ascii"), validate=True)
                except (binascii.Error, UnicodeEncodeError):
                    raise CodecError(f"{what} has malformed bytes") from None
            if tag == "d" and type(body) is list:
                result = {}
                for pair in body:
                    if type(pair) is not list or len(pair) != 2:
                        raise CodecError(f"{what} has a malformed dict entry")
                    key = convert(pair[0], depth + 1)
                    if type(key) is not str:
                        other_keys[0] -= 1
                        if other_keys[0] < 0:
                            raise CodecError(
                                f"{what} has more than {MAX_NONSTR_KEYS} dict keys that are "
                                "not strings"
                            )
                    try:
                        result[key] = convert(pair[1], depth + 1)
                    except TypeError:
                        raise CodecError(f"{what} has an unhashable dict key") from None
                return result
        raise CodecError(f"{what} has an unexpected JSON value of type {type(item).__name__}")

    return convert(raw, 0)


# -- frames: a 4-byte big-endian length, then the payload ------------------------------------


def frame(payload: bytes) -> bytes:
    """Return ``payload`` with its length prefix."""
    return _HEADER.pack(len(payload)) + payload


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame to a raw file descriptor (handles short writes)."""
    view = memoryview(frame(payload))
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes | None:
    """Read exactly ``size`` bytes from ``fd``; ``None`` at end of file."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, *, limit: int) -> bytes | None:
    """Read one frame from ``fd``; ``None`` at end of file. Raises ``CodecError`` over ``limit``."""
    header = read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise CodecError(f"frame of {size} bytes is over the limit of {limit} bytes")
    return read_exact(fd, size)


def header_size(header: bytes) -> int:
    """Length announced by a frame header."""
    return int(_HEADER.unpack(header)[0])


HEADER_SIZE = _HEADER.size
