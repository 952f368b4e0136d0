"""A guard for kombu's Redis transport: a closed connection is a connection error, not a crash.

With kombu 5.7.0 a Celery worker on Redis died when Redis restarted: closing the broker connection
sets the transport's ``client`` to ``None``, and restoring the unacknowledged messages of a channel
afterwards (``restore_unacked``) builds a new Redis pool from that client:
``AttributeError: 'NoneType' object has no attribute 'hostname'``. Celery ignores *connection*
errors while it tears a connection down and reconnects, but not that ``AttributeError``, so the
worker's consumer crashed and the worker stopped.

``install()`` (called when ``course_plugins.tasks`` is imported, i.e. in every worker) makes those
two places raise the transport's connection error instead, and report no batch publishing without a
client. The unacknowledged messages stay in Redis's unacked set and are restored after the
visibility timeout, as after any lost connection. It patches nothing when the transport has no such
code (other kombu versions) and is idempotent.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["install"]

_MARK = "_course_plugins_guarded"


def install() -> bool:
    """Guard kombu's Redis transport (see the module docstring); return whether it patched."""
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - no redis client installed: nothing to guard
        return False
    if getattr(kombu_redis, "redis", None) is None:
        return False
    channel = kombu_redis.Channel
    original = getattr(channel, "_connparams", None)
    if original is None or getattr(original, _MARK, False):
        return False
    connection_error = kombu_redis.redis.exceptions.ConnectionError

    @functools.wraps(original)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise connection_error("the broker connection was closed; reconnecting")
        return original(self, *args, **kwargs)

    setattr(_connparams, _MARK, True)
    channel._connparams = _connparams

    transport = kombu_redis.Transport
    batch = transport.__dict__.get("supports_batch_publish")
    if isinstance(batch, property) and batch.fget is not None:
        getter = batch.fget

        @functools.wraps(getter)
        def supports_batch_publish(self: Any) -> bool:
            if getattr(self, "client", None) is None:
                return False
            return bool(getter(self))

        transport.supports_batch_publish = property(supports_batch_publish)
    return True
