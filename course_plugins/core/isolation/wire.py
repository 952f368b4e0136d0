"""What crosses between the host and an isolated plugin's worker: tagged JSON in framed messages.

Plain JSON data crosses as itself. Everything else is a JSON object whose ``"$"`` key names a tag,
so nothing is ambiguous: ``{"$": "t", "v": [...]}`` a tuple, ``"b"`` bytes, ``"dt"``/``"d8"``/
``"tm"`` datetimes, dates and times, ``"dec"`` a ``Decimal``, ``"uuid"``, ``"set"``, and ``"d"`` a
dict whose keys are not all strings (or that has a ``"$"`` key). Objects that are not data cross
as references the owning side resolves again (``Wire.export``/``Wire.resolve``): nothing is
pickled, nothing is rebuilt from a class name.

Decoding is bounded because the other side may be hostile: frames have a size cap, nesting is
capped by the JSON parser's own recursion limit (a ``RecursionError`` is a refusal), and dict keys
that are not strings — whose hashes an attacker can make collide — are limited in number per
message (string hashes are salted per process, so the other side cannot aim at ours). The
number of containers (JSON objects and arrays) per message is capped (``MAX_CONTAINERS``, counted
before parsing), and decoding stops at a deadline (the call's own, else ``DECODE_SECONDS`` from
the start), looked at every ``_CLOCK_EVERY`` objects as the exec_code codec
(``core/sandbox/codec.py``) does: a message of millions of tiny objects cannot stall the
receiving side past its budget. A message of at most 64 KiB with no tag anywhere (only string
keys) is plain JSON: it is decoded in one C call, which such a size bounds to well under a
millisecond.

The host's messages to a worker carry the same structure in ``marshal`` form instead
(``Wire.pack``/``Wire.unpack``): several times faster to write and read than JSON text, and safe
in that one direction only, because the worker decodes what the host sent and the host is
trusted. What a worker sends is always JSON, decoded by the bounded decoder above: the host never
unmarshals anything a plugin's process wrote.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import marshal
import os
import re
import struct
import time
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

MAX_FRAME = 16 * 1024 * 1024
MAX_NONSTR_KEYS = 1000
MAX_CONTAINERS = 500_000  # JSON objects + arrays per message
DECODE_SECONDS = 5.0  # decode deadline when the caller gives none
_CLOCK_EVERY = 512  # objects decoded between two looks at the deadline
_PLAIN_MAX = 64 * 1024  # a message this small with no tag is decoded without the hook
#: Digits and exponent of a ``Decimal`` that crosses (the limit ``int`` itself puts on digits):
#: ``Decimal("1e999999999")`` is a few bytes, and ``int()`` of it (an IntegerField's
#: ``get_prep_value``) or ``f"{d:f}"`` would keep the receiving side busy for hours.
MAX_DECIMAL_DIGITS = 4300
_HEADER = struct.Struct(">I")
_SCALARS = frozenset({type(None), bool, int, float, str})
_PLAIN = b"m"  # a packed message without tags
_TAGGED = b"t"  # a packed message with tags
# Version 2: no back-references (version 3 added them: a table per dump, and bytes that depend on
# reference counts) and no short interned strings (version 4: a look-up in the process's table
# of interned strings per key when read). Read by every Python 3, and faster both ways.
MARSHAL_VERSION = 2


class WireError(ValueError):
    """A value cannot cross, or a message that arrived is malformed or over a limit."""


class DecodeTimeout(WireError):
    """Decoding a message ran past its deadline."""


class ChannelClosed(ConnectionError):
    """The other end of the channel went away."""


Exporter = Callable[[Any], "dict[str, Any]"]
Resolver = Callable[["dict[str, Any]"], Any]


_DATA = frozenset({
    type(None), bool, int, float, str, bytes, datetime.datetime, datetime.date, datetime.time,
    decimal.Decimal, uuid.UUID,
})


def is_data(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is plain data (what crosses as itself, no references), by exact type."""
    kind = type(value)
    if kind in _DATA:
        return True
    if depth > 50:
        return False
    if kind is dict:
        return all(is_data(k, depth + 1) and is_data(v, depth + 1) for k, v in value.items())
    if kind in (list, tuple, set, frozenset):
        return all(is_data(v, depth + 1) for v in value)
    return False


#: Time zones whose offsets are the interpreter's own code (``isoformat()`` asks a datetime's
#: tzinfo: another one, a plugin's subclass say, crosses as a reference instead).
_ZONES = frozenset({datetime.timezone, zoneinfo.ZoneInfo})
_HASH_SAFE = frozenset({type(None), bool, int, float, str, bytes})


def _hash_safe(key: Any) -> bool:
    """Whether hashing and comparing ``key`` runs no code but the interpreter's."""
    kind = type(key)
    return kind in _HASH_SAFE or (kind is tuple and all(_hash_safe(k) for k in key))


def as_plain(value: Any) -> Any:
    """``value`` as its plain base type when it is an instance of a subclass of one (a ``str``
    enum, an ``OrderedDict``...), else ``None``.

    Read with the base type's own methods (``str.__str__``, ``list.copy``, ``dict.items``...),
    never the subclass's: in the site this runs where no budget does (encoding a trusted
    plugin's value for an isolated one), and ``str(value)`` or ``dict(value)`` ran a
    ``__str__``, ``__iter__`` or ``keys`` of the plugin's for ever. A dict subclass with keys
    whose hashing is not the interpreter's own is not made plain (``None``)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # (bool cannot be subclassed)
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        pairs = list(dict.items(value))
        if not all(_hash_safe(key) for key, _ in pairs):
            return None
        return dict(pairs)
    if isinstance(value, list):
        return list.copy(value)
    if isinstance(value, tuple):
        return tuple.__add__((), value)
    return None


def decimal_in_bounds(value: decimal.Decimal) -> bool:
    """Whether ``value``'s digits and exponent are within ``MAX_DECIMAL_DIGITS`` (an infinity
    or NaN is)."""
    if not value.is_finite():
        return True
    digits, exponent = value.as_tuple()[1:]
    return len(digits) <= MAX_DECIMAL_DIGITS and abs(int(exponent)) <= MAX_DECIMAL_DIGITS


def _bounded(value: decimal.Decimal) -> decimal.Decimal:
    """``value`` if its digits and exponent are within ``MAX_DECIMAL_DIGITS``; else raise
    ``WireError``."""
    if not decimal_in_bounds(value):
        raise WireError(
            f"a Decimal of more than {MAX_DECIMAL_DIGITS} digits or with an exponent over "
            f"{MAX_DECIMAL_DIGITS} cannot cross"
        )
    return value


def _refuse(value: Any) -> dict[str, Any]:
    raise WireError(
        f"a {type(value).__name__} cannot cross to or from an isolated plugin: use JSON data "
        "(dict, list, str, int, float, bool, None), tuples, bytes, dates and times"
    )


#: A JSON string, matched in linear time whatever the text: possessive repeats never backtrack,
#: and the closing quote is optional, so a string that never ends is one match to the end of the
#: text (the parser fails at it too, building nothing after it). The plain
#: ``"(?:[^"\\]+|\\.)*"`` backtracked exponentially on such a string: a few hundred kilobytes
#: from a worker held the site's thread for ever, past any deadline.
_STRING = re.compile(rb'(?s)"(?:[^"\\]++|\\.)*+"?')


def _containers(data: bytes) -> int:
    """How many JSON objects and arrays ``data`` holds, counted before parsing (the parser
    builds arrays with no hook to stop it). Brackets are counted in C; only when that upper
    bound (brackets inside strings count too) is over the cap are strings taken out first."""
    count = data.count(b"[") + data.count(b"{")
    if count > MAX_CONTAINERS:
        bare = _STRING.sub(b"", data)
        count = bare.count(b"[") + bare.count(b"{")
    return count


class Wire:
    """Encoder/decoder of one side: ``export(obj)`` turns a non-data object into a tag dict
    (e.g. a reference), ``resolve(tag)`` turns a tag this module does not know back into an
    object (``None`` -> refused)."""

    def __init__(self, export: Exporter = _refuse, resolve: Resolver | None = None) -> None:
        self.export = export
        self.resolve_tag = resolve

    # -- encoding ---------------------------------------------------------------------------------

    def encode(self, value: Any) -> Any:
        """Return the JSON structure of ``value`` (raises ``WireError``)."""
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is dict:
            if all(type(k) is str for k in value) and "$" not in value:
                # Scalars (most values of a record) as they are, without a call each.
                return {k: v if type(v) in _SCALARS else self.encode(v) for k, v in value.items()}
            return {"$": "d", "v": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if kind is list:
            return [v if type(v) in _SCALARS else self.encode(v) for v in value]
        if kind is tuple:
            return {"$": "t", "v": [self.encode(v) for v in value]}
        if kind is bytes:
            return {"$": "b", "v": base64.b64encode(value).decode("ascii")}
        if kind is datetime.datetime:
            if value.tzinfo is not None and type(value.tzinfo) not in _ZONES:
                return self.export(value)  # its tzinfo's code would run in isoformat()
            return {"$": "dt", "v": value.isoformat()}
        if kind is datetime.date:
            return {"$": "d8", "v": value.isoformat()}
        if kind is datetime.time:
            if value.tzinfo is not None and type(value.tzinfo) not in _ZONES:
                return self.export(value)
            return {"$": "tm", "v": value.isoformat()}
        if kind is decimal.Decimal:
            return {"$": "dec", "v": str(_bounded(value))}
        if kind is uuid.UUID:
            return {"$": "uuid", "v": str(value)}
        if kind is set or kind is frozenset:
            return {"$": "set", "v": [self.encode(v) for v in value]}
        return self.export(value)

    def dumps(self, value: Any) -> bytes:
        """Encode a message (a dict of JSON structure) to bytes."""
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "surrogatepass"
            )
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"a value cannot be encoded: {exc}") from None

    def pack(self, value: Any) -> bytes:
        """Encode a message (a dict of JSON structure) for a side that trusts this one (the
        host's messages to its worker): ``marshal`` data after a one-byte mark, ``m`` when no tag
        is in it, ``t`` when the reader must look for tags (``unpack``)."""
        try:
            data = marshal.dumps(value, MARSHAL_VERSION)
        except (ValueError, RecursionError) as exc:
            raise WireError(f"a value cannot be encoded: {exc}") from None
        # A tag's "$" key is that byte in the data; a "$" inside some text only costs a look.
        return (_TAGGED if b"$" in data else _PLAIN) + data

    # -- decoding ---------------------------------------------------------------------------------

    def unpack(self, data: bytes) -> Any:
        """Decode what ``pack`` wrote; only for messages of a trusted side (``marshal`` is not
        meant for data an adversary made). Raises ``WireError`` for what ``pack`` cannot have
        written."""
        mark = data[:1]
        if mark not in (_PLAIN, _TAGGED):
            raise WireError("malformed message: not a packed message")
        try:
            value = marshal.loads(memoryview(data)[1:])
            return self._untag_all(value, [MAX_NONSTR_KEYS]) if mark == _TAGGED else value
        except WireError:
            raise
        except (EOFError, ValueError, TypeError, RecursionError) as exc:
            raise WireError(f"malformed message: {type(exc).__name__}") from None

    def _untag_all(self, value: Any, budget: list[int]) -> Any:
        """``value`` (JSON structure) with every tag dict made its value again, innermost first
        (the order ``json``'s ``object_hook`` sees them in)."""
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._untag_all(item, budget)
            return self._untag(value, budget) if "$" in value else value
        if kind is list:
            for index, item in enumerate(value):
                if type(item) is dict or type(item) is list:
                    value[index] = self._untag_all(item, budget)
        return value

    def _untag(self, obj: dict[str, Any], budget: list[int]) -> Any:
        """The value of the tag dict ``obj`` (``budget[0]``: how many more keys that are not
        strings and set items may be made)."""
        tag = obj.get("$")
        if tag is None:
            return obj
        body: Any = obj.get("v")
        try:
            if tag == "t":
                return tuple(body)
            if tag == "d":
                out = {}
                for key, val in body:
                    if type(key) is not str:
                        budget[0] -= 1
                        if budget[0] < 0:
                            raise WireError(
                                f"more than {MAX_NONSTR_KEYS} dict keys that are not strings"
                            )
                    out[key] = val
                return out
            if tag == "b":
                return base64.b64decode(body.encode("ascii"), validate=True)
            if tag == "dt":
                return datetime.datetime.fromisoformat(body)
            if tag == "d8":
                return datetime.date.fromisoformat(body)
            if tag == "tm":
                return datetime.time.fromisoformat(body)
            if tag == "dec":
                if len(body) > 2 * MAX_DECIMAL_DIGITS + 20:
                    raise WireError(f"a Decimal of more than {MAX_DECIMAL_DIGITS} digits")
                return _bounded(decimal.Decimal(body))
            if tag == "uuid":
                return uuid.UUID(body)
            if tag == "set":
                budget[0] -= len(body)
                if budget[0] < 0:
                    raise WireError(f"sets of more than {MAX_NONSTR_KEYS} items")
                return set(body)
        except WireError:
            raise
        except Exception as exc:
            raise WireError(f"malformed {tag!r} value: {type(exc).__name__}") from None
        if self.resolve_tag is None:
            raise WireError(f"unexpected tag {tag!r}")
        return self.resolve_tag(obj)

    def loads(self, data: bytes, deadline: float | None = None) -> Any:
        """Decode one message; raises ``WireError`` for anything malformed or over a limit,
        ``DecodeTimeout`` past ``deadline`` (a ``time.monotonic()`` value; default
        ``DECODE_SECONDS`` from now)."""
        if len(data) <= _PLAIN_MAX and b'"$"' not in data:
            # Small and without a tag (so only string keys): plain JSON, decoded in C in
            # microseconds, with nothing a hook would have to look at.
            try:
                return json.loads(data)
            except (ValueError, TypeError, RecursionError) as exc:
                raise WireError(f"malformed message: {type(exc).__name__}") from None
        if deadline is None:
            deadline = time.monotonic() + DECODE_SECONDS
        if _containers(data) > MAX_CONTAINERS:
            raise WireError(f"a message of more than {MAX_CONTAINERS} objects and arrays")
        budget = [MAX_NONSTR_KEYS]
        clock = [_CLOCK_EVERY]

        def hook(obj: dict[str, Any]) -> Any:
            clock[0] -= 1
            if not clock[0]:
                clock[0] = _CLOCK_EVERY
                if time.monotonic() > deadline:
                    raise DecodeTimeout("a message took too long to decode")
            return obj if obj.get("$") is None else self._untag(obj, budget)

        try:
            return json.loads(data, object_hook=hook)
        except WireError:
            raise
        except (ValueError, TypeError, RecursionError, MemoryError) as exc:
            raise WireError(f"malformed message: {type(exc).__name__}") from None


# -- frames: a 4-byte big-endian length, then the payload (on raw file descriptors) ----------


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame (handles short writes); raises ``ChannelClosed``."""
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise ChannelClosed(str(exc)) from None


def _read_exact(fd: int, size: int) -> bytes:
    first = os.read(fd, size)
    if len(first) == size:
        return first
    chunks = [first]
    got = len(first)
    while got < size:
        if not chunks[-1]:
            raise ChannelClosed("the other end closed the channel")
        chunk = os.read(fd, min(size - got, 1 << 20))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_FRAME) -> bytes:
    """Read one frame; raises ``ChannelClosed`` at end of file, ``WireError`` over ``limit``."""
    try:
        header = _read_exact(fd, _HEADER.size)
        if len(header) < _HEADER.size:
            raise ChannelClosed("the other end closed the channel")
        (size,) = _HEADER.unpack(header)
        if size > limit:
            raise WireError(f"a message of {size} bytes is over the limit of {limit} bytes")
        return _read_exact(fd, size) if size else b""
    except ConnectionResetError as exc:
        raise ChannelClosed(str(exc)) from None
