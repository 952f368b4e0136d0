"""course_plugins: Emacs-style plugins (hooks, events, advice) for Django course platforms."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
