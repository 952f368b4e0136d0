"""``ProcessWide``: the ``get_instance()`` / ``set_instance()`` pair of the engine's registries."""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Self


class ProcessWide:
    """Gives a class one process-wide instance, made on first use; ``cls()`` stays isolated."""

    _instance: ClassVar[Any] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instance = None
        cls._instance_lock = threading.Lock()

    @classmethod
    def get_instance(cls) -> Self:
        """Return the process-wide instance, creating it on first use."""
        instance = cls._instance
        if instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
                instance = cls._instance
        return instance

    @classmethod
    def set_instance(cls, instance: Self | None) -> Self | None:
        """Replace the process-wide instance (``None``: a fresh one on next use); return the old.

        For tests and ``course_plugins.testing``; a site never needs it.
        """
        with cls._instance_lock:
            previous, cls._instance = cls._instance, instance
        return previous
