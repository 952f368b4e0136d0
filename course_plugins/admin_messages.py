"""Admin messages built from the plugin system's errors (the plugin pages and the organizations').

An error may span several lines (a manifest lists each bad field on a line of its own); Django's
message list would run them together, so such an error becomes a list. The text comes from the
plugin's own files: it is always escaped.
"""

from __future__ import annotations

from django.utils.html import format_html, format_html_join

__all__ = ["error_message"]


def error_message(head: str, error: object) -> str:
    """Return ``"head: error"`` for a one-line error; for an error of several lines, ``head:``
    and a list (``<ul class="cp-errors">``), one line an item, as safe HTML with the text
    escaped."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return f"{head}: {error}"
    return format_html(
        '{}:<ul class="cp-errors">{}</ul>',
        head,
        format_html_join("", "<li>{}</li>", ((line,) for line in lines)),
    )
