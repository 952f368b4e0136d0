"""What happened (``Event``) and which subscriptions an event name reaches (the pattern trie).

Patterns are dot-separated: ``*`` matches exactly one segment, ``**`` any number of segments
(zero included), anything else matches literally. ``EventBus`` (``event_bus.py``) keeps its
subscriptions in a trie of ``PatternNode``s and caches what each event name reaches.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from course_plugins.exceptions import EventPatternError

__all__ = ["Event", "PatternNode", "split_pattern"]


class Event:
    """Something that happened: ``name``, ``data`` (a dict), ``source``, ``id`` and ``timestamp``.

    ``id`` is a uuid string (made on first use, so a publish that nobody reads it from does not
    pay for it); ``timestamp`` is an aware UTC datetime taken at creation.
    """

    __slots__ = ("name", "data", "source", "timestamp", "_id")

    def __init__(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        source: str = "platform",
        *,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        if not name or not isinstance(name, str) or "*" in name:
            raise EventPatternError(
                f"event name {name!r} is not valid: use dot-separated words such as "
                "'course.created' (wildcards belong in subscriptions, not in events)"
            )
        self.name = name
        self.data: dict[str, Any] = data if data is not None else {}
        self.source = source
        self.timestamp = timestamp if timestamp is not None else datetime.now(UTC)
        self._id = id

    @property
    def id(self) -> str:
        """The event's unique id (a uuid4 string)."""
        if self._id is None:
            self._id = str(uuid.uuid4())
        return self._id

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (timestamp in ISO 8601) that ``from_dict`` turns back."""
        return {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "source": self.source,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Rebuild an event from ``to_dict()`` output; raises ``KeyError`` without ``name``."""
        stamp = d.get("timestamp")
        timestamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        if timestamp is not None and timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        return cls(
            d["name"],
            d.get("data"),
            d.get("source", "platform"),
            id=d.get("id"),
            timestamp=timestamp,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.data!r}, source={self.source!r}, id={self.id!r})"


class PatternNode:
    """A node of the pattern trie: literal children, a ``*`` child, a ``**`` child, and the
    subscriptions whose pattern ends here. ``collect`` gathers those matching an event name's
    segments."""

    __slots__ = ("children", "star", "dstar", "subs")

    def __init__(self) -> None:
        self.children: dict[str, PatternNode] = {}
        self.star: PatternNode | None = None
        self.dstar: PatternNode | None = None
        self.subs: dict[Any, None] = {}  # subscriptions, insertion-ordered; O(1) removal

    def child(self, segment: str) -> PatternNode:
        if segment == "*":
            if self.star is None:
                self.star = PatternNode()
            return self.star
        if segment == "**":
            if self.dstar is None:
                self.dstar = PatternNode()
            return self.dstar
        node = self.children.get(segment)
        if node is None:
            node = self.children[segment] = PatternNode()
        return node

    def collect(
        self, segs: list[str], i: int, out: list[Any], seen: set[tuple[int, int]]
    ) -> None:
        key = (id(self), i)
        if key in seen:  # several ``**`` can reach the same state; visit it once
            return
        seen.add(key)
        if self.dstar is not None:
            for j in range(i, len(segs) + 1):
                self.dstar.collect(segs, j, out, seen)
        if i == len(segs):
            out.extend(self.subs)
            return
        node = self.children.get(segs[i])
        if node is not None:
            node.collect(segs, i + 1, out, seen)
        if self.star is not None:
            self.star.collect(segs, i + 1, out, seen)


def split_pattern(pattern: str) -> list[str]:
    """The segments of subscription pattern ``pattern``; raises ``EventPatternError`` for an
    empty pattern, an empty segment or a ``*`` inside a word."""
    segs = pattern.split(".") if isinstance(pattern, str) else []
    for seg in segs:
        if not seg or ("*" in seg and seg not in ("*", "**")):
            raise EventPatternError(
                f"event pattern {pattern!r} is not valid: use dot-separated words, '*' for "
                "exactly one segment and '**' for any number, e.g. 'course.*' or 'quiz.**'"
            )
    if not segs:
        raise EventPatternError(f"event pattern {pattern!r} is not valid: it is empty")
    return segs
